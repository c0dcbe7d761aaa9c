//! Tracks from the recurrent video decoder's slots (Video OWL-ViT). A slot
//! follows its object from frame to frame by itself, so there is nothing to
//! match: a slot's track is born when its score crosses `birth_score`, kept
//! through short occlusions while the slot scores below `keep_score` for at
//! most `keep_alive` frames, and released after that — the slot is then
//! free and a later birth on it starts a new track.
//!
//! One exception to "nothing to match": a slot can let its object go (it
//! is reseeded elsewhere, or waits idle while its object has moved on) and
//! another slot then picks the same object up. A birth whose box overlaps
//! where a track lost within `keep_alive` frames would be now (its motion
//! carried on) by at least `handover_iou` continues that track (a
//! handover) instead of starting a new one.

use serde::{Deserialize, Serialize};

use crate::kalman::BoxFilter;
use crate::tbd::{iou, Detection, LabelVotes, TrackReport, TrackState};

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
    /// A birth whose box overlaps where a track lost within `keep_alive`
    /// frames would be now (its last box carried on by its motion) by at
    /// least this IoU continues that track; 0 turns handovers off.
    pub handover_iou: f64,
}

impl Default for SlotTrackerConfig {
    fn default() -> Self {
        SlotTrackerConfig {
            birth_score: 0.35,
            keep_score: 0.15,
            keep_alive: 15,
            confirm_hits: 2,
            handover_iou: 0.3,
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
        if !unit(self.handover_iou) {
            return Err(format!(
                "the handover IoU must lie in [0, 1]: {}",
                self.handover_iou
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
    /// Where the track's object is headed, for handovers after it is lost.
    motion: Option<BoxFilter>,
}

impl Slot {
    /// One frame on: the track's box as its motion predicts it.
    fn predict(&mut self) {
        if let Some(motion) = &mut self.motion {
            motion.predict();
        }
    }

    fn observe(&mut self, seen: &Detection) {
        self.missed = 0;
        self.label = self.label_votes.leader();
        self.corners = seen.corners;
        self.score = seen.score;
        match &mut self.motion {
            Some(motion) => motion.update(seen.corners),
            None => self.motion = Some(BoxFilter::new(seen.corners)),
        }
    }

    fn predicted_corners(&self) -> [f64; 4] {
        self.motion.map_or(self.corners, |motion| motion.corners())
    }
}

/// The slot → track bookkeeping of one video.
#[derive(Debug, Clone)]
pub struct SlotTracker {
    config: SlotTrackerConfig,
    slots: Vec<Slot>,
    /// Tracks whose slot was reseeded while they lived, for `keep_alive`
    /// frames after their last evidence (`Slot::missed` counts them).
    orphans: Vec<Slot>,
    next_id: u64,
}

/// Where a birth's lost track is held.
#[derive(Clone, Copy)]
enum LostTrack {
    Slot(usize),
    Orphan(usize),
}

impl SlotTracker {
    pub fn new(config: SlotTrackerConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(SlotTracker {
            config,
            slots: Vec::new(),
            orphans: Vec::new(),
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
        let keep_alive = self.config.keep_alive;
        for orphan in &mut self.orphans {
            orphan.missed += 1;
            orphan.predict();
        }
        self.orphans.retain(|orphan| orphan.missed <= keep_alive);
        let mut births = Vec::new();
        for (k, (slot, seen)) in self.slots.iter_mut().zip(slots).enumerate() {
            if seen.slot_reseeded {
                let old = std::mem::take(slot);
                if old.track.is_some() {
                    self.orphans.push(old);
                }
            }
            match slot.track {
                None if seen.score >= self.config.birth_score => births.push(k),
                None => {}
                Some(_) if seen.score >= self.config.keep_score => {
                    slot.hits += 1;
                    // The label goes by the queries the slot answered over
                    // its track, so a change of queries re-scores slots
                    // without resetting them.
                    slot.label_votes.add(seen);
                    slot.predict();
                    slot.observe(seen);
                }
                Some(_) => {
                    slot.predict();
                    slot.missed += 1;
                    if slot.missed > keep_alive {
                        *slot = Slot::default();
                    }
                }
            }
        }
        // The likeliest births choose their lost track first.
        births.sort_by(|&a, &b| slots[b].score.total_cmp(&slots[a].score));
        for k in births {
            let seen = &slots[k];
            let continued = self.lost_track_under(seen.corners).map(|lost| match lost {
                LostTrack::Slot(other) => std::mem::take(&mut self.slots[other]),
                LostTrack::Orphan(index) => self.orphans.swap_remove(index),
            });
            let slot = &mut self.slots[k];
            match continued {
                Some(track) => {
                    *slot = track;
                    slot.hits += 1;
                    slot.label_votes.add(seen);
                }
                None => {
                    *slot = Slot {
                        track: Some(self.next_id),
                        hits: 1,
                        label_votes: LabelVotes::of(seen),
                        ..Slot::default()
                    };
                    self.next_id += 1;
                }
            }
            slot.observe(seen);
        }
        self.slots
            .iter()
            .filter_map(|slot| {
                let id = slot.track?;
                let state = if slot.missed > 0 {
                    TrackState::Lost
                } else if slot.hits >= self.config.confirm_hits {
                    TrackState::Confirmed
                } else {
                    TrackState::Tentative
                };
                let reported = match state {
                    TrackState::Confirmed => true,
                    TrackState::Tentative => include_tentative,
                    TrackState::Lost => false,
                };
                reported.then_some(TrackReport {
                    id,
                    label: slot.label,
                    score: slot.score,
                    corners: slot.corners,
                    state,
                })
            })
            .collect()
    }

    /// The lost track (on a slot without evidence this frame, or orphaned
    /// by a reseed) whose box, carried on by its motion since it was last
    /// seen, overlaps `corners` most, if by at least `handover_iou`.
    fn lost_track_under(&self, corners: [f64; 4]) -> Option<LostTrack> {
        if self.config.handover_iou <= 0.0 {
            return None;
        }
        let on_slots = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.track.is_some() && slot.missed > 0)
            .map(|(k, slot)| (LostTrack::Slot(k), slot));
        let orphans = self
            .orphans
            .iter()
            .enumerate()
            .map(|(index, orphan)| (LostTrack::Orphan(index), orphan));
        on_slots
            .chain(orphans)
            .map(|(lost, track)| (lost, iou(track.predicted_corners(), corners)))
            .filter(|&(_, overlap)| overlap >= self.config.handover_iou)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(lost, _)| lost)
    }

    /// Queries changed: labels move to the queries' new indices; a slot
    /// whose queries were all removed keeps its track, unlabelled until it
    /// scores a query again.
    pub fn relabel(&mut self, new_index: impl Fn(usize) -> Option<usize>) {
        for slot in self.slots.iter_mut().chain(&mut self.orphans) {
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

    /// Slot 0 follows an object moving 4 pixels a frame to the right for
    /// frames 0..6 (x = 0, 4, …, 20); slot 1 sees nothing.
    fn tracker_on_a_moving_object(handover_iou: f64) -> (SlotTracker, u64) {
        let mut t = SlotTracker::new(SlotTrackerConfig {
            keep_alive: 3,
            handover_iou,
            ..SlotTrackerConfig::default()
        })
        .unwrap();
        let mut id = 0;
        for frame in 0..6 {
            id = t.update(&[seen(0.5, 4.0 * frame as f64), seen(0.01, 200.0)], true)[0].id;
        }
        (t, id)
    }

    #[test]
    fn a_slot_picking_up_a_reseeded_slots_object_continues_its_track() {
        let (mut t, id) = tracker_on_a_moving_object(0.3);
        // Slot 0 is reseeded onto nothing while the object hides for two
        // frames; then slot 1 finds it where its motion carried it (x = 32;
        // the last box seen, at x = 20, overlaps that by under 0.3).
        let reseeded = Detection {
            slot_reseeded: true,
            ..seen(0.01, 300.0)
        };
        for _ in 0..2 {
            let r = t.update(&[reseeded.clone(), seen(0.01, 200.0)], true);
            assert!(r.is_empty());
        }
        let r = t.update(&[seen(0.01, 300.0), seen(0.5, 32.0)], true);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, id, "handed over to slot 1");
        assert_eq!(r[0].state, TrackState::Confirmed);
        // Without handovers it is a new track.
        let (mut t, id) = tracker_on_a_moving_object(0.0);
        for _ in 0..2 {
            t.update(&[reseeded.clone(), seen(0.01, 200.0)], true);
        }
        let r = t.update(&[seen(0.01, 300.0), seen(0.5, 32.0)], true);
        assert_ne!(r[0].id, id);
    }

    #[test]
    fn a_lost_track_moves_to_the_slot_that_finds_its_object() {
        let (mut t, id) = tracker_on_a_moving_object(0.3);
        // Slot 0 loses the object (it scores nothing, keeps its track);
        // slot 1 finds it a frame later.
        t.update(&[seen(0.01, 24.0), seen(0.01, 200.0)], true);
        let r = t.update(&[seen(0.01, 28.0), seen(0.5, 28.0)], true);
        assert_eq!((r.len(), r[0].id), (1, id));
        assert_eq!(t.live_tracks(), 1, "slot 0 let the track go");
        // Slot 0 scoring again is another object's track, not a copy.
        let r = t.update(&[seen(0.5, 100.0), seen(0.5, 32.0)], true);
        let ids: Vec<u64> = r.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&id) && ids[0] != ids[1]);
    }

    #[test]
    fn births_far_from_lost_tracks_or_too_late_start_new_tracks() {
        let (mut t, id) = tracker_on_a_moving_object(0.3);
        t.update(&[seen(0.01, 24.0), seen(0.01, 200.0)], true);
        let r = t.update(&[seen(0.01, 28.0), seen(0.5, 120.0)], true);
        assert_ne!(r[0].id, id, "far from where the object was headed");
        // An orphaned track waits keep_alive frames, no longer.
        let (mut t, id) = tracker_on_a_moving_object(0.3);
        let reseeded = Detection {
            slot_reseeded: true,
            ..seen(0.01, 300.0)
        };
        t.update(&[reseeded, seen(0.01, 200.0)], true);
        for _ in 0..3 {
            t.update(&[seen(0.01, 300.0), seen(0.01, 200.0)], true);
        }
        let r = t.update(&[seen(0.01, 300.0), seen(0.5, 40.0)], true);
        assert_ne!(r[0].id, id);
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
        let bad = SlotTrackerConfig {
            handover_iou: 1.5,
            ..SlotTrackerConfig::default()
        };
        assert!(SlotTracker::new(bad).is_err());
    }
}
