//! One live stream: its source read with live pacing (the newest frame
//! wins), OWL inference, tracking, and every processed frame published as a
//! JSON message to the stream's subscribers; queries can change while it
//! runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use owltrack_decoder::{image, Event, Pacing, ReadOptions, Received, Source, VideoReader};
use owltrack_models::Query;
use owltrack_tracker::pipeline::{slot_post_process, tracking_post_process, Tracking};
use owltrack_tracker::recurrent::SlotTrackerConfig;
use owltrack_tracker::tbd::TrackerConfig;
use owltrack_tracker::update::TrackedObject;
use serde::Serialize;

use crate::fanout::{Delivery, Fanout, Subscription};
use crate::inference::{FrameRequest, Inference};
use crate::metrics::Histogram;

/// How long the session waits for a frame before it looks at its controls.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub source: Source,
    pub queries: Vec<Query>,
    pub tracker: TrackerConfig,
    pub nms_iou: f32,
    /// In class-agnostic mode, the query score a box needs to get a label.
    pub label_score: f64,
    /// Read a file no faster than its own clock, as a camera would send it.
    pub native_rate: bool,
    /// Process every frame, waiting for inference (a file then gives the same
    /// tracks as `owltrack track`); otherwise the newest frame wins.
    pub every_frame: bool,
    /// Messages a subscriber may fall behind before it skips ahead.
    pub subscriber_buffer: usize,
    /// JPEG quality of the frames sent to subscribers that ask for them.
    pub jpeg_quality: u8,
    /// Track with the model's video decoder (its slots) instead of by
    /// detection.
    pub recurrent: Option<SlotTrackerConfig>,
}

