//! Image preprocessing as the reference image processors do it.
//!
//! Both pipelines reproduce Hugging Face transformers' slow image processors
//! (4.x) step by step, rounding where they round, so that a checkpoint sees
//! the same pixels here as there:
//!
//! - OWL-ViT, `OwlViTImageProcessor`: Pillow bicubic resize of the RGB8
//!   image straight to S×S (aspect not kept), with Pillow's fixed-point
//!   arithmetic and pass order (Pillow 13's), so the resized bytes are
//!   Pillow's bytes; then ×1/255 and CLIP normalisation in f32.
//! - OWLv2, `Owlv2ImageProcessor`: ×1/255 to f32, pad bottom/right to a
//!   square, scipy `gaussian_filter` anti-aliasing (when shrinking) and
//!   linear `zoom` to S×S (mode "mirror", grid mode), clip to the padded
//!   image's range, CLIP normalisation. Intermediate images are f32 and each
//!   filter sums in f64, as scipy does on float32 arrays.
//!
//! Output is CHW f32, S×S per channel.

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};

use crate::{ModelError, Result};

// numpy turns these f64 lists into f32 arrays; going through f64 here gives
// the same f32 values.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The default OWLv2 pad value: transformers 4.x and the original OWLv2 pad
/// with gray.
pub const OWLV2_PAD_VALUE: f32 = 0.5;

/// Which family's preprocessing (and box convention) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwlVersion {
    /// OWL-ViT: stretch to a square.
    V1,
    /// OWLv2: pad to a square, then resize.
    V2,
}

/// Multipliers that take normalised (x0, y0, x1, y1) boxes back to source
/// pixels of a `width`×`height` image.
///
/// OWL-ViT stretched the image, so each axis scales by its own side; OWLv2
/// padded it to a max(W, H) square, so both axes scale by that side.
pub fn box_scale(version: OwlVersion, width: u32, height: u32) -> [f32; 4] {
    let (w, h) = (width as f32, height as f32);
    match version {
        OwlVersion::V1 => [w, h, w, h],
        OwlVersion::V2 => {
            let m = w.max(h);
            [m, m, m, m]
        }
    }
}

/// Turns RGB8 frames into model input for one model family and input size.
///
/// Filter weights depend only on the frame size, so the last frame size's
/// weights are kept and reused while frames keep that size.
pub struct Preprocessor {
    version: OwlVersion,
    size: usize,
    pad_value: f32,
    plan: Mutex<Option<Arc<Plan>>>,
}

