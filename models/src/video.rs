//! Video OWL-ViT's recurrent decoder (Heigold et al., "Video OWL-ViT:
//! Temporally-consistent open-world localization in video", ICCV 2023): a
//! light transformer decoder over an OWL backbone's image tokens whose
//! output object tokens on one frame are its object queries on the next, so
//! a query slot follows its object through time without frame-to-frame
//! matching.
//!
//! Each layer is self-attention among the slots, cross-attention to the
//! frame's image tokens and an MLP (pre-norm, residual). Heads on the
//! output tokens predict each slot's box as a refinement of its previous
//! box (in logit space), a class embedding with OWL's per-box logit shift
//! and scale — scored against text queries exactly as OWL's class head is —
//! and objectness. The outputs have the shape of an image's
//! [`ImageOutputs`] (one "patch" per slot), so post-processing, class
//! logits and tracking read them unchanged.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::clip::{layer_norm, Dense, LayerNorm};
use crate::error::{ModelError, Result};
use crate::owl::{
    linear_with_bias_init, ImageOutputs, INITIAL_LOGIT_SCALE_BIAS, INITIAL_LOGIT_SHIFT, PRIOR_LOGIT,
};

/// Where a checkpoint keeps its decoder, beside the backbone's files.
pub const DECODER_WEIGHTS: &str = "video_decoder.safetensors";
pub const DECODER_CONFIG: &str = "video_decoder.json";

/// Every size of the decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecoderConfig {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    /// Object query slots per frame.
    pub queries: usize,
    /// MLP hidden width over `width`.
    pub mlp_ratio: usize,
    /// Width of the backbone's image tokens (its vision hidden size).
    pub image_width: usize,
    /// Width of class embeddings: the text tower's projection size.
    pub embed_dim: usize,
    pub layer_norm_eps: f64,
    /// Start the first frame's slots on the most object-like patches (as
    /// two-stage DETR) instead of at learned queries and boxes.
    pub seed_from_patches: bool,
    /// Where the memory's patches are: their cells of the grid, or the
    /// boxes the detector's box head predicts for them.
    pub positions: Positions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    #[default]
    Grid,
    PatchBoxes,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            layers: 2,
            width: 128,
            heads: 4,
            queries: 16,
            mlp_ratio: 4,
            image_width: 768,
            embed_dim: 512,
            layer_norm_eps: 1e-5,
            seed_from_patches: false,
            positions: Positions::Grid,
        }
    }
}

impl DecoderConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            self.layers,
            self.width,
            self.heads,
            self.queries,
            self.mlp_ratio,
            self.image_width,
            self.embed_dim,
        ];
        if positive.contains(&0) || !self.width.is_multiple_of(self.heads) {
            return Err(ModelError::InvalidInput(format!(
                "decoder sizes must be positive and the width divisible by the heads: {self:?}"
            )));
        }
        Ok(())
    }
}

/// What one frame hands to the next: the slots' output tokens and boxes.
#[derive(Debug, Clone)]
pub struct DecoderState {
    /// (B, K, W)
    pub tokens: Tensor,
    /// (B, K, 4) box logits: sigmoid gives (cx, cy, w, h) in [0, 1].
    pub box_logits: Tensor,
}

struct Attention {
    q: Dense,
    k: Dense,
    v: Dense,
    out: Dense,
    heads: usize,
}

impl Attention {
    fn new(vb: VarBuilder, width: usize, heads: usize) -> candle_core::Result<Self> {
        Ok(Attention {
            q: Dense::load(vb.pp("q_proj"), width, width, true)?,
            k: Dense::load(vb.pp("k_proj"), width, width, true)?,
            v: Dense::load(vb.pp("v_proj"), width, width, true)?,
            out: Dense::load(vb.pp("out_proj"), width, width, true)?,
            heads,
        })
    }

    /// (B, T, W) → (B, H, T, W/H)
    fn split(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, width) = xs.dims3()?;
        xs.reshape((batch, tokens, self.heads, width / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, queries: &Tensor, memory: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, slots, width) = queries.dims3()?;
        let scale = ((width / self.heads) as f64).powf(-0.5);
        let q = self.split(&(self.q.forward(queries)? * scale)?)?;
        let k = self.split(&self.k.forward(memory)?)?;
        let v = self.split(&self.v.forward(memory)?)?;
        let weights = q.matmul(&k.t()?.contiguous()?)?;
        let weights = if weights.track_op() {
            candle_nn::ops::softmax(&weights, D::Minus1)?
        } else {
            crate::kernels::softmax_last_dim(&weights)?
        };
        let attended = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, slots, width))?;
        self.out.forward(&attended)
    }
}

struct Layer {
    self_norm: LayerNorm,
    self_attention: Attention,
    cross_norm: LayerNorm,
    cross_attention: Attention,
    mlp_norm: LayerNorm,
    fc1: Dense,
    fc2: Dense,
}

