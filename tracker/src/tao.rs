//! The TAO annotation format (TAO, TAO-OW): videos, images (frames) with a
//! frame index, annotations with track ids and `[x, y, w, h]` boxes, tracks,
//! categories.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrackerError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaoDataset {
    #[serde(default)]
    pub videos: Vec<Video>,
    #[serde(default)]
    pub images: Vec<Image>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    #[serde(default)]
    pub tracks: Vec<Track>,
    #[serde(default)]
    pub categories: Vec<Category>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    pub id: u64,
    pub name: String,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub neg_category_ids: Vec<u64>,
    #[serde(default)]
    pub not_exhaustive_category_ids: Vec<u64>,
    /// Frames per second of the frames listed in `images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: u64,
    pub video_id: u64,
    pub frame_index: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub id: u64,
    pub image_id: u64,
    pub video_id: u64,
    pub track_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    #[serde(default)]
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
    /// Share of the object that is visible (synthetic data only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub id: u64,
    pub category_id: u64,
    pub video_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub id: u64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synset: Option<String>,
}

impl Image {
    /// Whether a run that reads every `every`-th frame of each video (by
    /// `frame_index`; 0 and 1 read all) reads this one.
    pub fn is_sampled(&self, every: u64) -> bool {
        self.frame_index.is_multiple_of(every.max(1))
    }
}

impl TaoDataset {
    /// Keeps only the frames a run reading every `every`-th frame reads, and
    /// their annotations: what such a run is to be scored against.
    pub fn keep_sampled(&mut self, every: u64) {
        self.images.retain(|image| image.is_sampled(every));
        let kept: std::collections::HashSet<u64> = self.images.iter().map(|i| i.id).collect();
        self.annotations.retain(|a| kept.contains(&a.image_id));
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrackerError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| TrackerError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| TrackerError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|e| TrackerError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_a_sample_keeps_its_frames_and_their_annotations_only() {
        let image = |id, frame_index| Image {
            id,
            video_id: 1 + id / 100,
            frame_index,
            file_name: format!("{id}.jpg"),
            width: 8,
            height: 8,
        };
        let annotation = |id, image_id| Annotation {
            id,
            image_id,
            video_id: 1,
            track_id: 1,
            category_id: 1,
            bbox: [0.0, 0.0, 1.0, 1.0],
            area: 1.0,
            iscrowd: 0,
            visibility: None,
        };
        // Two videos: frame indices restart, so the sample is per video.
        let mut dataset = TaoDataset {
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
            ..TaoDataset::default()
        };
        let whole = dataset.clone();
        dataset.keep_sampled(1);
        assert_eq!(dataset, whole);
        dataset.keep_sampled(2);
        let ids = |d: &TaoDataset| d.images.iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(&dataset), [1, 3, 101]);
        let kept: Vec<u64> = dataset.annotations.iter().map(|a| a.id).collect();
        assert_eq!(kept, [1, 3]);
        assert!(whole.images[0].is_sampled(0) && whole.images[1].is_sampled(0));
    }
}
