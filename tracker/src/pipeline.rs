//! Tracking one video end to end: decoding (the reader's thread), OWL
//! inference (the caller's thread), tracking and writing (a third thread),
//! joined by bounded queues so that decoding and writing hide behind
//! inference.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use owltrack_decoder::{Event, ReadOptions, Source, VideoReader};
use owltrack_models::video::DecoderState;
use owltrack_models::{Detector, ImageResult, PostProcess, Query, StageTimings, Tensor};

use crate::annotate::Annotator;
use crate::error::{Result, TrackerError};
use crate::formats::{TaoIds, TrackFileWriter, TrackFormat};
use crate::recurrent::{SlotTracker, SlotTrackerConfig};
use crate::tbd::{Detection, DetectionTracker, TrackReport, TrackerConfig};
use crate::update::{TrackUpdate, TrackedObject};

/// Frames in flight between inference and the writer.
const WRITER_QUEUE: usize = 8;

#[derive(Debug, Clone)]
pub struct TrackJob {
    pub queries: Vec<Query>,
    pub tracker: TrackerConfig,
    /// Track every n-th frame.
    pub stride: u32,
    /// Per-query (or, class-agnostic, global) NMS IoU of the detections.
    pub nms_iou: f32,
    /// With `tracker.class_agnostic`: a track is labelled with its best
    /// query only when that query scores at least this.
    pub label_score: f64,
    /// Where the tracks go: a file, or standard output when the path is
    /// `-`.
    pub output: Option<(PathBuf, TrackFormat, TaoIds)>,
    /// An MP4 with the tracks drawn.
    pub annotate: Option<PathBuf>,
    /// Report tentative tracks too.
    pub include_tentative: bool,
    /// Track with the checkpoint's recurrent video decoder (its slots are
    /// the tracks) instead of by detection.
    pub recurrent: Option<SlotTrackerConfig>,
}

/// The association step: by detection, or the recurrent decoder's slots.
pub enum Tracking {
    Detection(DetectionTracker),
    Recurrent(SlotTracker),
}

impl Tracking {
    pub fn for_job(tracker: &TrackerConfig, recurrent: Option<&SlotTrackerConfig>) -> Result<Self> {
        match recurrent {
            Some(config) => SlotTracker::new(config.clone())
                .map(Tracking::Recurrent)
                .map_err(TrackerError::InvalidOption),
            None => DetectionTracker::new(tracker.clone())
                .map(Tracking::Detection)
                .map_err(TrackerError::InvalidOption),
        }
    }

    /// `detections` are this frame's detections, or the decoder's slots in
    /// slot order.
    pub fn update(
        &mut self,
        detections: &[Detection],
        include_tentative: bool,
    ) -> Vec<TrackReport> {
        match self {
            Tracking::Detection(t) => t.update(detections, include_tentative),
            Tracking::Recurrent(t) => t.update(detections, include_tentative),
        }
    }

    /// Queries changed: see [`DetectionTracker::relabel`].
    pub fn relabel(&mut self, new_index: impl Fn(usize) -> Option<usize>) {
        match self {
            Tracking::Detection(t) => t.relabel(new_index),
            Tracking::Recurrent(t) => t.relabel(new_index),
        }
    }
}

/// Post-processing of the decoder's slots: every slot is kept, in slot
/// order (the slot tracker decides what is a track).
pub fn slot_post_process(tracker: &TrackerConfig) -> PostProcess {
    PostProcess {
        threshold: -1.0,
        nms_iou: 1.0,
        top_k: 0,
        clip: true,
        all_queries: false,
        objectness: tracker.class_agnostic,
    }
}

