//! Tracking by detection over per-frame OWL detections, in the manner of
//! ByteTrack: Kalman-predicted boxes, association by Hungarian assignment on
//! a cost that mixes IoU, appearance (cosine similarity of OWL class
//! embeddings against a per-track moving average) and the query label (a
//! mismatch costs extra; a track's label goes by its detections' votes), and
//! ByteTrack's two stages — confident detections first, then the low-score
//! ones against tracks still unmatched.
//!
//! Lifecycle: a track starts tentative, becomes confirmed after
//! `confirm_hits` matched frames (at once on the first frame of a video),
//! turns lost when a frame passes without a match, and is removed after
//! `max_lost` frames lost. A tentative track that misses a frame is removed.

use serde::{Deserialize, Serialize};

use crate::kalman::BoxFilter;

/// One detection on one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// `[x0, y0, x1, y1]` in source pixels.
    pub corners: [f64; 4],
    pub score: f64,
    /// The query it answers (index into the query list); None when
    /// tracking class-agnostically and no query matched.
    pub label: Option<usize>,
    /// L2-normalised appearance embedding (the OWL class embedding of the
    /// detection's patch); empty when unknown.
    pub embedding: Vec<f32>,
    /// Recurrent tracking: the decoder gave this slot a new object on this
    /// frame, so whatever track it held has ended.
    pub slot_reseeded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackState {
    Tentative,
    Confirmed,
    Lost,
}

/// Every threshold of the tracker, with ByteTrack's defaults scaled to OWL's
/// scores (OWL's sigmoid scores sit lower than a closed-set detector's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackerConfig {
    /// Detections at or above this take part in the first association and
    /// may start tracks.
    pub high_score: f64,
    /// Detections between this and `high_score` only continue tracks
    /// (ByteTrack's second association); lower ones are ignored.
    pub low_score: f64,
    /// A new track needs at least this score.
    pub new_track_score: f64,
    /// First association: pairs costing more are never matched.
    pub max_cost: f64,
    /// Second association (low-score detections, IoU only): the same.
    pub max_cost_low: f64,
    /// Pairs overlapping less than this (IoU) are never matched.
    pub min_iou: f64,
    /// Weight of appearance in the cost (0: IoU only); IoU gets the rest.
    pub appearance_weight: f64,
    /// Moving-average factor of a track's appearance: the kept share.
    pub appearance_momentum: f64,
    /// Matched frames that confirm a track.
    pub confirm_hits: u32,
    /// Frames a track may stay lost before it is removed.
    pub max_lost: u32,
    /// Match detections to tracks of any label at no cost (class-agnostic
    /// tracking); otherwise a mismatch costs `label_mismatch_cost`.
    pub class_agnostic: bool,
    /// Added to the cost when a detection answers another query than the
    /// track's label (tracking by query). Detectors that hesitate between
    /// close queries ("red circle", "red square") flip an object's best
    /// query from frame to frame; a finite cost lets its track go on while
    /// a detection of the track's own query still wins a close call. At or
    /// above `max_cost`, queries never mix.
    pub label_mismatch_cost: f64,
}

/// The default `label_mismatch_cost`.
pub const LABEL_MISMATCH_COST: f64 = 0.2;

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.3,
            low_score: 0.1,
            new_track_score: 0.35,
            max_cost: 0.8,
            max_cost_low: 0.5,
            min_iou: 0.1,
            appearance_weight: 0.3,
            appearance_momentum: 0.9,
            confirm_hits: 2,
            max_lost: 30,
            class_agnostic: false,
            label_mismatch_cost: LABEL_MISMATCH_COST,
        }
    }
}

impl TrackerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !(unit(self.high_score)
            && unit(self.low_score)
            && unit(self.new_track_score)
            && unit(self.min_iou)
            && unit(self.appearance_weight)
            && unit(self.appearance_momentum))
        {
            return Err("scores, IoU, appearance weight and momentum must lie in [0, 1]".into());
        }
        if self.low_score > self.high_score {
            return Err(format!(
                "low score {} is above high score {}",
                self.low_score, self.high_score
            ));
        }
        if !(self.max_cost > 0.0 && self.max_cost_low > 0.0) {
            return Err("the cost limits must be positive".into());
        }
        if self.label_mismatch_cost.is_nan() || self.label_mismatch_cost < 0.0 {
            return Err("the label mismatch cost must be zero or more".into());
        }
        if self.confirm_hits == 0 {
            return Err("confirm_hits must be at least 1".into());
        }
        Ok(())
    }
}

