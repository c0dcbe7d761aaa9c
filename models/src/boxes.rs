//! Axis-aligned box geometry on `[x0, y0, x1, y1]` corners, with the same
//! formulas as transformers' `box_iou` / `generalized_box_iou`.

/// (cx, cy, w, h) to (x0, y0, x1, y1).
pub fn center_to_corners([cx, cy, w, h]: [f32; 4]) -> [f32; 4] {
    [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
}

pub fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

fn intersection(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

/// Intersection over union; 0 when both boxes are empty.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let inter = intersection(a, b);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// IoU minus the share of the enclosing box that neither box covers; in
/// [-1, 1], and informative even for boxes that do not overlap.
pub fn generalized_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let inter = intersection(a, b);
    let union = area(a) + area(b) - inter;
    let enclosing =
        (a[2].max(b[2]) - a[0].min(b[0])).max(0.0) * (a[3].max(b[3]) - a[1].min(b[1])).max(0.0);
    if union <= 0.0 || enclosing <= 0.0 {
        return 0.0;
    }
    inter / union - (enclosing - union) / enclosing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        assert!((iou(&a, &b) - 1.0 / 7.0).abs() < 1e-6);
        assert_eq!(iou(&a, &a), 1.0);
        let far = [10.0, 10.0, 11.0, 11.0];
        assert_eq!(iou(&a, &far), 0.0);
        // Enclosing box 11×11 = 121, union 5: GIoU = 0 - 116/121.
        assert!((generalized_iou(&a, &far) + 116.0 / 121.0).abs() < 1e-6);
        assert_eq!(
            center_to_corners([0.5, 0.5, 0.2, 0.4]),
            [0.4, 0.3, 0.6, 0.7]
        );
    }
}
