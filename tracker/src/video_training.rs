//! `owltrack train decoder`: the recurrent video decoder trained over a
//! frozen OWL backbone on a TAO-format video dataset, on pseudo-videos made
//! from annotated still images, or both. The backbone's image tokens of every
//! frame are computed once and cached on disk (one file per video, in a
//! folder named by a fingerprint of the backbone and the annotations, so a
//! changed backbone or dataset never reads stale tokens), so steps cost only
//! the decoder; clips are runs of consecutive annotated frames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use owltrack_decoder::image;
use owltrack_models::train::{Clip, DecoderTrainer, FrameTruth, Losses, TrainOptions};
use owltrack_models::video::{DecoderConfig, DECODER_CONFIG, DECODER_WEIGHTS};
use owltrack_models::{Checkpoint, DType, Detector, Device, OwlVersion, Query, Tensor};
use serde::Serialize;

use crate::error::{Result, TrackerError};
use crate::pseudo_video::{self, CameraMotion, Still, Window};
use crate::rng::Pcg;
use crate::tao::TaoDataset;
use crate::training::LossLog;

const STATE_FILE: &str = "decoder_state.safetensors";
const CACHE_DIR: &str = "token-cache";

#[derive(Debug, Clone)]
pub struct DecoderTraining {
    /// TAO annotations and frames (what `owltrack synth` writes).
    pub data: Option<PathBuf>,
    /// Annotated still images (COCO or TAO format) to make pseudo-videos of.
    pub stills: Option<PseudoVideos>,
    /// The backbone checkpoint (frozen); copied into `out` beside the decoder.
    pub backbone: PathBuf,
    pub out: PathBuf,
    /// Sizes of a new decoder (its image and embedding widths come from the
    /// backbone).
    pub decoder: DecoderConfig,
    pub steps: usize,
    /// Clips per step.
    pub batch: usize,
    /// Frames per clip.
    pub clip_frames: usize,
    pub options: TrainOptions,
    pub seed: u64,
    pub save_every: usize,
    pub resume: bool,
}

/// Pseudo-videos from the stills of a COCO-format dataset.
#[derive(Debug, Clone)]
pub struct PseudoVideos {
    pub data: PathBuf,
    /// Use at most this many stills, spread over the dataset.
    pub limit: Option<usize>,
    /// Pseudo-videos made of each still (each its own camera path).
    pub per_still: usize,
    pub motion: CameraMotion,
    /// Chance that a clip comes from a pseudo-video when videos are trained
    /// on too; by default every video and pseudo-video is equally likely.
    pub share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecoderSummary {
    pub steps: usize,
    pub videos: usize,
    pub pseudo_videos: usize,
    pub frames: usize,
    pub first: Option<Losses>,
    pub last: Option<Losses>,
    pub seconds: f64,
}

/// One video's annotated frames in order, each with its ground truth
/// normalised to the model's input square.
struct VideoFrames {
    /// Names the video's file in the token cache.
    cache_key: String,
    source: FrameSource,
    truths: Vec<FrameTruth>,
}

enum FrameSource {
    Files(Vec<PathBuf>),
    /// A pseudo-video: the windows of a still its frames show.
    Still {
        still: Still,
        windows: Vec<Window>,
    },
}

impl VideoFrames {
    fn len(&self) -> usize {
        self.truths.len()
    }

