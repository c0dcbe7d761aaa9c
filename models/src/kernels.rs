//! CPU kernels for the element-wise work of the networks.
//!
//! candle computes `exp` one scalar libm call at a time on one thread; in
//! attention's softmax and the MLPs' quick-GELU that made element-wise work
//! cost as much as the matmuls. These kernels use a branch-free polynomial
//! `exp` (relative error ~2e-7, below f32's own rounding of the inputs) that
//! the compiler vectorises, compiled for AVX2+FMA when the CPU has it, and
//! split across rayon's threads. Anything that is not contiguous f32 on the
//! CPU takes candle's own path.
//!
//! Attention, layer norm and quick-GELU also carry their own backward passes:
//! built from candle's differentiable operations, training spent three times
//! the forward pass going backwards, most of it allocating and sweeping the
//! T×T attention matrices element by element. Here the scores never leave a
//! per-thread scratch buffer: the backward pass recomputes them per (batch,
//! head), as flash attention does.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
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

/// The contiguous f32 input of a custom op.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("kernel input must be contiguous"),
    }
}

/// Contiguous f32 input of a custom op, copied into a buffer to work in.
fn owned_f32(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Vec<f32>> {
    f32_slice(storage, layout).map(<[f32]>::to_vec)
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

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        arg.apply_op2_no_bwd(&grad_res.contiguous()?, &QuickGeluGrad)
            .map(Some)
    }
}

/// d/dx x·σ(a x) = σ + a x σ (1 − σ), times the incoming gradient.
struct QuickGeluGrad;

#[inline(always)]
fn quick_gelu_grad_generic(xs: &[f32], grads: &mut [f32]) {
    for (g, &x) in grads.iter_mut().zip(xs) {
        let s = 1.0 / (1.0 + exp(-1.702 * x));
        *g *= s + 1.702 * x * s * (1.0 - s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quick_gelu_grad_avx2(xs: &[f32], grads: &mut [f32]) {
    quick_gelu_grad_generic(xs, grads)
}

fn quick_gelu_grad_chunk(xs: &[f32], grads: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { quick_gelu_grad_avx2(xs, grads) };
    }
    quick_gelu_grad_generic(xs, grads)
}

impl CustomOp2 for QuickGeluGrad {
    fn name(&self) -> &'static str {
        "owltrack-quick-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        grads: &CpuStorage,
        grads_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = f32_slice(xs, xs_layout)?;
        let mut out = owned_f32(grads, grads_layout)?;
        if out.len() != xs.len() {
            candle_core::bail!("quick-GELU gradient of another shape than its input");
        }
        const CHUNK: usize = 16 * 1024;
        out.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK))
            .for_each(|(g, x)| quick_gelu_grad_chunk(x, g));
        Ok((CpuStorage::F32(out), xs_layout.shape().clone()))
    }
}

/// Layer norm over the last dimension with weight and bias, as one pass per row.
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "owltrack-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = f32_slice(xs, xs_layout)?;
        let weight = f32_slice(weight, weight_layout)?;
        let bias = f32_slice(bias, bias_layout)?;
        let cols = weight.len();
        if cols == 0 || bias.len() != cols || xs.len() % cols != 0 {
            candle_core::bail!("layer norm weights do not fit the input's last dimension");
        }
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(cols)
            .zip(xs.par_chunks(cols))
            .for_each(|(y, x)| {
                let (mean, rstd) = row_moments(x, self.eps);
                for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
                    *y = (x - mean) * rstd * w + b;
                }
            });
        Ok((CpuStorage::F32(out), xs_layout.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let cols = weight.elem_count();
        let rows = xs.elem_count() / cols.max(1);
        // One op returns all three gradients stacked: (rows + 2, cols).
        let packed = xs.apply_op3_no_bwd(
            weight,
            &grad_res.contiguous()?,
            &LayerNormGrad { eps: self.eps },
        )?;
        let grad_xs = packed.narrow(0, 0, rows)?.reshape(xs.shape())?;
        let grad_weight = packed.get(rows)?;
        let grad_bias = packed.get(rows + 1)?;
        Ok((Some(grad_xs), Some(grad_weight), Some(grad_bias)))
    }
}