impl Preprocessor {
    /// A preprocessor producing `size`×`size` images (the model's
    /// `vision_config.image_size`: 768 for OWL-ViT base, 960 for OWLv2 base).
    pub fn new(version: OwlVersion, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(ModelError::InvalidInput(
                "preprocess size must be positive".into(),
            ));
        }
        // Pillow indexes with C ints; staying below that also keeps every
        // buffer size computation in range.
        if size > 1 << 15 {
            return Err(ModelError::InvalidInput(format!(
                "preprocess size {size} is too large"
            )));
        }
        Ok(Self {
            version,
            size,
            pad_value: OWLV2_PAD_VALUE,
            plan: Mutex::new(None),
        })
    }

    /// The value OWLv2 pads with (in rescaled 0..1 units), default 0.5 as in
    /// transformers 4.x and the original OWLv2; transformers 5.x pads with
    /// 0.0. OWL-ViT does not pad and ignores it.
    pub fn with_pad_value(mut self, pad_value: f32) -> Self {
        self.pad_value = pad_value;
        self
    }

    pub fn version(&self) -> OwlVersion {
        self.version
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn pad_value(&self) -> f32 {
        self.pad_value
    }

    /// Preprocesses packed RGB8 pixels (row-major, `width`×`height`×3) into
    /// normalised CHW f32 values, 3×S×S.
    pub fn pixels(&self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return Err(ModelError::Image(format!("empty image ({width}x{height})")));
        }
        if w > i32::MAX as usize / 4 || h > i32::MAX as usize / 4 {
            return Err(ModelError::Image(format!(
                "image too large ({width}x{height})"
            )));
        }
        let expected = w
            .checked_mul(h)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| ModelError::Image(format!("image too large ({width}x{height})")))?;
        if rgb.len() != expected {
            return Err(ModelError::Image(format!(
                "{width}x{height} RGB8 needs {expected} bytes, got {}",
                rgb.len()
            )));
        }
        let plan = self.plan_for(w, h);
        match &*plan {
            Plan::V1(p) => Ok(p.run(rgb, w, h, self.size)),
            Plan::V2(p) => {
                if !self.pad_value.is_finite() {
                    return Err(ModelError::InvalidInput(format!(
                        "pad value {} is not finite",
                        self.pad_value
                    )));
                }
                Ok(p.run(rgb, w, h, self.size, self.pad_value))
            }
        }
    }

    /// [`Self::pixels`] as a (1, 3, S, S) f32 tensor on `device`.
    pub fn tensor(&self, rgb: &[u8], width: u32, height: u32, device: &Device) -> Result<Tensor> {
        let px = self.pixels(rgb, width, height)?;
        Ok(Tensor::from_vec(px, (1, 3, self.size, self.size), device)?)
    }

    fn plan_for(&self, w: usize, h: usize) -> Arc<Plan> {
        // A poisoned lock only means another thread panicked mid-swap of an
        // Arc; the cached value is still whole.
        let mut slot = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = slot.as_ref() {
            if p.input() == (w, h) {
                return Arc::clone(p);
            }
        }
        let plan = Arc::new(match self.version {
            OwlVersion::V1 => Plan::V1(V1Plan::new(w, h, self.size)),
            OwlVersion::V2 => Plan::V2(V2Plan::new(w, h, self.size)),
        });
        *slot = Some(Arc::clone(&plan));
        plan
    }
}

impl Clone for Preprocessor {
    fn clone(&self) -> Self {
        Self {
            version: self.version,
            size: self.size,
            pad_value: self.pad_value,
            plan: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("version", &self.version)
            .field("size", &self.size)
            .field("pad_value", &self.pad_value)
            .finish()
    }
}

enum Plan {
    V1(V1Plan),
    V2(V2Plan),
}

impl Plan {
    fn input(&self) -> (usize, usize) {
        match self {
            Plan::V1(p) => (p.w, p.h),
            Plan::V2(p) => (p.w, p.h),
        }
    }
}

/// ×1/255 as numpy does it on uint8 (f64 product, then f32).
fn rescale_lut() -> [f32; 256] {
    let mut lut = [0f32; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        *out = (v as f64 * (1.0 / 255.0)) as f32;
    }
    lut
}

fn clip_mean_std() -> ([f32; 3], [f32; 3]) {
    (CLIP_MEAN.map(|m| m as f32), CLIP_STD.map(|s| s as f32))
}

// ---------------------------------------------------------------------------
// OWL-ViT: Pillow's ImagingResample, 8-bit path, bicubic.

/// Pillow keeps 2 bits of headroom above the 8-bit result for the filter's
/// negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One axis of Pillow's separable resample: for each output index, the first
/// source index, the tap count and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    k: Vec<i32>,
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole
    /// source range. When shrinking, the kernel is widened by the scale so
    /// every source pixel contributes.
    fn bicubic(in_size: usize, out_size: usize) -> Self {
        const SUPPORT: f64 = 2.0;
        let scale = in_size as f64 / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut k = vec![0i32; out_size * ksize];
        let mut pre = vec![0f64; ksize];
        let ss = 1.0 / filterscale;
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let n = xmax.max(0) as usize;
            let mut ww = 0.0;
            for (x, p) in pre.iter_mut().enumerate().take(n) {
                let w = bicubic(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *p = w;
                ww += w;
            }
            let row = &mut k[xx * ksize..(xx + 1) * ksize];
            for (dst, &p) in row.iter_mut().zip(&pre[..n]) {
                let p = if ww != 0.0 { p / ww } else { p };
                let scaled = p * (1u32 << PRECISION_BITS) as f64;
                *dst = if p < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            bounds.push((xmin as usize, n));
        }
        Self { bounds, ksize, k }
    }

    fn taps(&self, out: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[out];
        (start, &self.k[out * self.ksize..out * self.ksize + n])
    }
}

/// Pillow's `clip8`: drop the fraction bits, saturate to a byte.
#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);

struct V1Plan {
    w: usize,
    h: usize,
    /// `None` where Pillow skips the pass because that side keeps its size.
    horizontal: Option<Coeffs>,
    vertical: Option<Coeffs>,
    /// Pillow 13 runs the vertical pass first when the height shrinks by
    /// more than twice what the width does; the intermediate image is
    /// rounded to bytes, so the order shows in the result. (Earlier Pillow
    /// always went horizontal first.)
    vertical_first: bool,
}

impl V1Plan {
    fn new(w: usize, h: usize, size: usize) -> Self {
        let (dw, dh) = (w as i64 - size as i64, h as i64 - size as i64);
        Self {
            w,
            h,
            horizontal: (w != size).then(|| Coeffs::bicubic(w, size)),
            vertical: (h != size).then(|| Coeffs::bicubic(h, size)),
            vertical_first: dh > 0 && dh > 2 * dw,
        }
    }

