//! Running a tracker over a TAO-format dataset (frame folders + annotation
//! JSON) and scoring it: the path `owltrack benchmark tao-ow` takes, through
//! the same pipeline as `owltrack track`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use owltrack_decoder::{list_frames, Source};
use owltrack_models::{Detector, Query};

use crate::error::{Result, TrackerError};
use crate::formats::{TaoIds, TrackFormat};
use crate::pipeline::{track_video, TrackJob, TrackSummary};
use crate::tao::TaoDataset;
use crate::tao_ow::{self, read_predictions, EvalOptions, Evaluation, Prediction, Subset};

/// Image ids of a video's frames by frame index, for sources whose frame
/// index is the dataset's `frame_index` (videos the dataset was cut from).
pub fn image_ids_by_frame_index(dataset: &TaoDataset, video: u64) -> Vec<Option<u64>> {
    let mut ids = Vec::new();
    for image in dataset.images.iter().filter(|i| i.video_id == video) {
        let at = image.frame_index as usize;
        if ids.len() <= at {
            ids.resize(at + 1, None);
        }
        ids[at] = Some(image.id);
    }
    ids
}

/// Image ids of the frames of a folder, in the order the folder is read
/// (natural order of file names), matched by file name.
pub fn image_ids_by_file(dataset: &TaoDataset, root: &Path, files: &[PathBuf]) -> Vec<Option<u64>> {
    let by_path: HashMap<PathBuf, u64> = dataset
        .images
        .iter()
        .map(|i| (root.join(&i.file_name), i.id))
        .collect();
    files.iter().map(|f| by_path.get(f).copied()).collect()
}

#[derive(Debug, Clone)]
pub struct BenchmarkJob {
    /// The dataset's annotations.
    pub gt_path: PathBuf,
    /// Folder the images' `file_name`s are relative to.
    pub frames_root: PathBuf,
    /// Tracking settings; `output` is set per video.
    pub track: TrackJob,
    /// Where the predictions (TAO results) and the scores go.
    pub out: PathBuf,
    pub max_dets: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VideoRun {
    pub name: String,
    pub frames: u64,
    pub tracks: u64,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchmarkResult {
    pub predictions_path: PathBuf,
    pub videos: Vec<VideoRun>,
    pub frames: u64,
    pub seconds: f64,
    /// The evaluation for each subset that has ground truth.
    pub evaluations: Vec<Evaluation>,
    /// Identity switches over all ground-truth tracks (CLEAR-MOT style).
    pub id_switches: usize,
}

/// Tracks every video of the dataset (its frame folder) and evaluates the
/// predictions; a video that fails is reported and left out, the rest go on.
pub fn run_benchmark(
    detector: &mut Detector,
    job: &BenchmarkJob,
    mut progress: impl FnMut(&str, u64, Option<u64>),
) -> Result<BenchmarkResult> {
    let gt = TaoDataset::read(&job.gt_path)?;
    if gt.videos.is_empty() {
        return Err(TrackerError::Format {
            path: job.gt_path.clone(),
            reason: "lists no videos".into(),
        });
    }
    std::fs::create_dir_all(&job.out).map_err(|e| TrackerError::io(&job.out, e))?;
    let scratch = job.out.join("per-video");
    std::fs::create_dir_all(&scratch).map_err(|e| TrackerError::io(&scratch, e))?;
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    let mut predictions: Vec<Prediction> = Vec::new();
    let mut frames = 0;
    for video in &gt.videos {
        let Some(first) = gt.images.iter().find(|i| i.video_id == video.id) else {
            continue;
        };
        let folder = job
            .frames_root
            .join(&first.file_name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| job.frames_root.clone());
        let file = scratch.join(format!("{}.json", video.id));
        let outcome = (|| -> Result<TrackSummary> {
            let files = list_frames(&folder)?;
            let fps = video.fps.unwrap_or(owltrack_decoder::DEFAULT_FOLDER_FPS);
            let mut track = job.track.clone();
            track.output = Some((
                file.clone(),
                TrackFormat::Tao,
                TaoIds {
                    images: Some(image_ids_by_file(&gt, &job.frames_root, &files)),
                    video: video.id,
                    categories: Some(gt.categories.iter().map(|c| c.id).collect()),
                },
            ));
            let source = Source::FrameFolder {
                dir: folder.clone(),
                fps,
            };
            let name = video.name.clone();
            track_video(detector, source, &track, |done, total| {
                progress(&name, done, total)
            })
        })();
        match outcome {
            Ok(summary) => {
                frames += summary.frames;
                predictions.extend(read_predictions(&file)?);
                runs.push(VideoRun {
                    name: video.name.clone(),
                    frames: summary.frames,
                    tracks: summary.tracks,
                    seconds: summary.seconds,
                    error: None,
                });
            }
            Err(error) => {
                tracing::warn!(video = %video.name, %error, "video failed; going on");
                runs.push(VideoRun {
                    name: video.name.clone(),
                    frames: 0,
                    tracks: 0,
                    seconds: 0.0,
                    error: Some(error.to_string()),
                });
            }
        }
    }
    let predictions_path = job.out.join("predictions.json");
    let text = serde_json::to_string(&predictions).map_err(|e| TrackerError::Format {
        path: predictions_path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&predictions_path, text).map_err(|e| TrackerError::io(&predictions_path, e))?;
    let mut evaluations = Vec::new();
    for subset in [Subset::All, Subset::Known, Subset::Unknown] {
        let options = EvalOptions {
            subset,
            max_dets: job.max_dets,
        };
        let evaluation = tao_ow::evaluate(
            &gt,
            &predictions,
            options,
            (&job.gt_path, &predictions_path),
        )?;
        if evaluation.ground_truth > 0 {
            evaluations.push(evaluation);
        }
    }
    Ok(BenchmarkResult {
        predictions_path,
        videos: runs,
        frames,
        seconds: started.elapsed().as_secs_f64(),
        evaluations,
        id_switches: tao_ow::id_switches(&gt, &predictions),
    })
}

/// The queries a dataset's categories make, in category order.
pub fn category_queries(dataset: &TaoDataset) -> Vec<Query> {
    dataset
        .categories
        .iter()
        .map(|c| Query::Text(c.name.replace('_', " ")))
        .collect()
}