/// Mean and 1/sqrt(variance + eps) of one row (biased variance, as torch).
fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (variance + eps).sqrt())
}

/// Inputs (x, weight, dy); output rows: dx for every input row, then dweight,
/// then dbias.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "owltrack-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        grads: &CpuStorage,
        grads_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = f32_slice(xs, xs_layout)?;
        let weight = f32_slice(weight, weight_layout)?;
        let grads = f32_slice(grads, grads_layout)?;
        let cols = weight.len();
        if cols == 0 || xs.len() % cols != 0 || grads.len() != xs.len() {
            candle_core::bail!("layer norm gradient shapes do not fit");
        }
        let rows = xs.len() / cols;
        let mut out = vec![0f32; (rows + 2) * cols];
        let (grad_xs, sums) = out.split_at_mut(rows * cols);
        // Rows in blocks: each block's weight and bias gradients are summed
        // on its own, then the blocks are added up.
        const BLOCK: usize = 64;
        let partials: Vec<Vec<f32>> = grad_xs
            .par_chunks_mut(BLOCK * cols)
            .zip(xs.par_chunks(BLOCK * cols))
            .zip(grads.par_chunks(BLOCK * cols))
            .map(|((dx_block, x_block), g_block)| {
                let mut partial = vec![0f32; 2 * cols];
                let (dw, db) = partial.split_at_mut(cols);
                let mut normed = vec![0f32; cols];
                for ((dx, x), g) in dx_block
                    .chunks_mut(cols)
                    .zip(x_block.chunks(cols))
                    .zip(g_block.chunks(cols))
                {
                    let (mean, rstd) = row_moments(x, self.eps);
                    let (mut mean_gw, mut mean_gwn) = (0f32, 0f32);
                    for c in 0..cols {
                        normed[c] = (x[c] - mean) * rstd;
                        let gw = g[c] * weight[c];
                        mean_gw += gw;
                        mean_gwn += gw * normed[c];
                        dw[c] += g[c] * normed[c];
                        db[c] += g[c];
                    }
                    mean_gw /= cols as f32;
                    mean_gwn /= cols as f32;
                    for c in 0..cols {
                        dx[c] = rstd * (g[c] * weight[c] - mean_gw - normed[c] * mean_gwn);
                    }
                }
                partial
            })
            .collect();
        for partial in partials {
            for (sum, value) in sums.iter_mut().zip(partial) {
                *sum += value;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, cols))))
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

/// Where one (batch, head) task finds its q, k and v in a (B, T, 3D) buffer.
#[derive(Clone, Copy)]
struct HeadLayout {
    tokens: usize,
    hidden: usize,
    head_dim: usize,
    heads: usize,
}

impl HeadLayout {
    fn of(layout: &Layout, heads: usize) -> candle_core::Result<(usize, Self)> {
        let (batch, tokens, width) = layout.shape().dims3()?;
        let hidden = width / 3;
        if width % 3 != 0 || heads == 0 || hidden % heads != 0 {
            candle_core::bail!(
                "attention input width {width} does not hold {heads} heads of q, k and v"
            );
        }
        Ok((
            batch,
            HeadLayout {
                tokens,
                hidden,
                head_dim: hidden / heads,
                heads,
            },
        ))
    }

    /// Offset of head `task`'s q columns in the (B, T, 3D) buffer; k and v
    /// follow at +D and +2D.
    fn qkv_offset(&self, task: usize) -> usize {
        let (b, h) = (task / self.heads, task % self.heads);
        b * self.tokens * 3 * self.hidden + h * self.head_dim
    }

    /// Offset of head `task`'s columns in a (B, T, D) buffer.
    fn out_offset(&self, task: usize) -> usize {
        let (b, h) = (task / self.heads, task % self.heads);
        b * self.tokens * self.hidden + h * self.head_dim
    }
}