    fn run(&self, rgb: &[u8], w: usize, h: usize, size: usize) -> Vec<f32> {
        let resized = match (&self.horizontal, &self.vertical) {
            (None, None) => rgb.to_vec(),
            (Some(hc), None) => resample_horizontal(rgb, w, 0..h, hc, size),
            (None, Some(vc)) => resample_vertical(rgb, w, 0, vc, size),
            (Some(hc), Some(vc)) if self.vertical_first => {
                let mid = resample_vertical(rgb, w, 0, vc, size);
                resample_horizontal(&mid, w, 0..size, hc, size)
            }
            (Some(hc), Some(vc)) => {
                // Only the rows the vertical pass reads.
                let (first, _) = vc.bounds[0];
                let (last, n) = vc.bounds[size - 1];
                let mid = resample_horizontal(rgb, w, first..last + n, hc, size);
                resample_vertical(&mid, size, first, vc, size)
            }
        };
        let out = &resized[..];
        debug_assert_eq!(out.len(), size * size * 3);

        let lut = rescale_lut();
        let (mean, std) = clip_mean_std();
        let mut norm = [[0f32; 256]; 3];
        for c in 0..3 {
            for v in 0..256 {
                norm[c][v] = (lut[v] - mean[c]) / std[c];
            }
        }
        let plane = size * size;
        let mut px = vec![0f32; 3 * plane];
        let (r, rest) = px.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, p) in out.chunks_exact(3).enumerate() {
            r[i] = norm[0][p[0] as usize];
            g[i] = norm[1][p[1] as usize];
            b[i] = norm[2][p[2] as usize];
        }
        px
    }
}

/// Pillow's `ImagingResampleHorizontal_8bpc` over `rows` of an interleaved
/// RGB image `w` wide; the result holds just those rows.
fn resample_horizontal(
    rgb: &[u8],
    w: usize,
    rows: std::ops::Range<usize>,
    coeffs: &Coeffs,
    out_w: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (src, dst) in rows
        .map(|y| &rgb[y * w * 3..(y + 1) * w * 3])
        .zip(out.chunks_exact_mut(out_w * 3))
    {
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (start, k) = coeffs.taps(xx);
            let mut ss = [ROUND_HALF; 3];
            for (p, &kx) in src[start * 3..(start + k.len()) * 3].chunks_exact(3).zip(k) {
                ss[0] = ss[0].wrapping_add((p[0] as i32).wrapping_mul(kx));
                ss[1] = ss[1].wrapping_add((p[1] as i32).wrapping_mul(kx));
                ss[2] = ss[2].wrapping_add((p[2] as i32).wrapping_mul(kx));
            }
            px[0] = clip8(ss[0]);
            px[1] = clip8(ss[1]);
            px[2] = clip8(ss[2]);
        }
    }
    out
}

