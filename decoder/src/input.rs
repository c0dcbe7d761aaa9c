//! One connection to an FFmpeg source: opening it with timeouts, finding the
//! video stream, and turning packets into decoded pictures.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg::codec::threading;
use ffmpeg::util::frame::video::Video as AvFrame;
use ffmpeg::{format, media, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;
use serde::Serialize;

use crate::error::{DecodeError, Result};
use crate::source::{NetworkProtocol, Source};
use crate::stats::Counters;

/// Aborts any blocking FFmpeg call once its deadline passes or the reader is
/// stopped: FFmpeg polls this through the format context's interrupt callback,
/// so neither a dead camera nor a consumer that goes away can hang a thread.
#[derive(Debug)]
pub(crate) struct Watchdog {
    origin: Instant,
    /// Nanoseconds after `origin`; 0 when no deadline is armed.
    deadline: AtomicU64,
    /// Set when a deadline interrupted FFmpeg. Kept until the next open,
    /// because FFmpeg's I/O errors are sticky: the call that reports the
    /// interruption may come after the one that was interrupted.
    deadline_fired: AtomicBool,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    pub(crate) fn new(stop: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Watchdog {
            origin: Instant::now(),
            deadline: AtomicU64::new(0),
            deadline_fired: AtomicBool::new(false),
            stop,
        })
    }

    pub(crate) fn arm(&self, after: Duration) {
        let at = self.origin.elapsed() + after;
        self.deadline
            .store(at.as_nanos().max(1) as u64, Ordering::Relaxed);
    }

    pub(crate) fn disarm(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn expired(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Relaxed);
        deadline != 0 && self.origin.elapsed().as_nanos() as u64 > deadline
    }

    fn should_interrupt(&self) -> bool {
        if self.stopped() {
            return true;
        }
        let expired = self.expired();
        if expired {
            self.deadline_fired.store(true, Ordering::Relaxed);
        }
        expired
    }

    fn deadline_fired(&self) -> bool {
        self.deadline_fired.load(Ordering::Relaxed)
    }

    /// Sleeps up to `duration`; false when woken early because of a stop.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

/// Network and device settings used when opening a source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenSettings {
    pub open_timeout: Duration,
    pub read_timeout: Duration,
    pub threads: usize,
    pub low_latency: bool,
}

/// What the container says about its video stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamInfo {
    /// Container (demuxer) name as FFmpeg knows it, such as `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
    pub codec: String,
    pub pixel_format: String,
    pub width: u32,
    pub height: u32,
    /// Average frame rate; None when the container does not say.
    pub fps: Option<f64>,
    /// Seconds; None for live streams and containers that do not say.
    pub duration: Option<f64>,
    /// Frame count from the container's index; None when it does not say.
    pub frames: Option<u64>,
}

pub(crate) struct VideoInput {
    input: format::context::Input,
    stream_index: usize,
    decoder: ffmpeg::decoder::Video,
    seconds_per_tick: f64,
    pub(crate) start_time: Option<f64>,
    pub(crate) frame_duration: f64,
    pub(crate) info: StreamInfo,
    label: String,
}

/// How a run of [`VideoInput::pump`] ended.
#[derive(Debug)]
pub(crate) enum PumpEnd {
    EndOfStream,
    Stopped,
    /// The connection broke or timed out.
    Failed(DecodeError),
}

/// Whether the frame callback wants more frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// Consecutive demuxer errors tolerated in a local file before it is treated
/// as ended: damaged files often recover after a bad packet or two.
const MAX_CONSECUTIVE_READ_ERRORS: u32 = 64;