impl Layer {
    fn new(vb: VarBuilder, config: &DecoderConfig) -> candle_core::Result<Self> {
        let (w, eps) = (config.width, config.layer_norm_eps);
        Ok(Layer {
            self_norm: layer_norm(w, eps, vb.pp("self_norm"))?,
            self_attention: Attention::new(vb.pp("self_attn"), w, config.heads)?,
            cross_norm: layer_norm(w, eps, vb.pp("cross_norm"))?,
            cross_attention: Attention::new(vb.pp("cross_attn"), w, config.heads)?,
            mlp_norm: layer_norm(w, eps, vb.pp("mlp_norm"))?,
            fc1: Dense::load(vb.pp("fc1"), w, w * config.mlp_ratio, true)?,
            fc2: Dense::load(vb.pp("fc2"), w * config.mlp_ratio, w, true)?,
        })
    }

    fn forward(&self, xs: &Tensor, memory: &Tensor) -> candle_core::Result<Tensor> {
        let normed = self.self_norm.forward(xs)?;
        let xs = (xs + self.self_attention.forward(&normed, &normed)?)?;
        let normed = self.cross_norm.forward(&xs)?;
        let xs = (&xs + self.cross_attention.forward(&normed, memory)?)?;
        let hidden = self.fc1.forward(&self.mlp_norm.forward(&xs)?)?.gelu()?;
        &xs + self.fc2.forward(&hidden)?
    }
}

/// The box (cx, cy, w, h) of each of `tokens` patches of a square grid,
/// row by row: where each image token sits.
fn grid_boxes(tokens: usize, device: &candle_core::Device) -> Result<Tensor> {
    let side = (tokens as f64).sqrt().round() as usize;
    if side * side != tokens {
        return Err(ModelError::InvalidInput(format!(
            "{tokens} image tokens do not form a square grid"
        )));
    }
    let cell = 1.0 / side as f32;
    let mut boxes = Vec::with_capacity(tokens * 4);
    for row in 0..side {
        for column in 0..side {
            boxes.extend_from_slice(&[
                (column as f32 + 0.5) * cell,
                (row as f32 + 0.5) * cell,
                cell,
                cell,
            ]);
        }
    }
    Ok(Tensor::from_vec(boxes, (tokens, 4), device)?)
}

/// The recurrent decoder with its heads.
pub struct VideoDecoder {
    config: DecoderConfig,
    dtype: DType,
    /// The first frame's queries, (K, W), and their boxes as logits, (K, 4).
    query_tokens: Tensor,
    query_boxes: Tensor,
    memory_proj: Dense,
    memory_norm: LayerNorm,
    /// With `seed_from_patches`.
    seed_proj: Option<Dense>,
    box_embed: Dense,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    box_hidden: Dense,
    box_delta: Dense,
    class_embed: Dense,
    logit_shift: Linear,
    logit_scale: Linear,
    objectness: Linear,
}

