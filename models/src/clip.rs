//! The CLIP towers inside OWL-ViT and OWLv2: pre-LN transformer encoders over
//! text tokens and image patches (`modeling_owlvit.py`: OwlViTAttention,
//! OwlViTMLP, OwlViTEncoderLayer, OwlViTTextTransformer,
//! OwlViTVisionTransformer; OWLv2's are the same).

use candle_core::{DType, Device, Module, Tensor, D};

pub(crate) use self::norm::{layer_norm, LayerNorm};
use candle_nn::{embedding, Embedding, VarBuilder};

use crate::config::{Activation, TextConfig, VisionConfig};
use crate::error::{ModelError, Result};

pub(crate) fn activate(xs: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::QuickGelu => crate::kernels::quick_gelu(xs),
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluTanh => xs.gelu(),
        Activation::Relu => xs.relu(),
    }
}

fn parse_activation(name: &str) -> Result<Activation> {
    Activation::parse(name).ok_or_else(|| ModelError::Unsupported(format!("activation {name:?}")))
}

/// A linear layer stored as (in, out) so every matmul reads its weights
/// contiguously, applied to the tokens of all batch items as one matrix:
/// candle's batched `Linear` on (B, T, D) was 40% slower here.
///
/// Weights being trained (candle variables) are used as they are, through a
/// transposed view, so that each optimiser update is seen by the next pass.
pub(crate) struct Dense {
    /// (in, out): a contiguous copy for inference, a view of the variable
    /// when training.
    weight_t: Tensor,
    bias: Option<Tensor>,
}

/// Initialisation for weights trained from scratch (ignored when loading).
const WEIGHT_INIT: candle_nn::Init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
const ZERO: candle_nn::Init = candle_nn::Init::Const(0.0);

impl Dense {
    pub(crate) fn load(
        vb: VarBuilder,
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints((outputs, inputs), "weight", WEIGHT_INIT)?;
        let bias = if bias {
            Some(vb.get_with_hints(outputs, "bias", ZERO)?)
        } else {
            None
        };
        Self::from_parts(&weight, bias)
    }

    /// Several layers reading the same input, fused into one wider matmul.
    fn concat(parts: &[(Tensor, Tensor)]) -> candle_core::Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|(w, _)| w).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|(_, b)| b).collect();
        Self::from_parts(&Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?))
    }

    fn from_parts(weight: &Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let weight_t = if weight.is_variable() {
            weight.t()?
        } else {
            weight.t()?.contiguous()?
        };
        Ok(Dense { weight_t, bias })
    }
}

impl Module for Dense {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut shape = xs.dims().to_vec();
        let inputs = shape.pop().unwrap_or(1);
        let rows = shape.iter().product::<usize>();
        let out = xs.reshape((rows, inputs))?.matmul(&self.weight_t)?;
        let out = match &self.bias {
            Some(bias) => out.broadcast_add(bias)?,
            None => out,
        };
        shape.push(self.weight_t.dim(1)?);
        out.reshape(shape)
    }
}

/// The q, k and v projections.
enum Projections {
    /// As one (D → 3D) layer with the query scale folded into its weights.
    Fused(Dense),
    /// As three layers over trained variables, scaled at run time.
    Separate {
        q: Dense,
        k: Dense,
        v: Dense,
        scale: f64,
    },
}

impl Projections {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Projections::Fused(qkv) => qkv.forward(xs),
            Projections::Separate { q, k, v, scale } => Tensor::cat(
                &[(q.forward(xs)? * *scale)?, k.forward(xs)?, v.forward(xs)?],
                2,
            ),
        }
    }
}

