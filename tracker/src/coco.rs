//! COCO-style detection evaluation: average precision per category over IoU
//! thresholds 0.50:0.05:0.95 (and at 0.50), with COCO's greedy matching,
//! 101-point interpolated precision and 100 detections per image.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrackerError};
use crate::tao::TaoDataset;

/// One detection, as COCO's results format lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionResult {
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    pub score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryAp {
    pub id: u64,
    pub name: String,
    pub ground_truth: usize,
    /// Mean over IoU 0.50:0.05:0.95.
    pub ap: f64,
    pub ap50: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    /// Means over the categories that have ground truth.
    pub ap: f64,
    pub ap50: f64,
    pub categories: Vec<CategoryAp>,
}

pub const MAX_DETECTIONS_PER_IMAGE: usize = 100;

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// AP of one category at one IoU threshold. `detections` are (image, score,
/// box) sorted by score, best first; `truths` maps images to boxes.
fn average_precision(
    detections: &[(u64, f64, [f64; 4])],
    truths: &BTreeMap<u64, Vec<[f64; 4]>>,
    threshold: f64,
) -> f64 {
    let total: usize = truths.values().map(Vec::len).sum();
    if total == 0 {
        return f64::NAN;
    }
    let mut taken: BTreeMap<u64, Vec<bool>> = truths
        .iter()
        .map(|(k, v)| (*k, vec![false; v.len()]))
        .collect();
    let mut precision = Vec::with_capacity(detections.len());
    let mut recall = Vec::with_capacity(detections.len());
    let (mut tp, mut fp) = (0usize, 0usize);
    for (image, _, bbox) in detections {
        let mut best = None;
        let mut best_iou = threshold.min(1.0 - 1e-10);
        if let (Some(boxes), Some(used)) = (truths.get(image), taken.get(image)) {
            for (j, truth) in boxes.iter().enumerate() {
                if used[j] {
                    continue;
                }
                let overlap = iou(bbox, truth);
                if overlap >= best_iou {
                    best_iou = overlap;
                    best = Some(j);
                }
            }
        }
        match best {
            Some(j) => {
                if let Some(used) = taken.get_mut(image) {
                    used[j] = true;
                }
                tp += 1;
            }
            None => fp += 1,
        }
        precision.push(tp as f64 / (tp + fp) as f64);
        recall.push(tp as f64 / total as f64);
    }
    // Precision envelope: the best precision at this recall or beyond.
    for i in (0..precision.len().saturating_sub(1)).rev() {
        precision[i] = precision[i].max(precision[i + 1]);
    }
    let mut sum = 0.0;
    for k in 0..=100 {
        let r = k as f64 / 100.0;
        let at = recall.partition_point(|&x| x < r);
        sum += precision.get(at).copied().unwrap_or(0.0);
    }
    sum / 101.0
}

/// Evaluates `results` against the ground truth of `dataset`.
pub fn evaluate(dataset: &TaoDataset, results: &[DetectionResult]) -> DetectionReport {
    let mut per_image: BTreeMap<u64, Vec<&DetectionResult>> = BTreeMap::new();
    for r in results {
        per_image.entry(r.image_id).or_default().push(r);
    }
    // COCO's cap: the best 100 per image, over all categories.
    let mut kept: BTreeMap<u64, Vec<(u64, f64, [f64; 4])>> = BTreeMap::new();
    for (image, mut dets) in per_image {
        dets.sort_by(|a, b| b.score.total_cmp(&a.score));
        for d in dets.into_iter().take(MAX_DETECTIONS_PER_IMAGE) {
            kept.entry(d.category_id)
                .or_default()
                .push((image, d.score, d.bbox));
        }
    }
    let mut categories = Vec::new();
    for category in &dataset.categories {
        let mut truths: BTreeMap<u64, Vec<[f64; 4]>> = BTreeMap::new();
        for a in dataset
            .annotations
            .iter()
            .filter(|a| a.category_id == category.id && a.iscrowd == 0)
        {
            truths.entry(a.image_id).or_default().push(a.bbox);
        }
        let count: usize = truths.values().map(Vec::len).sum();
        if count == 0 {
            continue;
        }
        let mut detections = kept.remove(&category.id).unwrap_or_default();
        detections.sort_by(|a, b| b.1.total_cmp(&a.1));
        let per_threshold: Vec<f64> = (0..10)
            .map(|k| average_precision(&detections, &truths, 0.5 + 0.05 * k as f64))
            .collect();
        categories.push(CategoryAp {
            id: category.id,
            name: category.name.clone(),
            ground_truth: count,
            ap: per_threshold.iter().sum::<f64>() / per_threshold.len() as f64,
            ap50: per_threshold[0],
        });
    }
    let mean = |f: fn(&CategoryAp) -> f64| {
        if categories.is_empty() {
            0.0
        } else {
            categories.iter().map(f).sum::<f64>() / categories.len() as f64
        }
    };
    DetectionReport {
        ap: mean(|c| c.ap),
        ap50: mean(|c| c.ap50),
        categories,
    }
}

