//! From per-patch logits and boxes to detections in source pixels: the
//! reference post-processing (`post_process_object_detection`) plus the
//! practical steps a user wants (threshold, per-query NMS, a cap, clipping).

use serde::Serialize;

use crate::boxes::{center_to_corners, iou};

/// One detection, box in source pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Sigmoid of the best query logit.
    pub score: f32,
    /// Index of that query.
    pub label: usize,
    /// The image patch that predicted it.
    #[serde(skip)]
    pub patch: usize,
    /// Sigmoid of the label's logit: `score` itself, unless detections are
    /// ranked by objectness.
    #[serde(skip)]
    pub query_score: f32,
}

/// How raw per-patch predictions become the detections reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostProcess {
    /// Keep scores strictly above this.
    pub threshold: f32,
    /// Within one query, drop a box overlapping a better one by more than
    /// this IoU; 1.0 keeps everything.
    pub nms_iou: f32,
    /// Keep at most this many, best first; 0 keeps all.
    pub top_k: usize,
    /// Clip boxes to the image.
    pub clip: bool,
    /// Report every (patch, query) pair above the threshold instead of each
    /// patch's best query only: what per-category evaluation (AP) wants,
    /// since a patch's second-best query may be the right one.
    pub all_queries: bool,
    /// Score each patch by OWLv2's objectness (is there an object at all?)
    /// instead of its best query, and suppress overlaps whatever their
    /// label: class-agnostic detection, labelled with the best query.
    pub objectness: bool,
}

impl Default for PostProcess {
    /// Practical defaults: what a person wants to see on a frame.
    fn default() -> Self {
        PostProcess {
            threshold: 0.1,
            nms_iou: 0.3,
            top_k: 100,
            clip: true,
            all_queries: false,
            objectness: false,
        }
    }
}

impl PostProcess {
    /// Every patch's detection exactly as transformers' post-processing gives
    /// it at threshold 0: no NMS, no cap, no clipping.
    pub fn reference() -> Self {
        PostProcess {
            threshold: 0.0,
            nms_iou: 1.0,
            top_k: 0,
            clip: false,
            all_queries: false,
            objectness: false,
        }
    }

    /// `logits` (N × Q, row-major) and `boxes` (N × (cx, cy, w, h) in [0,1])
    /// of one image, and its objectness logits (N) when the model has them;
    /// `scale` maps normalised corners to source pixels; `size` is the source
    /// image (width, height) for clipping.
    pub fn run(
        &self,
        logits: &[f32],
        queries: usize,
        boxes: &[[f32; 4]],
        objectness: Option<&[f32]>,
        scale: [f32; 4],
        size: (u32, u32),
    ) -> Vec<Detection> {
        if queries == 0 {
            return Vec::new();
        }
        let objectness = objectness.filter(|o| self.objectness && o.len() == boxes.len());
        let detection = |patch: usize, label: usize, query_score: f32, b: &[f32; 4]| {
            let score = objectness.map_or(query_score, |o| sigmoid(o[patch]));
            let c = center_to_corners(*b);
            Detection {
                bbox: [
                    c[0] * scale[0],
                    c[1] * scale[1],
                    c[2] * scale[2],
                    c[3] * scale[3],
                ],
                score,
                label,
                patch,
                query_score,
            }
        };
        let mut detections: Vec<Detection> = Vec::new();
        for (patch, (row, b)) in logits.chunks(queries).zip(boxes).enumerate() {
            if self.all_queries {
                for (label, &logit) in row.iter().enumerate() {
                    let found = detection(patch, label, sigmoid(logit), b);
                    if found.score > self.threshold {
                        detections.push(found);
                    }
                }
                continue;
            }
            let (label, best) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                        if v > bv {
                            (i, v)
                        } else {
                            (bi, bv)
                        }
                    });
            let found = detection(patch, label, sigmoid(best), b);
            if found.score > self.threshold {
                detections.push(found);
            }
        }
        // Stable: equal scores keep patch order.
        detections.sort_by(|a, b| b.score.total_cmp(&a.score));
        if self.nms_iou < 1.0 {
            detections = non_maximum_suppression(detections, self.nms_iou, objectness.is_none());
        }
        if self.top_k > 0 {
            detections.truncate(self.top_k);
        }
        if self.clip {
            let (w, h) = (size.0 as f32, size.1 as f32);
            for d in &mut detections {
                d.bbox = [
                    d.bbox[0].clamp(0.0, w),
                    d.bbox[1].clamp(0.0, h),
                    d.bbox[2].clamp(0.0, w),
                    d.bbox[3].clamp(0.0, h),
                ];
            }
        }
        detections
    }
}

