//! Clip-consistent matching for the recurrent video decoder (Video OWL-ViT):
//! a query slot matched to a ground-truth track keeps that track on every
//! later frame of the clip — its target where the track is visible,
//! no-object where it is not — and only free slots are matched, by the
//! Hungarian algorithm on the image matcher's cost, to tracks that appear
//! for the first time.

use super::matching::{match_predictions, Focal, MatchWeights};
use crate::error::{ModelError, Result};

/// One frame's ground truth: the visible tracks, their boxes
/// (cx, cy, w, h, normalised) and query labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameTruth {
    pub tracks: Vec<u64>,
    pub boxes: Vec<[f32; 4]>,
    pub labels: Vec<usize>,
}

/// The slot → track assignment carried along one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipMatcher {
    slot_tracks: Vec<Option<u64>>,
    weights: MatchWeights,
    focal: Focal,
}

impl ClipMatcher {
    pub fn new(slots: usize, weights: MatchWeights, focal: Focal) -> Self {
        ClipMatcher {
            slot_tracks: vec![None; slots],
            weights,
            focal,
        }
    }

    /// `slot` follows a new object from now on (the decoder reseeded it):
    /// its track, if still visible, is free to be matched anew.
    pub fn release(&mut self, slot: usize) {
        if let Some(track) = self.slot_tracks.get_mut(slot) {
            *track = None;
        }
    }

    /// The track each slot follows so far.
    pub fn slot_tracks(&self) -> &[Option<u64>] {
        &self.slot_tracks
    }