impl VideoInput {
    pub(crate) fn open(
        source: &Source,
        settings: &OpenSettings,
        watchdog: &Arc<Watchdog>,
    ) -> Result<Self> {
        let label = source.to_string();
        if let Source::File { path } = source {
            let meta = std::fs::metadata(path).map_err(|error| DecodeError::io(path, error))?;
            if meta.is_file() && meta.len() == 0 {
                return Err(DecodeError::EmptyFile(path.clone()));
            }
        }
        watchdog.deadline_fired.store(false, Ordering::Relaxed);
        watchdog.arm(settings.open_timeout);
        let opened = open_format(source, settings, watchdog);
        let timed_out = watchdog.deadline_fired();
        watchdog.disarm();
        let input = opened.map_err(|e| open_error(source, e, timed_out, settings.open_timeout))?;

        let stream = input.streams().best(media::Type::Video).ok_or_else(|| {
            let found: Vec<String> = input
                .streams()
                .map(|s| format!("{:?}", s.parameters().medium()).to_lowercase())
                .collect();
            DecodeError::NoVideoStream {
                input: label.clone(),
                found: if found.is_empty() {
                    "no streams".into()
                } else {
                    found.join(", ")
                },
            }
        })?;
        let stream_index = stream.index();
        let parameters = stream.parameters();
        let codec_id = parameters.id();
        if ffmpeg::decoder::find(codec_id).is_none() {
            // SAFETY: the parameters belong to a stream of the open input.
            let tag = unsafe { (*parameters.as_ptr()).codec_tag };
            let fourcc: String = tag
                .to_le_bytes()
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
                .collect();
            return Err(DecodeError::UnsupportedCodec {
                input: label,
                codec: match codec_id {
                    ffmpeg::codec::Id::None => format!("unknown (fourcc {fourcc})"),
                    id => format!("{id:?}").to_lowercase(),
                },
            });
        }
        let mut context = ffmpeg::codec::context::Context::from_parameters(parameters)
            .map_err(|e| DecodeError::ffmpeg(&label, "reading codec parameters", e))?;
        context.set_threading(threading::Config {
            kind: if settings.low_latency {
                threading::Type::Slice
            } else {
                threading::Type::Frame
            },
            count: settings.threads,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| DecodeError::UnsupportedCodec {
                input: label.clone(),
                codec: format!("{codec_id:?} ({e})").to_lowercase(),
            })?;

        let time_base = stream.time_base();
        let seconds_per_tick = rational_value(time_base).unwrap_or(0.0);
        let to_seconds = |ticks: i64| {
            (ticks != ffmpeg::ffi::AV_NOPTS_VALUE && seconds_per_tick > 0.0)
                .then_some(ticks as f64 * seconds_per_tick)
        };
        let fps = rational_value(stream.avg_frame_rate())
            .or_else(|| rational_value(stream.rate()))
            .filter(|f| *f > 0.0 && *f < 1000.0);
        let duration = to_seconds(stream.duration())
            .filter(|d| *d > 0.0)
            .or_else(|| {
                let d = input.duration();
                (d > 0).then(|| d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
            });
        let info = StreamInfo {
            container: input.format().name().to_owned(),
            codec: decoder
                .codec()
                .map(|c| c.name().to_owned())
                .unwrap_or_else(|| format!("{codec_id:?}").to_lowercase()),
            pixel_format: format!("{:?}", decoder.format()).to_lowercase(),
            width: decoder.width(),
            height: decoder.height(),
            fps,
            duration,
            frames: u64::try_from(stream.frames()).ok().filter(|n| *n > 0),
        };
        let start_time = to_seconds(stream.start_time());
        Ok(VideoInput {
            input,
            stream_index,
            decoder,
            seconds_per_tick,
            start_time,
            frame_duration: 1.0 / fps.unwrap_or(25.0),
            info,
            label,
        })
    }

    /// Reads and decodes until the end of the stream, a failure, a stop, or
    /// until `on_frame` asks to stop. Bad packets are counted and skipped.
    pub(crate) fn pump(
        &mut self,
        watchdog: &Watchdog,
        read_timeout: Duration,
        is_live: bool,
        counters: &Counters,
        mut on_frame: impl FnMut(&AvFrame, Option<f64>) -> Flow,
    ) -> PumpEnd {
        let mut decoded = AvFrame::empty();
        let mut consecutive_errors = 0;
        loop {
            if watchdog.stopped() {
                return PumpEnd::Stopped;
            }
            // A fresh packet each time: `av_read_frame` overwrites a packet
            // without releasing the buffer it held, so reusing one leaks
            // every packet read (megabytes a minute on a camera).
            let mut packet = Packet::empty();
            watchdog.arm(read_timeout);
            let read = packet.read(&mut self.input);
            let timed_out = watchdog.deadline_fired();
            watchdog.disarm();
            match read {
                Ok(()) => consecutive_errors = 0,
                Err(ffmpeg::Error::Eof) => {
                    // Flush the frames the decoder still holds.
                    let _ = self.decoder.send_eof();
                    return match self.drain(&mut decoded, counters, &mut on_frame) {
                        Flow::Stop => PumpEnd::Stopped,
                        Flow::Continue => PumpEnd::EndOfStream,
                    };
                }
                Err(_) if watchdog.stopped() => return PumpEnd::Stopped,
                Err(error) => {
                    counters.add(&counters.read_errors, 1);
                    if timed_out {
                        return PumpEnd::Failed(DecodeError::Timeout {
                            input: self.label.clone(),
                            during: "reading",
                            after: read_timeout,
                        });
                    }
                    if is_live {
                        return PumpEnd::Failed(DecodeError::ffmpeg(&self.label, "reading", error));
                    }
                    consecutive_errors += 1;
                    if consecutive_errors >= MAX_CONSECUTIVE_READ_ERRORS {
                        tracing::warn!(input = %self.label, %error, "giving up on a damaged file; treating the rest as missing");
                        return PumpEnd::EndOfStream;
                    }
                    continue;
                }
            }
            if packet.stream() != self.stream_index {
                continue;
            }
            counters.add(&counters.packets, 1);
            if let Err(error) = self.decoder.send_packet(&packet) {
                counters.add(&counters.decode_errors, 1);
                tracing::debug!(input = %self.label, %error, "skipping an undecodable packet");
                continue;
            }
            if self.drain(&mut decoded, counters, &mut on_frame) == Flow::Stop {
                return PumpEnd::Stopped;
            }
        }
    }

    fn drain(
        &mut self,
        decoded: &mut AvFrame,
        counters: &Counters,
        on_frame: &mut impl FnMut(&AvFrame, Option<f64>) -> Flow,
    ) -> Flow {
        loop {
            match self.decoder.receive_frame(decoded) {
                Ok(()) => {
                    counters.add(&counters.frames_decoded, 1);
                    if decoded.is_corrupt() {
                        counters.add(&counters.decode_errors, 1);
                    }
                    let raw = decoded.timestamp().and_then(|ticks| {
                        (self.seconds_per_tick > 0.0)
                            .then_some(ticks as f64 * self.seconds_per_tick)
                    });
                    if on_frame(decoded, raw) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                Err(ffmpeg::Error::Eof) => return Flow::Continue,
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Flow::Continue
                }
                Err(error) => {
                    counters.add(&counters.decode_errors, 1);
                    tracing::debug!(input = %self.label, %error, "decoder error");
                    return Flow::Continue;
                }
            }
        }
    }

    /// Whether an end of stream is the real end (a file, a finished VOD) rather
    /// than a live stream whose connection or device went away.
    pub(crate) fn has_known_duration(&self) -> bool {
        self.info.duration.is_some()
    }
}

fn rational_value(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r))
}

