//! The reader: a decoding thread per source, paced into a bounded queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, Result};
use crate::folder;
use crate::frame::{Frame, Resize, RgbConverter};
use crate::input::{Flow, OpenSettings, PumpEnd, StreamInfo, VideoInput, Watchdog};
use crate::queue::{EventQueue, Pacing};
use crate::source::Source;
use crate::stats::{Counters, DecodeStats};
use crate::timing::{FrameSelector, PtsClock};

/// How to reconnect a network source that drops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReconnectPolicy {
    pub enabled: bool,
    /// Wait before the first attempt; doubled after each failure…
    pub initial_delay: Duration,
    /// …up to this.
    pub max_delay: Duration,
    /// Give up after this many failed attempts in a row; None: never give up.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
            max_attempts: None,
        }
    }
}

/// How a source is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadOptions {
    pub resize: Resize,
    pub pacing: Pacing,
    /// Deliver every `stride`-th decoded frame (1 = all).
    pub stride: u32,
    /// Deliver at most this many frames per second of video time.
    pub target_fps: Option<f64>,
    /// Decode no faster than the video's own clock, as a camera would deliver
    /// it (FFmpeg's `-re`): turns a file into a stand-in for a live source.
    pub native_rate: bool,
    /// Limit for opening a source (connecting, probing).
    pub open_timeout: Duration,
    /// Limit for each read once open; a live source silent this long is
    /// treated as disconnected.
    pub read_timeout: Duration,
    pub reconnect: ReconnectPolicy,
    /// Decoder threads; 0 lets FFmpeg choose.
    pub threads: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            resize: Resize::Source,
            pacing: Pacing::offline(),
            stride: 1,
            target_fps: None,
            native_rate: false,
            open_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            threads: 0,
        }
    }
}