impl SessionConfig {
    /// A live session on `source` with the tracker's and the service's
    /// defaults.
    pub fn new(source: Source, queries: Vec<Query>) -> Self {
        SessionConfig {
            source,
            queries,
            tracker: TrackerConfig::default(),
            nms_iou: 0.5,
            label_score: 0.1,
            native_rate: false,
            every_frame: false,
            subscriber_buffer: 64,
            jpeg_quality: 75,
            recurrent: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Starting,
    Running,
    Reconnecting,
    Ended,
    Failed,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionStatus {
    pub state: SessionState,
    pub queries: Vec<String>,
    /// Bumped by every change of the queries; every update carries it.
    pub query_version: u64,
    pub frames: u64,
    /// Frames the live queue dropped because inference was slower.
    pub frames_dropped: u64,
    /// Processed frames per second over the last few seconds.
    pub fps: f64,
    /// Decode-to-publish latency of the last frame, in milliseconds.
    pub latency_ms: f64,
    pub subscribers: usize,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// Every frame's latency, for the metrics.
    #[serde(skip)]
    #[schema(ignore)]
    pub latency_histogram: Histogram,
}

/// What subscribers receive, as JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message<'a> {
    Update {
        frame: u64,
        pts: f64,
        query_version: u64,
        /// When the decoder delivered the frame, milliseconds since the Unix
        /// epoch.
        captured_at_ms: u128,
        /// When the update was published, milliseconds since the Unix epoch.
        sent_at_ms: u128,
        /// From the decoder delivering the frame to its update being sent.
        latency_ms: f64,
        tracks: &'a [TrackedObject],
    },
    Event {
        event: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        query_version: u64,
    },
}

/// One published message: its JSON text and, for updates, the frame as a
/// JPEG when some subscriber asked for frames.
#[derive(Debug)]
pub struct StreamMessage {
    pub json: String,
    pub jpeg: Option<Vec<u8>>,
}

enum Control {
    SetQueries(Vec<Query>),
    Stop,
}

/// A running stream; dropping it stops the stream.
pub struct Session {
    fanout: Fanout<Arc<StreamMessage>>,
    control: Sender<Control>,
    status: Arc<Mutex<SessionStatus>>,
    frame_subscribers: Arc<AtomicUsize>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One subscriber's messages; frames are encoded while any subscription
/// that wants them lives.
pub struct StreamSubscription {
    inner: Subscription<Arc<StreamMessage>>,
    frames: Option<Arc<AtomicUsize>>,
}

impl StreamSubscription {
    pub fn try_recv(&mut self) -> Option<Delivery<Arc<StreamMessage>>> {
        self.inner.try_recv()
    }

    /// The next delivery; None once the stream has ended and everything
    /// queued was delivered.
    pub async fn recv(&mut self) -> Option<Delivery<Arc<StreamMessage>>> {
        self.inner.recv().await
    }
}

impl Drop for StreamSubscription {
    fn drop(&mut self) {
        if let Some(count) = &self.frames {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Session {
    /// Opens the source and starts the stream's thread. `detector` is shared
    /// by every stream of the service.
    pub fn start(inference: Inference, config: SessionConfig) -> Result<Self, String> {
        if config.queries.is_empty() {
            return Err("a stream needs at least one query".into());
        }
        if config.recurrent.is_some() && !inference.has_decoder() {
            return Err(
                "the recurrent tracker needs a model with a video decoder (owltrack train decoder)"
                    .into(),
            );
        }
        let tracker = Tracking::for_job(&config.tracker, config.recurrent.as_ref())
            .map_err(|e| e.to_string())?;
        let options = ReadOptions {
            pacing: if config.every_frame {
                Pacing::offline()
            } else {
                Pacing::live()
            },
            native_rate: config.native_rate,
            ..ReadOptions::default()
        };
        let reader =
            VideoReader::open(config.source.clone(), options).map_err(|e| e.to_string())?;
        let fanout = Fanout::new(config.subscriber_buffer);
        let (control, controls) = crossbeam_channel::unbounded();
        let status = Arc::new(Mutex::new(SessionStatus {
            state: SessionState::Starting,
            queries: names(&config.queries),
            query_version: 1,
            frames: 0,
            frames_dropped: 0,
            fps: 0.0,
            latency_ms: 0.0,
            subscribers: 0,
            reconnects: 0,
            last_error: None,
            latency_histogram: Histogram::default(),
        }));
        let frame_subscribers = Arc::new(AtomicUsize::new(0));
        let worker = {
            let stream = StreamSide {
                fanout: fanout.clone(),
                status: Arc::clone(&status),
                frame_subscribers: Arc::clone(&frame_subscribers),
            };
            std::thread::Builder::new()
                .name("owltrack-stream".into())
                .spawn(move || run(reader, inference, tracker, config, controls, stream))
                .map_err(|e| format!("cannot start the stream's thread: {e}"))?
        };
        Ok(Session {
            fanout,
            control,
            status,
            frame_subscribers,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// A new subscriber; with `frames`, every update is preceded by its
    /// frame as a JPEG.
    pub fn subscribe(&self, frames: bool) -> StreamSubscription {
        let frames = frames.then(|| {
            self.frame_subscribers.fetch_add(1, Ordering::Relaxed);
            Arc::clone(&self.frame_subscribers)
        });
        StreamSubscription {
            inner: self.fanout.subscribe(),
            frames,
        }
    }

    /// Messages dropped for slow subscribers over the stream's life.
    pub fn messages_dropped(&self) -> u64 {
        self.fanout.dropped()
    }

    /// Changes the queries from the next frame on.
    pub fn set_queries(&self, queries: Vec<Query>) -> Result<(), String> {
        if queries.is_empty() {
            return Err("a stream needs at least one query".into());
        }
        self.control
            .send(Control::SetQueries(queries))
            .map_err(|_| "the stream has ended".to_string())
    }

    pub fn status(&self) -> SessionStatus {
        let mut status = lock(&self.status).clone();
        status.subscribers = self.fanout.subscribers();
        status
    }

    /// Stops the stream and waits for its thread; subscribers get `ended`.
    pub fn stop(&self) {
        let _ = self.control.send(Control::Stop);
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
    }
}

fn names(queries: &[Query]) -> Vec<String> {
    queries.iter().map(|q| q.name().to_owned()).collect()
}

fn unix_millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// What the stream's thread shares with its `Session`.
struct StreamSide {
    fanout: Fanout<Arc<StreamMessage>>,
    status: Arc<Mutex<SessionStatus>>,
    frame_subscribers: Arc<AtomicUsize>,
}

impl StreamSide {
    fn publish(&self, message: &Message, jpeg: Option<Vec<u8>>) {
        match serde_json::to_string(message) {
            Ok(json) => self.fanout.publish(Arc::new(StreamMessage { json, jpeg })),
            Err(error) => tracing::error!(%error, "cannot serialise a stream message"),
        }
    }

    fn event(&self, name: &str, detail: Option<String>, version: u64) {
        self.publish(
            &Message::Event {
                event: name,
                detail,
                query_version: version,
            },
            None,
        );
    }

    fn wants_frames(&self) -> bool {
        self.frame_subscribers.load(Ordering::Relaxed) > 0
    }
}

fn run(
    mut reader: VideoReader,
    inference: Inference,
    mut tracker: Tracking,
    config: SessionConfig,
    controls: Receiver<Control>,
    stream: StreamSide,
) {
    let post = match config.recurrent {
        Some(_) => slot_post_process(&config.tracker),
        None => tracking_post_process(&config.tracker, config.nms_iou),
    };
    let mut decoder_state = None;
    // The queries live on as their embeddings and, for the updates' labels,
    // their names.
    let mut query_names = names(&config.queries);
    let mut version = 1u64;
    let mut embeddings = match inference.embed(config.queries.clone()) {
        Ok(e) => e,
        Err(error) => {
            let mut s = lock(&stream.status);
            s.state = SessionState::Failed;
            s.last_error = Some(error.clone());
            drop(s);
            stream.event("failed", Some(error), version);
            stream.fanout.close();
            return;
        }
    };
    lock(&stream.status).state = SessionState::Running;
    stream.event("started", None, version);
    let mut recent: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut failure = None;
    'stream: loop {
        loop {
            match controls.try_recv() {
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => break 'stream,
                Ok(Control::SetQueries(new)) => {
                    let new_names = names(&new);
                    match inference.embed(new) {
                        Ok(e) => {
                            let old = std::mem::replace(&mut query_names, new_names.clone());
                            tracker.relabel(|i| {
                                old.get(i)
                                    .and_then(|q| new_names.iter().position(|n| n == q))
                            });
                            embeddings = e;
                            version += 1;
                            let mut s = lock(&stream.status);
                            s.queries = new_names.clone();
                            s.query_version = version;
                            drop(s);
                            stream.event("queries_changed", Some(new_names.join(", ")), version);
                        }
                        Err(error) => stream.event("error", Some(error), version),
                    }
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        let frame = match reader.recv_timeout(POLL) {
            Received::Event(Event::Frame(frame)) => frame,
            Received::Event(Event::Disconnected { error, .. }) => {
                lock(&stream.status).state = SessionState::Reconnecting;
                stream.event("source_disconnected", Some(error), version);
                continue;
            }
            Received::Event(Event::Reconnected { .. }) => {
                let mut s = lock(&stream.status);
                s.state = SessionState::Running;
                s.reconnects += 1;
                drop(s);
                stream.event("source_reconnected", None, version);
                continue;
            }
            Received::TimedOut => continue,
            Received::Ended => break,
        };
        let captured_at = SystemTime::now() - frame.decoded_at.elapsed();
        let jpeg = stream
            .wants_frames()
            .then(|| image::encode_jpeg(&frame.rgb, frame.width, frame.height, config.jpeg_quality))
            .and_then(|encoded| {
                encoded
                    .map_err(|error| tracing::warn!(%error, "cannot encode a frame for viewers"))
                    .ok()
            });
        let detections = inference.detect(FrameRequest {
            rgb: frame.rgb,
            width: frame.width,
            height: frame.height,
            queries: embeddings.clone(),
            post,
            label_score: config.label_score,
            recurrent: config.recurrent.as_ref().map(|_| decoder_state.take()),
        });
        let detections = match detections {
            Ok(result) => {
                decoder_state = result.state;
                result.detections
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        let reports = tracker.update(&detections, false);
        let tracks = TrackedObject::from_reports(&reports, &query_names);
        let latency = frame.decoded_at.elapsed();
        stream.publish(
            &Message::Update {
                frame: frame.index,
                pts: frame.pts,
                query_version: version,
                captured_at_ms: unix_millis(captured_at),
                sent_at_ms: unix_millis(SystemTime::now()),
                latency_ms: latency.as_secs_f64() * 1000.0,
                tracks: &tracks,
            },
            jpeg,
        );
        let now = Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3))
        {
            recent.pop_front();
        }
        let mut s = lock(&stream.status);
        s.frames += 1;
        s.frames_dropped = reader.stats().frames_dropped;
        let latency_ms = latency.as_secs_f64() * 1000.0;
        s.latency_ms = latency_ms;
        s.latency_histogram.observe(latency_ms);
        s.fps = recent.len() as f64 / 3.0;
    }
    let finished = reader.finish().err().map(|e| e.to_string());
    let mut s = lock(&stream.status);
    match failure.or(finished) {
        Some(error) => {
            s.state = SessionState::Failed;
            s.last_error = Some(error.clone());
            drop(s);
            stream.event("failed", Some(error), version);
        }
        None => {
            s.state = SessionState::Ended;
            drop(s);
            stream.event("ended", None, version);
        }
    }
    stream.fanout.close();
}
