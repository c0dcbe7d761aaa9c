//! COCO detection evaluation, as pycocotools' `COCOeval` computes it for
//! boxes: average precision per category over IoU thresholds 0.50:0.05:0.95,
//! per size class, and average recall (golden cases from pycocotools in
//! `tests/fixtures/coco_ap`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_json, Result, TrackerError};
use crate::tao::Category;

/// One detection, as COCO's results format lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionResult {
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    pub score: f64,
}

/// The ground truth `eval-detection` scores against: a COCO detection
/// dataset. A TAO dataset is one too; its images' `video_id` and
/// `frame_index` let a sampled run be scored on the frames it read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DetectionGroundTruth {
    pub images: Vec<GroundTruthImage>,
    #[serde(default)]
    pub annotations: Vec<GroundTruthBox>,
    pub categories: Vec<Category>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroundTruthImage {
    pub id: u64,
    #[serde(default)]
    pub file_name: String,
    #[serde(default)]
    pub video_id: Option<u64>,
    #[serde(default)]
    pub frame_index: Option<u64>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroundTruthBox {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// The object's area (COCO: its segment's), which decides its size
    /// class; the box's when absent.
    #[serde(default)]
    pub area: Option<f64>,
    #[serde(default, deserialize_with = "crowd_flag")]
    pub iscrowd: bool,
}

/// COCO writes `iscrowd` as 0/1; some writers use true/false.
fn crowd_flag<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Number(u64),
        Bool(bool),
    }
    Ok(match Flag::deserialize(deserializer)? {
        Flag::Number(n) => n != 0,
        Flag::Bool(b) => b,
    })
}

impl GroundTruthImage {
    /// Whether a run reading every `every`-th frame of each video (by
    /// `frame_index`; 0 and 1 read all) reads this one.
    pub fn is_sampled(&self, every: u64) -> bool {
        every <= 1 || self.frame_index.is_some_and(|i| i.is_multiple_of(every))
    }
}

impl GroundTruthBox {
    fn area(&self) -> f64 {
        self.area.unwrap_or(self.bbox[2] * self.bbox[3])
    }
}

impl DetectionGroundTruth {
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path, "a COCO detection dataset")
    }

    /// Keeps only the frames a run reading every `every`-th frame of each
    /// video reads (the rule `detect --dataset --every` follows), and their
    /// annotations. Needs each image's `frame_index` when `every` > 1.
    pub fn keep_sampled(&mut self, every: u64, path: &Path) -> Result<()> {
        if every <= 1 {
            return Ok(());
        }
        if let Some(still) = self.images.iter().find(|i| i.frame_index.is_none()) {
            return Err(TrackerError::Format {
                path: path.to_owned(),
                reason: format!(
                    "image {} has no frame_index, so there is no every-{every}-th frame to keep \
                     (sampling needs a video dataset, such as TAO's)",
                    still.id
                ),
            });
        }
        self.images.retain(|i| i.is_sampled(every));
        let kept: HashSet<u64> = self.images.iter().map(|i| i.id).collect();
        self.annotations.retain(|a| kept.contains(&a.image_id));
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryAp {
    pub id: u64,
    pub name: String,
    /// Boxes that count (crowd regions do not).
    pub ground_truth: usize,
    /// Mean over IoU 0.50:0.05:0.95.
    pub ap: f64,
    pub ap50: f64,
}

/// COCO's twelve summary numbers, each a mean over the categories that have
/// ground truth of that size; `None` where no category has any (COCO
/// prints -1).
#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    pub ap: Option<f64>,
    pub ap50: Option<f64>,
    pub ap75: Option<f64>,
    pub ap_small: Option<f64>,
    pub ap_medium: Option<f64>,
    pub ap_large: Option<f64>,
    /// Recall with at most 1, 10 and 100 detections per image and category.
    pub ar1: Option<f64>,
    pub ar10: Option<f64>,
    pub ar100: Option<f64>,
    pub ar_small: Option<f64>,
    pub ar_medium: Option<f64>,
    pub ar_large: Option<f64>,
    pub categories: Vec<CategoryAp>,
}

