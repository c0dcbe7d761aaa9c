//! TAO-OW evaluation: OWTA and the HOTA family, computed as TrackEval's
//! `datasets/tao_ow.py` and `metrics/hota.py` compute them.
//!
//! The steps, in TrackEval's order:
//! 1. Ground truth is filtered to the subset (`known`: TAO ids of COCO
//!    classes; `unknown`: every other id below 2000 except the distractors;
//!    `all`: nothing removed, distractors included).
//! 2. Predictions are capped per image to the `max_dets` best by score (a
//!    stable sort: ties keep the file's order).
//! 3. Each video is a sequence whose timesteps are its images holding ground
//!    truth, in frame order; predictions on other images are ignored.
//! 4. Everything is one class ("object"). In a video whose
//!    `not_exhaustive_category_ids` holds 1 (TrackEval relabels every class to
//!    1 and then checks that list), predictions that match no ground truth at
//!    IoU ≥ 0.5 in an optimal per-frame assignment are dropped.
//! 5. HOTA per sequence at α = 0.05 … 0.95: per frame one Hungarian
//!    assignment on global alignment × IoU, matches counted where IoU ≥ α;
//!    sequences combine by summing counts and TP-weighting the association
//!    scores. OWTA = sqrt(DetRe · AssA).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{read_json, Result, TrackerError};
use crate::tao::TaoDataset;

/// TrackEval's `np.finfo('float').eps`, used in its comparisons.
const EPS: f64 = f64::EPSILON;

/// Number of α thresholds: 0.05, 0.10, … 0.95.
pub const ALPHA_COUNT: usize = 19;

/// The α thresholds exactly as `np.arange(0.05, 0.99, 0.05)` computes them.
pub fn alphas() -> [f64; ALPHA_COUNT] {
    let (start, step) = (0.05f64, 0.05f64);
    let delta = (start + step) - start;
    std::array::from_fn(|i| start + i as f64 * delta)
}

/// TAO category ids of the 78 COCO classes TAO has (TrackEval's `knowns`).
pub const KNOWN_CATEGORIES: [u64; 78] = [
    4, 13, 1038, 544, 1057, 34, 35, 36, 41, 45, 58, 60, 579, 1091, 1097, 1099, 78, 79, 81, 91,
    1115, 1117, 95, 1122, 99, 1132, 621, 1135, 625, 118, 1144, 126, 642, 1155, 133, 1162, 139, 154,
    174, 185, 699, 1215, 714, 717, 1229, 211, 729, 221, 229, 747, 235, 237, 779, 276, 805, 299,
    829, 852, 347, 371, 382, 896, 392, 926, 937, 428, 429, 961, 452, 979, 980, 982, 475, 480, 993,
    1001, 502, 1018,
];

/// Categories left out of both subsets ("Opening up Open-World Tracking").
pub const DISTRACTOR_CATEGORIES: [u64; 45] = [
    20, 63, 108, 180, 188, 204, 212, 247, 303, 403, 407, 415, 490, 504, 507, 513, 529, 567, 569,
    588, 672, 691, 702, 708, 711, 720, 736, 737, 798, 813, 815, 827, 831, 851, 877, 883, 912, 971,
    976, 1130, 1133, 1134, 1169, 1184, 1220,
];

/// TrackEval's unknown ids stop below this.
const UNKNOWN_ID_LIMIT: u64 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    All,
    Known,
    Unknown,
}

impl std::fmt::Display for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Subset::All => "all",
            Subset::Known => "known",
            Subset::Unknown => "unknown",
        })
    }
}

impl Subset {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "all" => Some(Subset::All),
            "known" => Some(Subset::Known),
            "unknown" => Some(Subset::Unknown),
            _ => None,
        }
    }

    fn keeps(self, category: u64) -> bool {
        match self {
            Subset::All => true,
            Subset::Known => KNOWN_CATEGORIES.contains(&category),
            Subset::Unknown => {
                (1..UNKNOWN_ID_LIMIT).contains(&category)
                    && !KNOWN_CATEGORIES.contains(&category)
                    && !DISTRACTOR_CATEGORIES.contains(&category)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    pub subset: Subset,
    /// Predictions kept per image, best first; 0 keeps all.
    pub max_dets: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            subset: Subset::All,
            max_dets: 300,
        }
    }
}