impl VideoDecoder {
    pub fn new(config: DecoderConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let (w, k) = (config.width, config.queries);
        let query_tokens = vb.get_with_hints(
            (k, w),
            "query_tokens",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        // Initial boxes spread over the frame, mid-sized (logits ≈ 0 → 0.5).
        let query_boxes = vb.get_with_hints(
            (k, 4),
            "query_boxes",
            candle_nn::Init::Uniform { lo: -1.5, up: 1.5 },
        )?;
        let layers = (0..config.layers)
            .map(|i| Layer::new(vb.pp(format!("layers.{i}")), &config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(VideoDecoder {
            dtype: vb.dtype(),
            query_tokens,
            query_boxes,
            memory_proj: Dense::load(vb.pp("memory_proj"), config.image_width, w, true)?,
            memory_norm: layer_norm(w, config.layer_norm_eps, vb.pp("memory_norm"))?,
            seed_proj: config
                .seed_from_patches
                .then(|| Dense::load(vb.pp("seed_proj"), config.image_width, w, true))
                .transpose()?,
            box_embed: Dense::load(vb.pp("box_embed"), 4, w, true)?,
            layers,
            final_norm: layer_norm(w, config.layer_norm_eps, vb.pp("final_norm"))?,
            box_hidden: Dense::load(vb.pp("box_head.dense0"), w, w, true)?,
            box_delta: Dense::load(vb.pp("box_head.dense1"), w, 4, true)?,
            class_embed: Dense::load(vb.pp("class_head.dense0"), w, config.embed_dim, true)?,
            // The detector's starting point: scores near the focal loss's
            // prior, so the first steps need not learn that most slots are
            // empty.
            logit_shift: linear_with_bias_init(
                w,
                vb.pp("class_head.logit_shift"),
                INITIAL_LOGIT_SHIFT,
            )?,
            logit_scale: linear_with_bias_init(
                w,
                vb.pp("class_head.logit_scale"),
                INITIAL_LOGIT_SCALE_BIAS,
            )?,
            objectness: linear_with_bias_init(w, vb.pp("objectness_head"), PRIOR_LOGIT)?,
            config,
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The first frame's state for `image` (the first frames of B clips).
    /// With `seed_from_patches` and objectness, the slots start on the K most
    /// object-like patches, as two-stage DETR seeds its queries: each slot is
    /// its patch's token (projected) plus its learned query, at its patch's
    /// box. Otherwise, the learned queries at their learned boxes.
    pub fn initial_state(&self, image: &ImageOutputs) -> Result<DecoderState> {
        let (batch, patches, _) = image.tokens.dims3()?;
        let (k, w) = (self.config.queries, self.config.width);
        let learned = self
            .query_tokens
            .unsqueeze(0)?
            .broadcast_as((batch, k, w))?
            .contiguous()?;
        let (Some(objectness), Some(seed_proj), true) =
            (&image.objectness, &self.seed_proj, patches >= k)
        else {
            return Ok(DecoderState {
                tokens: learned,
                box_logits: self
                    .query_boxes
                    .unsqueeze(0)?
                    .broadcast_as((batch, k, 4))?
                    .contiguous()?,
            });
        };
        let scores = objectness.detach().to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let (mut tokens, mut boxes) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
        for (b, scores) in scores.iter().enumerate() {
            let mut order: Vec<u32> = (0..patches as u32).collect();
            order.sort_by(|&i, &j| scores[j as usize].total_cmp(&scores[i as usize]));
            order.truncate(k);
            let chosen = Tensor::from_vec(order, k, image.tokens.device())?;
            tokens.push(image.tokens.get(b)?.index_select(&chosen, 0)?);
            boxes.push(image.boxes.get(b)?.index_select(&chosen, 0)?);
        }
        let seeds = Tensor::stack(&tokens, 0)?.detach();
        let boxes = Tensor::stack(&boxes, 0)?
            .detach()
            .to_dtype(self.dtype)?
            .clamp(1e-4, 1.0 - 1e-4)?;
        let box_logits = (boxes.log()? - boxes.affine(-1.0, 1.0)?.log()?)?;
        Ok(DecoderState {
            tokens: (seed_proj.forward(&seeds)? + learned)?,
            box_logits,
        })
    }

    /// One frame: the slots of `state` attend to the frame's image tokens;
    /// returns the frame's outputs (one entry per slot) and the state for
    /// the next frame. `image` is the backbone's output for the frame with
    /// the detector's heads (B, N patches).
    pub fn step(
        &self,
        image: &ImageOutputs,
        state: &DecoderState,
    ) -> Result<(ImageOutputs, DecoderState)> {
        let (batch, _, width) = image.tokens.dims3()?;
        if width != self.config.image_width || state.tokens.dim(0)? != batch {
            return Err(ModelError::InvalidInput(format!(
                "the decoder reads {}-wide image tokens for {} clips, got {width}-wide for {batch}",
                self.config.image_width,
                state.tokens.dim(0)?
            )));
        }
        // The tokens say what is in each patch, not where (the detector's
        // box head adds that): the memory gets each patch's position — its
        // grid cell or its predicted box — through the same box embedding
        // the slots' boxes go through, so a slot finds what lies where it is.
        let positions = match self.config.positions {
            Positions::Grid => grid_boxes(image.tokens.dim(1)?, image.tokens.device())?
                .to_dtype(self.dtype)?
                .unsqueeze(0)?,
            Positions::PatchBoxes => image.boxes.detach(),
        };
        let memory = self
            .memory_norm
            .forward(&self.memory_proj.forward(&image.tokens)?)?
            .broadcast_add(&self.box_embed.forward(&positions)?)?;
        let boxes_in = candle_nn::ops::sigmoid(&state.box_logits)?;
        let mut xs = (&state.tokens + self.box_embed.forward(&boxes_in)?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &memory)?;
        }
        let xs = self.final_norm.forward(&xs)?;
        let delta = self
            .box_delta
            .forward(&self.box_hidden.forward(&xs)?.gelu()?)?;
        let box_logits = (&state.box_logits + delta)?;
        let boxes = candle_nn::ops::sigmoid(&box_logits)?;
        let class_embeds = self.class_embed.forward(&xs)?;
        let logit_shift = self.logit_shift.forward(&xs)?;
        let logit_scale = (self.logit_scale.forward(&xs)?.elu(1.0)? + 1.0)?;
        let objectness = self.objectness.forward(&xs)?.squeeze(D::Minus1)?;
        let outputs = ImageOutputs {
            tokens: xs.clone(),
            grid: (1, self.config.queries),
            boxes,
            class_embeds,
            logit_shift,
            logit_scale,
            objectness: Some(objectness),
        };
        Ok((
            outputs,
            DecoderState {
                tokens: xs,
                box_logits,
            },
        ))
    }
}
