use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong between a source and a decoded frame.
///
/// Each way an input can be bad has its own variant, so callers (the CLI, the
/// service) can tell a user *what* is wrong with what they gave, not only that
/// something failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no such file or folder: {0}")]
    NotFound(PathBuf),

    #[error("{0} is empty (0 bytes)")]
    EmptyFile(PathBuf),

    #[error("{input} is not a video FFmpeg can read ({reason})")]
    NotMedia { input: String, reason: String },

    #[error("{input} has no video stream (it holds: {found})")]
    NoVideoStream { input: String, found: String },

    #[error("{input}: the {codec} codec is not supported by this FFmpeg build")]
    UnsupportedCodec { input: String, codec: String },

    #[error("{url}: connection refused")]
    Refused { url: String },

    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },

    #[error("{input}: timed out after {after:.1?} while {during}")]
    Timeout {
        input: String,
        during: &'static str,
        after: Duration,
    },

    #[error("{input} yielded no decodable video frame ({packets} video packets read, {errors} decode errors)")]
    NoDecodableFrames {
        input: String,
        packets: u64,
        errors: u64,
    },

    #[error("unsupported source {url:?}: scheme {scheme}:// is not one of {supported}")]
    UnsupportedScheme {
        url: String,
        scheme: String,
        supported: &'static str,
    },

    #[error("frame folder {0} holds no JPEG or PNG images")]
    EmptyFolder(PathBuf),

    #[error("{input}: gave up after {attempts} reconnect attempts; last error: {last}")]
    ReconnectsExhausted {
        input: String,
        attempts: u32,
        last: String,
    },

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("{input}: FFmpeg failed while {during}: {error}")]
    Ffmpeg {
        input: String,
        during: &'static str,
        error: ffmpeg_next::Error,
    },

    #[error("image error: {0}")]
    Image(String),

    #[error("internal error: {0}")]
    Internal(String),

    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl DecodeError {
    /// A file-system error about `path`; a missing path gets its own variant.
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::NotFound => DecodeError::NotFound(path.to_owned()),
            _ => DecodeError::Io {
                path: path.to_owned(),
                error,
            },
        }
    }

    pub(crate) fn ffmpeg(input: &str, during: &'static str, error: ffmpeg_next::Error) -> Self {
        DecodeError::Ffmpeg {
            input: input.to_owned(),
            during,
            error,
        }
    }
}

pub type Result<T, E = DecodeError> = std::result::Result<T, E>;
