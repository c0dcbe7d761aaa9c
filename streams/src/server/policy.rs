//! Which sources clients may open: network URLs of allowed schemes, files
//! and frame folders under one root, capture devices only when allowed —
//! and never one of FFmpeg's protocols that reach other files or hosts
//! (`concat:`, `subfile:`, `pipe:`, `data:`, …).

use std::path::{Component, Path, PathBuf};

use owltrack_decoder::{Source, DEFAULT_FOLDER_FPS};

/// The network schemes a server accepts unless told otherwise.
pub const DEFAULT_SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "rtp",
];

#[derive(Debug, Clone)]
pub struct SourcePolicy {
    /// Lower-case URL schemes clients may use.
    pub schemes: Vec<String>,
    /// Files and frame folders must lie under this folder (canonical);
    /// None: no local files at all.
    pub files_root: Option<PathBuf>,
    /// Capture devices (`/dev/videoN`).
    pub allow_devices: bool,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        SourcePolicy {
            schemes: DEFAULT_SCHEMES.iter().map(|s| (*s).to_owned()).collect(),
            files_root: None,
            allow_devices: false,
        }
    }
}

impl SourcePolicy {
    /// With `root` as the folder local sources must lie under.
    pub fn with_files_root(mut self, root: &Path) -> std::io::Result<Self> {
        self.files_root = Some(root.canonicalize()?);
        Ok(self)
    }

    /// The source `input` names, if this policy allows it; otherwise why not.
    pub fn check(&self, input: &str) -> Result<Source, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("the source is empty".into());
        }
        if input.chars().any(char::is_control) {
            return Err("the source contains control characters".into());
        }
        if let Some((scheme, rest)) = input.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                return self.check_path(rest);
            }
            if !self.schemes.contains(&scheme) {
                return Err(format!(
                    "the scheme {scheme}:// is not allowed (allowed: {})",
                    self.schemes.join(", ")
                ));
            }
            return Source::parse(input, DEFAULT_FOLDER_FPS).map_err(|e| e.to_string());
        }
        if let Some(protocol) = ffmpeg_protocol_prefix(input) {
            return Err(format!(
                "FFmpeg's {protocol}: protocol is not allowed; give a network URL or a file under the server's --allow-files folder"
            ));
        }
        self.check_path(input)
    }

    fn check_path(&self, input: &str) -> Result<Source, String> {
        let path = Path::new(input);
        if is_capture_device(path) {
            if !self.allow_devices {
                return Err(
                    "capture devices are not allowed (start the server with --allow-devices)"
                        .into(),
                );
            }
            return Source::parse(input, DEFAULT_FOLDER_FPS).map_err(|e| e.to_string());
        }
        let Some(root) = &self.files_root else {
            return Err(
                "local files are not allowed (start the server with --allow-files DIR)".into(),
            );
        };
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err("the path may not contain `..`".into());
        }
        let joined = if path.is_absolute() {
            path.to_owned()
        } else {
            root.join(path)
        };
        // Canonical paths resolve symbolic links, so a link inside the root
        // that points outside it is refused too.
        let resolved = joined
            .canonicalize()
            .map_err(|_| format!("no such file or folder under the allowed folder: {input}"))?;
        if !resolved.starts_with(root) {
            return Err(format!("{input} is outside the allowed folder"));
        }
        let text = resolved
            .to_str()
            .ok_or_else(|| "the path is not valid UTF-8".to_string())?;
        Source::parse(text, DEFAULT_FOLDER_FPS).map_err(|e| e.to_string())
    }
}

/// `concat:a|b`, `subfile:…`, `pipe:0`, `data:…`: an FFmpeg protocol prefix
/// (letters, digits, `+`, `-`, `.` before a colon, as URL schemes are).
fn ffmpeg_protocol_prefix(input: &str) -> Option<&str> {
    let (prefix, _) = input.split_once(':')?;
    let looks_like_scheme = prefix.len() > 1
        && prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    looks_like_scheme.then_some(prefix)
}

fn is_capture_device(path: &Path) -> bool {
    path.to_str()
        .and_then(|p| p.strip_prefix("/dev/video"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_with_root() -> (tempfile::TempDir, SourcePolicy) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clip.mp4"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("frames")).unwrap();
        let policy = SourcePolicy::default().with_files_root(dir.path()).unwrap();
        (dir, policy)
    }

    #[test]
    fn network_urls_of_allowed_schemes_pass() {
        let policy = SourcePolicy::default();
        for url in [
            "rtsp://cam.local/stream",
            "HTTP://host/live.m3u8",
            "srt://10.0.0.1:9000",
        ] {
            assert!(
                matches!(policy.check(url), Ok(Source::Network { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn other_schemes_and_ffmpeg_protocols_are_refused() {
        let (_dir, policy) = policy_with_root();
        for input in [
            "gopher://host/x",
            "concat:/etc/passwd|/etc/hosts",
            "subfile:,start,0,end,100,:/etc/passwd",
            "pipe:0",
            "data:video/mp4;base64,AAAA",
            "tcp+tls:host",
            "ftp://host/video.mp4",
        ] {
            let error = policy.check(input).unwrap_err();
            assert!(
                error.contains("not allowed"),
                "{input} should be refused: {error}"
            );
        }
    }

    #[test]
    fn files_need_a_root_and_must_stay_inside_it() {
        let error = SourcePolicy::default().check("/tmp/clip.mp4").unwrap_err();
        assert!(error.contains("--allow-files"), "{error}");

        let (dir, policy) = policy_with_root();
        let inside = policy.check("clip.mp4").unwrap();
        assert!(matches!(inside, Source::File { .. }));
        let absolute = dir.path().join("clip.mp4");
        assert!(policy.check(absolute.to_str().unwrap()).is_ok());
        let url = format!("file://{}", absolute.display());
        assert!(policy.check(&url).is_ok());
        assert!(matches!(
            policy.check("frames").unwrap(),
            Source::FrameFolder { .. }
        ));

        assert!(policy.check("../clip.mp4").unwrap_err().contains("`..`"));
        assert!(policy.check("/etc/passwd").unwrap_err().contains("outside"));
        assert!(policy
            .check("file:///etc/passwd")
            .unwrap_err()
            .contains("outside"));
        assert!(policy.check("missing.mp4").unwrap_err().contains("no such"));
    }

    #[test]
    fn links_out_of_the_root_are_refused() {
        let (dir, policy) = policy_with_root();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("escape.mp4")).unwrap();
        let error = policy.check("escape.mp4").unwrap_err();
        assert!(
            error.contains("outside") || error.contains("no such"),
            "{error}"
        );
    }

    #[test]
    fn devices_only_when_allowed() {
        assert!(SourcePolicy::default().check("/dev/video0").is_err());
        let policy = SourcePolicy {
            allow_devices: true,
            ..SourcePolicy::default()
        };
        assert!(matches!(
            policy.check("/dev/video0"),
            Ok(Source::Device { .. })
        ));
    }

    #[test]
    fn empty_and_control_characters_are_refused() {
        let policy = SourcePolicy::default();
        assert!(policy.check("  ").is_err());
        assert!(policy.check("rtsp://a/\nb").is_err());
    }
}
