//! Tracks from the recurrent video decoder's slots (Video OWL-ViT). A slot
//! follows its object from frame to frame by itself, so there is nothing to
//! match: a slot's track is born when its score crosses `birth_score`, kept
//! through short occlusions while the slot scores below `keep_score` for at
//! most `keep_alive` frames, and released after that — the slot is then
//! free and a later birth on it starts a new track.

use serde::{Deserialize, Serialize};

use crate::tbd::{Detection, LabelVotes, TrackReport, TrackState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlotTrackerConfig {
    /// A free slot scoring at least this starts a track.
    pub birth_score: f64,
    /// A slot with a track scoring at least this has evidence this frame.
    pub keep_score: f64,
    /// Frames without evidence before a slot's track ends.
    pub keep_alive: u32,
    /// Frames with evidence before a track is reported confirmed.
    pub confirm_hits: u32,
}

impl Default for SlotTrackerConfig {
    fn default() -> Self {
        SlotTrackerConfig {
            birth_score: 0.35,
            keep_score: 0.15,
            keep_alive: 15,
            confirm_hits: 2,
        }
    }
}

impl SlotTrackerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !unit(self.birth_score) || !unit(self.keep_score) || self.keep_score > self.birth_score {
            return Err(format!(
                "scores must lie in [0, 1] with keep_score ≤ birth_score: {self:?}"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    track: Option<u64>,
    hits: u32,
    missed: u32,
    label: Option<usize>,
    label_votes: LabelVotes,
    corners: [f64; 4],
    score: f64,
}

/// The slot → track bookkeeping of one video.
#[derive(Debug, Clone)]
pub struct SlotTracker {
    config: SlotTrackerConfig,
    slots: Vec<Slot>,
    next_id: u64,
}

impl SlotTracker {
    pub fn new(config: SlotTrackerConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(SlotTracker {
            config,
            slots: Vec::new(),
            next_id: 1,
        })
    }

    /// One frame: `slots[k]` is slot k's box, score (its best query's, or
    /// objectness when tracking class-agnostically) and label. Returns the
    /// live tracks, tentative ones only with `include_tentative`.
    pub fn update(&mut self, slots: &[Detection], include_tentative: bool) -> Vec<TrackReport> {
        if self.slots.len() < slots.len() {
            self.slots.resize(slots.len(), Slot::default());
        }
        let mut reports = Vec::new();
        for (slot, seen) in self.slots.iter_mut().zip(slots) {
            if seen.slot_reseeded {
                *slot = Slot::default();
            }
            match slot.track {
                None if seen.score >= self.config.birth_score => {
                    slot.track = Some(self.next_id);
                    self.next_id += 1;
                    slot.hits = 1;
                    slot.missed = 0;
                    slot.label_votes = LabelVotes::of(seen);
                    slot.label = slot.label_votes.leader();
                    slot.corners = seen.corners;
                    slot.score = seen.score;
                }
                None => continue,
                Some(_) if seen.score >= self.config.keep_score => {
                    slot.hits += 1;
                    slot.missed = 0;
                    // The label goes by the queries the slot answered over
                    // its track, so a change of queries re-scores slots
                    // without resetting them.
                    slot.label_votes.add(seen);
                    slot.label = slot.label_votes.leader();
                    slot.corners = seen.corners;
                    slot.score = seen.score;
                }
                Some(_) => {
                    slot.missed += 1;
                    if slot.missed > self.config.keep_alive {
                        *slot = Slot::default();
                        continue;
                    }
                }
            }
            let Some(id) = slot.track else { continue };
            let state = if slot.missed > 0 {
                TrackState::Lost
            } else if slot.hits >= self.config.confirm_hits {
                TrackState::Confirmed
            } else {
                TrackState::Tentative
            };
            if state == TrackState::Tentative && !include_tentative {
                continue;
            }
            if state == TrackState::Lost {
                continue;
            }
            reports.push(TrackReport {
                id,
                label: slot.label,
                score: slot.score,
                corners: slot.corners,
                state,
            });
        }
        reports
    }

    /// Queries changed: labels move to the queries' new indices; a slot
    /// whose queries were all removed keeps its track, unlabelled until it
    /// scores a query again.
    pub fn relabel(&mut self, new_index: impl Fn(usize) -> Option<usize>) {
        for slot in &mut self.slots {
            slot.label_votes.relabel(&new_index);
            slot.label = slot.label_votes.leader();
        }
    }

    /// Tracks alive now (reported or kept through an occlusion).
    pub fn live_tracks(&self) -> usize {
        self.slots.iter().filter(|s| s.track.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(score: f64, x: f64) -> Detection {
        Detection {
            corners: [x, 10.0, x + 20.0, 30.0],
            score,
            label: Some(0),
            embedding: Vec::new(),
            slot_reseeded: false,
        }
    }

    fn tracker() -> SlotTracker {
        SlotTracker::new(SlotTrackerConfig {
            keep_alive: 3,
            ..SlotTrackerConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_slot_becomes_a_track_at_the_birth_score() {
        let mut t = tracker();
        assert!(t.update(&[seen(0.3, 0.0)], true).is_empty());
        let born = t.update(&[seen(0.4, 1.0)], true);
        assert_eq!(born.len(), 1);
        assert_eq!(born[0].state, TrackState::Tentative);
        assert!(t.update(&[seen(0.4, 2.0)], false)[0].state == TrackState::Confirmed);
    }

    #[test]
    fn tracks_keep_their_ids_through_a_short_occlusion_and_end_after_keep_alive() {
        let mut t = tracker();
        let id = t.update(&[seen(0.5, 0.0), seen(0.5, 50.0)], true)[0].id;
        for frame in 0..3 {
            let reports = t.update(&[seen(0.01, 0.0), seen(0.5, 50.0)], true);
            assert_eq!(
                reports.len(),
                1,
                "frame {frame}: the hidden slot is not reported"
            );
            assert_eq!(t.live_tracks(), 2, "but kept");
        }
        let back = t.update(&[seen(0.5, 3.0), seen(0.5, 50.0)], true);
        assert_eq!(back[0].id, id, "same id after the occlusion");
        for _ in 0..4 {
            t.update(&[seen(0.01, 0.0), seen(0.5, 50.0)], true);
        }
        assert_eq!(t.live_tracks(), 1, "released after keep_alive frames");
        let reborn = t.update(&[seen(0.5, 0.0), seen(0.5, 50.0)], true);
        assert!(
            reborn.iter().all(|r| r.id != id),
            "a new track, not the old id"
        );
    }

    #[test]
    fn weak_evidence_keeps_but_never_starts_a_track() {
        let mut t = tracker();
        assert!(t.update(&[seen(0.2, 0.0)], true).is_empty());
        t.update(&[seen(0.5, 0.0)], true);
        assert_eq!(t.update(&[seen(0.2, 0.0)], true).len(), 1);
    }

    #[test]
    fn a_reseeded_slot_ends_its_track_and_starts_another() {
        let mut t = tracker();
        let id = t.update(&[seen(0.5, 0.0)], true)[0].id;
        assert_eq!(t.update(&[seen(0.5, 1.0)], true)[0].id, id);
        // Reseeded onto a new object scoring high at once: a new track,
        // tentative again.
        let reseeded = Detection {
            slot_reseeded: true,
            ..seen(0.5, 80.0)
        };
        let r = t.update(std::slice::from_ref(&reseeded), true);
        assert_eq!(r.len(), 1);
        assert_ne!(r[0].id, id);
        assert_eq!(r[0].state, TrackState::Tentative);
        // Reseeded onto nothing: the old track simply ends.
        let r = t.update(
            &[Detection {
                score: 0.01,
                ..reseeded
            }],
            true,
        );
        assert!(r.is_empty());
    }

    #[test]
    fn relabelling_moves_labels_without_resetting_slots() {
        let mut t = tracker();
        let id = t.update(&[seen(0.5, 0.0)], true)[0].id;
        t.relabel(|old| (old == 0).then_some(2));
        let unlabelled = Detection {
            label: None,
            ..seen(0.5, 1.0)
        };
        let r = t.update(&[unlabelled], true);
        assert_eq!((r[0].id, r[0].label), (id, Some(2)));
    }

    #[test]
    fn a_slot_is_labelled_by_the_queries_it_answered_over_its_track() {
        let mut t = tracker();
        let answering = |label, score| Detection {
            label: Some(label),
            ..seen(score, 0.0)
        };
        let id = t.update(&[answering(0, 0.6)], true)[0].id;
        // One frame scored best by another query does not relabel the track.
        let r = t.update(&[answering(1, 0.4)], true);
        assert_eq!((r[0].id, r[0].label), (id, Some(0)));
        // Query 1 keeps winning: its total (0.8) overtakes query 0's (0.6).
        let r = t.update(&[answering(1, 0.4)], true);
        assert_eq!((r[0].id, r[0].label), (id, Some(1)));
        // Query 1 removed: the track keeps its id under what remains.
        t.relabel(|old| (old == 0).then_some(0));
        let r = t.update(
            &[Detection {
                label: None,
                ..seen(0.5, 0.0)
            }],
            true,
        );
        assert_eq!((r[0].id, r[0].label), (id, Some(0)));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = SlotTrackerConfig {
            keep_score: 0.5,
            birth_score: 0.3,
            ..SlotTrackerConfig::default()
        };
        assert!(SlotTracker::new(bad).is_err());
    }
}
