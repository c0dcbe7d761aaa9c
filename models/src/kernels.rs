//! CPU kernels for the element-wise work of the networks.
//!
//! candle computes `exp` one scalar libm call at a time on one thread; in
//! attention's softmax and the MLPs' quick-GELU that made element-wise work
//! cost as much as the matmuls. These kernels use a branch-free polynomial
//! `exp` (relative error ~2e-7, below f32's own rounding of the inputs) that
//! the compiler vectorises, compiled for AVX2+FMA when the CPU has it, and
//! split across rayon's threads. Anything that is not contiguous f32 on the
//! CPU takes candle's own path.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2²³: adding and subtracting it rounds to the nearest integer.
const ROUNDER: f32 = 12_582_912.0;

#[inline(always)]
fn exp(x: f32) -> f32 {
    // Keeps 2^k a normal float; softmax's -inf becomes e^-87 ≈ 1e-38.
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUNDER) - ROUNDER;
    let r = x - k * LN2_HI - k * LN2_LO;
    // Cephes' expf polynomial on [-ln2/2, ln2/2].
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((k as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - max);
            *lane += *v;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inverse = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inverse;
    }
}

#[inline(always)]
fn quick_gelu_generic(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        *v /= 1.0 + exp(-1.702 * *v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32]) {
    softmax_row_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quick_gelu_avx2(xs: &mut [f32]) {
    quick_gelu_generic(xs)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED
            .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { softmax_row_avx2(row) };
    }
    softmax_row_generic(row)
}

fn quick_gelu_chunk(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { quick_gelu_avx2(xs) };
    }
    quick_gelu_generic(xs)
}

/// Contiguous f32 input of a custom op, copied into a buffer to work in.
fn owned_f32(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Vec<f32>> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(data[start..end].to_vec()),
        None => candle_core::bail!("kernel input must be contiguous"),
    }
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "owltrack-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut data = owned_f32(storage, layout)?;
        let cols = layout.dims().last().copied().unwrap_or(1).max(1);
        data.par_chunks_mut(cols).for_each(softmax_row);
        Ok((CpuStorage::F32(data), layout.shape().clone()))
    }
}

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "owltrack-quick-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut data = owned_f32(storage, layout)?;
        data.par_chunks_mut(16 * 1024).for_each(quick_gelu_chunk);
        Ok((CpuStorage::F32(data), layout.shape().clone()))
    }
}

/// Multi-head self-attention straight from the fused q/k/v projection.
///
/// Input (B, T, 3D) holds q (already scaled), k and v side by side; output
/// (B, T, D) has the heads side by side again. Each (batch, head) pair is one
/// task on rayon's threads: scores q·kᵀ into a per-thread scratch matrix,
/// softmax in place, then scores·v written straight into the head's columns
/// of the output. No head is ever copied out or transposed, and each small
/// matmul runs on one thread instead of splitting a 577×64 problem in two.
struct Attention {
    heads: usize,
    causal: bool,
}

