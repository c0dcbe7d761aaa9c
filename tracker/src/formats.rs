//! Track files: JSON lines of [`TrackUpdate`]s, TAO results (what TrackEval
//! and `owltrack eval` read) and MOTChallenge text.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, TrackerError};
use crate::update::TrackUpdate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackFormat {
    /// One JSON object per frame: `{frame, pts, tracks: [...]}`.
    JsonLines,
    /// A JSON list of `{image_id, video_id, category_id, bbox: [x, y, w, h],
    /// score, track_id}`.
    Tao,
    /// MOTChallenge: `frame,id,x,y,w,h,conf,-1,-1,-1`, frames from 1.
    Mot,
}

impl TrackFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "jsonl" => Some(TrackFormat::JsonLines),
            "tao" => Some(TrackFormat::Tao),
            "mot" => Some(TrackFormat::Mot),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            TrackFormat::JsonLines => "jsonl",
            TrackFormat::Tao => "json",
            TrackFormat::Mot => "txt",
        }
    }
}

/// Maps a frame to the TAO image it is, when tracking a dataset's frames;
/// plain videos number their frames 1, 2, … in video 1.
#[derive(Debug, Clone)]
pub struct TaoIds {
    /// Image id of each frame index (None for frames the dataset does not
    /// list, which are left out); without it, frames are numbered from 1.
    pub images: Option<Vec<Option<u64>>>,
    pub video: u64,
    /// Category id of each query index; without it, query i is category
    /// i + 1.
    pub categories: Option<Vec<u64>>,
}

impl Default for TaoIds {
    /// A plain video: frames 1, 2, … of video 1, query i is category i + 1.
    fn default() -> Self {
        TaoIds {
            images: None,
            video: 1,
            categories: None,
        }
    }
}

#[derive(Serialize)]
struct TaoRow {
    image_id: u64,
    video_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    score: f64,
    track_id: u64,
}

pub struct TrackFileWriter {
    format: TrackFormat,
    /// Names the destination in errors.
    path: PathBuf,
    out: BufWriter<Box<dyn Write + Send>>,
    ids: TaoIds,
    rows: u64,
}

impl TrackFileWriter {
    pub fn create(path: &Path, format: TrackFormat, ids: TaoIds) -> Result<Self> {
        let file = File::create(path).map_err(|e| TrackerError::io(path, e))?;
        Self::to_stream(Box::new(file), path, format, ids)
    }

    /// Writes to any stream (standard output, say); `name` stands for it in
    /// errors.
    pub fn to_stream(
        out: Box<dyn Write + Send>,
        name: &Path,
        format: TrackFormat,
        ids: TaoIds,
    ) -> Result<Self> {
        let mut writer = TrackFileWriter {
            format,
            path: name.to_owned(),
            out: BufWriter::new(out),
            ids,
            rows: 0,
        };
        if format == TrackFormat::Tao {
            writer.put(b"[")?;
        }
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| TrackerError::io(&self.path, e))
    }

    fn json<T: Serialize>(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| TrackerError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    pub fn write(&mut self, update: &TrackUpdate) -> Result<()> {
        match self.format {
            TrackFormat::JsonLines => {
                let mut line = self.json(update)?;
                line.push(b'\n');
                self.put(&line)
            }
            TrackFormat::Tao => {
                let image_id = match &self.ids.images {
                    Some(images) => match images.get(update.frame as usize) {
                        Some(&Some(id)) => id,
                        _ => return Ok(()),
                    },
                    None => update.frame + 1,
                };
                for t in &update.tracks {
                    let b = t.corners;
                    let row = TaoRow {
                        image_id,
                        video_id: self.ids.video,
                        category_id: match (t.query, &self.ids.categories) {
                            (Some(q), Some(ids)) => ids.get(q).copied().unwrap_or(q as u64 + 1),
                            (Some(q), None) => q as u64 + 1,
                            (None, _) => 1,
                        },
                        bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        score: t.score,
                        track_id: t.id,
                    };
                    let bytes = self.json(&row)?;
                    if self.rows > 0 {
                        self.put(b",\n")?;
                    }
                    self.put(&bytes)?;
                    self.rows += 1;
                }
                Ok(())
            }
            TrackFormat::Mot => {
                let mut text = String::new();
                for t in &update.tracks {
                    let b = t.corners;
                    text.push_str(&format!(
                        "{},{},{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1\n",
                        update.frame + 1,
                        t.id,
                        b[0],
                        b[1],
                        b[2] - b[0],
                        b[3] - b[1],
                        t.score
                    ));
                }
                self.put(text.as_bytes())
            }
        }
    }

    pub fn finish(mut self) -> Result<PathBuf> {
        if self.format == TrackFormat::Tao {
            self.put(b"]\n")?;
        }
        self.out
            .flush()
            .map_err(|e| TrackerError::io(&self.path, e))?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tbd::TrackState;
    use crate::update::TrackedObject;

    fn update(frame: u64) -> TrackUpdate {
        TrackUpdate {
            frame,
            pts: frame as f64 / 25.0,
            tracks: vec![
                TrackedObject {
                    id: 3,
                    label: Some("red circle".into()),
                    query: Some(0),
                    score: 0.75,
                    corners: [10.0, 20.0, 40.0, 60.0],
                    state: TrackState::Confirmed,
                },
                TrackedObject {
                    id: 9,
                    label: None,
                    query: None,
                    score: 0.5,
                    corners: [0.0, 0.0, 5.0, 5.0],
                    state: TrackState::Confirmed,
                },
            ],
        }
    }

    fn written(format: TrackFormat, ids: TaoIds) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracks");
        let mut writer = TrackFileWriter::create(&path, format, ids).unwrap();
        writer.write(&update(0)).unwrap();
        writer.write(&update(4)).unwrap();
        writer.finish().unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn json_lines_round_trip() {
        let text = written(TrackFormat::JsonLines, TaoIds::default());
        let lines: Vec<TrackUpdate> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![update(0), update(4)]);
        assert!(text.contains(r#""box":[10.0,20.0,40.0,60.0]"#));
        assert!(text.contains(r#""state":"confirmed""#));
    }

    #[test]
    fn tao_results_load_as_predictions() {
        let text = written(
            TrackFormat::Tao,
            TaoIds {
                images: Some(vec![Some(100), None, Some(102), None, Some(104)]),
                video: 7,
                categories: Some(vec![31]),
            },
        );
        let rows: Vec<crate::tao_ow::Prediction> = serde_json::from_str(&text).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].image_id, 100);
        assert_eq!(rows[2].image_id, 104);
        assert_eq!(rows[0].bbox, [10.0, 20.0, 30.0, 40.0]);
        // Query 0 is category 31; a track without a query is category 1.
        assert_eq!(
            (rows[0].category_id, rows[1].category_id),
            (Some(31), Some(1))
        );
        assert_eq!(rows[1].video_id, Some(7));
        assert_eq!(rows[1].track_id, 9);
    }

    #[test]
    fn mot_has_motchallenges_columns() {
        let text = written(TrackFormat::Mot, TaoIds::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "1,3,10.00,20.00,30.00,40.00,0.7500,-1,-1,-1");
        assert_eq!(lines[3].split(',').next(), Some("5"));
        assert!(lines.iter().all(|l| l.split(',').count() == 10));
    }
}