fn open_format(
    source: &Source,
    settings: &OpenSettings,
    watchdog: &Arc<Watchdog>,
) -> std::result::Result<format::context::Input, ffmpeg::Error> {
    let url = CString::new(source.ffmpeg_url()).map_err(|_| ffmpeg::Error::InvalidData)?;
    let mut options = Dictionary::new();
    let micros = settings.read_timeout.as_micros().to_string();
    let mut input_format = std::ptr::null();
    // Which of FFmpeg's protocols a source may reach, itself and through what
    // it references (HLS playlists, RTSP's data channels, ffconcat lists): a
    // playlist served over HTTP must not make FFmpeg read local files, nor a
    // local file make it connect anywhere.
    let whitelist = match source {
        Source::Network { protocol, .. } => match protocol {
            NetworkProtocol::Rtsp => Some("rtsp,rtsps,rtp,srtp,udp,tcp,tls"),
            NetworkProtocol::Rtmp => Some("rtmp,rtmps,rtmpt,rtmpts,tcp,tls"),
            NetworkProtocol::Http => Some("http,https,tcp,tls,crypto,httpproxy"),
            NetworkProtocol::Socket => Some("udp,rtp,srtp,srt,tcp,tls"),
        },
        Source::File { .. } => Some("file,crypto"),
        Source::Device { .. } | Source::FrameFolder { .. } => None,
    };
    if let Some(whitelist) = whitelist {
        options.set("protocol_whitelist", whitelist);
    }
    match source {
        Source::Network { protocol, .. } => {
            match protocol {
                NetworkProtocol::Rtsp => {
                    options.set("rtsp_transport", "tcp");
                    // FFmpeg ≥ 5: socket I/O timeout for RTSP, in microseconds.
                    options.set("timeout", &micros);
                }
                NetworkProtocol::Http => {
                    options.set("timeout", &micros);
                }
                NetworkProtocol::Rtmp | NetworkProtocol::Socket => {}
            }
            options.set("rw_timeout", &micros);
        }
        Source::Device { .. } => {
            // Device nodes cannot be probed: name the demuxer.
            // SAFETY: a static NUL-terminated name; the result is static or null.
            input_format = unsafe { ffmpeg::ffi::av_find_input_format(c"video4linux2".as_ptr()) };
            if input_format.is_null() {
                return Err(ffmpeg::Error::DemuxerNotFound);
            }
        }
        Source::File { .. } | Source::FrameFolder { .. } => {}
    }
    let watchdog = Arc::clone(watchdog);
    // SAFETY: this mirrors ffmpeg-next's `input_with_interrupt_and_dictionary`,
    // adding the input format that device nodes need. On failure
    // avformat_open_input frees the context itself; on success the context and
    // its interrupt closure are owned by the returned `Input`.
    unsafe {
        let mut context = ffmpeg::ffi::avformat_alloc_context();
        if context.is_null() {
            return Err(ffmpeg::Error::Other {
                errno: ffmpeg::util::error::ENOMEM,
            });
        }
        let interrupt = ffmpeg::util::interrupt::new(Box::new(move || watchdog.should_interrupt()));
        (*context).interrupt_callback = interrupt.interrupt;
        let mut raw_options = options.disown();
        let opened = ffmpeg::ffi::avformat_open_input(
            &mut context,
            url.as_ptr(),
            input_format,
            &mut raw_options,
        );
        Dictionary::own(raw_options);
        if opened < 0 {
            return Err(ffmpeg::Error::from(opened));
        }
        let found = ffmpeg::ffi::avformat_find_stream_info(context, std::ptr::null_mut());
        if found < 0 {
            ffmpeg::ffi::avformat_close_input(&mut context);
            return Err(ffmpeg::Error::from(found));
        }
        Ok(format::context::Input::wrap_with_interrupt(
            context,
            interrupt.guard,
        ))
    }
}