/// One predicted box of a track, as TAO results files hold them.
/// ID switches as CLEAR-MOT counts them, simply: following each
/// ground-truth track through its annotated frames, every change of the
/// predicted track id covering it (best IoU, at least 0.5) counts one.
pub fn id_switches(gt: &TaoDataset, predictions: &[Prediction]) -> usize {
    let corners = |b: &[f64; 4]| [b[0], b[1], b[0] + b[2], b[1] + b[3]];
    let mut by_image: HashMap<u64, Vec<&Prediction>> = HashMap::new();
    for p in predictions {
        by_image.entry(p.image_id).or_default().push(p);
    }
    let frame_of: HashMap<u64, u64> = gt.images.iter().map(|i| (i.id, i.frame_index)).collect();
    let mut annotations: Vec<&crate::tao::Annotation> = gt.annotations.iter().collect();
    annotations.sort_by_key(|a| (a.track_id, frame_of.get(&a.image_id).copied().unwrap_or(0)));
    let mut last: HashMap<u64, i64> = HashMap::new();
    let mut switches = 0;
    for a in annotations {
        let truth = corners(&a.bbox);
        let best = by_image
            .get(&a.image_id)
            .into_iter()
            .flatten()
            .map(|p| (crate::tbd::iou(truth, corners(&p.bbox)), p.track_id))
            .filter(|(overlap, _)| *overlap >= 0.5)
            .max_by(|x, y| x.0.total_cmp(&y.0));
        if let Some((_, id)) = best {
            if last
                .insert(a.track_id, id)
                .is_some_and(|previous| previous != id)
            {
                switches += 1;
            }
        }
    }
    switches
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub image_id: u64,
    /// Ignored by the class-agnostic evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<u64>,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    pub score: f64,
    pub track_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_id: Option<u64>,
}

/// Reads a TAO results file (a JSON list of predictions).
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    read_json(path, "a TAO results list")
}

/// The HOTA family at every α, and the counts they come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HotaScores {
    #[serde(rename = "HOTA")]
    pub hota: [f64; ALPHA_COUNT],
    pub det_a: [f64; ALPHA_COUNT],
    pub ass_a: [f64; ALPHA_COUNT],
    pub det_re: [f64; ALPHA_COUNT],
    pub det_pr: [f64; ALPHA_COUNT],
    pub ass_re: [f64; ALPHA_COUNT],
    pub ass_pr: [f64; ALPHA_COUNT],
    pub loc_a: [f64; ALPHA_COUNT],
    #[serde(rename = "OWTA")]
    pub owta: [f64; ALPHA_COUNT],
    #[serde(rename = "HOTA_TP")]
    pub tp: [f64; ALPHA_COUNT],
    #[serde(rename = "HOTA_FN")]
    pub fn_: [f64; ALPHA_COUNT],
    #[serde(rename = "HOTA_FP")]
    pub fp: [f64; ALPHA_COUNT],
}

/// The headline numbers: each metric's mean over α.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    #[serde(rename = "OWTA")]
    pub owta: f64,
    #[serde(rename = "HOTA")]
    pub hota: f64,
    #[serde(rename = "DetA")]
    pub det_a: f64,
    #[serde(rename = "DetRe")]
    pub det_re: f64,
    #[serde(rename = "DetPr")]
    pub det_pr: f64,
    #[serde(rename = "AssA")]
    pub ass_a: f64,
    #[serde(rename = "AssRe")]
    pub ass_re: f64,
    #[serde(rename = "AssPr")]
    pub ass_pr: f64,
    #[serde(rename = "LocA")]
    pub loc_a: f64,
}

fn mean(values: &[f64; ALPHA_COUNT]) -> f64 {
    values.iter().sum::<f64>() / ALPHA_COUNT as f64
}

impl HotaScores {
    pub fn summary(&self) -> Summary {
        Summary {
            owta: mean(&self.owta),
            hota: mean(&self.hota),
            det_a: mean(&self.det_a),
            det_re: mean(&self.det_re),
            det_pr: mean(&self.det_pr),
            ass_a: mean(&self.ass_a),
            ass_re: mean(&self.ass_re),
            ass_pr: mean(&self.ass_pr),
            loc_a: mean(&self.loc_a),
        }
    }

