//! OWL-ViT / OWLv2 detection (`OwlViTForObjectDetection`,
//! `Owlv2ForObjectDetection`): the CLIP towers plus the heads that turn every
//! image patch into a box, a class embedding and (OWLv2) an objectness score.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, linear_no_bias, Linear, VarBuilder};

use crate::clip::{l2_norm, layer_norm, LayerNorm, TextTransformer, VisionTransformer};
use crate::config::OwlConfig;
use crate::error::{ModelError, Result};
use crate::preprocess::OwlVersion;

/// Three dense layers with exact GELU between them (`OwlViTBoxPredictionHead`;
/// OWLv2's objectness head is the same with one output).
struct DenseHead {
    dense0: Linear,
    dense1: Linear,
    dense2: Linear,
}

impl DenseHead {
    /// `output_bias`: the constant a one-output head starts at when trained
    /// from scratch.
    fn new(vb: VarBuilder, width: usize, out: usize, output_bias: Option<f64>) -> Result<Self> {
        let dense2 = match output_bias {
            Some(bias) if out == 1 => linear_with_bias_init(width, vb.pp("dense2"), bias)?,
            _ => linear(width, out, vb.pp("dense2"))?,
        };
        Ok(DenseHead {
            dense0: linear(width, width, vb.pp("dense0"))?,
            dense1: linear(width, width, vb.pp("dense1"))?,
            dense2,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let xs = self.dense0.forward(xs)?.gelu_erf()?;
        let xs = self.dense1.forward(&xs)?.gelu_erf()?;
        self.dense2.forward(&xs)
    }
}

/// `OwlViTClassPredictionHead`.
struct ClassHead {
    dense0: Linear,
    logit_shift: Linear,
    logit_scale: Linear,
}

/// Everything the detector computes from one batch of images that does not
/// depend on the queries, so trackers and query edits reuse it.
#[derive(Debug, Clone)]
pub struct ImageOutputs {
    /// Patch tokens after the class-token merge and layer norm, (B, N, D):
    /// what OWL-ViT calls the feature map, flattened row by row.
    pub tokens: Tensor,
    /// Patches per side (rows, columns).
    pub grid: (usize, usize),
    /// Boxes as (cx, cy, w, h) in [0, 1] of the model's input square, (B, N, 4).
    pub boxes: Tensor,
    /// Class embeddings of every patch before normalisation, (B, N, E).
    pub class_embeds: Tensor,
    /// The class head's per-patch logit shift and scale (already `elu + 1`), (B, N, 1).
    pub logit_shift: Tensor,
    pub logit_scale: Tensor,
    /// OWLv2's objectness logits, (B, N); None for OWL-ViT.
    pub objectness: Option<Tensor>,
}

impl ImageOutputs {
    /// Image `index`'s boxes as (cx, cy, w, h) arrays on the host.
    pub fn boxes_of(&self, index: usize) -> candle_core::Result<Vec<[f32; 4]>> {
        Ok(self
            .boxes
            .get(index)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect())
    }

    /// Several images' outputs as one batch.
    pub fn concat(parts: &[&ImageOutputs]) -> candle_core::Result<ImageOutputs> {
        let first = parts
            .first()
            .ok_or_else(|| candle_core::Error::Msg("nothing to concatenate".into()))?;
        let cat = |pick: fn(&ImageOutputs) -> &Tensor| -> candle_core::Result<Tensor> {
            Tensor::cat(&parts.iter().map(|p| pick(p)).collect::<Vec<_>>(), 0)
        };
        let objectness = match parts
            .iter()
            .map(|p| p.objectness.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(all) => Some(Tensor::cat(&all, 0)?),
            None => None,
        };
        Ok(ImageOutputs {
            tokens: cat(|p| &p.tokens)?,
            grid: first.grid,
            boxes: cat(|p| &p.boxes)?,
            class_embeds: cat(|p| &p.class_embeds)?,
            logit_shift: cat(|p| &p.logit_shift)?,
            logit_scale: cat(|p| &p.logit_scale)?,
            objectness,
        })
    }

    /// The outputs of image `index` alone, as a batch of one.
    pub fn select(&self, index: usize) -> candle_core::Result<ImageOutputs> {
        let one = |t: &Tensor| t.narrow(0, index, 1);
        Ok(ImageOutputs {
            tokens: one(&self.tokens)?,
            grid: self.grid,
            boxes: one(&self.boxes)?,
            class_embeds: one(&self.class_embeds)?,
            logit_shift: one(&self.logit_shift)?,
            logit_scale: one(&self.logit_scale)?,
            objectness: self.objectness.as_ref().map(one).transpose()?,
        })
    }

    /// Logits (B, N, Q) of every patch (or decoder slot) against every query embedding (Q, E);
    /// `query_mask[q] == false` marks padding queries, which get the lowest
    /// finite logit as in transformers.
    pub fn class_logits(&self, queries: &Tensor, query_mask: Option<&[bool]>) -> Result<Tensor> {
        let image = self.normalized_class_embeds()?;
        let queries = queries.to_dtype(image.dtype())?;
        let queries = queries.broadcast_div(&(l2_norm(&queries)? + 1e-6)?)?;
        let logits = image.broadcast_matmul(&queries.t()?)?;
        let logits = logits
            .broadcast_add(&self.logit_shift)?
            .broadcast_mul(&self.logit_scale)?;
        let logits = logits.to_dtype(DType::F32)?;
        match query_mask {
            None => Ok(logits),
            Some(mask) => {
                let count = queries.dim(0)?;
                if mask.len() != count {
                    return Err(ModelError::InvalidInput(format!(
                        "query mask has {} entries for {count} queries",
                        mask.len()
                    )));
                }
                let keep: Vec<u8> = mask.iter().map(|&m| u8::from(m)).collect();
                let keep = Tensor::from_vec(keep, count, logits.device())?;
                let lowest = Tensor::full(f32::MIN, logits.shape(), logits.device())?;
                Ok(keep
                    .broadcast_as(logits.shape())?
                    .where_cond(&logits, &lowest)?)
            }
        }
    }

    /// Class embeddings divided by their norm (+1e-6), as the class head
    /// compares them: the appearance descriptor trackers use.
    pub fn normalized_class_embeds(&self) -> candle_core::Result<Tensor> {
        self.class_embeds
            .broadcast_div(&(l2_norm(&self.class_embeds)? + 1e-6)?)
    }
}

/// An OWL detector with its weights on one device, in one dtype.
pub struct OwlModel {
    config: OwlConfig,
    vision: VisionTransformer,
    text: TextTransformer,
    text_projection: Linear,
    layer_norm: LayerNorm,
    class_head: ClassHead,
    box_head: DenseHead,
    objectness_head: Option<DenseHead>,
    box_bias: Tensor,
    device: Device,
    dtype: DType,
}

impl OwlModel {
    /// Builds the model from weights named as in hub checkpoints.
    pub fn new(config: OwlConfig, vb: VarBuilder) -> Result<Self> {
        let device = vb.device().clone();
        let dtype = vb.dtype();
        let towers = vb.pp(config.prefix());
        let vision = VisionTransformer::new(towers.pp("vision_model"), &config.vision)?;
        let text = TextTransformer::new(towers.pp("text_model"), &config.text)?;
        let text_projection = linear_no_bias(
            config.text.hidden_size,
            config.projection_dim,
            towers.pp("text_projection"),
        )?;
        let width = config.vision.hidden_size;
        let class_vb = vb.pp("class_head");
        let class_head = ClassHead {
            dense0: linear(width, config.text.hidden_size, class_vb.pp("dense0"))?,
            logit_shift: linear_with_bias_init(
                width,
                class_vb.pp("logit_shift"),
                INITIAL_LOGIT_SHIFT,
            )?,
            logit_scale: linear_with_bias_init(
                width,
                class_vb.pp("logit_scale"),
                INITIAL_LOGIT_SCALE_BIAS,
            )?,
        };
        let objectness_head = match config.version {
            OwlVersion::V1 => None,
            // Objectness starts at the same prior.
            OwlVersion::V2 => Some(DenseHead::new(
                vb.pp("objectness_head"),
                width,
                1,
                Some(PRIOR_LOGIT),
            )?),
        };
        let grid = config.grid_size();
        Ok(OwlModel {
            vision,
            text,
            text_projection,
            layer_norm: layer_norm(width, config.vision.layer_norm_eps, vb.pp("layer_norm"))?,
            class_head,
            box_head: DenseHead::new(vb.pp("box_head"), width, 4, None)?,
            objectness_head,
            box_bias: box_bias(grid, grid, &device)?.to_dtype(dtype)?,
            config,
            device,
            dtype,
        })
    }

    pub fn config(&self) -> &OwlConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Embeds token rows (BOS … EOS, padded) into L2-normalised query
    /// embeddings (Q, E), as `OwlViTModel.get_text_features` then the
    /// normalisation of its forward.
    pub fn embed_text(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let pooled = self.text.forward(ids, &self.device)?;
        let projected = self.text_projection.forward(&pooled)?;
        Ok(projected.broadcast_div(&l2_norm(&projected)?)?)
    }

    /// Runs the image tower and every query-independent head on normalised
    /// pixels (B, 3, S, S).
    pub fn image_outputs(&self, pixels: &Tensor) -> Result<ImageOutputs> {
        let tokens = self.backbone(pixels)?;
        self.heads(tokens)
    }

    /// The image tower: merged patch tokens `layer_norm(patch ⊙ cls)`,
    /// (B, N, D), what every head reads.
    pub fn backbone(&self, pixels: &Tensor) -> Result<Tensor> {
        let size = self.config.vision.image_size;
        let (_, channels, height, width) = pixels.dims4()?;
        if channels != 3 || height != size || width != size {
            return Err(ModelError::InvalidInput(format!(
                "pixels must be (B, 3, {size}, {size}), got {:?}",
                pixels.dims()
            )));
        }
        let pixels = pixels.to_dtype(self.dtype)?;
        let hidden = self.vision.forward(&pixels)?;
        let hidden = self.vision.post_layernorm.forward(&hidden)?;
        let tokens = hidden.dim(1)?;
        // layer_norm(patch ⊙ class token)
        let class_token = hidden.narrow(1, 0, 1)?;
        let patches = hidden.narrow(1, 1, tokens - 1)?;
        Ok(self
            .layer_norm
            .forward(&patches.broadcast_mul(&class_token)?)?)
    }

    /// Box, class and objectness heads over the backbone's tokens.
    pub fn heads(&self, merged: Tensor) -> Result<ImageOutputs> {
        let boxes = candle_nn::ops::sigmoid(
            &self
                .box_head
                .forward(&merged)?
                .broadcast_add(&self.box_bias)?,
        )?;
        let class_embeds = self.class_head.dense0.forward(&merged)?;
        let logit_shift = self.class_head.logit_shift.forward(&merged)?;
        let logit_scale = (self.class_head.logit_scale.forward(&merged)?.elu(1.0)? + 1.0)?;
        let objectness = match &self.objectness_head {
            Some(head) => Some(head.forward(&merged)?.squeeze(D::Minus1)?),
            None => None,
        };
        let grid = self.config.grid_size();
        Ok(ImageOutputs {
            tokens: merged,
            grid: (grid, grid),
            boxes,
            class_embeds,
            logit_shift,
            logit_scale,
            objectness,
        })
    }

    /// Logits (B, N, Q) of every patch against every query embedding (Q, E);
    /// `query_mask[q] == false` marks padding queries, which get the lowest
    /// finite logit as in transformers.
    pub fn class_logits(
        &self,
        outputs: &ImageOutputs,
        queries: &Tensor,
        query_mask: Option<&[bool]>,
    ) -> Result<Tensor> {
        outputs.class_logits(queries, query_mask)
    }

    /// The embedding that makes an example image a query, as transformers'
    /// `embed_image_query`: among the patches whose box overlaps the whole
    /// image best (IoU within 80% of the best), the one least like the
    /// image's average. Returns (embedding (E,), patch index).
    pub fn embed_image_query(&self, example: &ImageOutputs) -> Result<(Tensor, usize)> {
        let boxes = example.boxes_of(0)?;
        let embeds = example.class_embeds.get(0)?.to_dtype(DType::F32)?;
        let corners: Vec<[f32; 4]> = boxes
            .iter()
            .map(|b| crate::boxes::center_to_corners(*b))
            .collect();
        let whole = [0.0, 0.0, 1.0, 1.0];
        let mut overlap: Vec<f32> = corners
            .iter()
            .map(|b| crate::boxes::iou(&whole, b))
            .collect();
        if overlap.iter().all(|&v| v == 0.0) {
            overlap = corners
                .iter()
                .map(|b| crate::boxes::generalized_iou(&whole, b))
                .collect();
        }
        let best = overlap.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let threshold = best * 0.8;
        let selected: Vec<usize> = (0..overlap.len())
            .filter(|&i| overlap[i] >= threshold)
            .collect();
        let mean = embeds.mean(0)?;
        let rows = embeds.to_vec2::<f32>()?;
        let mean = mean.to_vec1::<f32>()?;
        let similarity = |i: usize| rows[i].iter().zip(&mean).map(|(a, b)| a * b).sum::<f32>();
        let chosen = selected
            .iter()
            .copied()
            .min_by(|&a, &b| similarity(a).total_cmp(&similarity(b)))
            .ok_or_else(|| ModelError::InvalidInput("the example image has no patches".into()))?;
        Ok((embeds.get(chosen)?, chosen))
    }
}

/// Initial values for training from scratch (ignored when loading): logits
/// start near the focal loss's usual prior (p ≈ 0.01), so training does not
/// spend its first hundreds of steps learning that most patches are
/// background; and a class-similarity scale of about 11, so that differences
/// in cosine similarity move the logits from the start.
pub(crate) const PRIOR_LOGIT: f64 = -4.6;
pub(crate) const INITIAL_LOGIT_SCALE_BIAS: f64 = 10.0;
pub(crate) const INITIAL_LOGIT_SHIFT: f64 = PRIOR_LOGIT / (INITIAL_LOGIT_SCALE_BIAS + 1.0);

/// A (width → 1) layer that starts as the constant `bias` when trained from
/// scratch: random weights here would be multiplied by the similarity scale
/// and swamp the prior.
pub(crate) fn linear_with_bias_init(
    width: usize,
    vb: VarBuilder,
    bias: f64,
) -> candle_core::Result<Linear> {
    let weight = vb.get_with_hints((1, width), "weight", candle_nn::Init::Const(0.0))?;
    let bias = vb.get_with_hints(1, "bias", candle_nn::Init::Const(bias))?;
    Ok(Linear::new(weight, Some(bias)))
}

/// The grid box bias: inverse-sigmoid of each patch's corner position and of
/// the patch size, so an untrained head predicts its own patch
/// (`compute_box_bias`, with its 1e-4 guard).
fn box_bias(rows: usize, cols: usize, device: &Device) -> candle_core::Result<Tensor> {
    let logit = |v: f32| (v + 1e-4).ln() - (-v + 1e-4).ln_1p();
    let (w_bias, h_bias) = (logit(1.0 / cols as f32), logit(1.0 / rows as f32));
    let mut bias = Vec::with_capacity(rows * cols * 4);
    for r in 0..rows {
        for c in 0..cols {
            let x = ((c + 1) as f32 / cols as f32).clamp(0.0, 1.0);
            let y = ((r + 1) as f32 / rows as f32).clamp(0.0, 1.0);
            bias.extend_from_slice(&[logit(x), logit(y), w_bias, h_bias]);
        }
    }
    Tensor::from_vec(bias, (rows * cols, 4), device)
}

/// The architecture of `config` with random weights, for benchmarks: nothing
/// to download, the same computation as a real checkpoint.
pub fn random_model(config: &OwlConfig, device: &Device, dtype: DType) -> Result<OwlModel> {
    let weights = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&weights, dtype, device);
    OwlModel::new(config.clone(), vb)
}