/// A track as reported for one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackReport {
    pub id: u64,
    pub label: Option<usize>,
    pub score: f64,
    /// `[x0, y0, x1, y1]` in source pixels: the matched detection's box.
    pub corners: [f64; 4],
    pub state: TrackState,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    filter: BoxFilter,
    label: Option<usize>,
    label_votes: LabelVotes,
    score: f64,
    corners: [f64; 4],
    appearance: Vec<f32>,
    state: TrackState,
    hits: u32,
    lost_for: u32,
}

/// A track's label: the query its detections named with the most total
/// score, so that a detector hesitating between close queries does not make
/// the label flicker.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelVotes(Vec<(usize, f64)>);

impl LabelVotes {
    pub(crate) fn of(detection: &Detection) -> Self {
        let mut votes = LabelVotes::default();
        votes.add(detection);
        votes
    }

    pub(crate) fn add(&mut self, detection: &Detection) {
        let Some(label) = detection.label else {
            return;
        };
        match self.0.iter_mut().find(|(l, _)| *l == label) {
            Some((_, total)) => *total += detection.score,
            None => self.0.push((label, detection.score)),
        }
    }

    /// The query with the highest total (the earliest named on a tie).
    pub(crate) fn leader(&self) -> Option<usize> {
        self.0
            .iter()
            .fold(
                None,
                |best: Option<(usize, f64)>, &(label, total)| match best {
                    Some((_, top)) if top >= total => best,
                    _ => Some((label, total)),
                },
            )
            .map(|(label, _)| label)
    }

    /// Queries changed: votes move to the queries' new indices; those of
    /// removed queries are dropped.
    pub(crate) fn relabel(&mut self, new_index: impl Fn(usize) -> Option<usize>) {
        self.0 = self
            .0
            .iter()
            .filter_map(|&(old, total)| new_index(old).map(|new| (new, total)))
            .collect();
    }
}

impl Track {
    fn absorb(&mut self, detection: &Detection, momentum: f64) {
        self.filter.update(detection.corners);
        self.corners = detection.corners;
        self.score = detection.score;
        self.label_votes.add(detection);
        self.label = self.label_votes.leader();
        if self.appearance.len() == detection.embedding.len() && !self.appearance.is_empty() {
            let m = momentum as f32;
            for (a, d) in self.appearance.iter_mut().zip(&detection.embedding) {
                *a = m * *a + (1.0 - m) * d;
            }
            let norm = self.appearance.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                self.appearance.iter_mut().for_each(|v| *v /= norm);
            }
        } else {
            self.appearance = detection.embedding.clone();
        }
        self.hits += 1;
        self.lost_for = 0;
    }
}

/// IoU of two `[x0, y0, x1, y1]` boxes.
pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    (a.len() == b.len() && !a.is_empty())
        .then(|| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>())
}

/// Tracks with stable ids over the frames of one video.
pub struct DetectionTracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    frames: u64,
}