impl DetectionReport {
    /// In the order of `COCOeval.stats`.
    pub fn stats(&self) -> [Option<f64>; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }
}

/// COCO keeps the best 100 detections of each category on each image.
pub const MAX_DETECTIONS_PER_IMAGE: usize = 100;
const MAX_DETECTIONS: [usize; 3] = [1, 10, MAX_DETECTIONS_PER_IMAGE];
/// COCO's size classes by area: all, small, medium, large (bounds belong
/// to both sides, as in COCO).
const AREA_RANGES: [(f64, f64); 4] = [
    (0.0, 1e10),
    (0.0, 32.0 * 32.0),
    (32.0 * 32.0, 96.0 * 96.0),
    (96.0 * 96.0, 1e10),
];
const ALL_AREAS: usize = 0;

/// numpy's `linspace(start, stop, num)`, to the last bit: COCO's thresholds
/// are made by it, and 0.9 is then 0.8999999999999999, which decides
/// whether an IoU of exactly 0.9 counts.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    (0..num)
        .map(|k| {
            if k + 1 == num {
                stop
            } else {
                k as f64 * step + start
            }
        })
        .collect()
}

/// IoU as pycocotools computes it; a crowd region is matched by the share of
/// the detection inside it.
fn coco_iou(detection: &[f64; 4], truth: &[f64; 4], crowd: bool) -> f64 {
    let w = (detection[2] + detection[0]).min(truth[2] + truth[0]) - detection[0].max(truth[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (detection[3] + detection[1]).min(truth[3] + truth[1]) - detection[1].max(truth[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let detection_area = detection[2] * detection[3];
    let union = if crowd {
        detection_area
    } else {
        detection_area + truth[2] * truth[3] - inter
    };
    inter / union
}

/// One image and category at one size class, as COCO's `evaluateImg`.
struct ImageEvaluation {
    /// Scores of the kept detections, best first.
    scores: Vec<f64>,
    /// Per IoU threshold and detection (at `t * detections + d`): the
    /// matched box's annotation id, 0 when unmatched (so, as in COCO, a
    /// match to annotation id 0 counts as none).
    matched: Vec<u64>,
    /// Per IoU threshold and detection: left out of the count (matched to a
    /// crowd or out-of-size box, or unmatched and itself out of size).
    ignored: Vec<bool>,
    /// Boxes that count.
    counted: usize,
}

fn evaluate_image(
    truths: &[&GroundTruthBox],
    detections: &[&DetectionResult],
    ious: &[Vec<f64>],
    (low, high): (f64, f64),
    thresholds: &[f64],
) -> ImageEvaluation {
    let out_of_range = |area: f64| area < low || area > high;
    let truth_ignored: Vec<bool> = truths
        .iter()
        .map(|t| t.iscrowd || out_of_range(t.area()))
        .collect();
    let mut order: Vec<usize> = (0..truths.len()).collect();
    order.sort_by_key(|&g| truth_ignored[g]);
    let mut matched = vec![0u64; detections.len() * thresholds.len()];
    let mut ignored = vec![false; detections.len() * thresholds.len()];
    for (t, &threshold) in thresholds.iter().enumerate() {
        let mut taken = vec![false; truths.len()];
        for (d, detection) in detections.iter().enumerate() {
            let mut best_iou = threshold.min(1.0 - 1e-10);
            let mut best: Option<usize> = None;
            for &g in &order {
                if taken[g] && !truths[g].iscrowd {
                    continue;
                }
                // Boxes that count come first: once one matched, stop at the ignored.
                if best.is_some_and(|m| !truth_ignored[m]) && truth_ignored[g] {
                    break;
                }
                if ious[d][g] < best_iou {
                    continue;
                }
                best_iou = ious[d][g];
                best = Some(g);
            }
            if let Some(g) = best {
                ignored[t * detections.len() + d] = truth_ignored[g];
                matched[t * detections.len() + d] = truths[g].id;
                taken[g] = true;
            }
            let area = detection.bbox[2] * detection.bbox[3];
            if matched[t * detections.len() + d] == 0 && out_of_range(area) {
                ignored[t * detections.len() + d] = true;
            }
        }
    }
    ImageEvaluation {
        scores: detections.iter().map(|d| d.score).collect(),
        matched,
        ignored,
        counted: truth_ignored.iter().filter(|&&i| !i).count(),
    }
}

/// Precision at each recall point (`None` without boxes that count) and the
/// final recall per IoU threshold, over one category's images, as COCO's
/// `accumulate`.
struct Accumulated {
    precision: Vec<Vec<f64>>,
    recall: Vec<f64>,
}

fn accumulate(
    evaluations: &[&ImageEvaluation],
    max_detections: usize,
    recall_points: &[f64],
    thresholds: usize,
) -> Option<Accumulated> {
    let counted: usize = evaluations.iter().map(|e| e.counted).sum();
    if counted == 0 {
        return None;
    }
    // (evaluation, detection) in image order, then best score first; the
    // sort is stable, as numpy's mergesort.
    let mut entries: Vec<(usize, usize)> = evaluations
        .iter()
        .enumerate()
        .flat_map(|(e, evaluation)| {
            (0..evaluation.scores.len().min(max_detections)).map(move |d| (e, d))
        })
        .collect();
    entries.sort_by(|a, b| {
        let score = |(e, d): (usize, usize)| evaluations[e].scores[d];
        score(*b)
            .partial_cmp(&score(*a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut precision = Vec::with_capacity(thresholds);
    let mut recall = Vec::with_capacity(thresholds);
    for t in 0..thresholds {
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        let mut precisions = Vec::with_capacity(entries.len());
        let mut recalls = Vec::with_capacity(entries.len());
        for &(e, d) in &entries {
            let evaluation = evaluations[e];
            let at = t * evaluation.scores.len() + d;
            if evaluation.ignored[at] {
                continue;
            }
            if evaluation.matched[at] != 0 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            recalls.push(tp / counted as f64);
            precisions.push(tp / (fp + tp + f64::EPSILON));
        }
        recall.push(recalls.last().copied().unwrap_or(0.0));
        // Precision envelope: the best precision at this recall or beyond.
        for i in (1..precisions.len()).rev() {
            if precisions[i] > precisions[i - 1] {
                precisions[i - 1] = precisions[i];
            }
        }
        precision.push(
            recall_points
                .iter()
                .map(|&r| {
                    let at = recalls.partition_point(|&x| x < r);
                    precisions.get(at).copied().unwrap_or(0.0)
                })
                .collect(),
        );
    }
    Some(Accumulated { precision, recall })
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (count > 0).then(|| sum / count as f64)
}

/// Evaluates `results` against `truth` as pycocotools' `COCOeval` does for
/// boxes, with its default parameters: per category, the best 100
/// detections per image, greedy matching in score order at IoU
/// 0.50:0.05:0.95, crowd regions and boxes outside a size class neither
/// found nor missed, 101-point interpolated precision. Detections of
/// categories the ground truth does not list are left out.
pub fn evaluate(truth: &DetectionGroundTruth, results: &[DetectionResult]) -> DetectionReport {
    let thresholds = linspace(0.5, 0.95, 10);
    let recall_points = linspace(0.0, 1.0, 101);
    let at_threshold = |value: f64| thresholds.iter().position(|&t| t == value);
    let (t50, t75) = (at_threshold(0.5), at_threshold(0.75));

    let mut truths: BTreeMap<(u64, u64), Vec<&GroundTruthBox>> = BTreeMap::new();
    for a in &truth.annotations {
        truths
            .entry((a.category_id, a.image_id))
            .or_default()
            .push(a);
    }
    let mut detections: BTreeMap<(u64, u64), Vec<&DetectionResult>> = BTreeMap::new();
    for r in results {
        detections
            .entry((r.category_id, r.image_id))
            .or_default()
            .push(r);
    }
    let listed: HashSet<u64> = truth.images.iter().map(|i| i.id).collect();

    // [size class][max detections][category]: None without boxes that count.
    let mut accumulated: Vec<Vec<Vec<Option<Accumulated>>>> = Vec::new();
    let mut category_ids: Vec<u64> = truth.categories.iter().map(|c| c.id).collect();
    category_ids.sort_unstable();
    category_ids.dedup();
    // Per category and size class, the images holding its boxes or
    // detections, in ascending id order (COCO's, which breaks score ties).
    let mut per_category: Vec<[Vec<ImageEvaluation>; 4]> = Vec::new();
    for &category in &category_ids {
        let of_category = (category, u64::MIN)..=(category, u64::MAX);
        let mut images: Vec<u64> = truths
            .range(of_category.clone())
            .map(|(&(_, image), _)| image)
            .chain(detections.range(of_category).map(|(&(_, image), _)| image))
            .filter(|image| listed.contains(image))
            .collect();
        images.sort_unstable();
        images.dedup();
        let mut by_area: [Vec<ImageEvaluation>; 4] = Default::default();
        for image in images {
            let gts = truths
                .get(&(category, image))
                .map_or(&[][..], Vec::as_slice);
            let mut dts: Vec<&DetectionResult> = detections
                .get(&(category, image))
                .cloned()
                .unwrap_or_default();
            dts.sort_by(|a, b| {
                b.score
                    .partial_cmp(&a.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            dts.truncate(MAX_DETECTIONS_PER_IMAGE);
            let ious: Vec<Vec<f64>> = dts
                .iter()
                .map(|d| {
                    gts.iter()
                        .map(|g| coco_iou(&d.bbox, &g.bbox, g.iscrowd))
                        .collect()
                })
                .collect();
            for (area, evaluations) in by_area.iter_mut().enumerate() {
                evaluations.push(evaluate_image(
                    gts,
                    &dts,
                    &ious,
                    AREA_RANGES[area],
                    &thresholds,
                ));
            }
        }
        per_category.push(by_area);
    }
    for area in 0..AREA_RANGES.len() {
        let mut by_cap = Vec::new();
        for &cap in &MAX_DETECTIONS {
            by_cap.push(
                per_category
                    .iter()
                    .map(|by_area| {
                        let evaluations: Vec<&ImageEvaluation> = by_area[area].iter().collect();
                        accumulate(&evaluations, cap, &recall_points, thresholds.len())
                    })
                    .collect(),
            );
        }
        accumulated.push(by_cap);
    }

    let most = MAX_DETECTIONS.len() - 1;
    let average_precision = |area: usize, threshold: Option<usize>| {
        mean(accumulated[area][most].iter().flatten().flat_map(|a| {
            a.precision
                .iter()
                .enumerate()
                .filter(move |(t, _)| threshold.is_none_or(|only| *t == only))
                .flat_map(|(_, p)| p.iter().copied())
        }))
    };
    let average_recall = |area: usize, cap: usize| {
        mean(
            accumulated[area][cap]
                .iter()
                .flatten()
                .flat_map(|a| a.recall.iter().copied()),
        )
    };
    let categories = category_ids
        .iter()
        .zip(&accumulated[ALL_AREAS][most])
        .filter_map(|(&id, result)| {
            let result = result.as_ref()?;
            let name = truth
                .categories
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let ground_truth = truth
                .annotations
                .iter()
                .filter(|a| a.category_id == id && !a.iscrowd)
                .count();
            Some(CategoryAp {
                id,
                name,
                ground_truth,
                ap: mean(result.precision.iter().flatten().copied()).unwrap_or(0.0),
                ap50: t50
                    .and_then(|t| mean(result.precision[t].iter().copied()))
                    .unwrap_or(0.0),
            })
        })
        .collect();
    DetectionReport {
        ap: average_precision(ALL_AREAS, None),
        ap50: t50.and_then(|t| average_precision(ALL_AREAS, Some(t))),
        ap75: t75.and_then(|t| average_precision(ALL_AREAS, Some(t))),
        ap_small: average_precision(1, None),
        ap_medium: average_precision(2, None),
        ap_large: average_precision(3, None),
        ar1: average_recall(ALL_AREAS, 0),
        ar10: average_recall(ALL_AREAS, 1),
        ar100: average_recall(ALL_AREAS, most),
        ar_small: average_recall(1, most),
        ar_medium: average_recall(2, most),
        ar_large: average_recall(3, most),
        categories,
    }
}

pub fn read_results(path: &Path) -> Result<Vec<DetectionResult>> {
    let results: Vec<DetectionResult> = read_json(path, "a COCO results list")?;
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

    fn dataset(boxes: &[(u64, u64, [f64; 4])]) -> DetectionGroundTruth {
        DetectionGroundTruth {
            images: (1..=3)
                .map(|id| GroundTruthImage {
                    id,
                    file_name: String::new(),
                    video_id: Some(1),
                    frame_index: Some(id),
                    width: None,
                    height: None,
                })
                .collect(),
            annotations: boxes
                .iter()
                .enumerate()
                .map(|(i, &(image_id, category_id, bbox))| GroundTruthBox {
                    id: i as u64 + 1,
                    image_id,
                    category_id,
                    bbox,
                    area: None,
                    iscrowd: false,
                })
                .collect(),
            categories: ["a", "b"]
                .iter()
                .zip(1..)
                .map(|(name, id)| Category {
                    id,
                    name: (*name).into(),
                    synset: None,
                })
                .collect(),
        }
    }

    /// COCO's precision carries an epsilon in its denominator, so a perfect
    /// score is 1 − 1e-16.
    fn near(value: Option<f64>, want: f64) -> bool {
        value.is_some_and(|v| (v - want).abs() < 1e-12)
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
        assert!(near(report.ap, 1.0) && near(report.ap50, 1.0), "{report:?}");
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
        assert!((report.ap50.unwrap() - 0.5).abs() < 1e-12, "{report:?}");
        // Ranked the other way round, the false positive costs nothing.
        let results = [
            det(1, 1, [60.0, 60.0, 20.0, 20.0], 0.7),
            det(1, 1, [10.0, 10.0, 20.0, 20.0], 0.8),
        ];
        assert!(near(evaluate(&gt, &results).ap50, 1.0));
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
        assert!(
            (report.ap50.unwrap() - 51.0 / 101.0).abs() < 1e-12,
            "{report:?}"
        );
        assert!(
            (report.ap.unwrap() - 3.0 * 51.0 / 101.0 / 10.0).abs() < 1e-12,
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
        assert!((report.ap50.unwrap() - want).abs() < 1e-12, "{report:?}");
    }

    #[test]
    fn the_cap_is_per_category_and_image() {
        // 100 false positives of category 2 on image 1 must not push out the
        // true positive of category 1 that scores below them.
        let gt = dataset(&[(1, 1, [0.0, 0.0, 10.0, 10.0])]);
        let mut results: Vec<DetectionResult> = (0..100)
            .map(|k| det(1, 2, [50.0, 50.0, 5.0, 5.0], 0.9 + k as f64 * 1e-4))
            .collect();
        results.push(det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.5));
        assert!(near(evaluate(&gt, &results).ap50, 1.0));
        // Within a category the best 100 count: the 101st, even if right, is dropped.
        let mut results: Vec<DetectionResult> = (0..100)
            .map(|k| det(1, 1, [50.0, 50.0, 5.0, 5.0], 0.9 + k as f64 * 1e-4))
            .collect();
        results.push(det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.5));
        assert!(near(evaluate(&gt, &results).ap50, 0.0));
    }

    #[test]
    fn crowd_regions_are_neither_found_nor_missed() {
        let mut gt = dataset(&[
            (1, 1, [0.0, 0.0, 10.0, 10.0]),
            (1, 1, [100.0, 100.0, 80.0, 80.0]),
        ]);
        gt.annotations[1].iscrowd = true;
        // Two detections inside the crowd region, one on the box that counts.
        let results = [
            det(1, 1, [110.0, 110.0, 10.0, 10.0], 0.9),
            det(1, 1, [130.0, 130.0, 10.0, 10.0], 0.8),
            det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.7),
        ];
        let report = evaluate(&gt, &results);
        assert!(near(report.ap, 1.0), "{report:?}");
        assert_eq!(report.categories[0].ground_truth, 1);
        // Without the crowd flag they are two confident false positives.
        gt.annotations[1].iscrowd = false;
        assert!(evaluate(&gt, &results).ap50.unwrap() < 0.5);
    }

    #[test]
    fn size_classes_follow_the_annotated_area() {
        let mut gt = dataset(&[(1, 1, [0.0, 0.0, 40.0, 40.0])]);
        let results = [det(1, 1, [0.0, 0.0, 40.0, 40.0], 0.9)];
        let report = evaluate(&gt, &results);
        assert!(report.ap_small.is_none() && report.ap_large.is_none());
        assert!(near(report.ap_medium, 1.0));
        // A segment's area below 32² makes the object small, whatever its box.
        gt.annotations[0].area = Some(500.0);
        let report = evaluate(&gt, &results);
        assert!(near(report.ap_small, 1.0) && report.ap_medium.is_none());
    }

    #[test]
    fn thresholds_are_numpys_linspace() {
        let thresholds = linspace(0.5, 0.95, 10);
        assert_eq!(thresholds[8], 0.8999999999999999);
        assert_eq!(thresholds[9], 0.95);
        assert_eq!(linspace(0.0, 1.0, 101)[35], 0.35000000000000003);
    }

    #[test]
    fn keeping_a_sample_keeps_its_frames_and_their_annotations_only() {
        let image = |id: u64, frame_index| GroundTruthImage {
            id,
            file_name: format!("{id}.jpg"),
            video_id: Some(1 + id / 100),
            frame_index: Some(frame_index),
            width: Some(8),
            height: Some(8),
        };
        let annotation = |id, image_id| GroundTruthBox {
            id,
            image_id,
            category_id: 1,
            bbox: [0.0, 0.0, 1.0, 1.0],
            area: None,
            iscrowd: false,
        };
        // Two videos: frame indices restart, so the sample is per video.
        let mut dataset = DetectionGroundTruth {
            images: vec![
                image(1, 0),
                image(2, 1),
                image(3, 2),
                image(101, 0),
                image(102, 1),
            ],
            annotations: vec![
                annotation(1, 1),
                annotation(2, 2),
                annotation(3, 3),
                annotation(4, 102),
            ],
            categories: Vec::new(),
        };
        let path = Path::new("gt.json");
        dataset.keep_sampled(1, path).unwrap();
        assert_eq!(dataset.images.len(), 5);
        dataset.keep_sampled(2, path).unwrap();
        let ids: Vec<u64> = dataset.images.iter().map(|i| i.id).collect();
        assert_eq!(ids, [1, 3, 101]);
        let kept: Vec<u64> = dataset.annotations.iter().map(|a| a.id).collect();
        assert_eq!(kept, [1, 3]);
        // Stills have no frame index: sampling them is refused, not guessed.
        dataset.images[0].frame_index = None;
        let error = dataset.keep_sampled(2, path).unwrap_err().to_string();
        assert!(error.contains("frame_index"), "{error}");
        let seventh = image(7, 7);
        assert!(seventh.is_sampled(0) && seventh.is_sampled(1) && !seventh.is_sampled(2));
    }

    #[test]
    fn plain_coco_ground_truth_reads() {
        let text = r#"{"images":[{"id":1,"file_name":"a.jpg","width":4,"height":4}],
            "annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[0,0,2,2],"iscrowd":true},
                           {"id":2,"image_id":1,"category_id":3,"bbox":[1,1,2,3],"area":5.5}],
            "categories":[{"id":3,"name":"cat"}]}"#;
        let gt: DetectionGroundTruth = serde_json::from_str(text).unwrap();
        assert!(gt.annotations[0].iscrowd && !gt.annotations[1].iscrowd);
        assert_eq!(
            (gt.annotations[0].area(), gt.annotations[1].area()),
            (4.0, 5.5)
        );
        assert_eq!(gt.images[0].frame_index, None);
    }
}