impl ReadOptions {
    /// Settings for a live camera: newest frame wins, low-latency decoding.
    pub fn live() -> Self {
        ReadOptions {
            pacing: Pacing::live(),
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        self.resize.validate()?;
        if self.stride == 0 {
            return Err(DecodeError::InvalidOption(
                "stride must be at least 1".into(),
            ));
        }
        if let Some(fps) = self.target_fps {
            if !(fps.is_finite() && fps > 0.0) {
                return Err(DecodeError::InvalidOption(format!(
                    "target fps must be a positive number, got {fps}"
                )));
            }
        }
        if self.open_timeout.is_zero() || self.read_timeout.is_zero() {
            return Err(DecodeError::InvalidOption(
                "timeouts must be positive".into(),
            ));
        }
        Ok(())
    }

    fn open_settings(&self) -> OpenSettings {
        OpenSettings {
            open_timeout: self.open_timeout,
            read_timeout: self.read_timeout,
            threads: self.threads,
            low_latency: matches!(self.pacing, Pacing::Live { .. }),
        }
    }
}

/// What a reader hands its consumer.
#[derive(Debug)]
pub enum Event {
    Frame(Frame),
    /// A network source dropped; the reader retries after `retry_in`.
    Disconnected {
        error: String,
        retry_in: Duration,
    },
    /// The source is back after `attempts` tries and `downtime` without frames.
    Reconnected {
        attempts: u32,
        downtime: Duration,
    },
}

/// The outcome of waiting for an event with a time limit.
#[derive(Debug)]
pub enum Received {
    Event(Event),
    TimedOut,
    /// The source ended; [`VideoReader::finish`] tells how.
    Ended,
}

/// Reads one source on its own thread and hands frames over under the chosen
/// pacing. Iterate it for events; the iteration ends at the end of the stream
/// (or on a fatal error), after which [`VideoReader::finish`] tells which.
pub struct VideoReader {
    source: Source,
    info: StreamInfo,
    queue: Arc<EventQueue>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

enum Opened {
    Stream(Box<VideoInput>),
    Folder(Vec<std::path::PathBuf>),
}

impl VideoReader {
    /// Opens the source on the calling thread, so that a missing file, a bad
    /// URL or a refused connection is reported here, then starts decoding.
    pub fn open(source: Source, options: ReadOptions) -> Result<Self> {
        crate::init();
        options.validate()?;
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = Watchdog::new(Arc::clone(&stop));
        let (opened, info) = match &source {
            Source::FrameFolder { dir, fps } => {
                let files = folder::list_frames(dir)?;
                let info = folder::stream_info(&files, *fps)?;
                (Opened::Folder(files), info)
            }
            _ => {
                let input = VideoInput::open(&source, &options.open_settings(), &watchdog)?;
                let info = input.info.clone();
                (Opened::Stream(Box::new(input)), info)
            }
        };
        let queue = Arc::new(EventQueue::new(options.pacing));
        let counters = Arc::new(Counters::default());
        let producer = Producer {
            source: source.clone(),
            options,
            queue: Arc::clone(&queue),
            counters: Arc::clone(&counters),
            watchdog,
        };
        let thread = std::thread::Builder::new()
            .name("owltrack-decode".into())
            .spawn(move || producer.run(opened))
            .map_err(|error| DecodeError::Io {
                path: "decoder thread".into(),
                error,
            })?;
        Ok(VideoReader {
            source,
            info,
            queue,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The stream as the container described it when opened.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    pub fn stats(&self) -> DecodeStats {
        self.counters.snapshot()
    }

    /// Events waiting in the queue now.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// A flag that stops the reader when set, for use from other threads.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The next event, waiting as long as it takes; None at the end.
    pub fn recv(&mut self) -> Option<Event> {
        match self.receive(None) {
            Received::Event(event) => Some(event),
            Received::TimedOut | Received::Ended => None,
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Received {
        self.receive(Some(timeout))
    }

    fn receive(&mut self, timeout: Option<Duration>) -> Received {
        let received = self.queue.pop(timeout);
        if let Received::Event(Event::Frame(_)) = received {
            self.counters.add(&self.counters.frames_delivered, 1);
        }
        received
    }

    /// Stops reading (if still running) and reports how the source ended:
    /// its statistics after a clean end, or the error that ended it.
    pub fn finish(mut self) -> Result<DecodeStats> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<DecodeStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.queue.close_consumer();
        let outcome = match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(DecodeError::Internal("the decoding thread panicked".into()))
            }),
            None => Ok(()),
        };
        outcome.map(|()| self.counters.snapshot())
    }
}

impl Iterator for VideoReader {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

impl Drop for VideoReader {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.shutdown();
        }
    }
}

struct Producer {
    source: Source,
    options: ReadOptions,
    queue: Arc<EventQueue>,
    counters: Arc<Counters>,
    watchdog: Arc<Watchdog>,
}

/// The frame-by-frame work shared by every kind of source: timeline, frame
/// choice, real-time pacing, RGB conversion, hand-over.
struct Delivery<'a> {
    queue: &'a EventQueue,
    counters: &'a Counters,
    watchdog: &'a Watchdog,
    selector: FrameSelector,
    converter: RgbConverter,
    native_rate: bool,
    /// Wall-clock instant and pts of the first frame since (re)connecting.
    rate_origin: Option<(Instant, f64)>,
}

impl Delivery<'_> {
    fn deliver(
        &mut self,
        picture: &ffmpeg_next::util::frame::video::Video,
        index: u64,
        pts: f64,
        tolerance: f64,
    ) -> Flow {
        if !self.selector.keep(index, pts, tolerance) {
            self.counters.add(&self.counters.frames_skipped, 1);
            return Flow::Continue;
        }
        if self.native_rate {
            let (start, first_pts) = *self.rate_origin.get_or_insert((Instant::now(), pts));
            let due = start + Duration::from_secs_f64((pts - first_pts).max(0.0));
            if !self
                .watchdog
                .sleep(due.saturating_duration_since(Instant::now()))
            {
                return Flow::Stop;
            }
        }
        let frame = match self.converter.convert(picture, index, pts, Instant::now()) {
            Ok(frame) => frame,
            Err(error) => {
                self.counters.add(&self.counters.decode_errors, 1);
                tracing::debug!(%error, "skipping a frame that cannot be converted");
                return Flow::Continue;
            }
        };
        match self.queue.push(Event::Frame(frame)) {
            Ok(evicted) => {
                self.counters.add(&self.counters.frames_dropped, evicted);
                Flow::Continue
            }
            Err(_) => Flow::Stop,
        }
    }
}

