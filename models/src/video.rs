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

use crate::boxes::{center_to_corners, iou};
use crate::clip::{layer_norm, Dense, LayerNorm};
use crate::detect::sigmoid;
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
    /// Give idle slots new objects on later frames too (needs
    /// `seed_from_patches`); None: only the first frame is seeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reseed: Option<Reseed>,
    /// How boxes (the slots' and the memory's positions) are embedded.
    pub box_encoding: BoxEncoding,
    /// Each slot keeps the query it started from (its seed, or its learned
    /// query), and it joins the slot's attention queries in every layer on
    /// every frame, as DETR's query embeddings do: what the slot was seeded
    /// on keeps steering what it reads, however its state evolves. Without
    /// it the class and objectness heads learn on a clip's first frame only.
    pub persistent_queries: bool,
    /// Tracking setting: each frame, a slot takes the box and objectness of
    /// the most object-like patch whose predicted box overlaps the slot's by
    /// at least this IoU (the detector's view of the object under the
    /// slot); slots overlapping none score the frame's lowest objectness,
    /// so that reseeding recycles slots that drifted off their objects.
    /// None: the decoder's own boxes and objectness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_iou: Option<f32>,
}

/// The box embedding. `Linear` maps (cx, cy, w, h) linearly: attention
/// scores between two such embeddings are bilinear in the coordinates, so a
/// slot can prefer a direction but cannot attend to what lies *near* it.
/// `Sine` embeds each coordinate by sines and cosines at
/// `SINE_FREQUENCIES` frequencies from 1 to 32 cycles over the image,
/// then an MLP (as DAB-DETR): products of such features contain
/// cos(ω (a − b)), a kernel peaked where two boxes coincide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxEncoding {
    #[default]
    Linear,
    Sine,
}

const SINE_FREQUENCIES: usize = 16;
const SINE_MAX_CYCLES: f64 = 32.0;

/// Slots (re)seeded from patches: their recurrent state, boxes and, with
/// persistent queries, their anchors.
struct Seeded {
    tokens: Tensor,
    box_logits: Tensor,
    anchors: Option<Tensor>,
}

/// Boxes (…, 4) to the decoder's width.
struct BoxEmbed {
    /// Sine features' angular frequencies (1, F), with `Sine`.
    frequencies: Option<Tensor>,
    first: Dense,
    second: Option<Dense>,
}

impl BoxEmbed {
    fn new(vb: VarBuilder, encoding: BoxEncoding, width: usize) -> candle_core::Result<Self> {
        match encoding {
            BoxEncoding::Linear => Ok(BoxEmbed {
                frequencies: None,
                first: Dense::load(vb, 4, width, true)?,
                second: None,
            }),
            BoxEncoding::Sine => {
                let frequencies: Vec<f32> = (0..SINE_FREQUENCIES)
                    .map(|i| {
                        let octave = i as f64 / (SINE_FREQUENCIES - 1) as f64;
                        (std::f64::consts::TAU * SINE_MAX_CYCLES.powf(octave)) as f32
                    })
                    .collect();
                Ok(BoxEmbed {
                    frequencies: Some(
                        Tensor::from_vec(frequencies, (1, SINE_FREQUENCIES), vb.device())?
                            .to_dtype(vb.dtype())?,
                    ),
                    first: Dense::load(vb.pp("dense0"), 8 * SINE_FREQUENCIES, width, true)?,
                    second: Some(Dense::load(vb.pp("dense1"), width, width, true)?),
                })
            }
        }
    }

    fn forward(&self, boxes: &Tensor) -> candle_core::Result<Tensor> {
        let Some(frequencies) = &self.frequencies else {
            return self.first.forward(boxes);
        };
        let angles = boxes.unsqueeze(D::Minus1)?.broadcast_mul(frequencies)?;
        let features = Tensor::cat(&[angles.sin()?, angles.cos()?], D::Minus1)?;
        let features = features.flatten_from(features.rank() - 2)?;
        let hidden = self.first.forward(&features)?;
        match &self.second {
            Some(second) => second.forward(&hidden.gelu()?),
            None => Ok(hidden),
        }
    }
}

/// Slots that have scored below `below` (objectness probability) for
/// `after` frames in a row, and duplicates (see `duplicate_slots`), are
/// seeded again, on the next frame, from its most object-like patches that
/// no other slot covers. Without it a slot whose object left stays empty,
/// and objects that enter later are found only if a free slot happens to
/// drift onto them; `after` > 1 lets a slot keep its object through a short
/// occlusion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reseed {
    pub below: f32,
    pub after: u32,
}

/// The objectness under which a reseeding slot counts as idle, where no
/// setting says otherwise.
pub const DEFAULT_RESEED_BELOW: f32 = 0.1;

/// A candidate patch overlapping a slot's box more than this is taken to be
/// that slot's object already.
const SEED_COVER_IOU: f32 = 0.5;