thread_local! {
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Raw pointers into one buffer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every task writes a distinct (batch, head) block of the output.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so closures capture the whole (Send) wrapper rather
    /// than the raw pointer field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "owltrack-attention"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, tokens, width) = layout.shape().dims3()?;
        let hidden = width / 3;
        if width % 3 != 0 || hidden % self.heads != 0 {
            candle_core::bail!(
                "attention input width {width} does not hold {} heads of q, k and v",
                self.heads
            );
        }
        let head_dim = hidden / self.heads;
        let data = storage.as_slice::<f32>()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("attention input must be contiguous");
        };
        let qkv = &data[start..end];
        let mut out = vec![0f32; batch * tokens * hidden];
        let out_ptr = SharedOut(out.as_mut_ptr());
        let causal = self.causal;
        (0..batch * self.heads).into_par_iter().for_each(|task| {
            let (b, h) = (task / self.heads, task % self.heads);
            let base = b * tokens * width + h * head_dim;
            SCORES.with(|scores| {
                let mut scores = scores.borrow_mut();
                scores.resize(tokens * tokens, 0.0);
                let (rs, ts) = (width as isize, tokens as isize);
                // SAFETY: every pointer and stride stays inside `qkv`, the
                // scratch matrix, or this task's block of `out`; tasks write
                // disjoint blocks.
                unsafe {
                    let q = qkv.as_ptr().add(base);
                    let k = qkv.as_ptr().add(base + hidden);
                    let v = qkv.as_ptr().add(base + 2 * hidden);
                    gemm::gemm(
                        tokens,
                        tokens,
                        head_dim,
                        scores.as_mut_ptr(),
                        1,
                        ts,
                        false,
                        q,
                        1,
                        rs,
                        k,
                        rs,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    for (i, row) in scores.chunks_mut(tokens).enumerate() {
                        if causal {
                            row[i + 1..].fill(f32::NEG_INFINITY);
                        }
                        softmax_row(row);
                    }
                    let o = out_ptr.get().add(b * tokens * hidden + h * head_dim);
                    gemm::gemm(
                        tokens,
                        head_dim,
                        tokens,
                        o,
                        1,
                        hidden as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        ts,
                        v,
                        1,
                        rs,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((batch, tokens, hidden))))
    }
}

/// Self-attention over a fused (B, T, 3D) q/k/v projection (q pre-scaled),
/// on CPU f32; None elsewhere, for the caller's general path.
pub(crate) fn fused_attention(
    qkv: &Tensor,
    heads: usize,
    causal: bool,
) -> Option<candle_core::Result<Tensor>> {
    fast_path(qkv).then(|| {
        qkv.contiguous()?
            .apply_op1_no_bwd(&Attention { heads, causal })
    })
}

/// The kernels have no backward pass: anything being trained takes
/// candle's differentiable operations.
fn fast_path(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32 && !xs.track_op()
}

/// Softmax over the last dimension.
pub(crate) fn softmax_last_dim(xs: &Tensor) -> candle_core::Result<Tensor> {
    if fast_path(xs) {
        xs.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax_last_dim(xs)
    }
}

/// x · σ(1.702 x)
pub(crate) fn quick_gelu(xs: &Tensor) -> candle_core::Result<Tensor> {
    if fast_path(xs) {
        xs.contiguous()?.apply_op1_no_bwd(&QuickGelu)
    } else {
        xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "{worst}");
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.0));
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn fused_attention_matches_the_plain_path() {
        let (batch, tokens, heads, head_dim) = (2, 7, 3, 4);
        let hidden = heads * head_dim;
        let qkv = Tensor::randn(0f32, 1.0, (batch, tokens, 3 * hidden), &Device::Cpu).unwrap();
        for causal in [false, true] {
            let split = |at: usize| {
                qkv.narrow(2, at * hidden, hidden)
                    .unwrap()
                    .reshape((batch, tokens, heads, head_dim))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let mut scores = q.matmul(&k.t().unwrap()).unwrap();
            if causal {
                let mask: Vec<f32> = (0..tokens)
                    .flat_map(|i| {
                        (0..tokens).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (tokens, tokens), &Device::Cpu).unwrap();
                scores = scores.broadcast_add(&mask).unwrap();
            }
            let want = candle_nn::ops::softmax_last_dim(&scores)
                .unwrap()
                .matmul(&v)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((batch, tokens, hidden))
                .unwrap();
            let got = fused_attention(&qkv, heads, causal).unwrap().unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "causal {causal}: {diff}");
        }
    }

    #[test]
    fn kernels_match_candle() {
        let xs = Tensor::randn(0f32, 4.0, (3, 5, 37), &Device::Cpu).unwrap();
        let diff = |a: Tensor, b: Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let reference = candle_nn::ops::softmax_last_dim(&xs).unwrap();
        assert!(diff(softmax_last_dim(&xs).unwrap(), reference) < 1e-6);
        let reference = (&xs * candle_nn::ops::sigmoid(&(&xs * 1.702).unwrap()).unwrap()).unwrap();
        assert!(diff(quick_gelu(&xs).unwrap(), reference) < 1e-5);
        // Strided input takes the same result.
        let t = xs.transpose(1, 2).unwrap();
        let reference = candle_nn::ops::softmax_last_dim(&t.contiguous().unwrap()).unwrap();
        assert!(diff(softmax_last_dim(&t).unwrap(), reference) < 1e-6);
        // Masked entries (−inf) get (almost exactly) zero weight.
        let masked = Tensor::new(&[[0f32, f32::NEG_INFINITY, 1.0]], &Device::Cpu).unwrap();
        let w = softmax_last_dim(&masked).unwrap().to_vec2::<f32>().unwrap();
        assert!(w[0][1] < 1e-37 && (w[0][0] + w[0][2] - 1.0).abs() < 1e-6);
    }
}