struct Attention {
    qkv_proj: Projections,
    out_proj: Dense,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, hidden: usize, heads: usize) -> Result<Self> {
        let head_dim = hidden / heads;
        let scale = (head_dim as f64).powf(-0.5);
        let load = |name: &str| -> candle_core::Result<(Tensor, Tensor)> {
            let vb = vb.pp(name);
            Ok((
                vb.get_with_hints((hidden, hidden), "weight", WEIGHT_INIT)?,
                vb.get_with_hints(hidden, "bias", ZERO)?,
            ))
        };
        let (q, k, v) = (load("q_proj")?, load("k_proj")?, load("v_proj")?);
        let qkv_proj = if q.0.is_variable() {
            Projections::Separate {
                q: Dense::from_parts(&q.0, Some(q.1))?,
                k: Dense::from_parts(&k.0, Some(k.1))?,
                v: Dense::from_parts(&v.0, Some(v.1))?,
                scale,
            }
        } else {
            // (W x + b)·s = (s W) x + s b: the query scaling folds into the weights.
            Projections::Fused(Dense::concat(&[((q.0 * scale)?, (q.1 * scale)?), k, v])?)
        };
        Ok(Attention {
            qkv_proj,
            out_proj: Dense::load(vb.pp("out_proj"), hidden, hidden, true)?,
            heads,
            head_dim,
        })
    }

    /// Splits (B, T, D) into (B·H, T, d) for batched matmuls.
    fn split_heads(&self, xs: &Tensor, batch: usize, tokens: usize) -> candle_core::Result<Tensor> {
        xs.reshape((batch, tokens, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .reshape((batch * self.heads, tokens, self.head_dim))
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (batch, tokens, hidden) = xs.dims3()?;
        let qkv = self.qkv_proj.forward(xs)?;
        // The only mask the towers use is the text tower's causal one.
        if let Some(attended) = crate::kernels::fused_attention(&qkv, self.heads, mask.is_some()) {
            return self.out_proj.forward(&attended?);
        }
        let q = self.split_heads(&qkv.narrow(2, 0, hidden)?, batch, tokens)?;
        let k = self.split_heads(&qkv.narrow(2, hidden, hidden)?, batch, tokens)?;
        let v = self.split_heads(&qkv.narrow(2, 2 * hidden, hidden)?, batch, tokens)?;
        let mut weights = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            weights = weights.broadcast_add(mask)?;
        }
        let weights = if weights.track_op() {
            // Differentiable, for training.
            candle_nn::ops::softmax(&weights, D::Minus1)?
        } else {
            crate::kernels::softmax_last_dim(&weights)?
        };
        let out = weights
            .matmul(&v)?
            .reshape((batch, self.heads, tokens, self.head_dim))?
            .transpose(1, 2)?
            .reshape((batch, tokens, hidden))?;
        self.out_proj.forward(&out)
    }
}

struct Mlp {
    fc1: Dense,
    fc2: Dense,
    activation: Activation,
}

impl Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2
            .forward(&activate(&self.fc1.forward(xs)?, self.activation)?)
    }
}

struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp: Mlp,
    layer_norm2: LayerNorm,
}

impl EncoderLayer {
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let attended = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = (xs + attended)?;
        let transformed = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        xs + transformed
    }
}

pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
}

pub(crate) struct EncoderShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub eps: f64,
    pub activation: Activation,
}

impl EncoderShape {
    fn of(
        hidden: usize,
        intermediate: usize,
        layers: usize,
        heads: usize,
        eps: f64,
        act: &str,
    ) -> Result<Self> {
        Ok(EncoderShape {
            hidden,
            intermediate,
            layers,
            heads,
            eps,
            activation: parse_activation(act)?,
        })
    }
}