    /// DetRe, DetPr, DetA, HOTA and OWTA from the counts and AssA
    /// (`_compute_final_fields`).
    fn finish(&mut self) {
        for a in 0..ALPHA_COUNT {
            let (tp, fn_, fp) = (self.tp[a], self.fn_[a], self.fp[a]);
            self.det_re[a] = tp / (tp + fn_).max(1.0);
            self.det_pr[a] = tp / (tp + fp).max(1.0);
            self.det_a[a] = tp / (tp + fn_ + fp).max(1.0);
            self.hota[a] = (self.det_a[a] * self.ass_a[a]).sqrt();
            self.owta[a] = (self.det_re[a] * self.ass_a[a]).sqrt();
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoScores {
    pub name: String,
    pub scores: HotaScores,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub subset: Subset,
    pub max_dets: usize,
    pub videos: usize,
    /// Frames evaluated: those holding ground truth of the subset.
    pub frames: usize,
    pub ground_truth: usize,
    /// Predictions on evaluated frames after the per-image cap (and, in
    /// not-exhaustively labelled videos, after unmatched ones are dropped).
    pub predictions: usize,
    pub alphas: [f64; ALPHA_COUNT],
    pub combined: HotaScores,
    pub per_video: Vec<VideoScores>,
}

/// One evaluated frame: ids relabelled 0.. within the sequence, and the
/// ground truth × prediction IoU matrix (row-major).
struct Frame {
    gt: Vec<usize>,
    predicted: Vec<usize>,
    similarity: Vec<f64>,
}

struct Sequence {
    name: String,
    frames: Vec<Frame>,
    gt_ids: usize,
    predicted_ids: usize,
}

fn invalid(path: &Path, reason: String) -> TrackerError {
    TrackerError::Format {
        path: path.to_owned(),
        reason,
    }
}

fn check_box(bbox: &[f64; 4]) -> std::result::Result<(), String> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(format!("box {bbox:?} is not finite"));
    }
    if bbox[2] < 0.0 || bbox[3] < 0.0 {
        return Err(format!("box {bbox:?} has a negative width or height"));
    }
    Ok(())
}

/// Evaluates `predictions` against `gt`. `gt_path` and `pred_path` only name
/// the files in errors.
///
/// Errors (where TrackEval would crash or silently compute something
/// meaningless): predictions on images the ground truth does not list, or
/// naming another video than their image's; negative track ids; a track id
/// twice in one evaluated image (as TrackEval: images without ground truth of
/// the subset are not looked at); boxes that are not finite or have a negative size;
/// scores that are not finite; ground truth with a track twice in one image.
/// Zero-area boxes are valid: they overlap nothing.
pub fn evaluate(
    gt: &TaoDataset,
    predictions: &[Prediction],
    options: EvalOptions,
    (gt_path, pred_path): (&Path, &Path),
) -> Result<Evaluation> {
    let image_video: HashMap<u64, u64> = gt.images.iter().map(|i| (i.id, i.video_id)).collect();
    let frame_index: HashMap<u64, u64> = gt.images.iter().map(|i| (i.id, i.frame_index)).collect();

    // Ground truth of the subset, per image in file order; the image order
    // of first appearance breaks frame-index ties as TrackEval's stable sort.
    let mut gt_by_image: HashMap<u64, Vec<(u64, [f64; 4])>> = HashMap::new();
    let mut video_images: HashMap<u64, Vec<u64>> = HashMap::new();
    for a in &gt.annotations {
        if !options.subset.keeps(a.category_id) {
            continue;
        }
        check_box(&a.bbox).map_err(|e| invalid(gt_path, format!("annotation {}: {e}", a.id)))?;
        let Some(&video) = image_video.get(&a.image_id) else {
            return Err(invalid(
                gt_path,
                format!(
                    "annotation {} is on image {}, which `images` does not list",
                    a.id, a.image_id
                ),
            ));
        };
        let entry = gt_by_image.entry(a.image_id).or_default();
        if entry.is_empty() {
            video_images.entry(video).or_default().push(a.image_id);
        }
        if entry.iter().any(|(track, _)| *track == a.track_id) {
            return Err(invalid(
                gt_path,
                format!("track {} appears twice on image {}", a.track_id, a.image_id),
            ));
        }
        entry.push((a.track_id, a.bbox));
    }

    let predicted_by_image =
        cap_predictions(predictions, options.max_dets, &image_video, pred_path)?;

    let not_exhaustive: HashSet<u64> = gt
        .videos
        .iter()
        .filter(|v| v.not_exhaustive_category_ids.contains(&1))
        .map(|v| v.id)
        .collect();

    let empty = Vec::new();
    let sequences: Vec<Sequence> = gt
        .videos
        .par_iter()
        .map(|video| {
            let mut images = video_images.get(&video.id).unwrap_or(&empty).clone();
            images.sort_by_key(|id| frame_index.get(id).copied().unwrap_or(0));
            build_sequence(
                video.name.clone(),
                &images,
                &gt_by_image,
                &predicted_by_image,
                not_exhaustive.contains(&video.id),
            )
            .map_err(|e| invalid(pred_path, format!("video {}: {e}", video.name)))
        })
        .collect::<Result<_>>()?;

    let per_video: Vec<VideoScores> = sequences
        .par_iter()
        .map(|s| VideoScores {
            name: s.name.clone(),
            scores: evaluate_sequence(s),
        })
        .collect();
    let combined = combine(per_video.iter().map(|v| &v.scores));
    let count = |f: fn(&Frame) -> usize| -> usize {
        sequences
            .iter()
            .flat_map(|s| &s.frames)
            .map(f)
            .sum::<usize>()
    };
    Ok(Evaluation {
        subset: options.subset,
        max_dets: options.max_dets,
        videos: sequences.len(),
        frames: sequences.iter().map(|s| s.frames.len()).sum(),
        ground_truth: count(|f| f.gt.len()),
        predictions: count(|f| f.predicted.len()),
        alphas: alphas(),
        combined,
        per_video,
    })
}

/// A validated prediction: track id, `[x, y, w, h]`, score.
type Predicted = (i64, [f64; 4], f64);

/// Predictions per image, validated, capped to the `max_dets` best.
fn cap_predictions(
    predictions: &[Prediction],
    max_dets: usize,
    image_video: &HashMap<u64, u64>,
    pred_path: &Path,
) -> Result<HashMap<u64, Vec<Predicted>>> {
    let mut by_image: HashMap<u64, Vec<Predicted>> = HashMap::new();
    for (i, p) in predictions.iter().enumerate() {
        let what = |e: String| invalid(pred_path, format!("prediction {i}: {e}"));
        let Some(&video) = image_video.get(&p.image_id) else {
            return Err(what(format!(
                "image {} is not in the ground truth's images",
                p.image_id
            )));
        };
        if p.video_id.is_some_and(|v| v != video) {
            return Err(what(format!(
                "says video {:?} but image {} belongs to video {video}",
                p.video_id, p.image_id
            )));
        }
        if p.track_id < 0 {
            return Err(what(format!("negative track id {}", p.track_id)));
        }
        check_box(&p.bbox).map_err(what)?;
        if !p.score.is_finite() {
            return Err(what(format!("score {} is not finite", p.score)));
        }
        by_image
            .entry(p.image_id)
            .or_default()
            .push((p.track_id, p.bbox, p.score));
    }
    for list in by_image.values_mut() {
        if max_dets > 0 && list.len() > max_dets {
            // Python's sorted(reverse=True) is stable: equal scores keep
            // their order.
            list.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
            list.truncate(max_dets);
        }
    }
    Ok(by_image)
}

/// IoU of every ground truth box (rows) with every prediction (columns),
/// with TrackEval's guards for empty boxes (`_calculate_box_ious`).
fn box_ious(gt: &[[f64; 4]], predicted: &[[f64; 4]]) -> Vec<f64> {
    let corners = |b: &[f64; 4]| [b[0], b[1], b[0] + b[2], b[1] + b[3]];
    let area = |c: &[f64; 4]| (c[2] - c[0]) * (c[3] - c[1]);
    let mut out = Vec::with_capacity(gt.len() * predicted.len());
    for g in gt {
        let g = corners(g);
        let ga = area(&g);
        for p in predicted {
            let p = corners(p);
            let pa = area(&p);
            let iw = (g[2].min(p[2]) - g[0].max(p[0])).max(0.0);
            let ih = (g[3].min(p[3]) - g[1].max(p[1])).max(0.0);
            let mut intersection = iw * ih;
            let mut union = ga + pa - intersection;
            if ga <= EPS || pa <= EPS || union <= EPS {
                intersection = 0.0;
            }
            if union <= EPS {
                union = 1.0;
            }
            out.push(intersection / union);
        }
    }
    out
}

/// Hungarian assignment maximising `scores` (rows × cols), as
/// `linear_sum_assignment(-scores)`.
fn assign(rows: usize, cols: usize, scores: &[f64]) -> Vec<(usize, usize)> {
    let negated: Vec<f64> = scores.iter().map(|s| -s).collect();
    match lsap::solve(rows, cols, &negated, false) {
        Ok((r, c)) => r.into_iter().zip(c).collect(),
        // Only infeasible (non-finite) costs fail; IoUs and alignments are
        // finite, so this keeps the no-match answer rather than panicking.
        Err(_) => Vec::new(),
    }
}

fn build_sequence(
    name: String,
    images: &[u64],
    gt_by_image: &HashMap<u64, Vec<(u64, [f64; 4])>>,
    predicted_by_image: &HashMap<u64, Vec<Predicted>>,
    not_exhaustive: bool,
) -> std::result::Result<Sequence, String> {
    let mut raw_frames = Vec::with_capacity(images.len());
    for image in images {
        let gt = gt_by_image.get(image).map(Vec::as_slice).unwrap_or(&[]);
        let mut predicted: Vec<(i64, [f64; 4])> = predicted_by_image
            .get(image)
            .map(|list| list.iter().map(|&(t, b, _)| (t, b)).collect())
            .unwrap_or_default();
        let gt_boxes: Vec<[f64; 4]> = gt.iter().map(|g| g.1).collect();
        let mut similarity = box_ious(
            &gt_boxes,
            &predicted.iter().map(|p| p.1).collect::<Vec<_>>(),
        );
        // Timesteps always hold ground truth here, so only the
        // not-exhaustive rule can drop predictions.
        if not_exhaustive && !gt.is_empty() && !predicted.is_empty() {
            let cols = predicted.len();
            let matching: Vec<f64> = similarity
                .iter()
                .map(|&s| if s < 0.5 - EPS { 0.0 } else { s })
                .collect();
            let mut keep = vec![false; cols];
            for (r, c) in assign(gt.len(), cols, &matching) {
                if matching[r * cols + c] > EPS {
                    keep[c] = true;
                }
            }
            predicted = predicted
                .into_iter()
                .zip(&keep)
                .filter_map(|(p, &k)| k.then_some(p))
                .collect();
            similarity = (0..gt.len())
                .flat_map(|r| {
                    let row = &similarity[r * cols..(r + 1) * cols];
                    row.iter()
                        .zip(&keep)
                        .filter_map(|(&s, &k)| k.then_some(s))
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        // As TrackEval, only where it is evaluated: on frames with ground
        // truth, after the not-exhaustive rule.
        let mut seen = HashSet::new();
        if let Some((track, _)) = predicted.iter().find(|(track, _)| !seen.insert(*track)) {
            return Err(format!("track {track} has two boxes on image {image}"));
        }
        raw_frames.push((
            gt.iter().map(|g| g.0).collect::<Vec<_>>(),
            predicted,
            similarity,
        ));
    }
    // Ids relabelled 0.. in sorted order (np.unique).
    let gt_map: BTreeMap<u64, usize> = raw_frames
        .iter()
        .flat_map(|f| f.0.iter().copied())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let predicted_map: BTreeMap<i64, usize> = raw_frames
        .iter()
        .flat_map(|f| f.1.iter().map(|p| p.0))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let frames = raw_frames
        .into_iter()
        .map(|(gt, predicted, similarity)| Frame {
            gt: gt.iter().map(|id| gt_map[id]).collect(),
            predicted: predicted.iter().map(|p| predicted_map[&p.0]).collect(),
            similarity,
        })
        .collect();
    Ok(Sequence {
        name,
        frames,
        gt_ids: gt_map.len(),
        predicted_ids: predicted_map.len(),
    })
}

/// HOTA of one sequence (`HOTA.eval_sequence`).
fn evaluate_sequence(sequence: &Sequence) -> HotaScores {
    let mut res = HotaScores::default();
    let gt_dets: usize = sequence.frames.iter().map(|f| f.gt.len()).sum();
    let predicted_dets: usize = sequence.frames.iter().map(|f| f.predicted.len()).sum();
    if predicted_dets == 0 {
        res.fn_ = [gt_dets as f64; ALPHA_COUNT];
        res.loc_a = [1.0; ALPHA_COUNT];
        res.finish();
        return res;
    }
    if gt_dets == 0 {
        res.fp = [predicted_dets as f64; ALPHA_COUNT];
        res.loc_a = [1.0; ALPHA_COUNT];
        res.finish();
        return res;
    }
    let (n_gt, n_pr) = (sequence.gt_ids, sequence.predicted_ids);
    let mut potential = vec![0f64; n_gt * n_pr];
    let mut gt_count = vec![0f64; n_gt];
    let mut pr_count = vec![0f64; n_pr];
    for frame in &sequence.frames {
        let cols = frame.predicted.len();
        let col_sums: Vec<f64> = (0..cols)
            .map(|c| {
                (0..frame.gt.len())
                    .map(|r| frame.similarity[r * cols + c])
                    .sum()
            })
            .collect();
        for (r, &g) in frame.gt.iter().enumerate() {
            let row = &frame.similarity[r * cols..(r + 1) * cols];
            let row_sum: f64 = row.iter().sum();
            for (c, &p) in frame.predicted.iter().enumerate() {
                let denominator = col_sums[c] + row_sum - row[c];
                if denominator > EPS {
                    potential[g * n_pr + p] += row[c] / denominator;
                }
            }
            gt_count[g] += 1.0;
        }
        for &p in &frame.predicted {
            pr_count[p] += 1.0;
        }
    }
    let alignment: Vec<f64> = (0..n_gt * n_pr)
        .map(|i| {
            let (g, p) = (i / n_pr, i % n_pr);
            potential[i] / (gt_count[g] + pr_count[p] - potential[i])
        })
        .collect();

    let alphas = alphas();
    let mut matches = vec![vec![0f64; n_gt * n_pr]; ALPHA_COUNT];
    for frame in &sequence.frames {
        let (rows, cols) = (frame.gt.len(), frame.predicted.len());
        if rows == 0 {
            for fp in res.fp.iter_mut() {
                *fp += cols as f64;
            }
            continue;
        }
        if cols == 0 {
            for fn_ in res.fn_.iter_mut() {
                *fn_ += rows as f64;
            }
            continue;
        }
        let scores: Vec<f64> = (0..rows * cols)
            .map(|i| {
                let (g, p) = (frame.gt[i / cols], frame.predicted[i % cols]);
                alignment[g * n_pr + p] * frame.similarity[i]
            })
            .collect();
        let pairs = assign(rows, cols, &scores);
        for (a, &alpha) in alphas.iter().enumerate() {
            let matched: Vec<(usize, usize)> = pairs
                .iter()
                .copied()
                .filter(|&(r, c)| frame.similarity[r * cols + c] >= alpha - EPS)
                .collect();
            let n = matched.len() as f64;
            res.tp[a] += n;
            res.fn_[a] += rows as f64 - n;
            res.fp[a] += cols as f64 - n;
            if !matched.is_empty() {
                res.loc_a[a] += matched
                    .iter()
                    .map(|&(r, c)| frame.similarity[r * cols + c])
                    .sum::<f64>();
                for &(r, c) in &matched {
                    matches[a][frame.gt[r] * n_pr + frame.predicted[c]] += 1.0;
                }
            }
        }
    }
    for (a, matches) in matches.iter().enumerate() {
        let (mut ass_a, mut ass_re, mut ass_pr) = (0.0, 0.0, 0.0);
        for (i, &m) in matches.iter().enumerate() {
            let (g, p) = (i / n_pr, i % n_pr);
            ass_a += m * (m / (gt_count[g] + pr_count[p] - m).max(1.0));
            ass_re += m * (m / gt_count[g].max(1.0));
            ass_pr += m * (m / pr_count[p].max(1.0));
        }
        let tp = res.tp[a].max(1.0);
        res.ass_a[a] = ass_a / tp;
        res.ass_re[a] = ass_re / tp;
        res.ass_pr[a] = ass_pr / tp;
        res.loc_a[a] = res.loc_a[a].max(1e-10) / res.tp[a].max(1e-10);
    }
    res.finish();
    res
}

/// Sequences combined (`HOTA.combine_sequences`): counts summed,
/// association scores and LocA weighted by each sequence's true positives.
pub fn combine<'a>(sequences: impl Iterator<Item = &'a HotaScores> + Clone) -> HotaScores {
    let mut res = HotaScores::default();
    let (mut ass_a, mut ass_re, mut ass_pr, mut loc_a) = (
        [0f64; ALPHA_COUNT],
        [0f64; ALPHA_COUNT],
        [0f64; ALPHA_COUNT],
        [0f64; ALPHA_COUNT],
    );
    for s in sequences {
        for a in 0..ALPHA_COUNT {
            res.tp[a] += s.tp[a];
            res.fn_[a] += s.fn_[a];
            res.fp[a] += s.fp[a];
            ass_a[a] += s.ass_a[a] * s.tp[a];
            ass_re[a] += s.ass_re[a] * s.tp[a];
            ass_pr[a] += s.ass_pr[a] * s.tp[a];
            loc_a[a] += s.loc_a[a] * s.tp[a];
        }
    }
    for a in 0..ALPHA_COUNT {
        let tp = res.tp[a];
        res.ass_a[a] = ass_a[a] / tp.max(1.0);
        res.ass_re[a] = ass_re[a] / tp.max(1.0);
        res.ass_pr[a] = ass_pr[a] / tp.max(1.0);
        res.loc_a[a] = loc_a[a].max(1e-10) / tp.max(1e-10);
    }
    res.finish();
    res
}

/// Size of a generated evaluation workload.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadShape {
    pub videos: usize,
    /// Annotated frames per video.
    pub frames: usize,
    /// Ground-truth objects per video (each visible on a stretch of frames).
    pub objects: usize,
    /// Predictions per frame, true and false together.
    pub predictions: usize,
    pub seed: u64,
}

/// A random ground truth and tracker output of the given shape, for
/// measuring the evaluator: objects drift across 640×480 frames, predicted
/// tracks follow them with jitter, swap identities now and then, and false
/// positives fill each frame up to the prediction count. Categories mix
/// known, unknown and distractor ids.
pub fn generate_workload(shape: WorkloadShape) -> (TaoDataset, Vec<Prediction>) {
    use crate::rng::Pcg;
    use crate::tao::{Annotation, Category, Image, Track, Video};
    let mut rng = Pcg::new(shape.seed, 7);
    let mut gt = TaoDataset::default();
    let mut predictions = Vec::new();
    let categories = [4u64, 13, 34, 1, 2, 3, 500, 20, 63];
    gt.categories = categories
        .iter()
        .map(|&id| Category {
            id,
            name: format!("category {id}"),
            synset: None,
        })
        .collect();
    let (mut image_id, mut annotation_id, mut track_id) = (0u64, 0u64, 0u64);
    for v in 0..shape.videos {
        let video_id = v as u64 + 1;
        gt.videos.push(Video {
            id: video_id,
            name: format!("bench/video_{v:05}"),
            width: 640,
            height: 480,
            neg_category_ids: Vec::new(),
            not_exhaustive_category_ids: if rng.chance(0.1) { vec![1] } else { Vec::new() },
            fps: None,
        });
        struct Object {
            track: u64,
            category: u64,
            first: usize,
            last: usize,
            x: f64,
            y: f64,
            vx: f64,
            vy: f64,
            w: f64,
            h: f64,
        }
        let mut objects: Vec<Object> = (0..shape.objects)
            .map(|_| {
                track_id += 1;
                let first = rng.below(shape.frames.max(1));
                let last = (first + 1 + rng.below(shape.frames.max(1))).min(shape.frames);
                Object {
                    track: track_id,
                    category: categories[rng.below(categories.len())],
                    first,
                    last,
                    x: rng.range(0.0, 560.0),
                    y: rng.range(0.0, 400.0),
                    vx: rng.range(-8.0, 8.0),
                    vy: rng.range(-8.0, 8.0),
                    w: rng.range(10.0, 120.0),
                    h: rng.range(10.0, 120.0),
                }
            })
            .collect();
        for o in &objects {
            gt.tracks.push(Track {
                id: o.track,
                category_id: o.category,
                video_id,
            });
        }
        for f in 0..shape.frames {
            image_id += 1;
            gt.images.push(Image {
                id: image_id,
                video_id,
                frame_index: f as u64 * 30,
                file_name: format!("bench/video_{v:05}/{f:06}.jpg"),
                width: 640,
                height: 480,
            });
            let mut emitted = 0;
            for o in objects.iter_mut() {
                o.x = (o.x + o.vx).clamp(0.0, 600.0);
                o.y = (o.y + o.vy).clamp(0.0, 440.0);
                if !(o.first..o.last).contains(&f) {
                    continue;
                }
                annotation_id += 1;
                gt.annotations.push(Annotation {
                    id: annotation_id,
                    image_id,
                    video_id,
                    track_id: o.track,
                    category_id: o.category,
                    bbox: [o.x, o.y, o.w, o.h],
                    area: o.w * o.h,
                    iscrowd: 0,
                    visibility: None,
                });
                if rng.chance(0.85) && emitted < shape.predictions {
                    let jitter = rng.range(0.0, 0.2);
                    // Now and then the track switches to a second identity
                    // (odd ids: no two objects ever share one).
                    let id = 2 * o.track + u64::from(rng.chance(0.05));
                    predictions.push(Prediction {
                        image_id,
                        category_id: Some(o.category),
                        bbox: [
                            o.x + jitter * o.w * rng.range(-1.0, 1.0),
                            o.y + jitter * o.h * rng.range(-1.0, 1.0),
                            o.w * (1.0 + jitter * rng.range(-1.0, 1.0)),
                            o.h * (1.0 + jitter * rng.range(-1.0, 1.0)),
                        ],
                        score: rng.range(0.3, 1.0),
                        track_id: id as i64,
                        video_id: Some(video_id),
                    });
                    emitted += 1;
                }
            }
            // False positives, on tracks of their own.
            while emitted < shape.predictions {
                let (w, h) = (rng.range(5.0, 200.0), rng.range(5.0, 200.0));
                predictions.push(Prediction {
                    image_id,
                    category_id: Some(1),
                    bbox: [rng.range(0.0, 640.0 - w), rng.range(0.0, 480.0 - h), w, h],
                    score: rng.range(0.0, 0.6),
                    track_id: (1_000_000_000 + 1000 * image_id + emitted as u64) as i64,
                    video_id: Some(video_id),
                });
                emitted += 1;
            }
        }
    }
    (gt, predictions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> (TaoDataset, Vec<Prediction>) {
        generate_workload(WorkloadShape {
            videos: 6,
            frames: 12,
            objects: 4,
            predictions: 8,
            seed: 3,
        })
    }

    fn run(gt: &TaoDataset, predictions: &[Prediction], subset: Subset) -> Evaluation {
        let options = EvalOptions {
            subset,
            max_dets: 300,
        };
        evaluate(
            gt,
            predictions,
            options,
            (Path::new("gt"), Path::new("pred")),
        )
        .unwrap()
    }

    #[test]
    fn ground_truth_as_predictions_scores_one() {
        let (gt, _) = workload();
        let perfect: Vec<Prediction> = gt
            .annotations
            .iter()
            .map(|a| Prediction {
                image_id: a.image_id,
                category_id: None,
                bbox: a.bbox,
                score: 1.0,
                track_id: a.track_id as i64 + 17,
                video_id: None,
            })
            .collect();
        let scores = run(&gt, &perfect, Subset::All).combined;
        for a in 0..ALPHA_COUNT {
            assert_eq!(scores.owta[a], 1.0);
            assert_eq!(scores.hota[a], 1.0);
            assert_eq!(scores.fn_[a] + scores.fp[a], 0.0);
        }
        // Every id changed between every two frames: detection stays
        // perfect, association collapses.
        let shuffled: Vec<Prediction> = perfect
            .iter()
            .enumerate()
            .map(|(i, p)| Prediction {
                track_id: i as i64,
                ..p.clone()
            })
            .collect();
        let scores = run(&gt, &shuffled, Subset::All).combined;
        assert_eq!(scores.det_re[18], 1.0);
        assert!(scores.ass_a[0] < 0.5, "{}", scores.ass_a[0]);
    }

    #[test]
    fn subsets_evaluate_only_their_frames() {
        let (gt, predictions) = workload();
        let all = run(&gt, &predictions, Subset::All);
        let known = run(&gt, &predictions, Subset::Known);
        let unknown = run(&gt, &predictions, Subset::Unknown);
        assert_eq!(all.ground_truth, gt.annotations.len());
        let count = |subset: Subset| {
            gt.annotations
                .iter()
                .filter(|a| subset.keeps(a.category_id))
                .count()
        };
        assert_eq!(known.ground_truth, count(Subset::Known));
        assert_eq!(unknown.ground_truth, count(Subset::Unknown));
        assert!(known.ground_truth + unknown.ground_truth < all.ground_truth);
        assert!(known.frames <= all.frames && unknown.frames <= all.frames);
    }

    #[test]
    fn bad_predictions_are_named() {
        let (gt, predictions) = workload();
        let options = EvalOptions::default();
        let paths = (Path::new("gt.json"), Path::new("pred.json"));
        let with = |change: &dyn Fn(&mut Prediction)| {
            let mut bad = predictions.clone();
            change(&mut bad[3]);
            evaluate(&gt, &bad, options, paths).unwrap_err().to_string()
        };
        assert!(with(&|p| p.image_id = 999_999).contains("image 999999 is not in the ground truth"));
        assert!(with(&|p| p.track_id = -2).contains("negative track id -2"));
        assert!(with(&|p| p.bbox[2] = -1.0).contains("negative width or height"));
        assert!(with(&|p| p.bbox[0] = f64::NAN).contains("not finite"));
        assert!(with(&|p| p.score = f64::INFINITY).contains("score inf"));
        assert!(with(&|p| p.video_id = Some(77)).contains("belongs to video"));
        // A track twice on an image with ground truth is an error; on an
        // image without, TrackEval never looks, and neither do we.
        let annotated: HashSet<u64> = gt.annotations.iter().map(|a| a.image_id).collect();
        let twice_on = |wanted: bool| {
            let mut twice = predictions.clone();
            let Some(original) = predictions
                .iter()
                .find(|p| annotated.contains(&p.image_id) == wanted)
            else {
                panic!("the workload has no image of that kind");
            };
            let mut copy = original.clone();
            copy.bbox[0] += 1.0;
            twice.push(copy);
            evaluate(&gt, &twice, options, paths).map_err(|e| e.to_string())
        };
        match twice_on(true) {
            Err(error) => assert!(error.contains("two boxes on image"), "{error}"),
            Ok(_) => panic!("a duplicated track on an evaluated image was accepted"),
        }
        assert!(twice_on(false).is_ok());
    }

    #[test]
    fn alphas_are_numpys() {
        let a = alphas();
        assert_eq!(a[0], 0.05);
        assert_eq!(a[2], 0.15000000000000002);
        assert_eq!(a[18], 0.9500000000000001);
    }

    #[test]
    fn subsets_split_the_ids() {
        assert!(Subset::Known.keeps(4) && !Subset::Unknown.keeps(4));
        assert!(!Subset::Known.keeps(20) && !Subset::Unknown.keeps(20) && Subset::All.keeps(20));
        assert!(Subset::Unknown.keeps(1) && !Subset::Unknown.keeps(2000));
    }

    #[test]
    fn iou_guards_empty_boxes() {
        let ious = box_ious(
            &[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 0.0, 4.0]],
            &[[5.0, 0.0, 10.0, 10.0], [5.0, 5.0, 0.0, 4.0]],
        );
        assert!((ious[0] - 50.0 / 150.0).abs() < 1e-15);
        assert_eq!(&ious[1..], &[0.0, 0.0, 0.0]);
    }
}