/// dst (m×n, row stride `dst_rs`) = lhs (m×k) · rhs (k×n), on this thread;
/// each operand given as (pointer, column stride, row stride).
///
/// # Safety
/// Every pointer with its strides must address valid memory for the shapes.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_into(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    (lhs, lhs_cs, lhs_rs): (*const f32, usize, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Fills `scores` (T×T) with softmax(q·kᵀ) of one head, causal or not.
///
/// # Safety
/// `qkv` must point at the head's q columns inside a (B, T, 3D) buffer.
unsafe fn head_probabilities(scores: &mut [f32], qkv: *const f32, at: HeadLayout, causal: bool) {
    let (t, rs) = (at.tokens, 3 * at.hidden);
    matmul_into(
        (t, t, at.head_dim),
        scores.as_mut_ptr(),
        t,
        (qkv, 1, rs),
        (qkv.add(at.hidden), rs, 1),
    );
    for (i, row) in scores.chunks_mut(t).enumerate() {
        if causal {
            row[i + 1..].fill(f32::NEG_INFINITY);
        }
        softmax_row(row);
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
        let (batch, at) = HeadLayout::of(layout, self.heads)?;
        let qkv = f32_slice(storage, layout)?;
        let (t, hidden) = (at.tokens, at.hidden);
        let mut out = vec![0f32; batch * t * hidden];
        let out_ptr = SharedOut(out.as_mut_ptr());
        (0..batch * self.heads).into_par_iter().for_each(|task| {
            SCORES.with(|scores| {
                let mut scores = scores.borrow_mut();
                scores.resize(t * t, 0.0);
                // SAFETY: every pointer and stride stays inside `qkv`, the
                // scratch matrix, or this task's block of `out`; tasks write
                // disjoint blocks.
                unsafe {
                    let head = qkv.as_ptr().add(at.qkv_offset(task));
                    head_probabilities(&mut scores, head, at, self.causal);
                    matmul_into(
                        (t, at.head_dim, t),
                        out_ptr.get().add(at.out_offset(task)),
                        hidden,
                        (scores.as_ptr(), 1, t),
                        (head.add(2 * hidden), 1, 3 * hidden),
                    );
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((batch, t, hidden))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        arg.apply_op3_no_bwd(
            res,
            &grad_res.contiguous()?,
            &AttentionGrad {
                heads: self.heads,
                causal: self.causal,
            },
        )
        .map(Some)
    }
}

thread_local! {
    static SCORE_GRADS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Inputs (qkv, out, dout); output dqkv. Per head, with P = softmax(S):
/// dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dO ⊙ O)), dQ = dS K,
/// dK = dSᵀ Q. Masked entries have P = 0, so their dS vanishes too.
struct AttentionGrad {
    heads: usize,
    causal: bool,
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "owltrack-attention-grad"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        qkv_layout: &Layout,
        out: &CpuStorage,
        out_layout: &Layout,
        grads: &CpuStorage,
        grads_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, at) = HeadLayout::of(qkv_layout, self.heads)?;
        let qkv = f32_slice(qkv, qkv_layout)?;
        let out = f32_slice(out, out_layout)?;
        let grads = f32_slice(grads, grads_layout)?;
        let (t, hidden, d) = (at.tokens, at.hidden, at.head_dim);
        if out.len() != batch * t * hidden || grads.len() != out.len() {
            candle_core::bail!("attention gradient shapes do not fit");
        }
        let mut grad_qkv = vec![0f32; qkv.len()];
        let grad_ptr = SharedOut(grad_qkv.as_mut_ptr());
        (0..batch * self.heads).into_par_iter().for_each(|task| {
            SCORES.with(|scores| {
                SCORE_GRADS.with(|score_grads| {
                    let mut p = scores.borrow_mut();
                    let mut ds = score_grads.borrow_mut();
                    p.resize(t * t, 0.0);
                    ds.resize(t * t, 0.0);
                    let (rs, o_at) = (3 * hidden, at.out_offset(task));
                    // SAFETY: as in the forward pass; each task writes only
                    // its head's q, k and v columns of `grad_qkv`.
                    unsafe {
                        let head = qkv.as_ptr().add(at.qkv_offset(task));
                        let (q, k, v) = (head, head.add(hidden), head.add(2 * hidden));
                        let d_head = grad_ptr.get().add(at.qkv_offset(task));
                        let d_out = grads.as_ptr().add(o_at);
                        head_probabilities(&mut p, head, at, self.causal);
                        // dP = dO · Vᵀ
                        matmul_into(
                            (t, t, d),
                            ds.as_mut_ptr(),
                            t,
                            (d_out, 1, hidden),
                            (v, rs, 1),
                        );
                        for i in 0..t {
                            let o_row = &out[o_at + i * hidden..o_at + i * hidden + d];
                            let g_row = &grads[o_at + i * hidden..o_at + i * hidden + d];
                            let delta: f32 = o_row.iter().zip(g_row).map(|(o, g)| o * g).sum();
                            let (p_row, ds_row) =
                                (&p[i * t..(i + 1) * t], &mut ds[i * t..(i + 1) * t]);
                            for (g, &pv) in ds_row.iter_mut().zip(p_row) {
                                *g = pv * (*g - delta);
                            }
                        }
                        // dV = Pᵀ · dO, dQ = dS · K, dK = dSᵀ · Q
                        matmul_into(
                            (t, d, t),
                            d_head.add(2 * hidden),
                            rs,
                            (p.as_ptr(), t, 1),
                            (d_out, 1, hidden),
                        );
                        matmul_into((t, d, t), d_head, rs, (ds.as_ptr(), 1, t), (k, 1, rs));
                        matmul_into(
                            (t, d, t),
                            d_head.add(hidden),
                            rs,
                            (ds.as_ptr(), t, 1),
                            (q, 1, rs),
                        );
                    }
                })
            });
        });
        Ok((CpuStorage::F32(grad_qkv), qkv_layout.shape().clone()))
    }
}

/// The columns of a 3×3, stride-2, padding-1 convolution (im2col) in the
/// channel-major layout the stem keeps its feature maps in: input
/// (C, B, H, W), output (C·9 + 1, B·⌈H/2⌉·⌈W/2⌉), row c·9 + 3·dy + dx
/// holding the input at (2i + dy − 1, 2j + dx − 1), zero outside, and a
/// last row of ones for the bias. So one matmul by the (C_out, C·9 + 1)
/// kernel-and-bias matrix gives the next layer's (C_out, B, H/2, W/2)
/// input. The gradient scatters the columns back (col2im) in one pass,
/// where candle's gradients of the slices that build the same columns
/// allocate and sum nine input-sized tensors, and of a broadcast bias,
/// reduce element by element.
struct StemColumns;

/// The input row (or column) that output row `out` reads at tap 0, 1 or 2,
/// if inside the input.
#[inline(always)]
fn stem_source(out: usize, tap: usize, side: usize) -> Option<usize> {
    (2 * out + tap).checked_sub(1).filter(|&at| at < side)
}

/// Calls `visit(input offset, column offset)` for every output position of
/// tap (dy, dx) whose input lies inside an image of `height` × `width`.
#[inline(always)]
fn for_each_tap_pair(
    (height, width): (usize, usize),
    (dy, dx): (usize, usize),
    mut visit: impl FnMut(usize, usize),
) {
    let cols = width.div_ceil(2);
    for i in 0..height.div_ceil(2) {
        let Some(y) = stem_source(i, dy, height) else {
            continue;
        };
        for j in 0..cols {
            if let Some(x) = stem_source(j, dx, width) {
                visit(y * width + x, i * cols + j);
            }
        }
    }
}

impl CustomOp1 for StemColumns {
    fn name(&self) -> &'static str {
        "owltrack-stem-columns"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = f32_slice(storage, layout)?;
        let (channels, batch, height, width) = layout.shape().dims4()?;
        let (rows, cols) = (height.div_ceil(2), width.div_ceil(2));
        let plane = rows * cols;
        let row_length = batch * plane;
        let mut out = vec![0f32; (channels * 9 + 1) * row_length];
        out.par_chunks_mut(row_length)
            .enumerate()
            .for_each(|(row, column)| {
                if row == channels * 9 {
                    column.fill(1.0);
                    return;
                }
                let (channel, dy, dx) = (row / 9, row % 9 / 3, row % 3);
                for (b, out_plane) in column.chunks_mut(plane).enumerate() {
                    let image = &input[(channel * batch + b) * height * width..][..height * width];
                    for_each_tap_pair((height, width), (dy, dx), |from, to| {
                        out_plane[to] = image[from];
                    });
                }
            });
        let shape = Shape::from((channels * 9 + 1, row_length));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (channels, batch, height, width) = arg.dims4()?;
        grad_res
            .contiguous()?
            .apply_op1_no_bwd(&StemColumnsGrad {
                channels,
                batch,
                height,
                width,
            })
            .map(Some)
    }
}

/// col2im: each input position summed over the column entries that read it.
struct StemColumnsGrad {
    channels: usize,
    batch: usize,
    height: usize,
    width: usize,
}

impl CustomOp1 for StemColumnsGrad {
    fn name(&self) -> &'static str {
        "owltrack-stem-columns-grad"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let grads = f32_slice(storage, layout)?;
        let (channels, batch, height, width) = (self.channels, self.batch, self.height, self.width);
        let (rows, cols) = (height.div_ceil(2), width.div_ceil(2));
        let plane = rows * cols;
        if layout.shape().dims2()? != (channels * 9 + 1, batch * plane) {
            candle_core::bail!("stem column gradient of another shape than its columns");
        }
        let mut out = vec![0f32; channels * batch * height * width];
        out.par_chunks_mut(height * width)
            .enumerate()
            .for_each(|(image_index, image)| {
                let (channel, b) = (image_index / batch, image_index % batch);
                for tap in 0..9 {
                    let column = &grads[(channel * 9 + tap) * batch * plane + b * plane..][..plane];
                    for_each_tap_pair((height, width), (tap / 3, tap % 3), |to, from| {
                        image[to] += column[from];
                    });
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((channels, batch, height, width)),
        ))
    }
}

/// The columns of a 3×3 stride-2 convolution (see `StemColumns`),
/// differentiable, on CPU f32; None elsewhere, for the caller's general path.
pub(crate) fn stem_columns(xs: &Tensor) -> Option<candle_core::Result<Tensor>> {
    on_cpu_f32(xs).then(|| xs.contiguous()?.apply_op1(StemColumns))
}

/// Self-attention over a fused (B, T, 3D) q/k/v projection (q pre-scaled),
/// on CPU f32; None elsewhere, for the caller's general path.
pub(crate) fn fused_attention(
    qkv: &Tensor,
    heads: usize,
    causal: bool,
) -> Option<candle_core::Result<Tensor>> {
    on_cpu_f32(qkv).then(|| qkv.contiguous()?.apply_op1(Attention { heads, causal }))
}

fn on_cpu_f32(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

/// Kernels without a backward pass run only where nothing is being trained.
fn fast_path(xs: &Tensor) -> bool {
    on_cpu_f32(xs) && !xs.track_op()
}

/// Layer norm over the last dimension, differentiable in all three inputs,
/// on CPU f32; None elsewhere, for the caller's general path.
pub(crate) fn layer_norm(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Option<candle_core::Result<Tensor>> {
    on_cpu_f32(xs).then(|| {
        xs.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNormOp { eps: eps as f32 },
        )
    })
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
    if on_cpu_f32(xs) {
        xs.contiguous()?.apply_op1(QuickGelu)
    } else {
        xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

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
            let diff = crate::max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "causal {causal}: {diff}");
        }
    }

    #[test]
    fn kernels_match_candle() {
        let xs = Tensor::randn(0f32, 4.0, (3, 5, 37), &Device::Cpu).unwrap();
        let diff = |a: Tensor, b: Tensor| crate::max_abs_diff(&a, &b);
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

    /// Gradients of Σ r ⊙ f(x) through our kernel and through candle's
    /// differentiable reference, for every input.
    fn gradients_agree(
        inputs: &[Tensor],
        ours: impl Fn(&[Tensor]) -> Tensor,
        reference: impl Fn(&[Tensor]) -> Tensor,
    ) {
        let vars: Vec<candle_core::Var> = inputs
            .iter()
            .map(|t| candle_core::Var::from_tensor(t).unwrap())
            .collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (got, want) = (ours(&tensors), reference(&tensors));
        let weights = Tensor::randn(0f32, 1.0, got.shape(), &Device::Cpu).unwrap();
        assert!(crate::max_abs_diff(&got, &want) < 1e-5, "forward differs");
        let grads_of = |out: &Tensor| {
            (out * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (ours, theirs) = (grads_of(&got), grads_of(&want));
        for (i, var) in vars.iter().enumerate() {
            let a = ours.get(var.as_tensor()).expect("our gradient");
            let b = theirs.get(var.as_tensor()).expect("reference gradient");
            let scale = crate::max_abs_diff(b, &b.zeros_like().unwrap()).max(1.0);
            let diff = crate::max_abs_diff(a, b);
            assert!(diff < 2e-5 * scale, "input {i}: gradient differs by {diff}");
        }
    }

    #[test]
    fn backward_passes_match_candle() {
        let randn =
            |shape: &[usize], std: f32| Tensor::randn(0f32, std, shape, &Device::Cpu).unwrap();
        for side in [(8, 12), (7, 10), (5, 5)] {
            gradients_agree(
                &[randn(&[3, 2, side.0, side.1], 1.0)],
                |x| stem_columns(&x[0]).unwrap().unwrap(),
                |x| crate::clip::stem_columns_by_slicing(&x[0]).unwrap(),
            );
        }
        gradients_agree(
            &[randn(&[2, 5, 33], 3.0)],
            |x| quick_gelu(&x[0]).unwrap(),
            |x| (&x[0] * candle_nn::ops::sigmoid(&(&x[0] * 1.702).unwrap()).unwrap()).unwrap(),
        );
        gradients_agree(
            &[
                randn(&[3, 70, 24], 2.0),
                randn(&[24], 1.0),
                randn(&[24], 1.0),
            ],
            |x| layer_norm(&x[0], &x[1], &x[2], 1e-5).unwrap().unwrap(),
            |x| {
                let size = 24.0;
                let centered = x[0]
                    .broadcast_sub(&(x[0].sum_keepdim(D::Minus1).unwrap() / size).unwrap())
                    .unwrap();
                let variance =
                    (centered.sqr().unwrap().sum_keepdim(D::Minus1).unwrap() / size).unwrap();
                centered
                    .broadcast_div(&(variance + 1e-5).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(&x[1])
                    .unwrap()
                    .broadcast_add(&x[2])
                    .unwrap()
            },
        );
        let (batch, tokens, heads, head_dim) = (2, 9, 3, 4);
        let hidden = heads * head_dim;
        for causal in [false, true] {
            gradients_agree(
                &[randn(&[batch, tokens, 3 * hidden], 1.0)],
                |x| fused_attention(&x[0], heads, causal).unwrap().unwrap(),
                |x| {
                    let split = |at: usize| {
                        x[0].narrow(2, at * hidden, hidden)
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
                                (0..tokens)
                                    .map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })
                            })
                            .collect();
                        let mask = Tensor::from_vec(mask, (tokens, tokens), &Device::Cpu).unwrap();
                        scores = scores.broadcast_add(&mask).unwrap();
                    }
                    candle_nn::ops::softmax(&scores, D::Minus1)
                        .unwrap()
                        .matmul(&v)
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                        .reshape((batch, tokens, hidden))
                        .unwrap()
                },
            );
        }
    }
}
