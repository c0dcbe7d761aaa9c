//! The optimisation loop: a model whose weights are candle variables, AdamW
//! with warm-up and cosine decay, gradient clipping, and state that can be
//! saved and resumed exactly.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use super::seeded::seeded_var_builder;

use super::losses::{box_losses, sigmoid_focal_loss};
use super::matching::{match_predictions, Focal, MatchWeights};
use super::optim::AdamW;
use crate::checkpoint::Checkpoint;
use crate::config::OwlConfig;
use crate::error::{ModelError, Result};
use crate::owl::{ImageOutputs, OwlModel};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub weight_decay: f64,
    /// Gradients are scaled down when their global L2 norm exceeds this.
    pub clip_norm: f64,
    pub focal: Focal,
    pub weights: MatchWeights,
    /// Weight of the query-spread term: the mean squared cosine similarity
    /// between the step's distinct query embeddings. From scratch, the text
    /// tower first learns what tells most queries apart (colour, say) and
    /// collapses queries that differ in a harder attribute (shape) onto one
    /// direction; the image tower then gets no signal to tell them apart
    /// either, and training sits on that saddle. Spreading the queries
    /// breaks it. 0 turns it off (a pretrained text tower needs none).
    pub query_spread: f64,
    /// Seeds the weights a from-scratch run starts from.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            learning_rate: 3e-4,
            warmup_steps: 100,
            total_steps: 1000,
            weight_decay: 1e-4,
            clip_norm: 1.0,
            focal: Focal::default(),
            weights: MatchWeights::default(),
            query_spread: 0.0,
            seed: 0,
        }
    }
}

impl TrainOptions {
    /// Linear warm-up, then cosine decay to zero at `total_steps`.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// One training image: normalised pixels (3 × S × S) and its boxes as
/// (cx, cy, w, h) in [0, 1] of the model's input square, each with the index
/// of its query in the step's query list.
#[derive(Debug, Clone)]
pub struct Sample {
    pub pixels: Vec<f32>,
    pub boxes: Vec<[f32; 4]>,
    pub labels: Vec<usize>,
}

/// The losses of one step, each averaged over the boxes of the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Losses {
    pub total: f32,
    pub class: f32,
    pub l1: f32,
    pub giou: f32,
    pub objectness: f32,
    /// Mean squared cosine similarity of the step's query embeddings.
    pub spread: f32,
}

pub struct Trainer {
    config: OwlConfig,
    model: OwlModel,
    weights: VarMap,
    optimiser: AdamW,
    options: TrainOptions,
    device: Device,
}

/// One step's set-prediction losses: the total to backpropagate and its
/// parts' values.
pub struct DetectionLosses {
    pub total: Tensor,
    pub class: f32,
    pub l1: f32,
    pub giou: f32,
    pub objectness: f32,
}

/// The set-prediction losses of `outputs` (B images × N predictions each —
/// patches, or a video decoder's slots) with class `logits` (B, N, Q), given
/// each image's matches (prediction, target box (cx, cy, w, h), target
/// query): the sigmoid focal loss over every prediction × query, L1 and GIoU
/// over the matched boxes (weighted as in matching), and the focal
/// objectness loss where the model has objectness; each divided by
/// `normaliser` (the number of target boxes).
pub fn detection_losses(
    outputs: &ImageOutputs,
    logits: &Tensor,
    matches: &[Vec<(usize, [f32; 4], usize)>],
    weights: MatchWeights,
    focal: Focal,
    normaliser: f64,
) -> Result<DetectionLosses> {
    let (images, predictions, queries) = logits.dims3()?;
    if matches.len() != images
        || matches
            .iter()
            .flatten()
            .any(|(p, _, q)| *p >= predictions || *q >= queries)
    {
        return Err(ModelError::InvalidInput(format!(
            "matches must name one of {predictions} predictions and {queries} queries in each of {images} images"
        )));
    }
    let device = logits.device();
    let mut class_targets = vec![0f32; images * predictions * queries];
    let mut rows = Vec::new();
    let mut target_boxes = Vec::new();
    for (image, pairs) in matches.iter().enumerate() {
        for (prediction, target, query) in pairs {
            let row = image * predictions + prediction;
            class_targets[row * queries + query] = 1.0;
            rows.push(row as u32);
            target_boxes.extend_from_slice(target);
        }
    }
    let class_targets = Tensor::from_vec(class_targets, (images, predictions, queries), device)?;
    let class = (sigmoid_focal_loss(logits, &class_targets, focal)? / normaliser)?;
    let mut losses = DetectionLosses {
        class: class.to_scalar::<f32>()?,
        total: class,
        l1: 0.0,
        giou: 0.0,
        objectness: 0.0,
    };
    if !rows.is_empty() {
        let count = rows.len();
        let index = Tensor::from_vec(rows.clone(), count, device)?;
        let predicted = outputs
            .boxes
            .reshape((images * predictions, 4))?
            .index_select(&index, 0)?;
        let target = Tensor::from_vec(target_boxes, (count, 4), device)?;
        let (l1, giou) = box_losses(&predicted, &target)?;
        let (l1, giou) = ((l1 / normaliser)?, (giou / normaliser)?);
        losses.l1 = l1.to_scalar::<f32>()?;
        losses.giou = giou.to_scalar::<f32>()?;
        losses.total =
            ((losses.total + (l1 * f64::from(weights.l1))?)? + (giou * f64::from(weights.giou))?)?;
    }
    if let Some(objectness) = &outputs.objectness {
        let mut targets = vec![0f32; images * predictions];
        for &row in &rows {
            targets[row as usize] = 1.0;
        }
        let targets = Tensor::from_vec(targets, (images, predictions), device)?;
        let loss = (sigmoid_focal_loss(objectness, &targets, focal)? / normaliser)?;
        losses.objectness = loss.to_scalar::<f32>()?;
        losses.total = (losses.total + loss)?;
    }
    Ok(losses)
}

