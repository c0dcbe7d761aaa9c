//! Video sources for owltrack.
//!
//! A [`Source`] (file, network URL, V4L2 device, folder of frames) is opened
//! by a [`VideoReader`], which decodes it with FFmpeg on its own thread and
//! hands packed-RGB [`Frame`]s over a bounded queue under a [`Pacing`]
//! policy: every frame with backpressure (offline), or newest frame wins with
//! drops counted (live). Network sources reconnect with exponential backoff
//! and report it as [`Event`]s. [`VideoWriter`] encodes RGB frames to MP4.

mod error;
mod folder;
mod frame;
pub mod image;
mod input;
mod pattern;
mod probe;
mod queue;
mod reader;
mod source;
mod stats;
mod timing;
mod writer;

pub use error::{DecodeError, Result};
pub use folder::{list_frames, natural_cmp};
pub use frame::{Frame, Resize};
pub use input::StreamInfo;
pub use pattern::{pattern_frame, write_pattern_video};
pub use probe::{probe, ProbeReport};
pub use queue::Pacing;
pub use reader::{Event, ReadOptions, Received, ReconnectPolicy, VideoReader};
pub use source::{
    redact_credentials, NetworkProtocol, Source, DEFAULT_FOLDER_FPS, NETWORK_SCHEMES,
};
pub use stats::DecodeStats;
pub use timing::{FrameSelector, PtsClock};
pub use writer::{Chroma, VideoCodec, VideoWriter, WriterOptions};

/// Initialises FFmpeg once per process and quiets its own logging: errors
/// reach users through [`DecodeError`] and `tracing`, not FFmpeg's stderr.
/// Set `OWLTRACK_FFMPEG_LOG` (fatal, error, warning, info, debug) to see it.
pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Err(error) = ffmpeg_next::init() {
            tracing::error!(%error, "FFmpeg failed to initialise");
        }
        use ffmpeg_next::util::log::Level;
        // Quiet, not Fatal: some FFmpeg decoders report ordinary bad input
        // at the fatal level.
        let level = match std::env::var("OWLTRACK_FFMPEG_LOG").as_deref() {
            Ok("fatal") => Level::Fatal,
            Ok("error") => Level::Error,
            Ok("warning") => Level::Warning,
            Ok("info") => Level::Info,
            Ok("debug") => Level::Debug,
            _ => Level::Quiet,
        };
        ffmpeg_next::util::log::set_level(level);
    });
}

/// Whether this FFmpeg can encode H.264 (libx264).
pub fn has_h264_encoder() -> bool {
    init();
    ffmpeg_next::encoder::find_by_name("libx264").is_some()
}