impl Encoder {
    pub(crate) fn new(vb: VarBuilder, shape: &EncoderShape) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..shape.layers)
            .map(|i| {
                let vb = vb.pp(i);
                Ok(EncoderLayer {
                    self_attn: Attention::new(vb.pp("self_attn"), shape.hidden, shape.heads)?,
                    layer_norm1: layer_norm(shape.hidden, shape.eps, vb.pp("layer_norm1"))?,
                    mlp: Mlp {
                        fc1: Dense::load(
                            vb.pp("mlp").pp("fc1"),
                            shape.hidden,
                            shape.intermediate,
                            true,
                        )?,
                        fc2: Dense::load(
                            vb.pp("mlp").pp("fc2"),
                            shape.intermediate,
                            shape.hidden,
                            true,
                        )?,
                        activation: shape.activation,
                    },
                    layer_norm2: layer_norm(shape.hidden, shape.eps, vb.pp("layer_norm2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder { layers })
    }

    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }
}

/// The text tower: token + position embeddings, a causal encoder, the final
/// layer norm, pooling at the EOS token.
pub struct TextTransformer {
    token_embedding: Embedding,
    position_embedding: Embedding,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    max_tokens: usize,
}

impl TextTransformer {
    pub(crate) fn new(vb: VarBuilder, config: &TextConfig) -> Result<Self> {
        let shape = EncoderShape::of(
            config.hidden_size,
            config.intermediate_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.layer_norm_eps,
            &config.hidden_act,
        )?;
        let embeddings = vb.pp("embeddings");
        Ok(TextTransformer {
            token_embedding: embedding(
                config.vocab_size,
                config.hidden_size,
                embeddings.pp("token_embedding"),
            )?,
            position_embedding: embedding(
                config.max_position_embeddings,
                config.hidden_size,
                embeddings.pp("position_embedding"),
            )?,
            encoder: Encoder::new(vb.pp("encoder"), &shape)?,
            final_layer_norm: layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
            max_tokens: config.max_position_embeddings,
        })
    }

    /// Pooled output (Q, D) for `ids`, Q rows of the same length.
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let queries = ids.len();
        let tokens = ids.first().map_or(0, Vec::len);
        if queries == 0
            || tokens == 0
            || tokens > self.max_tokens
            || ids.iter().any(|row| row.len() != tokens)
        {
            return Err(ModelError::InvalidInput(format!(
                "token rows must be non-empty, of equal length, at most {} long",
                self.max_tokens
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let input = Tensor::from_vec(flat, (queries, tokens), device)?;
        let positions = Tensor::arange(0u32, tokens as u32, device)?;
        let xs = self
            .token_embedding
            .forward(&input)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(tokens, xs.dtype(), device)?;
        let xs = self.encoder.forward(&xs, Some(&mask))?;
        let xs = self.final_layer_norm.forward(&xs)?;
        // transformers pools at argmax(ids): the EOS token, the largest id.
        let pooled_rows: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(q, row)| {
                let at = first_argmax(row);
                (q * tokens + at) as u32
            })
            .collect();
        let rows = Tensor::from_vec(pooled_rows, queries, device)?;
        Ok(xs.flatten_to(1)?.index_select(&rows, 0)?)
    }
}

/// The position of the first largest id (as torch's argmax).
fn first_argmax(row: &[u32]) -> usize {
    let mut best = 0;
    for (i, &id) in row.iter().enumerate() {
        if id > row[best] {
            best = i;
        }
    }
    best
}

fn causal_mask(tokens: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..tokens)
        .flat_map(|i| (0..tokens).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (tokens, tokens), device)?.to_dtype(dtype)
}

/// The image tower: patch embedding, class token, learned positions,
/// `pre_layernorm`, the encoder. `post_layernorm` is applied by the detector
/// to every token.
pub struct VisionTransformer {
    /// The patch convolution's kernel as a matrix (D, C·p·p): a convolution
    /// whose stride is its size is a matmul over patches, which also runs in
    /// bf16 where candle's CPU convolution does not. After a stem, (D, C).
    patch_weight: Tensor,
    patch_size: usize,
    stem: Vec<StemLayer>,
    activation: Activation,
    class_embedding: Tensor,
    position_embedding: Embedding,
    pre_layernorm: LayerNorm,
    encoder: Encoder,
    pub(crate) post_layernorm: LayerNorm,
    num_positions: usize,
}

impl VisionTransformer {
    pub(crate) fn new(vb: VarBuilder, config: &VisionConfig) -> Result<Self> {
        let shape = EncoderShape::of(
            config.hidden_size,
            config.intermediate_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.layer_norm_eps,
            &config.hidden_act,
        )?;
        let grid = config.image_size / config.patch_size;
        let num_positions = grid * grid + 1;
        let embeddings = vb.pp("embeddings");
        let (channels, patch) = (config.num_channels, config.patch_size);
        let mut stem = Vec::with_capacity(config.stem_channels.len());
        let mut inputs = channels;
        for (i, &outputs) in config.stem_channels.iter().enumerate() {
            stem.push(StemLayer::new(
                embeddings.pp("stem").pp(i),
                inputs,
                outputs,
            )?);
            inputs = outputs;
        }
        let kernel_side = if stem.is_empty() { patch } else { 1 };
        let kernel = embeddings.pp("patch_embedding").get_with_hints(
            (config.hidden_size, inputs, kernel_side, kernel_side),
            "weight",
            WEIGHT_INIT,
        )?;
        Ok(VisionTransformer {
            patch_weight: kernel.reshape((config.hidden_size, config.patch_inputs()))?,
            patch_size: patch,
            stem,
            activation: parse_activation(&config.hidden_act)?,
            class_embedding: embeddings.get_with_hints(
                config.hidden_size,
                "class_embedding",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            position_embedding: embedding(
                num_positions,
                config.hidden_size,
                embeddings.pp("position_embedding"),
            )?,
            pre_layernorm: layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("pre_layernorm"),
            )?,
            encoder: Encoder::new(vb.pp("encoder"), &shape)?,
            post_layernorm: layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("post_layernorm"),
            )?,
            num_positions,
        })
    }

    /// Last hidden state (B, 1 + N, D) for pixels (B, 3, S, S).
    pub fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, channels, height, width) = pixels.dims4()?;
        let p = self.patch_size;
        let (rows, cols) = (height / p, width / p);
        let patches = if self.stem.is_empty() {
            // (B, C, S, S) → (B, rows·cols, C·p·p), patches in row-major
            // order as the convolution's output flattens them.
            pixels
                .narrow(2, 0, rows * p)?
                .narrow(3, 0, cols * p)?
                .reshape((batch, channels, rows, p, cols, p))?
                .permute((0, 2, 4, 1, 3, 5))?
                .reshape((batch, rows * cols, channels * p * p))?
        } else {
            let mut features = pixels
                .narrow(2, 0, rows * p)?
                .narrow(3, 0, cols * p)?
                .transpose(0, 1)?;
            for layer in &self.stem {
                features = activate(&layer.forward(&features)?, self.activation)?;
            }
            let depth = features.dim(0)?;
            features
                .reshape((depth, batch, rows * cols))?
                .permute((1, 2, 0))?
        };
        let patches = patches.broadcast_matmul(&self.patch_weight.t()?)?;
        let hidden = self.class_embedding.dim(0)?;
        let class = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .broadcast_as((batch, 1, hidden))?;
        let xs = Tensor::cat(&[&class, &patches], 1)?;
        let positions = Tensor::arange(0u32, self.num_positions as u32, pixels.device())?;
        let xs = xs.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let xs = self.pre_layernorm.forward(&xs)?;
        self.encoder.forward(&xs, None)
    }
}

/// One layer of the convolutional stem: a 3×3 convolution with stride 2 and
/// padding 1, as torch's `Conv2d(c_in, c_out, 3, 2, 1)`, on feature maps
/// kept channel-major, (C, B, H, W), so that a layer is one matmul.
struct StemLayer {
    /// (C_out, C_in·9), the kernel's taps in torch's (c, dy, dx) order.
    kernel: Tensor,
    /// (C_out, 1)
    bias: Tensor,
}

impl StemLayer {
    fn new(vb: VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Self> {
        let kernel = vb.get_with_hints((outputs, inputs, 3, 3), "weight", WEIGHT_INIT)?;
        let bias = vb.get_with_hints(outputs, "bias", ZERO)?;
        Ok(StemLayer {
            kernel: kernel.reshape((outputs, inputs * 9))?,
            bias: bias.reshape((outputs, 1))?,
        })
    }

    /// (C_in, B, H, W) → (C_out, B, ⌈H/2⌉, ⌈W/2⌉): the kernel and bias as one
    /// matrix times the input's columns (im2col, with a row of ones), which
    /// runs in every dtype and trains, where candle's CPU convolution has
    /// neither bf16 nor a fast backward pass.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (_, batch, height, width) = xs.dims4()?;
        let (rows, cols) = (height.div_ceil(2), width.div_ceil(2));
        let columns = match crate::kernels::stem_columns(xs) {
            Some(columns) => columns?,
            None => stem_columns_by_slicing(xs)?,
        };
        let weights = Tensor::cat(&[&self.kernel, &self.bias], 1)?;
        weights
            .matmul(&columns)?
            .reshape((self.kernel.dim(0)?, batch, rows, cols))
    }
}

/// A stem layer's columns (see `kernels::StemColumns`) from candle's slicing
/// operations: any dtype and device.
pub(crate) fn stem_columns_by_slicing(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (channels, batch, height, width) = xs.dims4()?;
    let (rows, cols) = (height.div_ceil(2), width.div_ceil(2));
    // Padded to an even size, the input splits into 2×2 blocks; output
    // (i, j) reads padded rows 2i, 2i+1, 2i+2: block i at phases 0 and
    // 1, block i+1 at phase 0. Each phase plane is copied once.
    let padded = xs
        .pad_with_zeros(2, 1, 1 + height % 2)?
        .pad_with_zeros(3, 1, 1 + width % 2)?;
    let blocks = padded
        .reshape((channels, batch, rows + 1, 2, cols + 1, 2))?
        .permute((3, 5, 0, 1, 2, 4))?
        .contiguous()?;
    let mut taps = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            taps.push(
                blocks
                    .get(dy % 2)?
                    .get(dx % 2)?
                    .narrow(2, dy / 2, rows)?
                    .narrow(3, dx / 2, cols)?,
            );
        }
    }
    // (C, 9, B, rows, cols): the channel-major, tap-minor order of the
    // kernel's columns.
    let columns = Tensor::stack(&taps, 1)?.reshape((channels * 9, batch * rows * cols))?;
    let ones = Tensor::ones((1, batch * rows * cols), xs.dtype(), xs.device())?;
    Tensor::cat(&[&columns, &ones], 0)
}