/// Mean squared cosine similarity over the distinct pairs of `queries` (Q, E).
fn query_spread(queries: &Tensor) -> candle_core::Result<Tensor> {
    let count = queries.dim(0)?;
    if count < 2 {
        return Tensor::new(0f32, queries.device());
    }
    let unit = queries.broadcast_div(&(crate::clip::l2_norm(queries)? + 1e-6)?)?;
    let cosines = unit.matmul(&unit.t()?)?;
    let off_diagonal = (cosines.sqr()?.sum_all()? - (unit.sqr()?.sum(1)?.sqr()?.sum_all()?))?;
    off_diagonal / (count * (count - 1)) as f64
}

/// The vision tower's learned position embedding, one row per patch after
/// the class token's.
const VISION_POSITIONS: &str = "vision_model.embeddings.position_embedding.weight";

/// `positions` (1 + g² rows: the class token's, then a g×g patch grid in
/// row-major order) for a grid with `rows` rows in all: the class token's
/// row unchanged, the grid resampled bilinearly with half-pixel centres, as
/// torch's `interpolate(mode="bilinear", align_corners=False)` does. This
/// is how a trained model is fine-tuned at another input size: each patch
/// starts from the position its place in the image had before.
pub fn resize_position_embedding(positions: &Tensor, rows: usize) -> Result<Tensor> {
    let (count, width) = positions.dims2()?;
    let side = |rows: usize| {
        let grid = rows.checked_sub(1).filter(|&cells| cells > 0)?;
        let side = (grid as f64).sqrt().round() as usize;
        (side * side == grid).then_some(side)
    };
    let (Some(from), Some(to)) = (side(count), side(rows)) else {
        return Err(ModelError::InvalidInput(format!(
            "cannot resize {count} positions to {rows}: both must be a class token and a square grid"
        )));
    };
    let values = positions.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    // Source index and weight of each output coordinate, as torch computes
    // them for align_corners=False: negative sources clamp to the first cell.
    let taps: Vec<(usize, usize, f32)> = (0..to)
        .map(|out| {
            let source = ((out as f64 + 0.5) * from as f64 / to as f64 - 0.5).max(0.0) as f32;
            let low = (source.floor() as usize).min(from - 1);
            let high = (low + 1).min(from - 1);
            (low, high, source - low as f32)
        })
        .collect();
    let mut out = Vec::with_capacity(rows * width);
    out.extend_from_slice(&values[0]);
    let cell = |y: usize, x: usize| &values[1 + y * from + x];
    for &(y0, y1, wy) in &taps {
        for &(x0, x1, wx) in &taps {
            let (a, b, c, d) = (cell(y0, x0), cell(y0, x1), cell(y1, x0), cell(y1, x1));
            out.extend((0..width).map(|k| {
                (1.0 - wy) * ((1.0 - wx) * a[k] + wx * b[k]) + wy * ((1.0 - wx) * c[k] + wx * d[k])
            }));
        }
    }
    Ok(Tensor::from_vec(out, (rows, width), positions.device())?.to_dtype(positions.dtype())?)
}

impl Trainer {
    /// A model of `config` on `device` in f32, with random weights or, with
    /// `init`, the weights of a checkpoint in any of the formats it loads
    /// from, converted to f32 (fine-tuning).
    pub fn new(
        config: OwlConfig,
        init: Option<&Checkpoint>,
        options: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        let weights = VarMap::new();
        let vb = seeded_var_builder(&weights, options.seed, DType::F32, device);
        let model = OwlModel::new(config.clone(), vb)?;
        let mut trainer = Trainer {
            config,
            model,
            weights,
            optimiser: AdamW::default(),
            options,
            device: device.clone(),
        };
        if let Some(checkpoint) = init {
            trainer.load_weights(checkpoint)?;
        }
        Ok(trainer)
    }