fn open_error(
    source: &Source,
    error: ffmpeg::Error,
    timed_out: bool,
    after: Duration,
) -> DecodeError {
    use ffmpeg::util::error as errno;
    let label = source.to_string();
    if timed_out {
        return DecodeError::Timeout {
            input: label,
            during: "opening",
            after,
        };
    }
    match source {
        Source::Network { .. } => match error {
            ffmpeg::Error::Other { errno: e } if e == errno::ECONNREFUSED => {
                DecodeError::Refused { url: label }
            }
            ffmpeg::Error::Other { errno: e } if e == errno::ETIMEDOUT => DecodeError::Timeout {
                input: label,
                during: "connecting",
                after,
            },
            ffmpeg::Error::InvalidData => DecodeError::NotMedia {
                input: label,
                reason: error.to_string(),
            },
            other => DecodeError::Unreachable {
                url: label,
                reason: other.to_string(),
            },
        },
        Source::File { path } | Source::Device { path } => match error {
            ffmpeg::Error::Other { errno: e } if e == errno::ENOENT => {
                DecodeError::NotFound(path.clone())
            }
            ffmpeg::Error::InvalidData | ffmpeg::Error::DemuxerNotFound => DecodeError::NotMedia {
                input: label,
                reason: error.to_string(),
            },
            other => DecodeError::ffmpeg(&label, "opening", other),
        },
        Source::FrameFolder { .. } => DecodeError::ffmpeg(&label, "opening", error),
    }
}