/// One frame through the backbone and the decoder: the slots as
/// detections, in slot order, and the state for the next frame.
pub fn slots_for_tracking(
    detector: &Detector,
    rgb: &[u8],
    (width, height): (u32, u32),
    queries: &Tensor,
    post: &PostProcess,
    label_score: f64,
    state: Option<&DecoderState>,
) -> Result<(Vec<Detection>, StageTimings, DecoderState)> {
    let (mut result, next) = detector.detect_slots(rgb, width, height, queries, post, state)?;
    result.detections.sort_by_key(|d| d.patch);
    let mut detections = tracking_detections(&result, post, label_score)?;
    if let Some(reseeded) = next.reseeded.first() {
        for (detection, &reseeded) in detections.iter_mut().zip(reseeded) {
            detection.slot_reseeded = reseeded;
        }
    }
    Ok((detections, result.timings, next))
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrackSummary {
    pub frames: u64,
    /// Distinct track ids reported.
    pub tracks: u64,
    /// Track boxes reported over all frames.
    pub boxes: u64,
    pub seconds: f64,
    /// Time per frame spent in each stage, in milliseconds.
    pub stages: StageTimes,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageTimes {
    /// Waiting for the decoder (what decoding costs beyond inference).
    pub decode_wait_ms: f64,
    /// Preprocessing, backbone, heads and post-processing together.
    pub inference_ms: f64,
    /// Resizing and normalising the frame.
    pub preprocess_ms: f64,
    /// The image tower.
    pub backbone_ms: f64,
    /// Box, class and objectness heads, logits and post-processing.
    pub heads_ms: f64,
    /// Association and bookkeeping.
    pub tracking_ms: f64,
    /// Writing track files and the annotated video.
    pub writing_ms: f64,
}

/// What inference hands to the writer thread for one frame.
struct Detected {
    index: u64,
    pts: f64,
    rgb: Option<Vec<u8>>,
    detections: Vec<Detection>,
}

/// How a tracker wants a frame's detections: everything down to its low
/// score, NMS per query (across queries when class-agnostic, ranked by
/// objectness), at most 100.
pub fn tracking_post_process(tracker: &TrackerConfig, nms_iou: f32) -> PostProcess {
    PostProcess {
        threshold: tracker.low_score as f32,
        nms_iou,
        top_k: 100,
        clip: true,
        all_queries: false,
        objectness: tracker.class_agnostic,
    }
}

/// Detections of one frame in the tracker's terms: boxes, scores, labels and
/// each patch's normalised class embedding as its appearance.
pub fn detect_for_tracking(
    detector: &Detector,
    rgb: &[u8],
    (width, height): (u32, u32),
    queries: &Tensor,
    post: &PostProcess,
    label_score: f64,
) -> Result<(Vec<Detection>, StageTimings)> {
    let result = detector.detect(rgb, width, height, queries, post)?;
    Ok((
        tracking_detections(&result, post, label_score)?,
        result.timings,
    ))
}

/// The tracker's view of one image's detections: boxes, scores, labels (in
/// class-agnostic mode only those whose best query scores `label_score`) and
/// each box's normalised class embedding as its appearance.
pub fn tracking_detections(
    result: &ImageResult,
    post: &PostProcess,
    label_score: f64,
) -> Result<Vec<Detection>> {
    let embeddings = result
        .outputs
        .normalized_class_embeds()
        .and_then(|e| e.get(0)?.to_dtype(owltrack_models::DType::F32))
        .map_err(owltrack_models::ModelError::from)?;
    let mut detections = Vec::with_capacity(result.detections.len());
    for d in &result.detections {
        let embedding: Vec<f32> = embeddings
            .get(d.patch)
            .and_then(|row| row.to_vec1())
            .map_err(owltrack_models::ModelError::from)?;
        let labelled = !post.objectness || f64::from(d.query_score) >= label_score;
        detections.push(Detection {
            corners: d.bbox.map(f64::from),
            score: f64::from(d.score),
            label: labelled.then_some(d.label),
            embedding,
            slot_reseeded: false,
        });
    }
    Ok(detections)
}

/// Tracks `job.queries` through `source`; `progress(frames_done, total)`
/// after each frame.
pub fn track_video(
    detector: &mut Detector,
    source: Source,
    job: &TrackJob,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<TrackSummary> {
    let started = Instant::now();
    if job.queries.is_empty() {
        return Err(TrackerError::InvalidOption(
            "give at least one query".into(),
        ));
    }
    let tracker = Tracking::for_job(&job.tracker, job.recurrent.as_ref())?;
    if job.recurrent.is_some() && detector.decoder().is_none() {
        return Err(TrackerError::InvalidOption(
            "--tracker recurrent needs a checkpoint with a video decoder (owltrack train decoder)"
                .into(),
        ));
    }
    let embeddings = detector.embed_queries(&job.queries)?;
    let post = match job.recurrent {
        Some(_) => slot_post_process(&job.tracker),
        None => tracking_post_process(&job.tracker, job.nms_iou),
    };
    let mut decoder_state: Option<DecoderState> = None;
    if post.objectness && detector.model().config().version == owltrack_models::OwlVersion::V1 {
        return Err(TrackerError::InvalidOption(
            "class-agnostic tracking needs an OWLv2 model (OWL-ViT has no objectness head)".into(),
        ));
    }
    let options = ReadOptions {
        stride: job.stride.max(1),
        ..ReadOptions::default()
    };
    let mut reader = VideoReader::open(source, options)?;
    let info = reader.info().clone();
    let total = info
        .frames
        .map(|f| f.div_ceil(u64::from(job.stride.max(1))));

    let writer = match &job.output {
        Some((path, format, ids)) if path.as_os_str() == "-" => Some(TrackFileWriter::to_stream(
            Box::new(std::io::stdout()),
            path,
            *format,
            ids.clone(),
        )?),
        Some((path, format, ids)) => Some(TrackFileWriter::create(path, *format, ids.clone())?),
        None => None,
    };
    let annotator = match &job.annotate {
        Some(path) => Some(Annotator::create(
            path,
            info.width,
            info.height,
            info.fps.unwrap_or(25.0) / f64::from(job.stride.max(1)),
        )?),
        None => None,
    };
    let names: Vec<String> = job.queries.iter().map(|q| q.name().to_owned()).collect();
    let (sender, receiver) = crossbeam_channel::bounded::<Detected>(WRITER_QUEUE);
    let include_tentative = job.include_tentative;
    let back_end = std::thread::Builder::new()
        .name("owltrack-tracks".into())
        .spawn(move || {
            write_tracks(
                receiver,
                tracker,
                writer,
                annotator,
                &names,
                include_tentative,
            )
        })
        .map_err(|e| TrackerError::InvalidOption(format!("cannot start the writer thread: {e}")))?;

    let (mut frames, mut decode_wait, mut inference) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut stages = StageTimings::default();
    let annotate = job.annotate.is_some();
    let mut failure = None;
    loop {
        let waited = Instant::now();
        let Some(event) = reader.recv() else { break };
        decode_wait += waited.elapsed();
        let Event::Frame(frame) = event else { continue };
        let inferred = Instant::now();
        let size = (frame.width, frame.height);
        let detected = match job.recurrent {
            Some(_) => slots_for_tracking(
                detector,
                &frame.rgb,
                size,
                &embeddings,
                &post,
                job.label_score,
                decoder_state.as_ref(),
            )
            .map(|(detections, timings, next)| {
                decoder_state = Some(next);
                (detections, timings)
            }),
            None => detect_for_tracking(
                detector,
                &frame.rgb,
                size,
                &embeddings,
                &post,
                job.label_score,
            ),
        };
        let (detections, timings) = match detected {
            Ok(d) => d,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        inference += inferred.elapsed();
        stages.preprocess += timings.preprocess;
        stages.backbone += timings.backbone;
        stages.heads += timings.heads;
        let detected = Detected {
            index: frame.index,
            pts: frame.pts,
            rgb: annotate.then_some(frame.rgb),
            detections,
        };
        // The writer only hangs up when it failed; its error is reported below.
        if sender.send(detected).is_err() {
            break;
        }
        frames += 1;
        progress(frames, total);
    }
    drop(sender);
    let back = back_end
        .join()
        .map_err(|_| TrackerError::InvalidOption("the writer thread panicked".into()))?;
    let decoded = reader.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    let back = back?;
    decoded?;
    let per_frame = |d: Duration| d.as_secs_f64() * 1000.0 / frames.max(1) as f64;
    Ok(TrackSummary {
        frames,
        tracks: back.ids,
        boxes: back.boxes,
        seconds: started.elapsed().as_secs_f64(),
        stages: StageTimes {
            decode_wait_ms: per_frame(decode_wait),
            inference_ms: per_frame(inference),
            preprocess_ms: per_frame(stages.preprocess),
            backbone_ms: per_frame(stages.backbone),
            heads_ms: per_frame(stages.heads),
            tracking_ms: per_frame(back.tracking),
            writing_ms: per_frame(back.writing),
        },
    })
}

struct BackEnd {
    ids: u64,
    boxes: u64,
    tracking: Duration,
    writing: Duration,
}

fn write_tracks(
    receiver: crossbeam_channel::Receiver<Detected>,
    mut tracker: Tracking,
    mut writer: Option<TrackFileWriter>,
    mut annotator: Option<Annotator>,
    names: &[String],
    include_tentative: bool,
) -> Result<BackEnd> {
    let mut seen = std::collections::HashSet::new();
    let mut back = BackEnd {
        ids: 0,
        boxes: 0,
        tracking: Duration::ZERO,
        writing: Duration::ZERO,
    };
    for detected in receiver {
        let tracked = Instant::now();
        let reports = tracker.update(&detected.detections, include_tentative);
        let update = to_update(detected.index, detected.pts, &reports, names);
        back.tracking += tracked.elapsed();
        let written = Instant::now();
        for t in &update.tracks {
            seen.insert(t.id);
        }
        back.boxes += update.tracks.len() as u64;
        if let Some(w) = writer.as_mut() {
            w.write(&update)?;
        }
        if let (Some(a), Some(rgb)) = (annotator.as_mut(), detected.rgb.as_deref()) {
            a.draw(rgb, &update)?;
        }
        back.writing += written.elapsed();
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    if let Some(a) = annotator {
        a.finish()?;
    }
    back.ids = seen.len() as u64;
    Ok(back)
}

fn to_update(frame: u64, pts: f64, reports: &[TrackReport], names: &[String]) -> TrackUpdate {
    TrackUpdate {
        frame,
        pts,
        tracks: TrackedObject::from_reports(reports, names),
    }
}