    /// Targets of one frame: for each slot, the index of its ground truth
    /// in `truth`, or None (no object). `logits` is slots × `queries`
    /// (row-major) and `boxes` the slots' predicted boxes on this frame.
    pub fn assign(
        &mut self,
        truth: &FrameTruth,
        logits: &[f32],
        queries: usize,
        boxes: &[[f32; 4]],
    ) -> Result<Vec<Option<usize>>> {
        let slots = self.slot_tracks.len();
        if boxes.len() != slots
            || logits.len() != slots * queries
            || truth.boxes.len() != truth.tracks.len()
            || truth.labels.len() != truth.tracks.len()
        {
            return Err(ModelError::InvalidInput(format!(
                "clip matching needs {slots} boxes, {slots}×{queries} logits and one box and label per track"
            )));
        }
        let mut targets = vec![None; slots];
        for (slot, track) in self.slot_tracks.iter().enumerate() {
            if let Some(track) = track {
                targets[slot] = truth.tracks.iter().position(|t| t == track);
            }
        }
        let held: Vec<u64> = self.slot_tracks.iter().flatten().copied().collect();
        let new: Vec<usize> = (0..truth.tracks.len())
            .filter(|&j| !held.contains(&truth.tracks[j]))
            .collect();
        let free: Vec<usize> = (0..slots)
            .filter(|&s| self.slot_tracks[s].is_none())
            .collect();
        if new.is_empty() || free.is_empty() {
            return Ok(targets);
        }
        let free_logits: Vec<f32> = free
            .iter()
            .flat_map(|&s| logits[s * queries..(s + 1) * queries].iter().copied())
            .collect();
        let free_boxes: Vec<[f32; 4]> = free.iter().map(|&s| boxes[s]).collect();
        let new_boxes: Vec<[f32; 4]> = new.iter().map(|&j| truth.boxes[j]).collect();
        let new_labels: Vec<usize> = new.iter().map(|&j| truth.labels[j]).collect();
        let pairs = match_predictions(
            &free_logits,
            queries,
            &free_boxes,
            &new_boxes,
            &new_labels,
            self.weights,
            self.focal,
        )?;
        for (free_index, new_index) in pairs {
            let (slot, target) = (free[free_index], new[new_index]);
            self.slot_tracks[slot] = Some(truth.tracks[target]);
            targets[slot] = Some(target);
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(items: &[(u64, [f32; 4])]) -> FrameTruth {
        FrameTruth {
            tracks: items.iter().map(|i| i.0).collect(),
            boxes: items.iter().map(|i| i.1).collect(),
            labels: vec![0; items.len()],
        }
    }

    const A: [f32; 4] = [0.2, 0.2, 0.1, 0.1];
    const B: [f32; 4] = [0.7, 0.7, 0.1, 0.1];
    const C: [f32; 4] = [0.5, 0.2, 0.1, 0.1];

    fn matcher() -> ClipMatcher {
        ClipMatcher::new(3, MatchWeights::default(), Focal::default())
    }

    #[test]
    fn slots_keep_their_tracks_through_the_clip() {
        let mut m = matcher();
        let logits = [0.0; 3];
        // Frame 0: slot 0 sits on track 7, slot 2 on track 9.
        let t0 = m
            .assign(&truth(&[(7, A), (9, B)]), &logits, 1, &[A, C, B])
            .unwrap();
        assert_eq!(t0, [Some(0), None, Some(1)]);
        // Frame 1: the slots have swapped places — matching alone would swap
        // the tracks; the clip keeps them.
        let t1 = m
            .assign(&truth(&[(9, B), (7, A)]), &logits, 1, &[B, C, A])
            .unwrap();
        assert_eq!(t1, [Some(1), None, Some(0)]);
        assert_eq!(m.slot_tracks(), [Some(7), None, Some(9)]);
    }

    #[test]
    fn an_occluded_track_is_no_object_and_keeps_its_slot() {
        let mut m = matcher();
        let logits = [0.0; 3];
        m.assign(&truth(&[(7, A)]), &logits, 1, &[A, B, C]).unwrap();
        // Track 7 hidden; a new track 4 appears right where slot 0 is: it
        // goes to a free slot, not to slot 0.
        let hidden = m.assign(&truth(&[(4, A)]), &logits, 1, &[A, B, C]).unwrap();
        assert_eq!(hidden[0], None);
        assert!(hidden[1] == Some(0) || hidden[2] == Some(0));
        // Track 7 back: slot 0 again.
        let back = m
            .assign(&truth(&[(4, A), (7, C)]), &logits, 1, &[A, B, C])
            .unwrap();
        assert_eq!(back[0], Some(1));
    }

    #[test]
    fn a_released_slot_gives_its_track_up_for_matching_anew() {
        let mut m = matcher();
        let logits = [0.0; 3];
        m.assign(&truth(&[(7, A)]), &logits, 1, &[A, B, C]).unwrap();
        // Slot 0 was reseeded onto another object; track 7, still visible
        // near slot 2, goes to the cheapest free slot.
        m.release(0);
        assert_eq!(m.slot_tracks(), [None, None, None]);
        let t = m.assign(&truth(&[(7, C)]), &logits, 1, &[A, B, C]).unwrap();
        assert_eq!(t, [None, None, Some(0)]);
        m.release(5);
        assert_eq!(m.slot_tracks(), [None, None, Some(7)]);
    }

    #[test]
    fn new_tracks_take_the_cheapest_free_slots() {
        let mut m = matcher();
        let logits = [0.0; 3];
        let t = m
            .assign(&truth(&[(1, C), (2, B)]), &logits, 1, &[A, B, C])
            .unwrap();
        assert_eq!(t, [None, Some(1), Some(0)]);
    }

    #[test]
    fn more_new_tracks_than_free_slots_leaves_the_rest_unmatched() {
        let mut m = ClipMatcher::new(1, MatchWeights::default(), Focal::default());
        let t = m
            .assign(&truth(&[(1, A), (2, B)]), &[0.0], 1, &[B])
            .unwrap();
        assert_eq!(t, [Some(1)]);
        assert_eq!(m.slot_tracks(), [Some(2)]);
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let mut m = matcher();
        assert!(m
            .assign(&truth(&[(1, A)]), &[0.0; 2], 1, &[A, B, C])
            .is_err());
    }
}
