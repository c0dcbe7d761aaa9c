//! The service's one inference worker: it owns the model, and every stream
//! sends it frames. Frames that are waiting together, from any streams, go
//! through the backbone as one batch, so several streams keep the cores
//! busier than one frame at a time would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use owltrack_models::video::DecoderState;
use owltrack_models::{BatchItem, Detector, PostProcess, Query, Tensor};
use owltrack_tracker::pipeline::{slots_for_tracking, tracking_detections};
use owltrack_tracker::tbd::Detection;

/// One frame to detect in, with the stream's queries and settings.
pub struct FrameRequest {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub queries: Tensor,
    pub post: PostProcess,
    /// In class-agnostic mode, the query score a box needs to get a label.
    pub label_score: f64,
    /// Through the video decoder (None: tracking by detection); holds the
    /// stream's decoder state, None on its first frame.
    pub recurrent: Option<Option<DecoderState>>,
}

/// What a frame gives: detections for the tracker (the decoder's slots, in
/// slot order, when recurrent) and the decoder's state for the next frame.
pub struct FrameResult {
    pub detections: Vec<Detection>,
    pub state: Option<DecoderState>,
}

enum Request {
    Embed {
        queries: Vec<Query>,
        reply: Sender<Result<Tensor, String>>,
    },
    Detect {
        frame: Box<FrameRequest>,
        reply: Sender<Result<FrameResult, String>>,
    },
}

/// Counters the service exports as metrics.
#[derive(Debug, Default)]
pub struct InferenceStats {
    pub frames: AtomicU64,
    pub batches: AtomicU64,
    /// Time spent in the model, in microseconds.
    pub busy_micros: AtomicU64,
}

/// A handle on the worker; clone it for every stream. The worker ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct Inference {
    requests: Sender<Request>,
    stats: Arc<InferenceStats>,
    max_batch: usize,
    has_decoder: bool,
}

impl Inference {
    /// Starts the worker, which owns `detector` from now on. At most
    /// `max_batch` frames share one backbone pass (1 turns batching off).
    pub fn start(detector: Detector, max_batch: usize) -> std::io::Result<Self> {
        let (requests, inbox) = crossbeam_channel::unbounded();
        let stats = Arc::new(InferenceStats::default());
        let max_batch = max_batch.max(1);
        let has_decoder = detector.decoder().is_some();
        {
            let stats = Arc::clone(&stats);
            std::thread::Builder::new()
                .name("owltrack-inference".into())
                .spawn(move || work(detector, inbox, &stats, max_batch))?;
        }
        Ok(Inference {
            requests,
            stats,
            max_batch,
            has_decoder,
        })
    }

    /// Query embeddings (Q, E), cached by the worker across streams.
    pub fn embed(&self, queries: Vec<Query>) -> Result<Tensor, String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .send(Request::Embed { queries, reply })
            .map_err(|_| STOPPED.to_string())?;
        answer.recv().map_err(|_| STOPPED.to_string())?
    }

    /// Detections in one frame, ready for the tracker; waits for the batch
    /// the frame joins.
    pub fn detect(&self, frame: FrameRequest) -> Result<FrameResult, String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .send(Request::Detect {
                frame: Box::new(frame),
                reply,
            })
            .map_err(|_| STOPPED.to_string())?;
        answer.recv().map_err(|_| STOPPED.to_string())?
    }

    /// Requests waiting for the worker.
    pub fn queue_depth(&self) -> usize {
        self.requests.len()
    }

    pub fn stats(&self) -> &InferenceStats {
        &self.stats
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Whether the model has a video decoder (recurrent tracking).
    pub fn has_decoder(&self) -> bool {
        self.has_decoder
    }
}

const STOPPED: &str = "the inference worker has stopped";

fn work(
    mut detector: Detector,
    inbox: Receiver<Request>,
    stats: &InferenceStats,
    max_batch: usize,
) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Ok(first) = inbox.recv() {
        let mut next = Some(first);
        // Everything already waiting joins this batch: batching never waits
        // for frames that have not arrived, so one stream alone runs at
        // batch size 1 with no added latency.
        loop {
            match next.take() {
                Some(Request::Embed { queries, reply }) => {
                    let embedded = detector.embed_queries(&queries).map_err(|e| e.to_string());
                    let _ = reply.send(embedded);
                }
                Some(Request::Detect { frame, reply }) => batch.push((frame, reply)),
                None => {}
            }
            if batch.len() >= max_batch {
                break;
            }
            match inbox.try_recv() {
                Ok(request) => next = Some(request),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let frames = batch.len() as u64;
        run_batch(&detector, &mut batch);
        stats.frames.fetch_add(frames, Ordering::Relaxed);
        let elapsed = started.elapsed();
        stats
            .busy_micros
            .fetch_add(micros(elapsed), Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

type Pending = (Box<FrameRequest>, Sender<Result<FrameResult, String>>);

fn run_batch(detector: &Detector, batch: &mut Vec<Pending>) {
    // Recurrent frames carry their stream's decoder state: one at a time.
    let (recurrent, mut by_detection): (Vec<Pending>, Vec<Pending>) = batch
        .drain(..)
        .partition(|(frame, _)| frame.recurrent.is_some());
    for (frame, reply) in recurrent {
        let state = frame.recurrent.as_ref().and_then(Option::as_ref);
        let result = slots_for_tracking(
            detector,
            &frame.rgb,
            (frame.width, frame.height),
            &frame.queries,
            &frame.post,
            frame.label_score,
            state,
        )
        .map(|(detections, _, next)| FrameResult {
            detections,
            state: Some(next),
        })
        .map_err(|e| e.to_string());
        let _ = reply.send(result);
    }
    if by_detection.is_empty() {
        return;
    }
    let batch = &mut by_detection;
    let items: Vec<BatchItem<'_>> = batch
        .iter()
        .map(|(frame, _)| BatchItem {
            rgb: &frame.rgb,
            width: frame.width,
            height: frame.height,
            queries: &frame.queries,
            post: &frame.post,
        })
        .collect();
    let results = detector.detect_batch(&items);
    drop(items);
    match results {
        Ok(results) => {
            for ((frame, reply), result) in batch.drain(..).zip(results) {
                let detections = tracking_detections(&result, &frame.post, frame.label_score)
                    .map(|detections| FrameResult {
                        detections,
                        state: None,
                    })
                    .map_err(|e| e.to_string());
                let _ = reply.send(detections);
            }
        }
        Err(error) => {
            let error = error.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
