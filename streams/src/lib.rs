//! The service: live streams (decoding, shared batched inference, tracking)
//! fanned out to many clients, and the HTTP/WebSocket server in front of
//! them.

pub mod camera;
pub mod fanout;
pub mod inference;
pub mod metrics;
pub mod server;
pub mod session;

pub use fanout::{Delivery, Fanout, Subscription};
pub use inference::{FrameRequest, Inference, InferenceStats};
pub use session::{
    Message, Session, SessionConfig, SessionState, SessionStatus, StreamMessage, StreamSubscription,
};
