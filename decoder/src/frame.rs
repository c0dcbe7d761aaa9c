use std::time::Instant;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame::video::Video as AvFrame;
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, Result};

/// One decoded picture, as packed RGB8.
#[derive(Clone)]
pub struct Frame {
    /// Position among all frames the source decoded (frames skipped by a stride
    /// or dropped by live pacing still count), starting at 0.
    pub index: u64,
    /// Presentation time in seconds from the start of the stream; strictly
    /// increasing even where the source's timestamps are missing or broken.
    pub pts: f64,
    pub source_width: u32,
    pub source_height: u32,
    /// Size of `rgb`, which is `width * height * 3` bytes, rows packed.
    pub width: u32,
    pub height: u32,
    /// The part of the picture holding the source image; smaller than
    /// `width × height` only under [`Resize::FitSquare`].
    pub content_width: u32,
    pub content_height: u32,
    pub rgb: Vec<u8>,
    /// When the decoder finished this frame: the start of its end-to-end latency.
    pub decoded_at: Instant,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("index", &self.index)
            .field("pts", &self.pts)
            .field("source", &(self.source_width, self.source_height))
            .field("size", &(self.width, self.height))
            .field("content", &(self.content_width, self.content_height))
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// The RGB triple at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let at = ((y as usize * self.width as usize) + x as usize) * 3;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }
}

/// The size frames are delivered at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Resize {
    /// The source's own size.
    #[default]
    Source,
    /// Stretched to exactly this size (OWL-ViT v1 stretches to a square).
    Exact { width: u32, height: u32 },
    /// Aspect kept, long side = `side`, padded right and bottom to `side × side`
    /// with `pad` (for models that pad to a square, as OWLv2 does).
    FitSquare { side: u32, pad: [u8; 3] },
}

impl Resize {
    /// Mid-grey, the closest byte to OWLv2's 0.5 padding.
    pub const OWLV2_PAD: [u8; 3] = [128, 128, 128];

    pub fn fit_square(side: u32) -> Self {
        Resize::FitSquare {
            side,
            pad: Self::OWLV2_PAD,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok = match *self {
            Resize::Source => true,
            Resize::Exact { width, height } => width > 0 && height > 0,
            Resize::FitSquare { side, .. } => side > 0,
        };
        if ok && self.max_side() <= MAX_SIDE {
            Ok(())
        } else {
            Err(DecodeError::InvalidOption(format!(
                "output size must be between 1 and {MAX_SIDE} pixels, got {self:?}"
            )))
        }
    }

    fn max_side(&self) -> u32 {
        match *self {
            Resize::Source => 0,
            Resize::Exact { width, height } => width.max(height),
            Resize::FitSquare { side, .. } => side,
        }
    }

    /// (canvas, content) sizes for a source of `width × height`.
    pub fn plan(&self, width: u32, height: u32) -> ((u32, u32), (u32, u32)) {
        match *self {
            Resize::Source => ((width, height), (width, height)),
            Resize::Exact {
                width: w,
                height: h,
            } => ((w, h), (w, h)),
            Resize::FitSquare { side, .. } => {
                let long = width.max(height).max(1) as f64;
                let fit = |v: u32| ((v as f64 * side as f64 / long).round() as u32).clamp(1, side);
                ((side, side), (fit(width), fit(height)))
            }
        }
    }
}

const MAX_SIDE: u32 = 16384;

/// Converts decoded pictures of any pixel format to packed RGB8 at the
/// requested size, rebuilding the swscale context when the input changes
/// (streams may change resolution mid-way, frame folders may mix sizes).
pub(crate) struct RgbConverter {
    resize: Resize,
    flags: scaling::Flags,
    context: Option<(ConverterKey, scaling::Context)>,
    scaled: AvFrame,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct ConverterKey {
    format: Pixel,
    width: u32,
    height: u32,
    color_space: ffmpeg::color::Space,
    color_range: ffmpeg::color::Range,
}

// The swscale context is only touched by the thread that owns the converter.
unsafe impl Send for RgbConverter {}

impl RgbConverter {
    pub(crate) fn new(resize: Resize) -> Self {
        RgbConverter {
            resize,
            flags: scaling::Flags::BILINEAR,
            context: None,
            scaled: AvFrame::empty(),
        }
    }

