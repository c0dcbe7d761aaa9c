//! The OWL detector's training recipe: set prediction on the patch tokens as
//! OWL-ViT trains — Hungarian matching of patches to ground-truth boxes, then
//! focal classification and L1 + GIoU box losses on the matches.

mod clip_matching;
mod decoder_trainer;
mod losses;
mod matching;
mod optim;
mod seeded;
mod trainer;

pub use clip_matching::{ClipMatcher, FrameTruth};
pub use decoder_trainer::{Clip, DecoderTrainer};
pub use losses::{box_losses, sigmoid_focal_loss};
pub use matching::{focal_cost, match_predictions, Focal, MatchWeights};
pub use seeded::seeded_var_builder;
pub use trainer::{
    detection_losses, resize_position_embedding, DetectionLosses, Losses, Sample, TrainOptions,
    Trainer,
};
