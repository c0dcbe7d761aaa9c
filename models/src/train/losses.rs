//! Differentiable losses on candle tensors.

use candle_core::{Tensor, D};

use super::matching::Focal;

/// Sigmoid focal loss (Lin et al.), summed: `logits` and `targets` (0/1) of
/// the same shape; as torchvision's `sigmoid_focal_loss(reduction="sum")`.
pub fn sigmoid_focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    focal: Focal,
) -> candle_core::Result<Tensor> {
    let p = candle_nn::ops::sigmoid(logits)?;
    // Binary cross-entropy with logits, stable: max(x, 0) − x·t + log(1 + e^−|x|)
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let ce = ((logits.relu()? - (logits * targets)?)? + softplus)?;
    let ones = targets.ones_like()?;
    let p_t = ((&p * targets)? + ((&ones - &p)? * (&ones - targets)?)?)?;
    let modulating = (&ones - &p_t)?.powf(f64::from(focal.gamma))?;
    let alpha = f64::from(focal.alpha);
    let alpha_t = ((targets * alpha)? + ((&ones - targets)? * (1.0 - alpha))?)?;
    (ce * modulating)?.mul(&alpha_t)?.sum_all()
}

/// L1 and generalised-IoU losses of matched boxes (K, 4) in (cx, cy, w, h),
/// each summed over the K pairs (L1 over the four coordinates too).
pub fn box_losses(predicted: &Tensor, target: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let l1 = (predicted - target)?.abs()?.sum_all()?;
    let corners = |b: &Tensor| -> candle_core::Result<Tensor> {
        let (c, s) = (b.narrow(D::Minus1, 0, 2)?, b.narrow(D::Minus1, 2, 2)?);
        let half = (s * 0.5)?;
        Tensor::cat(&[(&c - &half)?, (&c + &half)?], D::Minus1)
    };
    let (a, b) = (corners(predicted)?, corners(target)?);
    let area = |x: &Tensor| -> candle_core::Result<Tensor> {
        let wh = (x.narrow(D::Minus1, 2, 2)? - x.narrow(D::Minus1, 0, 2)?)?;
        wh.narrow(D::Minus1, 0, 1)?
            .mul(&wh.narrow(D::Minus1, 1, 1)?)
    };
    let top_left = a
        .narrow(D::Minus1, 0, 2)?
        .maximum(&b.narrow(D::Minus1, 0, 2)?)?;
    let bottom_right = a
        .narrow(D::Minus1, 2, 2)?
        .minimum(&b.narrow(D::Minus1, 2, 2)?)?;
    let overlap = (bottom_right - top_left)?.relu()?;
    let intersection = overlap
        .narrow(D::Minus1, 0, 1)?
        .mul(&overlap.narrow(D::Minus1, 1, 1)?)?;
    let union = ((area(&a)? + area(&b)?)? - &intersection)?;
    let iou = intersection.div(&union)?;
    let outer_tl = a
        .narrow(D::Minus1, 0, 2)?
        .minimum(&b.narrow(D::Minus1, 0, 2)?)?;
    let outer_br = a
        .narrow(D::Minus1, 2, 2)?
        .maximum(&b.narrow(D::Minus1, 2, 2)?)?;
    let outer = (outer_br - outer_tl)?.relu()?;
    let enclosing = outer
        .narrow(D::Minus1, 0, 1)?
        .mul(&outer.narrow(D::Minus1, 1, 1)?)?;
    let giou = (iou - ((&enclosing - &union)?.div(&enclosing))?)?;
    let giou_loss = (giou.ones_like()? - giou)?.sum_all()?;
    Ok((l1, giou_loss))
}