    fn is_pseudo(&self) -> bool {
        matches!(self.source, FrameSource::Still { .. })
    }
}

/// Boxes `[x, y, w, h]` in pixels of a `width`×`height` frame, as (cx, cy,
/// w, h) in the model's input square: OWLv2 pads to a square, OWL-ViT
/// stretches.
pub fn normalised_box(bbox: [f64; 4], width: u32, height: u32, version: OwlVersion) -> [f32; 4] {
    let (sx, sy) = match version {
        OwlVersion::V1 => (f64::from(width), f64::from(height)),
        OwlVersion::V2 => {
            let side = f64::from(width.max(height));
            (side, side)
        }
    };
    let [x, y, w, h] = bbox;
    [
        ((x + w / 2.0) / sx) as f32,
        ((y + h / 2.0) / sy) as f32,
        (w / sx) as f32,
        (h / sy) as f32,
    ]
}

fn load_videos(
    data: &Path,
    version: OwlVersion,
    vocabulary: &mut Vec<String>,
) -> Result<Vec<VideoFrames>> {
    let path = data.join("annotations.json");
    let dataset = TaoDataset::read(&path)?;
    let category: BTreeMap<u64, usize> = dataset
        .categories
        .iter()
        .map(|c| (c.id, pseudo_video::vocabulary_label(vocabulary, &c.name)))
        .collect();
    let mut by_image: BTreeMap<u64, FrameTruth> = BTreeMap::new();
    let sizes: BTreeMap<u64, (u32, u32)> = dataset
        .images
        .iter()
        .map(|i| (i.id, (i.width, i.height)))
        .collect();
    for a in &dataset.annotations {
        let (Some(&label), Some(&(w, h))) = (category.get(&a.category_id), sizes.get(&a.image_id))
        else {
            continue;
        };
        if a.bbox[2] <= 0.0 || a.bbox[3] <= 0.0 {
            continue;
        }
        let truth = by_image.entry(a.image_id).or_default();
        truth.tracks.push(a.track_id);
        truth.boxes.push(normalised_box(a.bbox, w, h, version));
        truth.labels.push(label);
    }
    let mut videos: BTreeMap<u64, Vec<(u64, PathBuf, FrameTruth)>> = BTreeMap::new();
    for image in &dataset.images {
        let file = data.join(&image.file_name);
        if file.is_file() {
            let truth = by_image.remove(&image.id).unwrap_or_default();
            videos
                .entry(image.video_id)
                .or_default()
                .push((image.frame_index, file, truth));
        }
    }
    let videos: Vec<VideoFrames> = videos
        .into_iter()
        .map(|(id, mut frames)| {
            frames.sort_by_key(|f| f.0);
            let (files, truths) = frames.into_iter().map(|(_, f, t)| (f, t)).unzip();
            VideoFrames {
                cache_key: id.to_string(),
                source: FrameSource::Files(files),
                truths,
            }
        })
        .collect();
    if videos.is_empty() || dataset.categories.is_empty() {
        return Err(TrackerError::Format {
            path,
            reason: "no videos with frames on disk, or no categories".into(),
        });
    }
    Ok(videos)
}

/// The pseudo-videos of `job`'s stills, their ground truth normalised as a
/// video's.
fn pseudo_videos(
    job: &PseudoVideos,
    seed: u64,
    version: OwlVersion,
    vocabulary: &mut Vec<String>,
) -> Result<Vec<VideoFrames>> {
    let stills = pseudo_video::load_stills(&job.data, job.limit, vocabulary)?;
    let mut videos = Vec::with_capacity(stills.len() * job.per_still);
    for still in stills {
        for k in 0..job.per_still {
            // One camera path per (seed, still, k), whatever else is loaded.
            let mut rng = Pcg::new(seed ^ still.id.rotate_left(20), k as u64 + 1);
            let windows =
                pseudo_video::camera_path(still.width, still.height, job.motion, &mut rng);
            let truths = windows
                .iter()
                .map(|&window| {
                    let mut truth = FrameTruth::default();
                    for b in pseudo_video::boxes_in(&still.boxes, window, still.width, still.height)
                    {
                        truth.tracks.push(b.track);
                        truth.boxes.push(normalised_box(
                            b.bbox,
                            still.width,
                            still.height,
                            version,
                        ));
                        truth.labels.push(b.label);
                    }
                    truth
                })
                .collect();
            videos.push(VideoFrames {
                cache_key: format!(
                    "still-{}-{k}-seed{seed}-f{}-z{}",
                    still.id, job.motion.frames, job.motion.max_zoom
                ),
                source: FrameSource::Still {
                    still: still.clone(),
                    windows,
                },
                truths,
            });
        }
    }
    Ok(videos)
}

/// A 64-bit FNV-1a hash of the files' bytes, in hex: names what the cached
/// tokens were computed from.
fn fingerprint(files: &[PathBuf]) -> Result<String> {
    use std::io::Read;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buffer = vec![0u8; 1 << 16];
    for path in files {
        let mut file = std::fs::File::open(path).map_err(|e| TrackerError::io(path, e))?;
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(|e| TrackerError::io(path, e))?;
            if read == 0 {
                break;
            }
            for &byte in &buffer[..read] {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    Ok(format!("{hash:016x}"))
}

/// The cached tokens (F, N, D) of `video`, computing and writing them first
/// if needed.
fn cached_tokens(detector: &Detector, video: &VideoFrames, cache: &Path) -> Result<Tensor> {
    let path = cache.join(format!("{}.safetensors", video.cache_key));
    if let Ok(mut loaded) = candle_core::safetensors::load(&path, &Device::Cpu) {
        if let Some(tokens) = loaded.remove("tokens") {
            if tokens.dim(0).ok() == Some(video.len()) {
                return Ok(tokens);
            }
        }
    }
    let read = |file: &Path| -> Result<(Vec<u8>, u32, u32)> {
        let bytes = std::fs::read(file).map_err(|e| TrackerError::io(file, e))?;
        Ok(image::decode_image(&bytes)?)
    };
    let backbone = |rgb: &[u8], w: u32, h: u32| -> Result<Tensor> {
        let pixels = detector
            .preprocessor()
            .tensor(rgb, w, h, detector.model().device())?;
        let tokens = detector.model().backbone(&pixels)?;
        Ok(tokens
            .squeeze(0)
            .map_err(owltrack_models::ModelError::from)?)
    };
    let mut frames = Vec::with_capacity(video.len());
    match &video.source {
        FrameSource::Files(files) => {
            for file in files {
                let (rgb, w, h) = read(file)?;
                frames.push(backbone(&rgb, w, h)?);
            }
        }
        FrameSource::Still { still, windows } => {
            let (rgb, w, h) = read(&still.file)?;
            if (w, h) != (still.width, still.height) {
                return Err(TrackerError::Format {
                    path: still.file.clone(),
                    reason: format!(
                        "the image is {w}x{h}, its annotations say {}x{}",
                        still.width, still.height
                    ),
                });
            }
            for &window in windows {
                frames.push(backbone(&pseudo_video::render(&rgb, w, h, window), w, h)?);
            }
        }
    }
    let tokens = Tensor::stack(&frames, 0)
        .and_then(|t| t.to_dtype(DType::F16))
        .map_err(owltrack_models::ModelError::from)?;
    let map = std::collections::HashMap::from([("tokens".to_string(), tokens.clone())]);
    candle_core::safetensors::save(&map, &path).map_err(|e| TrackerError::Format {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(tokens)
}

/// Trains; `on_step(done, total, losses)` after each step, `on_cache(done,
/// total)` while the token cache fills.
pub fn train_decoder(
    job: &DecoderTraining,
    mut on_cache: impl FnMut(usize, usize),
    mut on_step: impl FnMut(usize, usize, &Losses),
) -> Result<DecoderSummary> {
    if job.steps == 0 || job.batch == 0 || job.clip_frames == 0 {
        return Err(TrackerError::InvalidOption(
            "steps, batch and clip frames must be positive".into(),
        ));
    }
    let started = std::time::Instant::now();
    let backbone = Checkpoint::from_dir(&job.backbone)?;
    let version = backbone.config.version;
    let model = backbone.load(&Device::Cpu, DType::F32)?;
    let tokenizer = owltrack_models::ClipTokenizer::from_dir(&job.backbone)?;
    let mut detector = Detector::from_model(model, tokenizer)?;
    let mut vocabulary = Vec::new();
    let mut videos = match &job.data {
        Some(data) => load_videos(data, version, &mut vocabulary)?,
        None => Vec::new(),
    };
    if let Some(stills) = &job.stills {
        if stills.motion.frames < job.clip_frames || stills.per_still == 0 {
            return Err(TrackerError::InvalidOption(format!(
                "pseudo-videos need at least one per still and at least {} frames (the clip length)",
                job.clip_frames
            )));
        }
        videos.extend(pseudo_videos(stills, job.seed, version, &mut vocabulary)?);
    }
    if vocabulary.is_empty() {
        return Err(TrackerError::InvalidOption(
            "no training data: give videos, stills or both".into(),
        ));
    }
    let usable: Vec<&VideoFrames> = videos
        .iter()
        .filter(|v| v.len() >= job.clip_frames)
        .collect();
    if usable.is_empty() {
        return Err(TrackerError::InvalidOption(format!(
            "no video has {} annotated frames with files",
            job.clip_frames
        )));
    }
    let (pseudo, real): (Vec<usize>, Vec<usize>) =
        (0..usable.len()).partition(|&i| usable[i].is_pseudo());
    let share = job
        .stills
        .as_ref()
        .and_then(|s| s.share)
        .filter(|_| !pseudo.is_empty() && !real.is_empty());
    let queries: Vec<Query> = vocabulary.iter().cloned().map(Query::Text).collect();
    let queries = detector.embed_queries(&queries)?;
    let mut inputs: Vec<PathBuf> = vec![job.backbone.join("config.json")];
    inputs.extend(backbone.weight_files().into_iter().map(Path::to_path_buf));
    inputs.extend(job.data.iter().map(|d| d.join("annotations.json")));
    inputs.extend(job.stills.iter().map(|s| s.data.join("annotations.json")));
    let cache = job.out.join(CACHE_DIR).join(fingerprint(&inputs)?);
    std::fs::create_dir_all(&cache).map_err(|e| TrackerError::io(&cache, e))?;
    let mut tokens = Vec::with_capacity(usable.len());
    for (i, video) in usable.iter().enumerate() {
        tokens.push(cached_tokens(&detector, video, &cache)?);
        on_cache(i + 1, usable.len());
    }

    let config = DecoderConfig {
        image_width: backbone.config.vision.hidden_size,
        embed_dim: queries.dim(1).map_err(owltrack_models::ModelError::from)?,
        ..job.decoder.clone()
    };
    let mut trainer = DecoderTrainer::new(config.clone(), None, job.options.clone(), &Device::Cpu)?;
    let (weights, state) = (job.out.join(DECODER_WEIGHTS), job.out.join(STATE_FILE));
    if job.resume && state.is_file() {
        trainer.resume(&weights, &state)?;
        tracing::info!(step = trainer.step_count(), "resuming");
    }
    let mut log = LossLog::open(&job.out, trainer.step_count())?;
    let (mut first, mut last) = (None, None);
    while trainer.step_count() < job.steps {
        let step = trainer.step_count();
        // The clips of step n depend only on (seed, n): resuming replays them.
        let mut rng = Pcg::new(job.seed, step as u64 + 1);
        let mut clips = Vec::with_capacity(job.batch);
        for _ in 0..job.batch {
            let v = match share {
                Some(share) if rng.chance(share) => pseudo[rng.below(pseudo.len())],
                Some(_) => real[rng.below(real.len())],
                None => rng.below(usable.len()),
            };
            let start = rng.below(usable[v].len() - job.clip_frames + 1);
            // The detector's heads on the cached tokens: cheap, and they
            // give the decoder each patch's box and objectness.
            let frames = (start..start + job.clip_frames)
                .map(|f| {
                    let frame = tokens[v]
                        .get(f)
                        .and_then(|t| t.unsqueeze(0)?.to_dtype(DType::F32))
                        .map_err(owltrack_models::ModelError::from)?;
                    detector.model().heads(frame)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            clips.push(Clip {
                frames,
                truths: usable[v].truths[start..start + job.clip_frames].to_vec(),
            });
        }
        let losses = trainer.step(&clips, &queries)?;
        log.write(step, job.options.learning_rate_at(step), &losses)?;
        first.get_or_insert(losses);
        last = Some(losses);
        on_step(step + 1, job.steps, &losses);
        let done = trainer.step_count();
        if done % job.save_every.max(1) == 0 || done == job.steps {
            crate::training::save_weights_and_state(
                &weights,
                &state,
                |path| Ok(trainer.save_weights(path)?),
                |path| Ok(trainer.save_state(path)?),
            )?;
            write_checkpoint(&job.backbone, &job.out, &config)?;
            log.plot()?;
        }
    }
    Ok(DecoderSummary {
        steps: trainer.step_count(),
        videos: real.len(),
        pseudo_videos: pseudo.len(),
        frames: usable.iter().map(|v| v.len()).sum(),
        first,
        last,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Makes `out` a whole checkpoint: the backbone's files beside the decoder's
/// weights and its config.
fn write_checkpoint(backbone: &Path, out: &Path, config: &DecoderConfig) -> Result<()> {
    if backbone != out {
        for name in [
            "config.json",
            "model.safetensors",
            "vocab.json",
            "merges.txt",
            "tokenizer.json",
        ] {
            let from = backbone.join(name);
            if from.is_file() {
                let to = out.join(name);
                std::fs::copy(&from, &to).map_err(|e| TrackerError::io(&from, e))?;
            }
        }
    }
    let path = out.join(DECODER_CONFIG);
    let text = serde_json::to_string_pretty(config).map_err(|e| TrackerError::Format {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&path, text).map_err(|e| TrackerError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_normalised_as_each_version_preprocesses() {
        let v2 = normalised_box([100.0, 50.0, 40.0, 20.0], 640, 360, OwlVersion::V2);
        assert_eq!(
            v2,
            [120.0 / 640.0, 60.0 / 640.0, 40.0 / 640.0, 20.0 / 640.0]
        );
        let v1 = normalised_box([100.0, 50.0, 40.0, 20.0], 640, 360, OwlVersion::V1);
        assert_eq!(
            v1,
            [120.0 / 640.0, 60.0 / 360.0, 40.0 / 640.0, 20.0 / 360.0]
        );
    }

    #[test]
    fn the_token_cache_is_named_by_what_the_tokens_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let (weights, annotations) = (dir.path().join("w"), dir.path().join("a"));
        std::fs::write(&weights, vec![7u8; 200_000]).unwrap();
        std::fs::write(&annotations, b"{}").unwrap();
        let files = [weights.clone(), annotations.clone()];
        let first = fingerprint(&files).unwrap();
        assert_eq!(first.len(), 16);
        assert_eq!(fingerprint(&files).unwrap(), first);
        let mut changed = vec![7u8; 200_000];
        changed[150_000] = 8;
        std::fs::write(&weights, changed).unwrap();
        assert_ne!(fingerprint(&files).unwrap(), first);
        assert!(fingerprint(&[dir.path().join("missing")]).is_err());
    }
}