    /// Sets every variable from `checkpoint`; a tensor the model needs that is
    /// missing or misshapen is an error naming it, and extra tensors (buffers
    /// such as position ids) are ignored. The vision position embedding of a
    /// checkpoint made for another input size is resized to this one's grid.
    fn load_weights(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let tensors = checkpoint.tensors()?;
        let variables = self
            .weights
            .data()
            .lock()
            .map_err(|_| ModelError::InvalidInput("the weight map was poisoned".into()))?;
        for (name, variable) in variables.iter() {
            let Some(tensor) = tensors.get(name) else {
                return Err(checkpoint.checkpoint_error(format!("no tensor {name}")));
            };
            let tensor = if tensor.dims() != variable.dims() && name.ends_with(VISION_POSITIONS) {
                let resized = resize_position_embedding(tensor, variable.dim(0)?)
                    .map_err(|problem| checkpoint.checkpoint_error(format!("{name}: {problem}")))?;
                tracing::info!(
                    from = tensor.dim(0)?,
                    to = resized.dim(0)?,
                    "resized the vision position embedding to the new input size"
                );
                resized
            } else {
                tensor.clone()
            };
            if tensor.dims() != variable.dims() {
                return Err(checkpoint.checkpoint_error(format!(
                    "{name} has shape {:?}, the model needs {:?}",
                    tensor.dims(),
                    variable.dims()
                )));
            }
            variable.set(&tensor.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    pub fn model(&self) -> &OwlModel {
        &self.model
    }

    pub fn step_count(&self) -> usize {
        self.optimiser.step
    }

    /// One optimisation step on `batch`, whose labels index `queries` (token
    /// rows of the step's queries: the batch's categories plus negatives).
    pub fn step(&mut self, batch: &[Sample], queries: &[Vec<u32>]) -> Result<Losses> {
        let size = self.config.vision.image_size;
        if batch.is_empty() || queries.is_empty() {
            return Err(ModelError::InvalidInput(
                "a step needs images and queries".into(),
            ));
        }
        let mut pixels = Vec::with_capacity(batch.len() * 3 * size * size);
        for sample in batch {
            if sample.pixels.len() != 3 * size * size || sample.boxes.len() != sample.labels.len() {
                return Err(ModelError::InvalidInput(format!(
                    "samples must be 3×{size}×{size} with one label per box"
                )));
            }
            pixels.extend_from_slice(&sample.pixels);
        }
        let pixels = Tensor::from_vec(pixels, (batch.len(), 3, size, size), &self.device)?;
        let outputs = self.model.image_outputs(&pixels)?;
        let text = self.model.embed_text(queries)?;
        let logits = self.model.class_logits(&outputs, &text, None)?;
        let (images, patches, count) = logits.dims3()?;

        // Match on the host, from detached values.
        let host_logits: Vec<f32> = logits.detach().flatten_all()?.to_vec1()?;
        let mut matches = Vec::with_capacity(images);
        for (b, sample) in batch.iter().enumerate() {
            let boxes = outputs.boxes.detach().get(b)?.to_vec2::<f32>()?;
            let boxes: Vec<[f32; 4]> = boxes
                .into_iter()
                .map(|v| [v[0], v[1], v[2], v[3]])
                .collect();
            let image_logits = &host_logits[b * patches * count..(b + 1) * patches * count];
            let pairs = match_predictions(
                image_logits,
                count,
                &boxes,
                &sample.boxes,
                &sample.labels,
                self.options.weights,
                self.options.focal,
            )?;
            matches.push(
                pairs
                    .into_iter()
                    .map(|(patch, target)| (patch, sample.boxes[target], sample.labels[target]))
                    .collect::<Vec<_>>(),
            );
        }
        let boxes_in_batch = matches.iter().map(Vec::len).sum::<usize>().max(1) as f64;
        let detection = detection_losses(
            &outputs,
            &logits,
            &matches,
            self.options.weights,
            self.options.focal,
            boxes_in_batch,
        )?;
        let mut total = detection.total;
        let spread = query_spread(&text)?;
        let spread_value = spread.to_scalar::<f32>()?;
        if self.options.query_spread > 0.0 {
            total = (total + (spread * self.options.query_spread)?)?;
        }
        let losses = Losses {
            spread: spread_value,
            total: total.to_scalar::<f32>()?,
            class: detection.class,
            l1: detection.l1,
            giou: detection.giou,
            objectness: detection.objectness,
        };
        self.optimiser
            .minimise(&self.weights, &total, &losses, &self.options)?;
        Ok(losses)
    }

    /// Writes the weights as a hub-layout safetensors file (a checkpoint's
    /// `model.safetensors`).
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        self.weights.save(path).map_err(|e| ModelError::Checkpoint {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Saves what resuming needs: optimiser moments and step.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        self.optimiser.save(path)
    }

    /// Restores weights (from `weights`) and optimiser state (from `state`).
    pub fn resume(&mut self, weights: &Path, state: &Path) -> Result<()> {
        self.weights
            .load(weights)
            .map_err(|e| ModelError::Checkpoint {
                path: weights.to_owned(),
                reason: e.to_string(),
            })?;
        self.optimiser = AdamW::load(state, &self.weights, &self.device)?;
        Ok(())
    }
}