    pub(crate) fn convert(
        &mut self,
        decoded: &AvFrame,
        index: u64,
        pts: f64,
        decoded_at: Instant,
    ) -> Result<Frame> {
        let (source_width, source_height) = (decoded.width(), decoded.height());
        let ((width, height), (content_width, content_height)) =
            self.resize.plan(source_width, source_height);
        let key = ConverterKey {
            format: decoded.format(),
            width: source_width,
            height: source_height,
            color_space: decoded.color_space(),
            color_range: decoded.color_range(),
        };
        if self.context.as_ref().map(|(k, _)| *k) != Some(key) {
            let mut context = scaling::Context::get(
                key.format,
                source_width,
                source_height,
                Pixel::RGB24,
                content_width,
                content_height,
                self.flags,
            )
            .map_err(|e| DecodeError::ffmpeg("frame", "setting up the RGB converter", e))?;
            set_colorspace(&mut context, key.format, key.color_space, key.color_range);
            self.context = Some((key, context));
            self.scaled = AvFrame::empty();
        }
        let Some((_, context)) = self.context.as_mut() else {
            unreachable!("converter context set just above")
        };
        context
            .run(decoded, &mut self.scaled)
            .map_err(|e| DecodeError::ffmpeg("frame", "converting to RGB", e))?;

        let mut rgb = match self.resize {
            Resize::FitSquare { pad, .. } => pad.repeat((width * height) as usize),
            _ => vec![0; (width * height * 3) as usize],
        };
        copy_rows(
            self.scaled.data(0),
            self.scaled.stride(0),
            &mut rgb,
            width as usize * 3,
            content_width as usize * 3,
            content_height as usize,
        );
        Ok(Frame {
            index,
            pts,
            source_width,
            source_height,
            width,
            height,
            content_width,
            content_height,
            rgb,
            decoded_at,
        })
    }
}

/// Copies `rows` rows of `row_bytes` from a strided plane into a packed buffer.
/// FFmpeg pads each row to its own alignment, so width × 3 is not the stride.
pub(crate) fn copy_rows(
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    row_bytes: usize,
    rows: usize,
) {
    for (src_row, dst_row) in src
        .chunks(src_stride)
        .zip(dst.chunks_mut(dst_stride))
        .take(rows)
    {
        dst_row[..row_bytes].copy_from_slice(&src_row[..row_bytes]);
    }
}

/// Uses the frame's own YUV matrix and range, as FFmpeg's scale filter does;
/// swscale alone would assume BT.601 limited range and shift HD colours.
fn set_colorspace(
    context: &mut scaling::Context,
    format: Pixel,
    space: ffmpeg::color::Space,
    range: ffmpeg::color::Range,
) {
    use ffmpeg::ffi;
    let colorspace = match space {
        ffmpeg::color::Space::BT709 => ffi::SWS_CS_ITU709,
        ffmpeg::color::Space::FCC => ffi::SWS_CS_FCC,
        ffmpeg::color::Space::SMPTE240M => ffi::SWS_CS_SMPTE240M,
        ffmpeg::color::Space::BT2020NCL | ffmpeg::color::Space::BT2020CL => ffi::SWS_CS_BT2020,
        _ => ffi::SWS_CS_DEFAULT,
    };
    let full_range = i32::from(range == ffmpeg::color::Range::JPEG);
    if !is_yuv(format) {
        return;
    }
    // SAFETY: the context is valid for its whole lifetime; the coefficient
    // tables are static arrays owned by libswscale.
    unsafe {
        let context = context.as_mut_ptr();
        let mut inv_table: *mut i32 = std::ptr::null_mut();
        let mut table: *mut i32 = std::ptr::null_mut();
        let (mut src_range, mut dst_range) = (0, 0);
        let (mut brightness, mut contrast, mut saturation) = (0, 0, 0);
        if ffi::sws_getColorspaceDetails(
            context,
            &mut inv_table,
            &mut src_range,
            &mut table,
            &mut dst_range,
            &mut brightness,
            &mut contrast,
            &mut saturation,
        ) < 0
        {
            return; // RGB input: there is no YUV matrix to choose
        }
        let coefficients = ffi::sws_getCoefficients(colorspace);
        ffi::sws_setColorspaceDetails(
            context,
            coefficients,
            full_range,
            table,
            dst_range,
            brightness,
            contrast,
            saturation,
        );
    }
}

fn is_yuv(format: Pixel) -> bool {
    use ffmpeg::ffi;
    // SAFETY: descriptors are static tables; null for unknown formats.
    unsafe {
        let descriptor = ffi::av_pix_fmt_desc_get(format.into());
        !descriptor.is_null()
            && (*descriptor).nb_components >= 3
            && (*descriptor).flags & (ffi::AV_PIX_FMT_FLAG_RGB as u64) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_square_keeps_aspect() {
        assert_eq!(
            Resize::fit_square(768).plan(1920, 1080),
            ((768, 768), (768, 432))
        );
        assert_eq!(
            Resize::fit_square(100).plan(242, 322),
            ((100, 100), (75, 100))
        );
        assert_eq!(Resize::fit_square(10).plan(1000, 1), ((10, 10), (10, 1)));
    }

    #[test]
    fn rejects_degenerate_sizes() {
        assert!(Resize::Exact {
            width: 0,
            height: 4
        }
        .validate()
        .is_err());
        assert!(Resize::fit_square(100_000).validate().is_err());
        assert!(Resize::Source.validate().is_ok());
    }

    #[test]
    fn copies_by_stride() {
        let src = [1, 2, 3, 9, 4, 5, 6, 9];
        let mut dst = [0; 6];
        copy_rows(&src, 4, &mut dst, 3, 3, 2);
        assert_eq!(dst, [1, 2, 3, 4, 5, 6]);
    }
}