impl DetectionTracker {
    pub fn new(config: TrackerConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(DetectionTracker {
            config,
            tracks: Vec::new(),
            next_id: 1,
            frames: 0,
        })
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Cost of continuing `track` with `detection`, or None when they must
    /// not be matched.
    fn cost(&self, track: &Track, detection: &Detection, appearance: bool) -> Option<f64> {
        let mismatch = if !self.config.class_agnostic
            && track.label.is_some()
            && detection.label.is_some()
            && track.label != detection.label
        {
            self.config.label_mismatch_cost
        } else {
            0.0
        };
        let overlap = iou(track.filter.corners(), detection.corners);
        if overlap < self.config.min_iou {
            return None;
        }
        let weight = if appearance {
            self.config.appearance_weight
        } else {
            0.0
        };
        let similarity = cosine(&track.appearance, &detection.embedding);
        let cost = match similarity {
            Some(s) if weight > 0.0 => (1.0 - weight) * (1.0 - overlap) + weight * (1.0 - s) / 2.0,
            _ => 1.0 - overlap,
        };
        Some(cost + mismatch)
    }

    /// Hungarian assignment of `tracks` (indices into self.tracks) to
    /// `detections` (indices into the frame's list); returns matched pairs.
    fn associate(
        &self,
        tracks: &[usize],
        detections: &[usize],
        frame: &[Detection],
        max_cost: f64,
        appearance: bool,
    ) -> Vec<(usize, usize)> {
        if tracks.is_empty() || detections.is_empty() {
            return Vec::new();
        }
        // Forbidden pairs cost more than any allowed one, and are dropped
        // after the assignment.
        const FORBIDDEN: f64 = 1e6;
        let costs: Vec<Option<f64>> = tracks
            .iter()
            .flat_map(|&t| {
                detections
                    .iter()
                    .map(move |&d| self.cost(&self.tracks[t], &frame[d], appearance))
            })
            .collect();
        let matrix: Vec<f64> = costs
            .iter()
            .map(|c| c.filter(|&c| c <= max_cost).unwrap_or(FORBIDDEN))
            .collect();
        let Ok((rows, cols)) = lsap::solve(tracks.len(), detections.len(), &matrix, false) else {
            return Vec::new();
        };
        rows.into_iter()
            .zip(cols)
            .filter(|&(r, c)| matrix[r * detections.len() + c] < FORBIDDEN)
            .map(|(r, c)| (tracks[r], detections[c]))
            .collect()
    }

    /// Advances every track by one frame and matches this frame's
    /// detections; returns the tracks matched on this frame that are
    /// confirmed (tentative ones too when `include_tentative`).
    pub fn update(&mut self, frame: &[Detection], include_tentative: bool) -> Vec<TrackReport> {
        self.frames += 1;
        let first_frame = self.frames == 1;
        for track in &mut self.tracks {
            track.filter.predict();
        }
        let (high, low): (Vec<usize>, Vec<usize>) = (0..frame.len())
            .filter(|&d| {
                frame[d].score >= self.config.low_score
                    && frame[d].corners.iter().all(|v| v.is_finite())
            })
            .partition(|&d| frame[d].score >= self.config.high_score);

        let mut matched_track = vec![false; self.tracks.len()];
        let mut matched_detection = vec![false; frame.len()];
        let mut pairs = Vec::new();

        // 1. Confident detections against confirmed and lost tracks.
        let established: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| self.tracks[t].state != TrackState::Tentative)
            .collect();
        for (t, d) in self.associate(&established, &high, frame, self.config.max_cost, true) {
            matched_track[t] = true;
            matched_detection[d] = true;
            pairs.push((t, d));
        }
        // 2. Low-score detections against confirmed tracks still unmatched,
        //    on overlap alone (their appearance is less reliable).
        let waiting: Vec<usize> = established
            .iter()
            .copied()
            .filter(|&t| !matched_track[t] && self.tracks[t].state == TrackState::Confirmed)
            .collect();
        for (t, d) in self.associate(&waiting, &low, frame, self.config.max_cost_low, false) {
            matched_track[t] = true;
            matched_detection[d] = true;
            pairs.push((t, d));
        }
        // 3. Remaining confident detections against tentative tracks.
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| self.tracks[t].state == TrackState::Tentative)
            .collect();
        let rest: Vec<usize> = high
            .iter()
            .copied()
            .filter(|&d| !matched_detection[d])
            .collect();
        for (t, d) in self.associate(&tentative, &rest, frame, self.config.max_cost, true) {
            matched_track[t] = true;
            matched_detection[d] = true;
            pairs.push((t, d));
        }

        let momentum = self.config.appearance_momentum;
        for &(t, d) in &pairs {
            let track = &mut self.tracks[t];
            track.absorb(&frame[d], momentum);
            if track.state == TrackState::Lost
                || (track.state == TrackState::Tentative && track.hits >= self.config.confirm_hits)
            {
                track.state = TrackState::Confirmed;
            }
        }
        for (t, track) in self.tracks.iter_mut().enumerate() {
            if matched_track[t] {
                continue;
            }
            track.lost_for += 1;
            if track.state == TrackState::Confirmed {
                track.state = TrackState::Lost;
            }
        }
        let max_lost = self.config.max_lost;
        self.tracks.retain(|t| match t.state {
            TrackState::Tentative => t.lost_for == 0,
            _ => t.lost_for <= max_lost,
        });

