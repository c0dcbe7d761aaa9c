//! The service's building blocks: live streams fanned out to many clients.
//! (The HTTP and WebSocket front end is to come.)

pub mod fanout;
pub mod session;

pub use fanout::{Delivery, Fanout, Subscription};
pub use session::{Message, Session, SessionConfig, SessionState, SessionStatus};
