//! OWL-ViT and OWLv2 for owltrack, in candle.
//!
//! The networks follow Hugging Face transformers' `modeling_owlvit.py` and
//! `modeling_owlv2.py` formula by formula, so that hub checkpoints compute
//! here what they compute there.

pub mod boxes;
mod checkpoint;
mod clip;
mod config;
mod detect;
mod detector;
mod error;
mod kernels;
mod owl;
pub mod preprocess;
pub mod rng;
pub mod tokenizer;
pub mod train;
pub mod video;

pub use candle_core::{DType, Device, Tensor};
pub use checkpoint::Checkpoint;
pub use config::{Activation, OwlConfig, TextConfig, VisionConfig, ARCHITECTURES};
pub use detect::{Detection, PostProcess};
pub use detector::{BatchItem, Detector, ImageResult, Query, StageTimings};
pub use error::{ModelError, Result};
pub use owl::{random_model, ImageOutputs, OwlModel};
pub use preprocess::{box_scale, OwlVersion, Preprocessor};
pub use tokenizer::ClipTokenizer;

/// The largest absolute difference between two tensors of one shape.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}

/// Whether this build can run on CUDA devices.
pub fn cuda_available() -> bool {
    cfg!(feature = "cuda") && candle_core::utils::cuda_is_available()
}
