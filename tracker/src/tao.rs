//! The TAO annotation format (TAO, TAO-OW): videos, images (frames) with a
//! frame index, annotations with track ids and `[x, y, w, h]` boxes, tracks,
//! categories.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_json, Result, TrackerError};

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

impl TaoDataset {
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path, "a TAO dataset")
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| TrackerError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|e| TrackerError::io(path, e))
    }
}
