//! Tracks for owltrack: turning per-frame model outputs into tracks, the
//! TAO annotation format, and the synthetic video world whose ground truth
//! is exact.

pub mod annotate;
pub mod benchmark;
pub mod coco;
mod error;
pub mod formats;
pub mod kalman;
pub mod pipeline;
pub mod pseudo_video;
pub mod recurrent;
pub use owltrack_models::rng;
pub mod synth;
pub mod tao;
pub mod tao_ow;
pub mod tbd;
pub mod training;
pub mod update;
pub mod video_training;

pub use error::{Result, TrackerError};