/// Pillow's `ImagingResampleVertical_8bpc`; `src` holds rows starting at
/// source row `row0`, each `w` pixels wide.
fn resample_vertical(src: &[u8], w: usize, row0: usize, coeffs: &Coeffs, out_h: usize) -> Vec<u8> {
    let stride = w * 3;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (yy, dst) in out.chunks_exact_mut(stride).enumerate() {
        let (start, k) = coeffs.taps(yy);
        acc.fill(ROUND_HALF);
        for (dy, &ky) in k.iter().enumerate() {
            let y = start + dy - row0;
            let row = &src[y * stride..(y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add((p as i32).wrapping_mul(ky));
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// OWLv2: scipy.ndimage gaussian_filter + zoom(order=1, mode="mirror",
// grid_mode=True) on the padded float image.

/// Index into a line of `len` samples extended by scipy's "mirror" mode
/// (reflect about the edge samples: `c b | a b c d | c b`), periodic beyond
/// one reflection.
#[inline]
fn mirror(i: isize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let m = i.rem_euclid(period);
    if m >= len as isize {
        (period - m) as usize
    } else {
        m as usize
    }
}

/// numpy's pairwise summation (`np.sum` over a contiguous f64 array), so
/// the kernel normalises by the very same total.
fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

/// scipy's `_gaussian_kernel1d(sigma, 0, radius)` with radius
/// `int(4 * sigma + 0.5)`; returns the weights from the centre outwards
/// (the kernel is symmetric).
fn gaussian_half_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let sigma2 = sigma * sigma;
    let c = -0.5 / sigma2;
    let phi: Vec<f64> = (-radius..=radius)
        .map(|x| (c * (x * x) as f64).exp())
        .collect();
    let total = numpy_sum(&phi);
    phi[radius as usize..].iter().map(|p| p / total).collect()
}

/// One output sample of the linear zoom along an axis: two source indices
/// (already mirrored) and their weights.
#[derive(Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f64,
    w1: f64,
}

/// scipy's `map_coordinate` for mode "mirror".
fn map_mirror(x: f64, len: usize) -> f64 {
    let len_i = len as i64;
    if x < 0.0 {
        if len <= 1 {
            return 0.0;
        }
        let sz2 = 2 * len_i - 2;
        let x = (sz2 * ((-x / sz2 as f64) as i64)) as f64 + x;
        if x <= (1 - len_i) as f64 {
            x + sz2 as f64
        } else {
            -x
        }
    } else if x > (len_i - 1) as f64 {
        if len <= 1 {
            return 0.0;
        }
        let sz2 = 2 * len_i - 2;
        let x = x - (sz2 * ((x / sz2 as f64) as i64)) as f64;
        if x >= len_i as f64 {
            sz2 as f64 - x
        } else {
            x
        }
    } else {
        x
    }
}

/// scipy `zoom(order=1, grid_mode=True)` along one axis, `in_len` → `out_len`.
fn zoom_taps(in_len: usize, out_len: usize) -> Vec<Tap> {
    let zoom = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|k| {
            let cc = map_mirror((k as f64 + 0.5) * zoom - 0.5, in_len);
            let fl = cc.floor();
            let start = fl as isize;
            // scipy derives the last spline weight as 1 minus the others.
            let w0 = 1.0 - (cc - fl);
            let w1 = 1.0 - w0;
            Tap {
                i0: mirror(start, in_len),
                i1: mirror(start + 1, in_len),
                w0,
                w1,
            }
        })
        .collect()
}

struct V2Plan {
    w: usize,
    h: usize,
    /// Side of the padded square.
    m: usize,
    /// Gaussian weights from the centre out; `None` when not shrinking.
    kernel: Option<Vec<f64>>,
    /// Same table for rows and columns: both go `m` → `size`.
    taps: Vec<Tap>,
}

impl V2Plan {
    fn new(w: usize, h: usize, size: usize) -> Self {
        let m = w.max(h);
        let factor = m as f64 / size as f64;
        let sigma = ((factor - 1.0) / 2.0).max(0.0);
        // scipy skips axes whose sigma is not above 1e-15.
        let kernel = (sigma > 1e-15).then(|| gaussian_half_kernel(sigma));
        Self {
            w,
            h,
            m,
            kernel,
            taps: zoom_taps(m, size),
        }
    }

    fn run(&self, rgb: &[u8], w: usize, h: usize, size: usize, pad: f32) -> Vec<f32> {
        let m = self.m;
        let lut = rescale_lut();
        let img: Vec<f32> = rgb.iter().map(|&v| lut[v as usize]).collect();
        let pad_row = vec![pad; w * 3];

        // `_clip_warp_output` clips to the padded image's range.
        let (mut lo_u8, mut hi_u8) = (u8::MAX, u8::MIN);
        for &v in rgb {
            lo_u8 = lo_u8.min(v);
            hi_u8 = hi_u8.max(v);
        }
        let (mut lo, mut hi) = (lut[lo_u8 as usize], lut[hi_u8 as usize]);
        if w != h {
            lo = lo.min(pad);
            hi = hi.max(pad);
        }

        let mut rows = FilteredRows {
            plan: self,
            src: Padded {
                img: &img,
                pad_row: &pad_row,
                w,
                h,
            },
            pad,
            slots: [(None, vec![0f32; m * 3]), (None, vec![0f32; m * 3])],
            acc: vec![0f64; m * 3],
            vert: vec![0f32; m * 3],
            pad_const: pad,
            older: 0,
        };
        if let Some(k) = &self.kernel {
            rows.pad_const = gaussian_of_constant(pad, k);
        }

        let (mean, std) = clip_mean_std();
        let plane = size * size;
        let mut px = vec![0f32; 3 * plane];
        for (i, ty) in self.taps.iter().enumerate() {
            let s0 = rows.ensure(ty.i0, None);
            let s1 = rows.ensure(ty.i1, Some(s0));
            let g0 = &rows.slots[s0].1;
            let g1 = &rows.slots[s1].1;
            for (j, tx) in self.taps.iter().enumerate() {
                for c in 0..3 {
                    // scipy's order of terms. Its zoom also runs along the
                    // channel axis, with weights 1 and 0: the zero terms
                    // change nothing, nor does starting the sum from 0.
                    let mut t = g0[tx.i0 * 3 + c] as f64 * ty.w0 * tx.w0;
                    t += g0[tx.i1 * 3 + c] as f64 * ty.w0 * tx.w1;
                    t += g1[tx.i0 * 3 + c] as f64 * ty.w1 * tx.w0;
                    t += g1[tx.i1 * 3 + c] as f64 * ty.w1 * tx.w1;
                    let v = (t as f32).max(lo).min(hi);
                    px[c * plane + i * size + j] = (v - mean[c]) / std[c];
                }
            }
        }
        px
    }
}

/// What the symmetric 1-D gaussian makes of a constant line, in scipy's
/// order of operations.
fn gaussian_of_constant(v: f32, half: &[f64]) -> f32 {
    let v = v as f64;
    let mut acc = v * half[0];
    for &wj in half[1..].iter().rev() {
        acc += (v + v) * wj;
    }
    acc as f32
}

/// The padded image, rows on demand: the first `h` rows are the image, the
/// rest padding (the padded columns are constant and handled apart).
#[derive(Clone, Copy)]
struct Padded<'a> {
    img: &'a [f32],
    pad_row: &'a [f32],
    w: usize,
    h: usize,
}

impl<'a> Padded<'a> {
    fn row(self, y: usize) -> &'a [f32] {
        if y < self.h {
            &self.img[y * self.w * 3..(y + 1) * self.w * 3]
        } else {
            self.pad_row
        }
    }
}