        // New tracks from confident detections nobody claimed.
        for &d in &high {
            if matched_detection[d] || frame[d].score < self.config.new_track_score {
                continue;
            }
            let detection = &frame[d];
            let track = Track {
                id: self.next_id,
                filter: BoxFilter::new(detection.corners),
                label: detection.label,
                label_votes: LabelVotes::of(detection),
                score: detection.score,
                corners: detection.corners,
                appearance: detection.embedding.clone(),
                state: if first_frame || self.config.confirm_hits <= 1 {
                    TrackState::Confirmed
                } else {
                    TrackState::Tentative
                },
                hits: 1,
                lost_for: 0,
            };
            self.next_id += 1;
            self.tracks.push(track);
        }

        let mut reports: Vec<TrackReport> = self
            .tracks
            .iter()
            .filter(|t| t.lost_for == 0)
            .filter(|t| t.state == TrackState::Confirmed || include_tentative)
            .map(|t| TrackReport {
                id: t.id,
                label: t.label,
                score: t.score,
                corners: t.corners,
                state: t.state,
            })
            .collect();
        reports.sort_by_key(|r| r.id);
        reports
    }

    /// Tracks alive now (tentative, confirmed or lost).
    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// After the queries change: `map` gives each old query index its new
    /// one, or None when the query is gone. Tracks of kept queries keep their
    /// ids under the new index; tracks of removed queries end. Unlabelled
    /// tracks (class-agnostic) stay.
    pub fn relabel(&mut self, map: impl Fn(usize) -> Option<usize>) {
        self.tracks.retain_mut(|track| {
            if track.label.is_some_and(|old| map(old).is_none()) {
                return false;
            }
            track.label_votes.relabel(&map);
            track.label = track.label_votes.leader();
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f64, y: f64, score: f64, label: usize, look: [f32; 2]) -> Detection {
        let norm = (look[0] * look[0] + look[1] * look[1]).sqrt();
        Detection {
            corners: [x, y, x + 20.0, y + 20.0],
            score,
            label: Some(label),
            embedding: vec![look[0] / norm, look[1] / norm],
            slot_reseeded: false,
        }
    }

    fn tracker() -> DetectionTracker {
        DetectionTracker::new(TrackerConfig::default()).expect("default config is valid")
    }

    fn ids(reports: &[TrackReport]) -> Vec<u64> {
        reports.iter().map(|r| r.id).collect()
    }

    /// The id reported nearest to x.
    fn id_near(reports: &[TrackReport], x: f64) -> u64 {
        reports
            .iter()
            .min_by(|a, b| {
                (a.corners[0] - x)
                    .abs()
                    .total_cmp(&(b.corners[0] - x).abs())
            })
            .map(|r| r.id)
            .expect("a track")
    }

    #[test]
    fn steady_objects_keep_their_ids() {
        let mut t = tracker();
        let first = t.update(
            &[
                det(0.0, 0.0, 0.9, 0, [1.0, 0.0]),
                det(100.0, 0.0, 0.9, 0, [1.0, 0.0]),
            ],
            false,
        );
        assert_eq!(
            ids(&first),
            vec![1, 2],
            "confirmed at once on the first frame"
        );
        for f in 1..20 {
            let x = 3.0 * f as f64;
            let r = t.update(
                &[
                    det(x, 0.0, 0.9, 0, [1.0, 0.0]),
                    det(100.0 - x, 0.0, 0.9, 0, [1.0, 0.0]),
                ],
                false,
            );
            assert_eq!(ids(&r), vec![1, 2]);
        }
    }

    #[test]
    fn crossing_objects_keep_their_ids_by_motion() {
        // Two identical-looking objects pass through each other.
        let mut t = tracker();
        let mut left_id = None;
        for f in 0..40 {
            let x = 4.0 * f as f64;
            let r = t.update(
                &[
                    det(x, 50.0, 0.9, 0, [1.0, 0.0]),
                    det(160.0 - x, 52.0, 0.9, 0, [1.0, 0.0]),
                ],
                false,
            );
            if r.len() < 2 {
                continue;
            }
            let id = id_near(&r, x);
            match left_id {
                None => left_id = Some(id),
                // Skip the frames where both sit on the same spot.
                Some(expected) if (x - (160.0 - x)).abs() > 25.0 => {
                    assert_eq!(id, expected, "frame {f}")
                }
                _ => {}
            }
        }
    }

    #[test]
    fn an_occlusion_gap_keeps_the_id() {
        let mut t = tracker();
        let mut id = None;
        for f in 0..30 {
            let x = 5.0 * f as f64;
            let visible = !(10..16).contains(&f);
            let frame = if visible {
                vec![det(x, 0.0, 0.8, 1, [0.0, 1.0])]
            } else {
                Vec::new()
            };
            let r = t.update(&frame, false);
            if visible {
                assert_eq!(r.len(), 1, "frame {f}");
                assert_eq!(*id.get_or_insert(r[0].id), r[0].id, "frame {f}");
            } else {
                assert!(r.is_empty());
            }
        }
    }

    #[test]
    fn a_weak_detection_continues_but_never_starts_a_track() {
        let mut t = tracker();
        t.update(&[det(0.0, 0.0, 0.9, 0, [1.0, 0.0])], false);
        // Second stage: a low score continues the track.
        let r = t.update(&[det(2.0, 0.0, 0.15, 0, [1.0, 0.0])], false);
        assert_eq!(ids(&r), vec![1]);
        // Alone, a low score starts nothing.
        let r = t.update(
            &[
                det(2.0, 0.0, 0.9, 0, [1.0, 0.0]),
                det(300.0, 0.0, 0.2, 0, [1.0, 0.0]),
            ],
            false,
        );
        assert_eq!(ids(&r), vec![1]);
        assert_eq!(t.live_tracks(), 1);
    }

    #[test]
    fn lifecycle_tentative_confirmed_lost_removed() {
        let config = TrackerConfig {
            max_lost: 3,
            ..TrackerConfig::default()
        };
        let mut t = DetectionTracker::new(config).unwrap();
        t.update(&[], false); // not the first frame any more
                              // Seen once: tentative, not reported unless asked.
        assert!(t
            .update(&[det(0.0, 0.0, 0.9, 0, [1.0, 0.0])], false)
            .is_empty());
        let r = t.update(&[det(1.0, 0.0, 0.9, 0, [1.0, 0.0])], true);
        assert_eq!(r[0].state, TrackState::Confirmed);
        for _ in 0..3 {
            assert!(t.update(&[], false).is_empty());
            assert_eq!(t.live_tracks(), 1, "lost, still kept");
        }
        t.update(&[], false);
        assert_eq!(t.live_tracks(), 0, "removed after max_lost");
        // A tentative track that misses its second frame is dropped.
        t.update(&[det(50.0, 0.0, 0.9, 0, [1.0, 0.0])], true);
        t.update(&[], true);
        assert_eq!(t.live_tracks(), 0);
    }

    #[test]
    fn a_label_flip_continues_the_track_and_the_label_goes_by_votes() {
        let mut t = tracker();
        t.update(&[det(0.0, 0.0, 0.9, 0, [1.0, 0.0])], false);
        // The detector names the same object by another query for a frame.
        let r = t.update(&[det(1.0, 0.0, 0.6, 1, [1.0, 0.0])], true);
        assert_eq!(ids(&r), vec![1], "the flip continues track 1");
        assert_eq!(r[0].label, Some(0), "0.9 for query 0 against 0.6 for 1");
        // Query 1 keeps being named: its total overtakes.
        let r = t.update(&[det(2.0, 0.0, 0.6, 1, [1.0, 0.0])], true);
        assert_eq!((ids(&r), r[0].label), (vec![1], Some(1)));

        // Between a detection of the track's own query and an equally placed
        // one of another query, the track takes its own.
        let mut t = tracker();
        t.update(&[det(0.0, 0.0, 0.9, 0, [1.0, 0.0])], false);
        let r = t.update(
            &[
                det(1.0, 0.0, 0.9, 1, [1.0, 0.0]),
                det(1.0, 0.0, 0.9, 0, [1.0, 0.0]),
            ],
            true,
        );
        let continued = r.iter().find(|r| r.id == 1).expect("track 1 goes on");
        assert_eq!(continued.label, Some(0));
    }

    #[test]
    fn labels_never_mix_at_a_mismatch_cost_above_the_limit() {
        let mut t = DetectionTracker::new(TrackerConfig {
            label_mismatch_cost: 1.0,
            ..TrackerConfig::default()
        })
        .unwrap();
        t.update(&[det(0.0, 0.0, 0.9, 0, [1.0, 0.0])], false);
        let r = t.update(&[det(1.0, 0.0, 0.9, 1, [1.0, 0.0])], true);
        assert!(
            r.iter().all(|r| r.id != 1),
            "another label never continues track 1"
        );
        let mut agnostic = DetectionTracker::new(TrackerConfig {
            class_agnostic: true,
            label_mismatch_cost: 1.0,
            ..TrackerConfig::default()
        })
        .unwrap();
        agnostic.update(&[det(0.0, 0.0, 0.9, 0, [1.0, 0.0])], false);
        let r = agnostic.update(&[det(1.0, 0.0, 0.9, 1, [1.0, 0.0])], false);
        assert_eq!(ids(&r), vec![1], "class-agnostic tracking ignores labels");
    }

    #[test]
    fn equal_twins_side_by_side_stay_apart() {
        // Two identical objects 30 px apart moving together.
        let mut t = tracker();
        let mut first = None;
        for f in 0..25 {
            let x = 2.0 * f as f64;
            let r = t.update(
                &[
                    det(x, 0.0, 0.9, 0, [1.0, 0.0]),
                    det(x + 30.0, 0.0, 0.9, 0, [1.0, 0.0]),
                ],
                false,
            );
            assert_eq!(r.len(), 2);
            let pair = (id_near(&r, x), id_near(&r, x + 30.0));
            assert_ne!(pair.0, pair.1);
            assert_eq!(*first.get_or_insert(pair), pair, "frame {f}");
        }
    }

    #[test]
    fn appearance_breaks_a_tie_in_overlap() {
        // Two objects of different looks swap nearly-equal overlaps: the
        // look decides.
        let mut t = tracker();
        t.update(
            &[
                det(0.0, 0.0, 0.9, 0, [1.0, 0.0]),
                det(12.0, 0.0, 0.9, 0, [0.0, 1.0]),
            ],
            false,
        );
        let r = t.update(
            &[
                det(6.0, 0.0, 0.9, 0, [0.0, 1.0]),
                det(6.5, 0.0, 0.9, 0, [1.0, 0.0]),
            ],
            false,
        );
        let red = r.iter().find(|r| r.corners[0] == 6.5).expect("matched");
        assert_eq!(red.id, 1);
    }

    #[test]
    fn relabelling_keeps_the_tracks_of_kept_queries() {
        let mut t = tracker();
        t.update(
            &[
                det(0.0, 0.0, 0.9, 0, [1.0, 0.0]),
                det(100.0, 0.0, 0.9, 1, [0.0, 1.0]),
            ],
            false,
        );
        // Query 0 is dropped; query 1 becomes query 0.
        t.relabel(|old| (old == 1).then_some(0));
        assert_eq!(t.live_tracks(), 1);
        let r = t.update(&[det(101.0, 0.0, 0.9, 0, [0.0, 1.0])], false);
        assert_eq!(ids(&r), vec![2]);
        assert_eq!(r[0].label, Some(0));
    }

    #[test]
    fn bad_configs_are_refused() {
        for config in [
            TrackerConfig {
                low_score: 0.6,
                high_score: 0.5,
                ..TrackerConfig::default()
            },
            TrackerConfig {
                confirm_hits: 0,
                ..TrackerConfig::default()
            },
            TrackerConfig {
                min_iou: 1.5,
                ..TrackerConfig::default()
            },
            TrackerConfig {
                label_mismatch_cost: -0.1,
                ..TrackerConfig::default()
            },
            TrackerConfig {
                label_mismatch_cost: f64::NAN,
                ..TrackerConfig::default()
            },
        ] {
            assert!(DetectionTracker::new(config).is_err());
        }
    }
}