/// In anchoring, a patch overlapping an already anchored slot's patch more
/// than this is taken to be that slot's object. Lower than
/// `SEED_COVER_IOU`: a second slot on an object's other, partial patch
/// cost more identity switches on the validation sets (seeds 4000 and 4100)
/// than a slot left idle while two objects overlap.
const ANCHOR_COVER_IOU: f32 = 0.3;

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
            reseed: None,
            box_encoding: BoxEncoding::Linear,
            persistent_queries: false,
            anchor_iou: None,
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
        if let Some(reseed) = self.reseed {
            if !self.seed_from_patches || !(0.0..=1.0).contains(&reseed.below) || reseed.after == 0
            {
                return Err(ModelError::InvalidInput(format!(
                    "reseeding needs seeding from patches, a threshold in [0, 1] and at least one frame: {reseed:?}"
                )));
            }
        }
        if let Some(min_iou) = self.anchor_iou {
            if !(min_iou > 0.0 && min_iou <= 1.0) {
                return Err(ModelError::InvalidInput(format!(
                    "the anchoring IoU must lie in (0, 1], got {min_iou}"
                )));
            }
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
    /// Per clip and slot: frames in a row the slot has scored below the
    /// reseeding threshold (all 0 without reseeding).
    pub idle: Vec<Vec<u32>>,
    /// Per clip and slot: the slot was reseeded on the frame this state
    /// comes from, so from there on it follows a different object.
    pub reseeded: Vec<Vec<bool>>,
    /// Per clip and slot: frames since the slot was (re)seeded.
    pub age: Vec<Vec<u32>>,
    /// With `persistent_queries`: each slot's starting query (B, K, W).
    pub anchors: Option<Tensor>,
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

    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        values: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (batch, slots, width) = queries.dims3()?;
        let scale = ((width / self.heads) as f64).powf(-0.5);
        let q = self.split(&(self.q.forward(queries)? * scale)?)?;
        let k = self.split(&self.k.forward(keys)?)?;
        let v = self.split(&self.v.forward(values)?)?;
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

    /// `anchors` (persistent queries) join the attention queries (and the
    /// slots' keys), as DETR's query embeddings do, never the residual
    /// stream: the slots' outputs hold only what they read this frame.
    fn forward(
        &self,
        xs: &Tensor,
        memory: &Tensor,
        anchors: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let with_anchors = |t: Tensor| match anchors {
            Some(a) => t + a,
            None => Ok(t),
        };
        let normed = self.self_norm.forward(xs)?;
        let query = with_anchors(normed.clone())?;
        let xs = (xs + self.self_attention.forward(&query, &query, &normed)?)?;
        let normed = with_anchors(self.cross_norm.forward(&xs)?)?;
        let xs = (&xs + self.cross_attention.forward(&normed, memory, memory)?)?;
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

/// Per clip, each patch's objectness logit and box, read to the host for
/// choosing seeds; None without objectness.
#[allow(clippy::type_complexity)]
fn patch_candidates(image: &ImageOutputs) -> Result<Option<(Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>)>> {
    let Some(objectness) = &image.objectness else {
        return Ok(None);
    };
    Ok(Some((
        objectness.detach().to_dtype(DType::F32)?.to_vec2::<f32>()?,
        image
            .boxes
            .detach()
            .to_dtype(DType::F32)?
            .to_vec3::<f32>()?,
    )))
}

/// Slots whose box covers an older slot's (IoU above `SEED_COVER_IOU`;
/// of two as old, the later one): two slots on one object. Reseeding
/// frees them by rule, where the decoder would have to learn duplicate
/// suppression — and training, until it has, asks a slot on an object to
/// score no-object because another slot holds that object.
fn duplicate_slots(boxes: &[Vec<f32>], ages: &[u32]) -> Vec<usize> {
    let boxes: Vec<[f32; 4]> = boxes.iter().map(|b| corners(b)).collect();
    (0..boxes.len())
        .filter(|&k| {
            (0..boxes.len()).any(|other| {
                let older = ages[other] > ages[k] || (ages[other] == ages[k] && other < k);
                other != k && older && iou(&boxes[k], &boxes[other]) > SEED_COVER_IOU
            })
        })
        .collect()
}

fn corners(b: &[f32]) -> [f32; 4] {
    center_to_corners([b[0], b[1], b[2], b[3]])
}

/// Up to `count` patches, most object-like first, each covering no box of
/// `taken` (corners) nor another pick (IoU above `SEED_COVER_IOU`): distinct
/// objects, where the plain top-k would put several slots on one object's
/// neighbouring patches — duplicates that matching can tell apart only by
/// chance, so that objectness learns nothing from them. `None` where the
/// patches run out.
fn distinct_patches(
    scores: &[f32],
    boxes: &[Vec<f32>],
    mut taken: Vec<[f32; 4]>,
    count: usize,
) -> Vec<Option<u32>> {
    let mut order: Vec<usize> = (0..scores.len().min(boxes.len())).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
    let mut candidates = order.into_iter();
    (0..count)
        .map(|_| {
            let free = candidates.by_ref().find(|&p| {
                let patch = corners(&boxes[p]);
                taken.iter().all(|t| iou(t, &patch) <= SEED_COVER_IOU)
            })?;
            taken.push(corners(&boxes[free]));
            Some(free as u32)
        })
        .collect()
}

/// Slots anchored on the frame's patches (`DecoderConfig::anchor_iou`).
struct Anchored {
    box_logits: Tensor,
    boxes: Tensor,
    objectness: Tensor,
    /// (B, K) u32: per slot, the row its class outputs come from among the
    /// slots' own (0..K) followed by the patches' (K..K+N).
    sources: Tensor,
}

impl Anchored {
    /// Per slot, the anchor patch's row of `patches` (B, N, D), or the
    /// slot's own row of `slots` (B, K, D) where it has no anchor.
    fn take(&self, slots: &Tensor, patches: &Tensor) -> Result<Tensor> {
        let both = Tensor::cat(&[slots, &patches.to_dtype(slots.dtype())?], 1)?;
        let index = self
            .sources
            .unsqueeze(2)?
            .broadcast_as(slots.shape())?
            .contiguous()?;
        Ok(both.gather(&index, 1)?)
    }
}

/// Anchors each slot on one of the patches whose predicted box overlaps the
/// slot's by at least `min_iou`: the one whose objectness (as a
/// probability) times that overlap is highest, so a slot keeps to its own
/// object rather than jumping to a likelier neighbour. The slot takes that
/// patch's box and objectness — the detector's view of the object the slot
/// is on, so the slot cannot drift while the object shows. A slot no patch
/// box overlaps enough keeps its box and takes the frame's lowest
/// objectness: it is on nothing the detector sees. None without objectness.
///
/// An object is one slot's: the oldest slots choose first, and a patch
/// whose box overlaps one already taken by more than `ANCHOR_COVER_IOU` is
/// not offered again. Otherwise, where two look-alikes overlap, both slots
/// could take the front one's patches, and two slots on one object make two
/// tracks that trade it back and forth; the slot left without a patch keeps
/// its box and waits, idle, for its object to show again.
fn anchor_to_patches(
    image: &ImageOutputs,
    slot_boxes: &Tensor,
    ages: &[Vec<u32>],
    min_iou: f32,
) -> Result<Option<Anchored>> {
    let Some((scores, patch_boxes)) = patch_candidates(image)? else {
        return Ok(None);
    };
    let slots = slot_boxes.detach().to_dtype(DType::F32)?.to_vec3::<f32>()?;
    let queries = slots.first().map_or(0, Vec::len);
    let (mut boxes, mut objectness, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for (((scores, patches), slots), ages) in scores.iter().zip(&patch_boxes).zip(&slots).zip(ages)
    {
        let floor = scores.iter().copied().fold(f32::INFINITY, f32::min);
        let patch_corners: Vec<[f32; 4]> = patches.iter().map(|b| corners(b)).collect();
        let mut by_age: Vec<usize> = (0..slots.len()).collect();
        by_age.sort_by_key(|&k| std::cmp::Reverse(ages.get(k).copied().unwrap_or(0)));
        let mut anchors: Vec<Option<usize>> = vec![None; slots.len()];
        let mut taken: Vec<[f32; 4]> = Vec::new();
        for k in by_age {
            let slot_corners = corners(&slots[k]);
            let anchor = patch_corners
                .iter()
                .zip(scores)
                .enumerate()
                .filter_map(|(patch, (box_corners, &score))| {
                    let overlap = iou(box_corners, &slot_corners);
                    let free = || {
                        taken
                            .iter()
                            .all(|t| iou(t, box_corners) <= ANCHOR_COVER_IOU)
                    };
                    (overlap >= min_iou && free()).then(|| (patch, sigmoid(score) * overlap))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(patch, _)| patch);
            if let Some(patch) = anchor {
                taken.push(patch_corners[patch]);
            }
            anchors[k] = anchor;
        }
        for (k, (slot, anchor)) in slots.iter().zip(anchors).enumerate() {
            match anchor {
                Some(patch) => {
                    boxes.extend_from_slice(&patches[patch][..4]);
                    objectness.push(scores[patch]);
                    sources.push((queries + patch) as u32);
                }
                None => {
                    boxes.extend_from_slice(&slot[..4]);
                    objectness.push(floor);
                    sources.push(k as u32);
                }
            }
        }
    }
    let (device, dtype) = (slot_boxes.device(), slot_boxes.dtype());
    let boxes = Tensor::from_vec(boxes, (slots.len(), queries, 4), device)?;
    // The box logits the next frame refines: the inverse sigmoid, kept
    // finite for boxes touching the image's border.
    let clamped = boxes.clamp(1e-4f32, 1.0 - 1e-4)?;
    let box_logits = (clamped.log()? - clamped.affine(-1.0, 1.0)?.log()?)?;
    Ok(Some(Anchored {
        box_logits: box_logits.to_dtype(dtype)?,
        boxes: boxes.to_dtype(dtype)?,
        objectness: Tensor::from_vec(objectness, (slots.len(), queries), device)?
            .to_dtype(dtype)?,
        sources: Tensor::from_vec(sources, (slots.len(), queries), device)?,
    }))
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
    box_embed: BoxEmbed,
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
            box_embed: BoxEmbed::new(vb.pp("box_embed"), config.box_encoding, w)?,
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

    /// Changes the settings that steer tracking without touching the
    /// weights: anchoring on patches and reseeding.
    pub fn set_tracking(&mut self, anchor_iou: Option<f32>, reseed: Option<Reseed>) -> Result<()> {
        let config = DecoderConfig {
            anchor_iou,
            reseed,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(())
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
        let persistent = self.config.persistent_queries;
        let fresh = DecoderState {
            tokens: if persistent {
                learned.zeros_like()?
            } else {
                learned.clone()
            },
            box_logits: self
                .query_boxes
                .unsqueeze(0)?
                .broadcast_as((batch, k, 4))?
                .contiguous()?,
            idle: vec![vec![0; k]; batch],
            reseeded: vec![vec![false; k]; batch],
            age: vec![vec![0; k]; batch],
            anchors: persistent.then_some(learned),
        };
        let (Some((scores, patch_boxes)), Some(_), true) =
            (patch_candidates(image)?, &self.seed_proj, patches >= k)
        else {
            return Ok(fresh);
        };
        let picks: Vec<Vec<Option<u32>>> = scores
            .iter()
            .zip(&patch_boxes)
            .map(|(scores, boxes)| {
                let mut picks = distinct_patches(scores, boxes, Vec::new(), k);
                // Fewer distinct objects than slots: the rest start on the
                // next most object-like patches, duplicates or not.
                let mut order: Vec<u32> = (0..patches as u32)
                    .filter(|p| !picks.contains(&Some(*p)))
                    .collect();
                order.sort_by(|&i, &j| scores[j as usize].total_cmp(&scores[i as usize]));
                let mut rest = order.into_iter();
                for pick in picks.iter_mut().filter(|p| p.is_none()) {
                    *pick = rest.next();
                }
                picks
            })
            .collect();
        let seeded = self.seeded(image, &fresh, &picks)?;
        Ok(DecoderState {
            tokens: seeded.tokens,
            box_logits: seeded.box_logits,
            anchors: seeded.anchors,
            ..fresh
        })
    }

    /// `state`'s slots with those that `picks` names (per clip and slot, a
    /// patch of `image` or None) replaced by their patch: its token
    /// (projected) plus the slot's learned query, at its patch's box.
    fn seeded(
        &self,
        image: &ImageOutputs,
        state: &DecoderState,
        picks: &[Vec<Option<u32>>],
    ) -> Result<Seeded> {
        let seed_proj = self.seed_proj.as_ref().ok_or_else(|| {
            ModelError::InvalidInput("this decoder does not seed slots from patches".into())
        })?;
        let k = self.config.queries;
        let device = image.tokens.device();
        let (mut tokens, mut boxes) = (Vec::with_capacity(picks.len()), Vec::new());
        for (b, slots) in picks.iter().enumerate() {
            let chosen: Vec<u32> = slots.iter().map(|p| p.unwrap_or(0)).collect();
            let chosen = Tensor::from_vec(chosen, k, device)?;
            tokens.push(image.tokens.get(b)?.index_select(&chosen, 0)?);
            boxes.push(image.boxes.get(b)?.index_select(&chosen, 0)?);
        }
        let seeds = Tensor::stack(&tokens, 0)?.detach();
        let boxes = Tensor::stack(&boxes, 0)?
            .detach()
            .to_dtype(self.dtype)?
            .clamp(1e-4, 1.0 - 1e-4)?;
        let seed_logits = (boxes.log()? - boxes.affine(-1.0, 1.0)?.log()?)?;
        let seed_tokens = seed_proj
            .forward(&seeds)?
            .broadcast_add(&self.query_tokens.unsqueeze(0)?)?;
        // A new slot's recurrent state starts empty when its seed persists
        // beside it, and is the seed otherwise.
        let start_tokens = match state.anchors {
            Some(_) => seed_tokens.zeros_like()?,
            None => seed_tokens.clone(),
        };
        if picks.iter().flatten().all(Option::is_some) {
            return Ok(Seeded {
                anchors: state.anchors.as_ref().map(|_| seed_tokens),
                tokens: start_tokens,
                box_logits: seed_logits,
            });
        }
        let mask: Vec<f32> = picks
            .iter()
            .flatten()
            .map(|p| if p.is_some() { 1.0 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (picks.len(), k, 1), device)?.to_dtype(self.dtype)?;
        let keep = mask.affine(-1.0, 1.0)?;
        let blend = |new: &Tensor, old: &Tensor| -> candle_core::Result<Tensor> {
            new.broadcast_mul(&mask)? + old.broadcast_mul(&keep)?
        };
        Ok(Seeded {
            tokens: blend(&start_tokens, &state.tokens)?,
            box_logits: blend(&seed_logits, &state.box_logits)?,
            anchors: state
                .anchors
                .as_ref()
                .map(|anchors| blend(&seed_tokens, anchors))
                .transpose()?,
        })
    }

    /// The patches of `image` that slots idle long enough under
    /// `reseed` take over, per clip and slot: the most object-like patches
    /// whose boxes no kept slot's box (nor another new seed's) covers.
    fn reseed_picks(
        &self,
        image: &ImageOutputs,
        state: &DecoderState,
        reseed: Reseed,
    ) -> Result<Option<Vec<Vec<Option<u32>>>>> {
        let idle = |b: usize, k: usize| state.idle[b][k] >= reseed.after;
        let batch = state.idle.len();
        if !(0..batch).any(|b| (0..self.config.queries).any(|k| idle(b, k))) {
            return Ok(None);
        }
        let Some((scores, patch_boxes)) = patch_candidates(image)? else {
            return Ok(None);
        };
        let slot_boxes = candle_nn::ops::sigmoid(&state.box_logits.detach())?
            .to_dtype(DType::F32)?
            .to_vec3::<f32>()?;
        let mut picks = Vec::with_capacity(batch);
        for b in 0..batch {
            let kept: Vec<[f32; 4]> = (0..self.config.queries)
                .filter(|&k| !idle(b, k))
                .map(|k| corners(&slot_boxes[b][k]))
                .collect();
            let idle_slots = (0..self.config.queries).filter(|&k| idle(b, k)).count();
            let mut found =
                distinct_patches(&scores[b], &patch_boxes[b], kept, idle_slots).into_iter();
            picks.push(
                (0..self.config.queries)
                    .map(|k| {
                        if idle(b, k) {
                            found.next().flatten()
                        } else {
                            None
                        }
                    })
                    .collect(),
            );
        }
        Ok(Some(picks))
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
        let reseeded_state;
        let mut reseeded = vec![vec![false; self.config.queries]; batch];
        let state = match self.config.reseed {
            Some(reseed) => match self.reseed_picks(image, state, reseed)? {
                Some(picks) => {
                    let seeded = self.seeded(image, state, &picks)?;
                    for (flags, slots) in reseeded.iter_mut().zip(&picks) {
                        for (flag, pick) in flags.iter_mut().zip(slots) {
                            *flag = pick.is_some();
                        }
                    }
                    reseeded_state = DecoderState {
                        tokens: seeded.tokens,
                        box_logits: seeded.box_logits,
                        anchors: seeded.anchors,
                        idle: state.idle.clone(),
                        reseeded: reseeded.clone(),
                        age: state.age.clone(),
                    };
                    &reseeded_state
                }
                None => state,
            },
            None => state,
        };
        let boxes_in = candle_nn::ops::sigmoid(&state.box_logits)?;
        let mut xs = (&state.tokens + self.box_embed.forward(&boxes_in)?)?;

        for layer in &self.layers {
            xs = layer.forward(&xs, &memory, state.anchors.as_ref())?;
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
        let age: Vec<Vec<u32>> = state
            .age
            .iter()
            .zip(&reseeded)
            .map(|(ages, new)| {
                ages.iter()
                    .zip(new)
                    .map(|(&a, &new)| if new { 0 } else { a + 1 })
                    .collect()
            })
            .collect();
        let anchored = match self.config.anchor_iou {
            Some(min_iou) => anchor_to_patches(image, &boxes, &age, min_iou)?,
            None => None,
        };
        let (box_logits, boxes, objectness, class_embeds, logit_shift, logit_scale) = match anchored
        {
            // The anchor patch's class outputs too: queries score the
            // slot as the detector scores what is under it.
            Some(anchored) => {
                let class_embeds = anchored.take(&class_embeds, &image.class_embeds)?;
                let logit_shift = anchored.take(&logit_shift, &image.logit_shift)?;
                let logit_scale = anchored.take(&logit_scale, &image.logit_scale)?;
                (
                    anchored.box_logits,
                    anchored.boxes,
                    anchored.objectness,
                    class_embeds,
                    logit_shift,
                    logit_scale,
                )
            }
            None => (
                box_logits,
                boxes,
                objectness,
                class_embeds,
                logit_shift,
                logit_scale,
            ),
        };
        let idle = match self.config.reseed {
            Some(reseed) => {
                let scores = candle_nn::ops::sigmoid(&objectness.detach())?
                    .to_dtype(DType::F32)?
                    .to_vec2::<f32>()?;
                scores
                    .iter()
                    .zip(&state.idle)
                    .zip(&reseeded)
                    .map(|((scores, idle), reseeded)| {
                        scores
                            .iter()
                            .zip(idle)
                            .zip(reseeded)
                            .map(|((&p, &n), &new)| {
                                let n = if new { 0 } else { n };
                                if p < reseed.below {
                                    n + 1
                                } else {
                                    0
                                }
                            })
                            .collect()
                    })
                    .collect()
            }
            None => state.idle.clone(),
        };
        let mut idle = idle;
        if let Some(reseed) = self.config.reseed {
            let boxes = boxes.detach().to_dtype(DType::F32)?.to_vec3::<f32>()?;
            for ((boxes, ages), idle) in boxes.iter().zip(&age).zip(idle.iter_mut()) {
                for slot in duplicate_slots(boxes, ages) {
                    idle[slot] = idle[slot].max(reseed.after);
                }
            }
        }
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
                idle,
                reseeded,
                age,
                anchors: state.anchors.clone(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first clip's boxes, from their logits.
    fn first_boxes(box_logits: &Tensor) -> Vec<Vec<f32>> {
        candle_nn::ops::sigmoid(box_logits)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    }
    use candle_core::Device;
    use candle_nn::VarMap;

    fn logit(p: f32) -> f32 {
        (p / (1.0 - p)).ln()
    }

    /// Three slots seeded from patches, every size tiny.
    fn tiny_seeded_config() -> DecoderConfig {
        DecoderConfig {
            layers: 1,
            width: 8,
            heads: 2,
            queries: 3,
            image_width: 4,
            embed_dim: 4,
            seed_from_patches: true,
            ..DecoderConfig::default()
        }
    }

    #[test]
    fn anchored_slots_take_the_likeliest_overlapping_patch() {
        let device = Device::Cpu;
        // Patches 0 and 1 both overlap slot 0's box; patch 1 is the more
        // object-like. Patch 2 overlaps slot 1 barely; slot 2 is on nothing.
        let patch_boxes = [
            [0.30f32, 0.30, 0.20, 0.20],
            [0.32, 0.31, 0.22, 0.20],
            [0.70, 0.70, 0.10, 0.10],
        ];
        let objectness = [1.0f32, 2.5, 3.0];
        // Each patch's class embedding is its index, repeated.
        let patch_embeds = Tensor::arange(0f32, 3.0, &device)
            .unwrap()
            .reshape((1, 3, 1))
            .unwrap()
            .broadcast_as((1, 3, 4))
            .unwrap()
            .contiguous()
            .unwrap();
        let image = ImageOutputs {
            tokens: Tensor::zeros((1, 3, 4), DType::F32, &device).unwrap(),
            grid: (1, 3),
            boxes: Tensor::new(&[patch_boxes], &device).unwrap(),
            class_embeds: patch_embeds,
            logit_shift: Tensor::zeros((1, 3, 1), DType::F32, &device).unwrap(),
            logit_scale: Tensor::ones((1, 3, 1), DType::F32, &device).unwrap(),
            objectness: Some(Tensor::new(&[objectness], &device).unwrap()),
        };
        let slots = [
            [0.31f32, 0.30, 0.21, 0.20],
            [0.76, 0.76, 0.10, 0.10],
            [0.10, 0.80, 0.05, 0.05],
        ];
        let anchored = anchor_to_patches(
            &image,
            &Tensor::new(&[slots], &device).unwrap(),
            &[vec![0; 3]],
            0.3,
        )
        .unwrap()
        .unwrap();
        let boxes = anchored.boxes.get(0).unwrap().to_vec2::<f32>().unwrap();
        let scores = anchored
            .objectness
            .get(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(boxes[0], patch_boxes[1].to_vec());
        assert_eq!(scores[0], 2.5);
        // Too little overlap, or none: the slot keeps its box and scores the
        // frame's lowest objectness, so that reseeding can take it.
        assert_eq!(boxes[1], slots[1].to_vec());
        assert_eq!(boxes[2], slots[2].to_vec());
        assert_eq!(&scores[1..], &[1.0, 1.0]);
        // Queries score an anchored slot by its patch's class outputs; the
        // others by their own.
        let own = Tensor::full(-1f32, (1, 3, 4), &device).unwrap();
        let embeds = anchored.take(&own, &image.class_embeds).unwrap();
        let first_column: Vec<f32> = embeds
            .get(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|row| row[0])
            .collect();
        assert_eq!(first_column, [1.0, -1.0, -1.0]);
        // The next frame refines the anchored box from its logits.
        let back = first_boxes(&anchored.box_logits);
        for (got, want) in back.iter().flatten().zip(boxes.iter().flatten()) {
            assert!((got - want).abs() < 1e-5);
        }
    }

    /// One frame's patches with their boxes and objectness logits.
    fn patches_at(boxes: &[[f32; 4]], objectness: &[f32]) -> ImageOutputs {
        let device = Device::Cpu;
        let n = boxes.len();
        ImageOutputs {
            tokens: Tensor::zeros((1, n, 4), DType::F32, &device).unwrap(),
            grid: (1, n),
            boxes: Tensor::new(boxes.concat(), &device)
                .unwrap()
                .reshape((1, n, 4))
                .unwrap(),
            class_embeds: Tensor::zeros((1, n, 4), DType::F32, &device).unwrap(),
            logit_shift: Tensor::zeros((1, n, 1), DType::F32, &device).unwrap(),
            logit_scale: Tensor::ones((1, n, 1), DType::F32, &device).unwrap(),
            objectness: Some(
                Tensor::new(objectness, &device)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            ),
        }
    }

    fn anchor_sources(image: &ImageOutputs, slots: &[[f32; 4]], ages: &[u32]) -> Vec<u32> {
        let slots = Tensor::new(slots.concat(), &Device::Cpu)
            .unwrap()
            .reshape((1, slots.len(), 4))
            .unwrap();
        let anchored = anchor_to_patches(image, &slots, &[ages.to_vec()], 0.3)
            .unwrap()
            .unwrap();
        anchored.sources.to_vec2::<u32>().unwrap().remove(0)
    }

    #[test]
    fn an_object_anchors_one_slot_the_oldest() {
        // Two look-alikes overlapping: the front one's patch 0 and its
        // partial patch 2 (the two overlap by 0.7), and patch 1 of the one
        // behind (overlapping patch 0 by 0.18, patch 2 by 0.21).
        let front = [0.40f32, 0.40, 0.20, 0.20];
        let behind = [0.54f32, 0.40, 0.20, 0.20];
        let partial = [0.43f32, 0.40, 0.14, 0.20];
        let image = patches_at(&[front, behind, partial], &[3.0, 1.0, 2.5]);
        // Slot 0 sits between the two objects, slot 1 on the front one.
        let slots = [[0.46f32, 0.40, 0.20, 0.20], [0.41, 0.40, 0.20, 0.20]];
        // Slot 1 is older and takes the front object's patch; slot 0 may
        // take neither of that object's patches, so it takes the other
        // object's (sources count the 2 slots' own rows first).
        assert_eq!(anchor_sources(&image, &slots, &[2, 9]), [2 + 1, 2]);
        // Equal ages: the first slot chooses first, and the front object's
        // patch that fits it best is the partial one; slot 1 then overlaps
        // no free patch enough and keeps its own outputs.
        assert_eq!(anchor_sources(&image, &slots, &[4, 4]), [2 + 2, 1]);
        // A slot left with no patch of its own keeps its box and scores the
        // frame's lowest objectness: it waits, idle, for its object.
        let image = patches_at(&[front, partial, [0.9, 0.9, 0.05, 0.05]], &[3.0, 1.0, 2.5]);
        let same = [slots[1], slots[1]];
        let slot_boxes = Tensor::new(&[same], &Device::Cpu).unwrap();
        let anchored = anchor_to_patches(&image, &slot_boxes, &[vec![0, 5]], 0.3)
            .unwrap()
            .unwrap();
        assert_eq!(anchored.sources.to_vec2::<u32>().unwrap()[0], [0, 2]);
        let boxes = anchored.boxes.get(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(boxes[0], slots[1].to_vec());
        assert_eq!(anchored.objectness.to_vec2::<f32>().unwrap()[0][0], 1.0);
    }

    #[test]
    fn a_slot_keeps_to_the_patch_that_fits_it_over_a_likelier_neighbour() {
        // Patch 0 fits the slot (IoU 0.9) but is less object-like than patch
        // 1, which overlaps it by 0.33: 0.62 × 0.9 against 0.98 × 0.33.
        let slot = [0.50f32, 0.50, 0.20, 0.20];
        let image = patches_at(
            &[[0.51, 0.50, 0.20, 0.20], [0.60, 0.50, 0.20, 0.20]],
            &[0.5, 4.0],
        );
        assert_eq!(anchor_sources(&image, &[slot], &[3]), [1]);
        // Alone, the neighbour is taken.
        let image = patches_at(&[[0.60, 0.50, 0.20, 0.20]], &[4.0]);
        assert_eq!(anchor_sources(&image, &[slot], &[3]), [1]);
    }

    #[test]
    fn tracking_settings_change_without_the_weights() {
        let config = tiny_seeded_config();
        let mut decoder = VideoDecoder::new(
            config.clone(),
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu),
        )
        .unwrap();
        let reseed = Reseed {
            below: 0.1,
            after: 8,
        };
        decoder.set_tracking(Some(0.3), Some(reseed)).unwrap();
        assert_eq!(decoder.config().anchor_iou, Some(0.3));
        assert_eq!(decoder.config().reseed, Some(reseed));
        assert_eq!(decoder.config().layers, config.layers);
        for bad in [0.0, -0.2, 1.5, f32::NAN] {
            assert!(decoder.set_tracking(Some(bad), None).is_err(), "{bad}");
        }
        // A failed change leaves the settings as they were.
        assert_eq!(decoder.config().anchor_iou, Some(0.3));
    }

    #[test]
    fn idle_slots_take_the_best_patches_no_slot_covers() {
        let device = Device::Cpu;
        let config = DecoderConfig {
            positions: Positions::PatchBoxes,
            reseed: Some(Reseed {
                below: 0.2,
                after: 2,
            }),
            ..tiny_seeded_config()
        };
        let decoder = VideoDecoder::new(
            config,
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &device),
        )
        .unwrap();
        let (a, b, c, d) = (
            [0.2f32, 0.2, 0.1, 0.1],
            [0.6, 0.6, 0.1, 0.1],
            [0.3, 0.8, 0.1, 0.1],
            [0.8, 0.2, 0.1, 0.1],
        );
        // Patch 0 is slot 0's object, patch 2 is patch 1's again.
        let patch_boxes = [a, b, [0.61, 0.6, 0.1, 0.1], c, d];
        let objectness = [5.0f32, 4.0, 3.0, 2.0, 1.0];
        let image = ImageOutputs {
            tokens: Tensor::zeros((1, 5, 4), DType::F32, &device).unwrap(),
            grid: (1, 5),
            boxes: Tensor::new(&[patch_boxes], &device).unwrap(),
            class_embeds: Tensor::zeros((1, 5, 4), DType::F32, &device).unwrap(),
            logit_shift: Tensor::zeros((1, 5, 1), DType::F32, &device).unwrap(),
            logit_scale: Tensor::ones((1, 5, 1), DType::F32, &device).unwrap(),
            objectness: Some(Tensor::new(&[objectness], &device).unwrap()),
        };
        let slot_boxes = [a, d, d].map(|bx| bx.map(logit));
        let state = |idle: Vec<u32>| DecoderState {
            tokens: Tensor::zeros((1, 3, 8), DType::F32, &device).unwrap(),
            box_logits: Tensor::new(&[slot_boxes], &device).unwrap(),
            idle: vec![idle],
            reseeded: vec![vec![false; 3]],
            age: vec![vec![5, 5, 5]],
            anchors: None,
        };
        let reseed = decoder.config().reseed.unwrap();
        // Slots 1 and 2 idle long enough; slot 0 keeps patch 0's object.
        let picks = decoder
            .reseed_picks(&image, &state(vec![0, 2, 3]), reseed)
            .unwrap();
        assert_eq!(picks, Some(vec![vec![None, Some(1), Some(3)]]));
        // Idle, but not for long enough: nothing changes.
        let none = decoder
            .reseed_picks(&image, &state(vec![1, 1, 0]), reseed)
            .unwrap();
        assert_eq!(none, None);
        // The step reseeds them, says so, and restarts their idle count.
        let (_, next) = decoder.step(&image, &state(vec![0, 2, 3])).unwrap();
        assert_eq!(next.reseeded, vec![vec![false, true, true]]);
        assert!(next.idle[0][1] <= 1 && next.idle[0][2] <= 1);
        // Seeds sit at their patches' boxes before the decoder refines them.
        let seeded = decoder
            .seeded(
                &image,
                &state(vec![0, 2, 3]),
                &[vec![None, Some(1), Some(3)]],
            )
            .unwrap();
        let boxes = first_boxes(&seeded.box_logits);
        for (got, want) in boxes.iter().zip([a, b, c]) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-4, "{boxes:?}");
            }
        }
    }

    #[test]
    fn sine_box_embeddings_tell_near_boxes_from_far_ones() {
        let device = Device::Cpu;
        let weights = VarMap::new();
        let embed = BoxEmbed::new(
            VarBuilder::from_varmap(&weights, DType::F32, &device),
            BoxEncoding::Sine,
            8,
        )
        .unwrap();
        let boxes = Tensor::new(
            &[[
                [0.5f32, 0.5, 0.1, 0.1],
                [0.51, 0.5, 0.1, 0.1],
                [0.9, 0.2, 0.1, 0.1],
            ]],
            &device,
        )
        .unwrap();
        assert_eq!(embed.forward(&boxes).unwrap().dims(), [1, 3, 8]);
        // The sine features themselves: the dot product of two boxes'
        // features is largest for the box itself and falls with distance.
        let frequencies = embed.frequencies.as_ref().unwrap();
        let angles = boxes
            .unsqueeze(3)
            .unwrap()
            .broadcast_mul(frequencies)
            .unwrap();
        let features = Tensor::cat(&[angles.sin().unwrap(), angles.cos().unwrap()], 3)
            .unwrap()
            .flatten_from(2)
            .unwrap()
            .get(0)
            .unwrap();
        let similarity = features
            .matmul(&features.t().unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(similarity[0][0] > similarity[0][1]);
        assert!(similarity[0][1] > similarity[0][2]);
    }

    #[test]
    fn the_younger_of_two_slots_on_one_object_is_the_duplicate() {
        let a = vec![0.2f32, 0.2, 0.1, 0.1];
        let near_a = vec![0.205f32, 0.2, 0.1, 0.1];
        let b = vec![0.7f32, 0.7, 0.1, 0.1];
        // Slot 1 (age 9) is older than slot 0 (age 2) on the same object.
        assert_eq!(
            duplicate_slots(&[a.clone(), near_a.clone(), b.clone()], &[2, 9, 4]),
            vec![0]
        );
        // As old: the later slot yields.
        assert_eq!(duplicate_slots(&[a, near_a, b], &[3, 3, 3]), vec![1]);
    }

    #[test]
    fn reseeding_needs_seeding_from_patches() {
        let config = DecoderConfig {
            reseed: Some(Reseed {
                below: 0.1,
                after: 1,
            }),
            ..DecoderConfig::default()
        };
        assert!(config.validate().is_err());
        let after_zero = DecoderConfig {
            seed_from_patches: true,
            reseed: Some(Reseed {
                below: 0.1,
                after: 0,
            }),
            ..DecoderConfig::default()
        };
        assert!(after_zero.validate().is_err());
    }
}