impl Producer {
    fn run(self, opened: Opened) -> Result<()> {
        let result = match opened {
            Opened::Folder(files) => {
                self.run_folder(&files);
                Ok(())
            }
            Opened::Stream(input) => self.run_stream(*input),
        };
        self.queue.finish_producing();
        if let Err(error) = &result {
            tracing::warn!(source = %self.source, %error, "source ended with an error");
        }
        result
    }

    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            queue: &self.queue,
            counters: &self.counters,
            watchdog: &self.watchdog,
            selector: FrameSelector::new(self.options.stride, self.options.target_fps),
            converter: RgbConverter::new(self.options.resize),
            native_rate: self.options.native_rate,
            rate_origin: None,
        }
    }

    fn run_folder(&self, files: &[std::path::PathBuf]) {
        let Source::FrameFolder { fps, .. } = self.source else {
            return;
        };
        let mut delivery = self.delivery();
        folder::for_each_frame(files, &self.counters, |index, picture| {
            if self.watchdog.stopped() {
                return Flow::Stop;
            }
            delivery.deliver(picture, index, index as f64 / fps, 0.5 / fps)
        });
    }

    fn run_stream(&self, mut input: VideoInput) -> Result<()> {
        let mut clock = PtsClock::new(input.frame_duration).with_origin(input.start_time);
        let mut delivery = self.delivery();
        let mut index = 0u64;
        let settings = self.options.open_settings();
        let is_live = self.source.is_live();
        loop {
            let end = input.pump(
                &self.watchdog,
                settings.read_timeout,
                is_live,
                &self.counters,
                |picture, raw| {
                    let pts = clock.next(raw);
                    let this = index;
                    index += 1;
                    delivery.deliver(picture, this, pts, clock.frame_duration() / 2.0)
                },
            );
            let error = match end {
                PumpEnd::Stopped => return Ok(()),
                PumpEnd::EndOfStream if !is_live || input.has_known_duration() => break,
                PumpEnd::EndOfStream => "the stream ended".to_owned(),
                PumpEnd::Failed(error) => error.to_string(),
            };
            if !self.options.reconnect.enabled {
                return Err(DecodeError::ReconnectsExhausted {
                    input: self.source.to_string(),
                    attempts: 0,
                    last: error,
                });
            }
            match self.reconnect(error)? {
                Some(reopened) => {
                    input = reopened;
                    clock.rebase();
                    clock.set_frame_duration(input.frame_duration);
                    delivery.rate_origin = None;
                }
                None => return Ok(()),
            }
        }
        let stats = self.counters.snapshot();
        if stats.frames_decoded == 0 {
            return Err(DecodeError::NoDecodableFrames {
                input: self.source.to_string(),
                packets: stats.packets,
                errors: stats.decode_errors,
            });
        }
        Ok(())
    }

    /// Retries with exponential backoff until the source is back (Some), the
    /// reader is stopped (None), or the attempts allowed run out (Err).
    fn reconnect(&self, error: String) -> Result<Option<VideoInput>> {
        let policy = self.options.reconnect;
        let down_since = Instant::now();
        let mut delay = policy.initial_delay;
        self.counters.add(&self.counters.disconnects, 1);
        tracing::warn!(source = %self.source, %error, retry_in = ?delay, "source disconnected");
        if self
            .queue
            .push(Event::Disconnected {
                error: error.clone(),
                retry_in: delay,
            })
            .is_err()
        {
            return Ok(None);
        }
        let mut attempts = 0u32;
        loop {
            if !self.watchdog.sleep(delay) {
                return Ok(None);
            }
            attempts += 1;
            match VideoInput::open(&self.source, &self.options.open_settings(), &self.watchdog) {
                Ok(input) => {
                    self.counters.add(&self.counters.reconnects, 1);
                    let downtime = down_since.elapsed();
                    tracing::info!(source = %self.source, attempts, ?downtime, "source reconnected");
                    return match self.queue.push(Event::Reconnected { attempts, downtime }) {
                        Ok(_) => Ok(Some(input)),
                        Err(_) => Ok(None),
                    };
                }
                Err(_) if self.watchdog.stopped() => return Ok(None),
                Err(error) => {
                    tracing::debug!(source = %self.source, attempts, %error, "reconnect failed");
                    if policy.max_attempts.is_some_and(|max| attempts >= max) {
                        return Err(DecodeError::ReconnectsExhausted {
                            input: self.source.to_string(),
                            attempts,
                            last: error.to_string(),
                        });
                    }
                    delay = (delay * 2).min(policy.max_delay);
                }
            }
        }
    }
}
