//! Training the recurrent video decoder on clips: the backbone is frozen
//! (clips carry its image tokens, computed once), every frame's slots are
//! matched clip-consistently, and the losses of all frames are summed and
//! backpropagated through the whole clip.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use super::seeded::seeded_var_builder;

use super::clip_matching::{ClipMatcher, FrameTruth};
use super::optim::AdamW;
use super::trainer::{detection_losses, Losses, TrainOptions};
use crate::error::{ModelError, Result};
use crate::owl::ImageOutputs;
use crate::video::{DecoderConfig, VideoDecoder};

/// One training clip: each frame's backbone outputs with the detector's
/// heads (a batch of one) and ground truth (boxes normalised to the model's
/// input square; labels index the step's queries).
#[derive(Debug, Clone)]
pub struct Clip {
    pub frames: Vec<ImageOutputs>,
    pub truths: Vec<FrameTruth>,
}

pub struct DecoderTrainer {
    decoder: VideoDecoder,
    weights: VarMap,
    optimiser: AdamW,
    options: TrainOptions,
    device: Device,
}

impl DecoderTrainer {
    /// A decoder of `config` in f32 on `device`, with fresh weights or, with
    /// `init`, those of a saved decoder (a safetensors file).
    pub fn new(
        config: DecoderConfig,
        init: Option<&Path>,
        options: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        if config.anchor_iou.is_some() {
            // Anchored boxes come from the detector, not the decoder: its box
            // head would get no gradient from them.
            return Err(ModelError::InvalidInput(
                "anchoring on patches is a tracking setting; train the decoder without it".into(),
            ));
        }
        let mut weights = VarMap::new();
        let decoder = VideoDecoder::new(
            config,
            seeded_var_builder(&weights, options.seed, DType::F32, device),
        )?;
        if let Some(path) = init {
            load(&mut weights, path)?;
        }
        Ok(DecoderTrainer {
            decoder,
            weights,
            optimiser: AdamW::default(),
            options,
            device: device.clone(),
        })
    }

    pub fn decoder(&self) -> &VideoDecoder {
        &self.decoder
    }

    pub fn step_count(&self) -> usize {
        self.optimiser.step
    }

    /// One optimisation step on `clips` (all of one length); `queries` (Q, E)
    /// are the embeddings the truths' labels index.
    pub fn step(&mut self, clips: &[Clip], queries: &Tensor) -> Result<Losses> {
        let frames = clips.first().map_or(0, |c| c.frames.len());
        if frames == 0
            || clips
                .iter()
                .any(|c| c.frames.len() != frames || c.truths.len() != frames)
        {
            return Err(ModelError::InvalidInput(
                "a step needs clips of one length, with tokens and truth for every frame".into(),
            ));
        }
        let config = self.decoder.config();
        let (slots, count) = (config.queries, queries.dim(0)?);
        let (weights, focal) = (self.options.weights, self.options.focal);
        let mut matchers: Vec<ClipMatcher> = clips
            .iter()
            .map(|_| ClipMatcher::new(slots, weights, focal))
            .collect();
        let boxes = clips
            .iter()
            .flat_map(|c| &c.truths)
            .map(|t| t.tracks.len())
            .sum::<usize>()
            .max(1) as f64;
        let batch_of = |frame: usize| -> Result<ImageOutputs> {
            let parts: Vec<&ImageOutputs> = clips.iter().map(|c| &c.frames[frame]).collect();
            Ok(ImageOutputs::concat(&parts)?)
        };
        let mut state = self.decoder.initial_state(&batch_of(0)?)?;
        let mut total: Option<Tensor> = None;
        let mut losses = Losses::default();
        for frame in 0..frames {
            let (outputs, next) = self.decoder.step(&batch_of(frame)?, &state)?;
            for (matcher, reseeded) in matchers.iter_mut().zip(&next.reseeded) {
                for (slot, _) in reseeded.iter().enumerate().filter(|(_, &r)| r) {
                    matcher.release(slot);
                }
            }
            let logits = outputs.class_logits(queries, None)?;
            let host_logits: Vec<f32> = logits.detach().flatten_all()?.to_vec1()?;
            let host_boxes = outputs.boxes.detach().to_vec3::<f32>()?;
            let mut matches = Vec::with_capacity(clips.len());
            for (b, (clip, matcher)) in clips.iter().zip(&mut matchers).enumerate() {
                let truth = &clip.truths[frame];
                let clip_logits = &host_logits[b * slots * count..(b + 1) * slots * count];
                let clip_boxes: Vec<[f32; 4]> = host_boxes[b]
                    .iter()
                    .map(|v| [v[0], v[1], v[2], v[3]])
                    .collect();
                let targets = matcher.assign(truth, clip_logits, count, &clip_boxes)?;
                matches.push(
                    targets
                        .iter()
                        .enumerate()
                        .filter_map(|(slot, t)| t.map(|j| (slot, truth.boxes[j], truth.labels[j])))
                        .collect::<Vec<_>>(),
                );
            }
            let frame_losses =
                detection_losses(&outputs, &logits, &matches, weights, focal, boxes)?;
            losses.class += frame_losses.class;
            losses.l1 += frame_losses.l1;
            losses.giou += frame_losses.giou;
            losses.objectness += frame_losses.objectness;
            total = Some(match total {
                None => frame_losses.total,
                Some(sum) => (sum + frame_losses.total)?,
            });
            state = next;
        }
        let total = total.ok_or_else(|| ModelError::InvalidInput("an empty clip".into()))?;
        losses.total = total.to_scalar::<f32>()?;
        self.optimiser
            .minimise(&self.weights, &total, &losses, &self.options)?;
        Ok(losses)
    }

    /// Writes the decoder's weights (a safetensors file).
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        self.weights.save(path).map_err(|e| ModelError::Checkpoint {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Writes the optimiser's state, for resuming.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        self.optimiser.save(path)
    }

    /// Restores weights and optimiser state written by the two savers.
    pub fn resume(&mut self, weights: &Path, state: &Path) -> Result<()> {
        load(&mut self.weights, weights)?;
        self.optimiser = AdamW::load(state, &self.weights, &self.device)?;
        Ok(())
    }
}

fn load(weights: &mut VarMap, path: &Path) -> Result<()> {
    weights.load(path).map_err(|e| ModelError::Checkpoint {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
