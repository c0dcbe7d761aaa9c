//! Tracks for owltrack: turning per-frame model outputs into tracks, the
//! TAO annotation format, and the synthetic video world whose ground truth
//! is exact.

pub mod coco;
mod error;
pub mod kalman;
pub mod rng;
pub mod synth;
pub mod tao;
pub mod tao_ow;
pub mod tbd;
pub mod training;

pub use error::{Result, TrackerError};