/// A logit as a probability.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Greedy NMS over detections sorted best first, within each label or
/// across all.
fn non_maximum_suppression(
    sorted: Vec<Detection>,
    max_iou: f32,
    per_label: bool,
) -> Vec<Detection> {
    let mut kept: Vec<Detection> = Vec::with_capacity(sorted.len());
    for candidate in sorted {
        let suppressed = kept.iter().any(|k| {
            (!per_label || k.label == candidate.label) && iou(&k.bbox, &candidate.bbox) > max_iou
        });
        if !suppressed {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes() -> Vec<[f32; 4]> {
        vec![
            [0.5, 0.5, 0.2, 0.2],
            [0.51, 0.5, 0.2, 0.2],
            [0.2, 0.2, 0.1, 0.1],
            [0.9, 0.9, 0.4, 0.4],
        ]
    }

    #[test]
    fn reference_keeps_every_patch_sorted() {
        let logits = [1.0, -1.0, 0.5, 2.0, -3.0, -4.0, 0.0, 0.1];
        let out = PostProcess::reference().run(
            &logits,
            2,
            &boxes(),
            None,
            [100.0, 50.0, 100.0, 50.0],
            (100, 50),
        );
        assert_eq!(out.len(), 4);
        assert_eq!(
            out.iter().map(|d| d.patch).collect::<Vec<_>>(),
            [1, 0, 3, 2]
        );
        assert_eq!(out[0].label, 1);
        assert!((out[0].score - sigmoid(2.0)).abs() < 1e-7);
        // Not clipped: the last box runs past the image.
        let last = out.iter().find(|d| d.patch == 3).unwrap();
        assert!((last.bbox[2] - 110.0).abs() < 1e-4);
    }

    #[test]
    fn all_queries_reports_every_pair_above_the_threshold() {
        let logits = [1.0, 0.5, -3.0, 2.0];
        let all = PostProcess {
            all_queries: true,
            ..PostProcess::reference()
        };
        let out = all.run(&logits, 2, &boxes()[..2], None, [1.0; 4], (1, 1));
        let pairs: Vec<(usize, usize)> = out.iter().map(|d| (d.patch, d.label)).collect();
        assert_eq!(pairs, [(1, 1), (0, 0), (0, 1), (1, 0)]);
        let best_only =
            PostProcess::reference().run(&logits, 2, &boxes()[..2], None, [1.0; 4], (1, 1));
        assert_eq!(best_only.len(), 2);
    }

    #[test]
    fn practical_defaults_suppress_threshold_cap_and_clip() {
        let logits = [3.0, 2.9, -5.0, 1.0];
        let out = PostProcess::default().run(&logits, 1, &boxes(), None, [100.0; 4], (100, 100));
        // Patch 1 overlaps patch 0 (same query) and goes; patch 2 is below threshold.
        assert_eq!(out.iter().map(|d| d.patch).collect::<Vec<_>>(), [0, 3]);
        assert_eq!(out[1].bbox[2], 100.0);
        let capped = PostProcess {
            top_k: 1,
            ..PostProcess::default()
        }
        .run(&logits, 1, &boxes(), None, [100.0; 4], (100, 100));
        assert_eq!(capped.len(), 1);
    }

    #[test]
    fn objectness_ranks_patches_and_suppresses_across_labels() {
        // Patch 0 and 1 overlap with different best queries; patch 3 has a
        // confident query but no objectness.
        let logits = [2.0, -1.0, -1.0, 0.5, -2.0, -2.0, 4.0, 0.0];
        let objectness = [1.0, 2.0, -3.0, -4.0];
        let post = PostProcess {
            objectness: true,
            ..PostProcess::default()
        };
        let out = post.run(
            &logits,
            2,
            &boxes(),
            Some(&objectness),
            [100.0; 4],
            (100, 100),
        );
        assert_eq!(out.iter().map(|d| d.patch).collect::<Vec<_>>(), [1]);
        assert!((out[0].score - sigmoid(2.0)).abs() < 1e-7);
        assert_eq!(out[0].label, 1);
        assert!((out[0].query_score - sigmoid(0.5)).abs() < 1e-7);
        // Without the flag the same objectness is ignored.
        let by_query = PostProcess::default().run(
            &logits,
            2,
            &boxes(),
            Some(&objectness),
            [100.0; 4],
            (100, 100),
        );
        assert_eq!(by_query[0].patch, 3);
    }
}
