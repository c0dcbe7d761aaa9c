//! Folders of still frames, as the TAO dataset ships its videos.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use ffmpeg::codec::Id;
use ffmpeg::util::frame::video::Video as AvFrame;
use ffmpeg::Packet;
use ffmpeg_next as ffmpeg;

use crate::error::{DecodeError, Result};
use crate::input::StreamInfo;
use crate::stats::Counters;

/// The image files of a frame folder in play order.
pub fn list_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|error| DecodeError::io(dir, error))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && image_codec(path).is_some())
        .collect();
    if files.is_empty() {
        return Err(DecodeError::EmptyFolder(dir.to_owned()));
    }
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

fn image_codec(path: &Path) -> Option<Id> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some(Id::MJPEG),
        "png" => Some(Id::PNG),
        _ => None,
    }
}

/// Orders names as people do: `frame2.jpg` before `frame10.jpg`. Zero-padded
/// names (TAO's) sort the same either way.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let trim = |s: &[u8]| {
                    let zeros = s.iter().take_while(|c| **c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (da, db) = (trim(&a[..na]), trim(&b[..nb]));
                let by_value = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                if na != nb {
                    return na.cmp(&nb);
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Decodes still images with FFmpeg's own JPEG and PNG decoders, so frames
/// from folders take exactly the colour path that video frames take.
///
/// Each image gets a fresh decoder: FFmpeg's PNG decoder carries state from
/// one picture to the next (it would blend them), and an open costs
/// microseconds against the milliseconds of the decode itself. An unreadable
/// or corrupt file is an error for the caller to count and skip.
pub(crate) fn decode_image_file(path: &Path, into: &mut AvFrame) -> Result<()> {
    let id = image_codec(path)
        .ok_or_else(|| DecodeError::Image(format!("{} is not a JPEG or PNG", path.display())))?;
    let bytes = std::fs::read(path).map_err(|error| DecodeError::io(path, error))?;
    if bytes.is_empty() {
        return Err(DecodeError::EmptyFile(path.to_owned()));
    }
    let label = path.display().to_string();
    let codec = ffmpeg::decoder::find(id).ok_or_else(|| DecodeError::UnsupportedCodec {
        input: label.clone(),
        codec: format!("{id:?}").to_lowercase(),
    })?;
    let mut decoder = ffmpeg::codec::context::Context::new_with_codec(codec)
        .decoder()
        .video()
        .map_err(|e| DecodeError::ffmpeg(&label, "opening the image decoder", e))?;
    decoder
        .send_packet(&Packet::copy(&bytes))
        .map_err(|e| DecodeError::ffmpeg(&label, "decoding the image", e))?;
    let _ = decoder.send_eof();
    decoder
        .receive_frame(into)
        .map_err(|e| DecodeError::ffmpeg(&label, "decoding the image", e))
}

/// Decodes each image, passing (index, picture) on; damaged images are
/// counted as decode errors and skipped, so one bad file costs one frame.
pub(crate) fn for_each_frame(
    files: &[PathBuf],
    counters: &Counters,
    mut on_frame: impl FnMut(u64, &AvFrame) -> crate::input::Flow,
) {
    let mut picture = AvFrame::empty();
    for (index, path) in files.iter().enumerate() {
        counters.add(&counters.packets, 1);
        match decode_image_file(path, &mut picture) {
            Ok(()) => {
                counters.add(&counters.frames_decoded, 1);
                if on_frame(index as u64, &picture) == crate::input::Flow::Stop {
                    return;
                }
            }
            Err(error) => {
                counters.add(&counters.decode_errors, 1);
                tracing::warn!(%error, "skipping a frame that cannot be decoded");
            }
        }
    }
}

/// Describes a frame folder from its first decodable image.
pub(crate) fn stream_info(files: &[PathBuf], fps: f64) -> Result<StreamInfo> {
    // The first decodable image gives the size; later ones may differ.
    let mut picture = AvFrame::empty();
    let mut last_error = None;
    for path in files.iter().take(16) {
        match decode_image_file(path, &mut picture) {
            Ok(()) => {
                let codec = match path.extension().and_then(|e| e.to_str()) {
                    Some(e) if e.eq_ignore_ascii_case("png") => "png",
                    _ => "mjpeg",
                };
                return Ok(StreamInfo {
                    container: "image folder".into(),
                    codec: codec.into(),
                    pixel_format: format!("{:?}", picture.format()).to_lowercase(),
                    width: picture.width(),
                    height: picture.height(),
                    fps: Some(fps),
                    duration: Some(files.len() as f64 / fps),
                    frames: Some(files.len() as u64),
                });
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| DecodeError::EmptyFolder(Default::default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["f10.jpg", "f2.jpg", "f1.png", "f02.jpg", "a.jpg", "f2a.jpg"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["a.jpg", "f1.png", "f2.jpg", "f2a.jpg", "f02.jpg", "f10.jpg"]
        );
        assert_eq!(
            natural_cmp("frame_000010.jpg", "frame_000009.jpg"),
            Ordering::Greater
        );
    }
}