/// Rows of the anti-aliased padded image (both gaussian passes done, f32),
/// computed on demand and kept two at a time: the zoom walks rows in order
/// and reads two neighbours per output row.
struct FilteredRows<'a> {
    plan: &'a V2Plan,
    src: Padded<'a>,
    pad: f32,
    slots: [(Option<usize>, Vec<f32>); 2],
    acc: Vec<f64>,
    vert: Vec<f32>,
    /// A padding-only line after the gaussian pass (or the pad value when
    /// there is no gaussian).
    pad_const: f32,
    older: usize,
}

impl FilteredRows<'_> {
    /// Slot index holding filtered row `y`, computing it into a slot other
    /// than `keep` if needed.
    fn ensure(&mut self, y: usize, keep: Option<usize>) -> usize {
        for s in 0..2 {
            if self.slots[s].0 == Some(y) {
                self.older = 1 - s;
                return s;
            }
        }
        let s = match keep {
            Some(k) => 1 - k,
            None => self.older,
        };
        let mut buf = std::mem::take(&mut self.slots[s].1);
        self.filter_row(y, &mut buf);
        self.slots[s] = (Some(y), buf);
        self.older = 1 - s;
        s
    }

    fn filter_row(&mut self, y: usize, out: &mut [f32]) {
        let m = self.plan.m;
        let src = self.src;
        let wc = src.w * 3;
        let Some(half) = &self.plan.kernel else {
            out[..wc].copy_from_slice(src.row(y));
            out[wc..].fill(self.pad);
            return;
        };
        let r = half.len() - 1;

        // Vertical pass (axis 0) into `vert`, f64 sums stored as f32.
        let all_pad = (-(r as isize)..=r as isize).all(|d| mirror(y as isize + d, m) >= src.h);
        if all_pad {
            // Both passes over padding alone give one value throughout.
            out.fill(gaussian_of_constant(self.pad_const, half));
            return;
        }
        let acc = &mut self.acc[..wc];
        for (a, &v) in acc.iter_mut().zip(src.row(y)) {
            *a = v as f64 * half[0];
        }
        for j in (1..=r).rev() {
            let up = src.row(mirror(y as isize - j as isize, m));
            let down = src.row(mirror(y as isize + j as isize, m));
            let wj = half[j];
            for ((a, &p), &q) in acc.iter_mut().zip(up).zip(down) {
                *a += (p as f64 + q as f64) * wj;
            }
        }
        for (v, &a) in self.vert[..wc].iter_mut().zip(acc.iter()) {
            *v = a as f32;
        }
        self.vert[wc..m * 3].fill(self.pad_const);

        // Horizontal pass (axis 1): interior samples as whole-slice sums,
        // the `r` samples at each end through the mirror.
        let vert = &self.vert[..m * 3];
        let acc = &mut self.acc[..m * 3];
        for (a, &v) in acc.iter_mut().zip(vert) {
            *a = v as f64 * half[0];
        }
        let (interior_lo, interior_hi) = if m > 2 * r { (r, m - r) } else { (m, m) };
        for j in (1..=r).rev() {
            let wj = half[j];
            let (lo, hi) = (interior_lo * 3, interior_hi * 3);
            if lo < hi {
                let left = &vert[lo - 3 * j..hi - 3 * j];
                let right = &vert[lo + 3 * j..hi + 3 * j];
                for ((a, &p), &q) in acc[lo..hi].iter_mut().zip(left).zip(right) {
                    *a += (p as f64 + q as f64) * wj;
                }
            }
            for x in (0..interior_lo).chain(interior_hi..m) {
                let xl = mirror(x as isize - j as isize, m);
                let xr = mirror(x as isize + j as isize, m);
                for c in 0..3 {
                    acc[x * 3 + c] += (vert[xl * 3 + c] as f64 + vert[xr * 3 + c] as f64) * wj;
                }
            }
        }
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = a as f32;
        }
    }
}
