use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{DecodeError, Result};

/// Schemes accepted as network sources. Anything else with a `://` is refused
/// up front, so a typo never reaches FFmpeg's protocol zoo (`concat:`,
/// `subfile:` and friends can read arbitrary files).
pub const NETWORK_SCHEMES: &str = "rtsp, rtsps, rtmp, rtmps, http, https, udp, rtp, srt, tcp";

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Anything FFmpeg can demux from the local file system.
    File { path: PathBuf },
    /// A folder of still frames (JPEG/PNG), in natural name order, played at `fps`.
    FrameFolder { dir: PathBuf, fps: f64 },
    /// A V4L2 capture device such as `/dev/video0`.
    Device { path: PathBuf },
    /// A network URL: RTSP, RTMP, HTTP(S) (progressive MP4, MPEG-TS, HLS, MJPEG), …
    Network {
        url: String,
        protocol: NetworkProtocol,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkProtocol {
    Rtsp,
    Rtmp,
    Http,
    /// UDP, RTP, SRT or raw TCP: FFmpeg's generic socket inputs.
    Socket,
}

/// The frame rate given to frame folders when the caller names none (TAO's
/// frames are sampled at 30 fps before annotation at 1 fps).
pub const DEFAULT_FOLDER_FPS: f64 = 30.0;

impl Source {
    /// Interprets what a user typed: a URL, a device node, a folder of frames or a file.
    ///
    /// Only the shape of the input is checked here; whether it exists and can be
    /// decoded is the business of opening it.
    pub fn parse(input: &str, folder_fps: f64) -> Result<Self> {
        if !(folder_fps.is_finite() && folder_fps > 0.0) {
            return Err(DecodeError::InvalidOption(format!(
                "frame-folder fps must be a positive number, got {folder_fps}"
            )));
        }
        if let Some((scheme, _)) = input.split_once("://") {
            let scheme_lower = scheme.to_ascii_lowercase();
            let protocol = match scheme_lower.as_str() {
                "file" => {
                    let path = &input[scheme.len() + 3..];
                    return Self::parse(path, folder_fps);
                }
                "rtsp" | "rtsps" => NetworkProtocol::Rtsp,
                "rtmp" | "rtmps" => NetworkProtocol::Rtmp,
                "http" | "https" => NetworkProtocol::Http,
                "udp" | "rtp" | "srt" | "tcp" => NetworkProtocol::Socket,
                _ => {
                    return Err(DecodeError::UnsupportedScheme {
                        url: input.to_owned(),
                        scheme: scheme.to_owned(),
                        supported: NETWORK_SCHEMES,
                    })
                }
            };
            return Ok(Source::Network {
                url: input.to_owned(),
                protocol,
            });
        }
        let path = PathBuf::from(input);
        if is_capture_device(&path) {
            return Ok(Source::Device { path });
        }
        if path.is_dir() {
            return Ok(Source::FrameFolder {
                dir: path,
                fps: folder_fps,
            });
        }
        Ok(Source::File { path })
    }

    /// Live sources produce frames in real time whether or not anyone reads
    /// them; when one drops (a camera unplugged, a connection lost) it is
    /// reconnected rather than ended.
    pub fn is_live(&self) -> bool {
        matches!(self, Source::Network { .. } | Source::Device { .. })
    }

    /// The string handed to FFmpeg to open this source.
    pub(crate) fn ffmpeg_url(&self) -> String {
        match self {
            // Always through the `file:` protocol: a file named `concat:…` or
            // `subfile:…` must never reach FFmpeg's other protocols.
            Source::File { path } => format!("file:{}", path.to_string_lossy()),
            Source::Device { path } => path.to_string_lossy().into_owned(),
            Source::FrameFolder { dir, .. } => dir.to_string_lossy().into_owned(),
            Source::Network { url, .. } => url.clone(),
        }
    }
}

fn is_capture_device(path: &Path) -> bool {
    path.to_str()
        .and_then(|p| p.strip_prefix("/dev/video"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { path } | Source::Device { path } => write!(f, "{}", path.display()),
            Source::FrameFolder { dir, .. } => write!(f, "{}", dir.display()),
            Source::Network { url, .. } => f.write_str(&redact_credentials(url)),
        }
    }
}

/// Camera URLs often carry `user:password@`; never let those reach logs or errors.
pub fn redact_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_of_source() {
        assert_eq!(
            Source::parse("rtsp://cam.local/stream", 30.0).unwrap(),
            Source::Network {
                url: "rtsp://cam.local/stream".into(),
                protocol: NetworkProtocol::Rtsp
            }
        );
        assert!(matches!(
            Source::parse("HTTPS://x/y.m3u8", 30.0).unwrap(),
            Source::Network {
                protocol: NetworkProtocol::Http,
                ..
            }
        ));
        assert_eq!(
            Source::parse("/dev/video2", 30.0).unwrap(),
            Source::Device {
                path: "/dev/video2".into()
            }
        );
        assert!(matches!(
            Source::parse("/dev/videox", 30.0).unwrap(),
            Source::File { .. }
        ));
        let dir = tempfile::tempdir().unwrap();
        let dir_str = dir.path().to_str().unwrap();
        assert_eq!(
            Source::parse(dir_str, 6.0).unwrap(),
            Source::FrameFolder {
                dir: dir.path().into(),
                fps: 6.0
            }
        );
        assert_eq!(
            Source::parse(&format!("file://{dir_str}/a.mp4"), 30.0).unwrap(),
            Source::File {
                path: dir.path().join("a.mp4")
            }
        );
    }

    #[test]
    fn refuses_unknown_schemes_and_bad_fps() {
        assert!(matches!(
            Source::parse("concat://a|b", 30.0),
            Err(DecodeError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            Source::parse("a.mp4", 0.0),
            Err(DecodeError::InvalidOption(_))
        ));
        assert!(matches!(
            Source::parse("a.mp4", f64::NAN),
            Err(DecodeError::InvalidOption(_))
        ));
    }

    #[test]
    fn files_never_reach_other_ffmpeg_protocols() {
        let source = Source::parse("concat:a.mp4|b.mp4", 30.0).unwrap();
        assert_eq!(source.ffmpeg_url(), "file:concat:a.mp4|b.mp4");
    }

    #[test]
    fn hides_credentials() {
        assert_eq!(
            redact_credentials("rtsp://admin:secret@10.0.0.1:554/live"),
            "rtsp://***@10.0.0.1:554/live"
        );
        assert_eq!(redact_credentials("http://host/a@b"), "http://host/a@b");
        let source = Source::parse("rtsp://u:p@h/s", 30.0).unwrap();
        assert_eq!(source.to_string(), "rtsp://***@h/s");
    }
}