/// L2 norm over the last dimension, as torch.linalg.norm(dim=-1, keepdim=True).
pub(crate) fn l2_norm(xs: &Tensor) -> candle_core::Result<Tensor> {
    xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()
}

mod norm {
    use candle_core::{Module, Tensor, D};
    use candle_nn::VarBuilder;

    /// Layer norm: candle's fused kernel for inference; when training, our
    /// kernel with its backward pass on CPU f32, plain differentiable
    /// operations elsewhere (candle's kernel has no backward pass).
    pub(crate) struct LayerNorm {
        weight: Tensor,
        bias: Tensor,
        eps: f64,
    }

    pub(crate) fn layer_norm(
        size: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> candle_core::Result<LayerNorm> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?,
            eps,
        })
    }

    impl Module for LayerNorm {
        fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
            let trained = xs.track_op() || self.weight.is_variable();
            if trained {
                if let Some(normed) =
                    crate::kernels::layer_norm(xs, &self.weight, &self.bias, self.eps)
                {
                    return normed;
                }
            } else {
                return candle_nn::ops::layer_norm(
                    &xs.contiguous()?,
                    &self.weight,
                    &self.bias,
                    self.eps as f32,
                );
            }
            let size = xs.dim(D::Minus1)? as f64;
            let centered = xs.broadcast_sub(&(xs.sum_keepdim(D::Minus1)? / size)?)?;
            let variance = (centered.sqr()?.sum_keepdim(D::Minus1)? / size)?;
            centered
                .broadcast_div(&(variance + self.eps)?.sqrt()?)?
                .broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Pcg::new(seed, 0);
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// A stem layer is candle's own strided convolution, on even and odd
    /// sides (kernels.rs checks that its two column paths and their
    /// gradients agree).
    #[test]
    fn stem_layer_is_a_strided_convolution() {
        for (height, width) in [(8, 12), (7, 10), (5, 5)] {
            let (channels, batch, outputs) = (3, 2, 4);
            let kernel = random(&[outputs, channels, 3, 3], 1);
            let bias = random(&[outputs], 2);
            let layer = StemLayer {
                kernel: kernel.reshape((outputs, channels * 9)).unwrap(),
                bias: bias.reshape((outputs, 1)).unwrap(),
            };
            let images = random(&[batch, channels, height, width], 3);
            let expected = images
                .conv2d(&kernel, 1, 2, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, outputs, 1, 1)).unwrap())
                .unwrap();
            let out = layer.forward(&images.transpose(0, 1).unwrap()).unwrap();
            let diff = crate::max_abs_diff(&out.transpose(0, 1).unwrap(), &expected);
            assert!(diff < 1e-5, "{height}x{width}: {diff}");
        }
    }
}
