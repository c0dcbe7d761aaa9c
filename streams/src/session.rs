//! One live stream: its source read with live pacing (the newest frame
//! wins), OWL inference, tracking, and every processed frame published as a
//! JSON message to the stream's subscribers; queries can change while it
//! runs.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use owltrack_decoder::{Event, Pacing, ReadOptions, Received, Source, VideoReader};
use owltrack_models::{Detector, Query};
use owltrack_tracker::pipeline::{detect_for_tracking, tracking_post_process};
use owltrack_tracker::tbd::{DetectionTracker, TrackerConfig};
use owltrack_tracker::update::TrackedObject;
use serde::Serialize;

use crate::fanout::{Fanout, Subscription};

/// How long the session waits for a frame before it looks at its controls.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub source: Source,
    pub queries: Vec<String>,
    pub tracker: TrackerConfig,
    pub nms_iou: f32,
    /// Read a file no faster than its own clock, as a camera would send it.
    pub native_rate: bool,
    /// Messages a subscriber may fall behind before it skips ahead.
    pub subscriber_buffer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Starting,
    Running,
    Reconnecting,
    Ended,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
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
}

/// What subscribers receive, as JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message<'a> {
    Update {
        frame: u64,
        pts: f64,
        query_version: u64,
        /// When the frame was published, milliseconds since the Unix epoch.
        sent_at_ms: u128,
        /// From the decoder finishing the frame to its update being sent.
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

enum Control {
    SetQueries(Vec<String>),
    Stop,
}

/// A running stream; dropping it stops the stream.
pub struct Session {
    fanout: Fanout<Arc<str>>,
    control: Sender<Control>,
    status: Arc<Mutex<SessionStatus>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Session {
    /// Opens the source and starts the stream's thread. `detector` is shared
    /// by every stream of the service.
    pub fn start(detector: Arc<Mutex<Detector>>, config: SessionConfig) -> Result<Self, String> {
        if config.queries.is_empty() {
            return Err("a stream needs at least one query".into());
        }
        let tracker = DetectionTracker::new(config.tracker.clone())?;
        let options = ReadOptions {
            pacing: Pacing::live(),
            native_rate: config.native_rate,
            ..ReadOptions::default()
        };
        let reader =
            VideoReader::open(config.source.clone(), options).map_err(|e| e.to_string())?;
        let fanout = Fanout::new(config.subscriber_buffer);
        let (control, controls) = crossbeam_channel::unbounded();
        let status = Arc::new(Mutex::new(SessionStatus {
            state: SessionState::Starting,
            queries: config.queries.clone(),
            query_version: 1,
            frames: 0,
            frames_dropped: 0,
            fps: 0.0,
            latency_ms: 0.0,
            subscribers: 0,
            reconnects: 0,
            last_error: None,
        }));
        let worker = {
            let (fanout, status) = (fanout.clone(), Arc::clone(&status));
            std::thread::Builder::new()
                .name("owltrack-stream".into())
                .spawn(move || run(reader, detector, tracker, config, controls, fanout, status))
                .map_err(|e| format!("cannot start the stream's thread: {e}"))?
        };
        Ok(Session {
            fanout,
            control,
            status,
            worker: Some(worker),
        })
    }

    pub fn subscribe(&self) -> Subscription<Arc<str>> {
        self.fanout.subscribe()
    }

    /// Changes the queries from the next frame on.
    pub fn set_queries(&self, queries: Vec<String>) -> Result<(), String> {
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

    /// Stops the stream and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn publish(fanout: &Fanout<Arc<str>>, message: &Message) {
    match serde_json::to_string(message) {
        Ok(text) => fanout.publish(Arc::from(text)),
        Err(error) => tracing::error!(%error, "cannot serialise a stream message"),
    }
}

fn event(fanout: &Fanout<Arc<str>>, name: &str, detail: Option<String>, version: u64) {
    publish(
        fanout,
        &Message::Event {
            event: name,
            detail,
            query_version: version,
        },
    );
}

#[allow(clippy::too_many_arguments)]
fn run(
    mut reader: VideoReader,
    detector: Arc<Mutex<Detector>>,
    mut tracker: DetectionTracker,
    config: SessionConfig,
    controls: Receiver<Control>,
    fanout: Fanout<Arc<str>>,
    status: Arc<Mutex<SessionStatus>>,
) {
    let post = tracking_post_process(&config.tracker, config.nms_iou);
    let mut queries = config.queries.clone();
    let mut version = 1u64;
    let embed = |queries: &[String]| -> Result<owltrack_models::Tensor, String> {
        let texts: Vec<Query> = queries.iter().cloned().map(Query::Text).collect();
        lock(&detector)
            .embed_queries(&texts)
            .map_err(|e| e.to_string())
    };
    let mut embeddings = match embed(&queries) {
        Ok(e) => e,
        Err(error) => {
            let mut s = lock(&status);
            s.state = SessionState::Failed;
            s.last_error = Some(error.clone());
            event(&fanout, "failed", Some(error), version);
            fanout.close();
            return;
        }
    };
    lock(&status).state = SessionState::Running;
    event(&fanout, "started", None, version);
    let mut recent: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut failure = None;
    'stream: loop {
        loop {
            match controls.try_recv() {
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => break 'stream,
                Ok(Control::SetQueries(new)) => match embed(&new) {
                    Ok(e) => {
                        let old = std::mem::replace(&mut queries, new);
                        tracker.relabel(|i| {
                            old.get(i).and_then(|q| queries.iter().position(|n| n == q))
                        });
                        embeddings = e;
                        version += 1;
                        let mut s = lock(&status);
                        s.queries = queries.clone();
                        s.query_version = version;
                        drop(s);
                        event(
                            &fanout,
                            "queries_changed",
                            Some(queries.join(", ")),
                            version,
                        );
                    }
                    Err(error) => event(&fanout, "error", Some(error), version),
                },
                Err(TryRecvError::Empty) => break,
            }
        }
        let frame = match reader.recv_timeout(POLL) {
            Received::Event(Event::Frame(frame)) => frame,
            Received::Event(Event::Disconnected { error, .. }) => {
                lock(&status).state = SessionState::Reconnecting;
                event(&fanout, "source_disconnected", Some(error), version);
                continue;
            }
            Received::Event(Event::Reconnected { .. }) => {
                let mut s = lock(&status);
                s.state = SessionState::Running;
                s.reconnects += 1;
                drop(s);
                event(&fanout, "source_reconnected", None, version);
                continue;
            }
            Received::TimedOut => continue,
            Received::Ended => break,
        };
        let detections = {
            let detector = lock(&detector);
            detect_for_tracking(
                &detector,
                &frame.rgb,
                (frame.width, frame.height),
                &embeddings,
                &post,
                0.1,
            )
        };
        let detections = match detections {
            Ok((d, _)) => d,
            Err(error) => {
                failure = Some(error.to_string());
                break;
            }
        };
        let reports = tracker.update(&detections, false);
        let tracks = TrackedObject::from_reports(&reports, &queries);
        let latency = frame.decoded_at.elapsed();
        publish(
            &fanout,
            &Message::Update {
                frame: frame.index,
                pts: frame.pts,
                query_version: version,
                sent_at_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
                latency_ms: latency.as_secs_f64() * 1000.0,
                tracks: &tracks,
            },
        );
        let now = Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3))
        {
            recent.pop_front();
        }
        let mut s = lock(&status);
        s.frames += 1;
        s.frames_dropped = reader.stats().frames_dropped;
        s.latency_ms = latency.as_secs_f64() * 1000.0;
        s.fps = recent.len() as f64 / 3.0;
    }
    let finished = reader.finish().err().map(|e| e.to_string());
    let mut s = lock(&status);
    match failure.or(finished) {
        Some(error) => {
            s.state = SessionState::Failed;
            s.last_error = Some(error.clone());
            drop(s);
            event(&fanout, "failed", Some(error), version);
        }
        None => {
            s.state = SessionState::Ended;
            drop(s);
            event(&fanout, "ended", None, version);
        }
    }
    fanout.close();
}