pub fn read_results(path: &Path) -> Result<Vec<DetectionResult>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrackerError::io(path, e))?;
    let results: Vec<DetectionResult> =
        serde_json::from_str(&text).map_err(|e| TrackerError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if let Some(bad) = results.iter().find(|r| {
        !r.score.is_finite()
            || r.bbox.iter().any(|v| !v.is_finite())
            || r.bbox[2] < 0.0
            || r.bbox[3] < 0.0
    }) {
        return Err(TrackerError::Format {
            path: path.to_owned(),
            reason: format!("invalid detection {bad:?}: boxes need finite, non-negative sizes and scores finite"),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tao::{Annotation, Category, Image};

    fn dataset(boxes: &[(u64, u64, [f64; 4])]) -> TaoDataset {
        TaoDataset {
            images: (1..=3)
                .map(|id| Image {
                    id,
                    video_id: 1,
                    frame_index: id,
                    file_name: String::new(),
                    width: 100,
                    height: 100,
                })
                .collect(),
            annotations: boxes
                .iter()
                .enumerate()
                .map(|(i, &(image_id, category_id, bbox))| Annotation {
                    id: i as u64 + 1,
                    image_id,
                    video_id: 1,
                    track_id: i as u64 + 1,
                    category_id,
                    bbox,
                    area: bbox[2] * bbox[3],
                    iscrowd: 0,
                    visibility: None,
                })
                .collect(),
            categories: vec![
                Category {
                    id: 1,
                    name: "a".into(),
                    synset: None,
                },
                Category {
                    id: 2,
                    name: "b".into(),
                    synset: None,
                },
            ],
            ..Default::default()
        }
    }

    fn det(image_id: u64, category_id: u64, bbox: [f64; 4], score: f64) -> DetectionResult {
        DetectionResult {
            image_id,
            category_id,
            bbox,
            score,
        }
    }

    #[test]
    fn perfect_detections_score_one() {
        let gt = dataset(&[
            (1, 1, [10.0, 10.0, 20.0, 20.0]),
            (2, 1, [50.0, 50.0, 10.0, 30.0]),
            (2, 2, [0.0, 0.0, 5.0, 5.0]),
        ]);
        let results: Vec<DetectionResult> = gt
            .annotations
            .iter()
            .map(|a| det(a.image_id, a.category_id, a.bbox, 0.9))
            .collect();
        let report = evaluate(&gt, &results);
        assert_eq!((report.ap, report.ap50), (1.0, 1.0));
        assert_eq!(report.categories.len(), 2);
    }

    #[test]
    fn a_confident_false_positive_halves_precision() {
        let gt = dataset(&[(1, 1, [10.0, 10.0, 20.0, 20.0])]);
        let results = [
            det(1, 1, [60.0, 60.0, 20.0, 20.0], 0.9),
            det(1, 1, [10.0, 10.0, 20.0, 20.0], 0.8),
        ];
        let report = evaluate(&gt, &results);
        assert!((report.ap50 - 0.5).abs() < 1e-12, "{report:?}");
        // Ranked the other way round, the false positive costs nothing.
        let results = [
            det(1, 1, [60.0, 60.0, 20.0, 20.0], 0.7),
            det(1, 1, [10.0, 10.0, 20.0, 20.0], 0.8),
        ];
        assert_eq!(evaluate(&gt, &results).ap50, 1.0);
    }

    #[test]
    fn iou_thresholds_and_duplicates() {
        let gt = dataset(&[
            (1, 1, [0.0, 0.0, 10.0, 10.0]),
            (2, 1, [0.0, 0.0, 10.0, 10.0]),
        ]);
        // IoU 0.6 on image 1 (counts at 0.50, 0.55, 0.60), a miss on image 2.
        let results = [det(1, 1, [0.0, 0.0, 10.0, 6.0], 0.9)];
        let report = evaluate(&gt, &results);
        // Recall 0.5 at precision 1: 51 of 101 recall points.
        assert!((report.ap50 - 51.0 / 101.0).abs() < 1e-12, "{report:?}");
        assert!(
            (report.ap - 3.0 * 51.0 / 101.0 / 10.0).abs() < 1e-12,
            "{report:?}"
        );
        // A duplicate of a matched box is a false positive.
        let results = [
            det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
            det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.8),
            det(2, 1, [0.0, 0.0, 10.0, 10.0], 0.7),
        ];
        let report = evaluate(&gt, &results);
        // TP, FP, TP: precision 1, 1/2, 2/3 at recall 0.5, 0.5, 1 → envelope 1 up to 0.5, 2/3 after.
        let want = (51.0 * 1.0 + 50.0 * (2.0 / 3.0)) / 101.0;
        assert!((report.ap50 - want).abs() < 1e-12, "{report:?}");
    }
}
