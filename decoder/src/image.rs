//! Still images through OpenCV: the project's image toolbox for what FFmpeg
//! does not do well (JPEG for viewers, image files for frame folders).

use std::path::Path;

use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

use crate::error::{DecodeError, Result};

fn cv_error(during: &str) -> impl Fn(opencv::Error) -> DecodeError + '_ {
    move |e| DecodeError::Image(format!("{during}: {}", e.message))
}

/// Wraps packed RGB8 as an OpenCV BGR matrix (OpenCV's channel order).
fn rgb_to_bgr_mat(rgb: &[u8], width: u32, height: u32) -> Result<Mat> {
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected || width == 0 || height == 0 {
        return Err(DecodeError::InvalidOption(format!(
            "image has {} bytes, a {width}×{height} RGB image has {expected}",
            rgb.len()
        )));
    }
    let flat = Mat::from_slice(rgb).map_err(cv_error("wrapping pixels"))?;
    let rgb_mat = flat
        .reshape(3, height as i32)
        .map_err(cv_error("shaping pixels"))?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&rgb_mat, &mut bgr, imgproc::COLOR_RGB2BGR)
        .map_err(cv_error("converting colours"))?;
    Ok(bgr)
}

fn bgr_mat_to_rgb(bgr: &Mat) -> Result<(Vec<u8>, u32, u32)> {
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(bgr, &mut rgb, imgproc::COLOR_BGR2RGB)
        .map_err(cv_error("converting colours"))?;
    let bytes = rgb
        .data_bytes()
        .map_err(cv_error("reading pixels"))?
        .to_vec();
    Ok((bytes, rgb.cols() as u32, rgb.rows() as u32))
}

/// Encodes packed RGB8 as JPEG at `quality` (1–100).
pub fn encode_jpeg(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>> {
    let bgr = rgb_to_bgr_mat(rgb, width, height)?;
    let mut out = Vector::<u8>::new();
    let params = Vector::from_slice(&[
        imgcodecs::IMWRITE_JPEG_QUALITY,
        i32::from(quality.clamp(1, 100)),
    ]);
    imgcodecs::imencode(".jpg", &bgr, &mut out, &params).map_err(cv_error("encoding JPEG"))?;
    Ok(out.to_vec())
}

/// Decodes a JPEG or PNG held in memory to packed RGB8 (pixels, width, height).
pub fn decode_image(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32)> {
    let buffer = Vector::<u8>::from_slice(bytes);
    let bgr =
        imgcodecs::imdecode(&buffer, imgcodecs::IMREAD_COLOR).map_err(cv_error("decoding"))?;
    if bgr.empty() {
        return Err(DecodeError::Image("not a decodable image".into()));
    }
    bgr_mat_to_rgb(&bgr)
}

/// Writes packed RGB8 to an image file; the format follows the extension.
pub fn write_image(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let bgr = rgb_to_bgr_mat(rgb, width, height)?;
    let name = path.to_str().ok_or_else(|| {
        DecodeError::InvalidOption(format!("{} is not valid UTF-8", path.display()))
    })?;
    let written = imgcodecs::imwrite(name, &bgr, &Vector::new()).map_err(cv_error("writing"))?;
    if written {
        Ok(())
    } else {
        Err(DecodeError::Image(format!(
            "could not write {}",
            path.display()
        )))
    }
}

/// An RGB picture to draw on: lines, rectangles and text, for plots and
/// annotated frames.
pub struct Canvas {
    bgr: Mat,
}

fn bgr(colour: [u8; 3]) -> opencv::core::Scalar {
    opencv::core::Scalar::new(
        f64::from(colour[2]),
        f64::from(colour[1]),
        f64::from(colour[0]),
        0.0,
    )
}

impl Canvas {
    pub fn new(width: u32, height: u32, colour: [u8; 3]) -> Result<Self> {
        let bgr = Mat::new_rows_cols_with_default(
            height as i32,
            width as i32,
            opencv::core::CV_8UC3,
            bgr(colour),
        )
        .map_err(cv_error("creating a canvas"))?;
        Ok(Canvas { bgr })
    }

    /// A canvas holding a copy of packed RGB8 pixels.
    pub fn from_rgb(rgb: &[u8], width: u32, height: u32) -> Result<Self> {
        Ok(Canvas {
            bgr: rgb_to_bgr_mat(rgb, width, height)?,
        })
    }

    pub fn line(
        &mut self,
        from: (i32, i32),
        to: (i32, i32),
        colour: [u8; 3],
        thickness: i32,
    ) -> Result<()> {
        imgproc::line(
            &mut self.bgr,
            opencv::core::Point::new(from.0, from.1),
            opencv::core::Point::new(to.0, to.1),
            bgr(colour),
            thickness.max(1),
            imgproc::LINE_AA,
            0,
        )
        .map_err(cv_error("drawing a line"))
    }

    pub fn rectangle(
        &mut self,
        corner: (i32, i32),
        size: (i32, i32),
        colour: [u8; 3],
        thickness: i32,
    ) -> Result<()> {
        imgproc::rectangle(
            &mut self.bgr,
            opencv::core::Rect::new(corner.0, corner.1, size.0, size.1),
            bgr(colour),
            thickness,
            imgproc::LINE_8,
            0,
        )
        .map_err(cv_error("drawing a rectangle"))
    }

    /// Text with its baseline's left end at `at`; `scale` 0.5 is about 12 px high.
    pub fn text(&mut self, at: (i32, i32), text: &str, scale: f64, colour: [u8; 3]) -> Result<()> {
        imgproc::put_text(
            &mut self.bgr,
            text,
            opencv::core::Point::new(at.0, at.1),
            imgproc::FONT_HERSHEY_SIMPLEX,
            scale,
            bgr(colour),
            1,
            imgproc::LINE_AA,
            false,
        )
        .map_err(cv_error("drawing text"))
    }

    /// Packed RGB8 pixels (pixels, width, height).
    pub fn to_rgb(&self) -> Result<(Vec<u8>, u32, u32)> {
        bgr_mat_to_rgb(&self.bgr)
    }

    /// Saves as PNG or JPEG, by the extension.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (rgb, w, h) = self.to_rgb()?;
        write_image(path, &rgb, w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_round_trip_keeps_colours() {
        let (w, h) = (33u32, 17u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 40, 90]).collect();
        let jpeg = encode_jpeg(&rgb, w, h, 95).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let (back, bw, bh) = decode_image(&jpeg).unwrap();
        assert_eq!((bw, bh), (w, h));
        for (a, b) in back.iter().zip(&rgb) {
            assert!(a.abs_diff(*b) <= 4, "{a} vs {b}");
        }
        assert!(decode_image(b"not an image").is_err());

        let mut canvas = Canvas::new(40, 30, [255, 255, 255]).unwrap();
        canvas.line((0, 15), (39, 15), [255, 0, 0], 1).unwrap();
        canvas.rectangle((2, 2), (5, 5), [0, 0, 255], -1).unwrap();
        canvas.text((5, 28), "x", 0.4, [0, 0, 0]).unwrap();
        let (px, w, _) = canvas.to_rgb().unwrap();
        let at = |x: usize, y: usize| &px[(y * w as usize + x) * 3..(y * w as usize + x) * 3 + 3];
        // Anti-aliased: the line's row is mostly red.
        assert!(
            at(20, 15)[0] == 255 && at(20, 15)[1] < 64,
            "{:?}",
            at(20, 15)
        );
        assert_eq!(at(4, 4), [0, 0, 255]);
        assert_eq!(at(30, 5), [255, 255, 255]);
        assert!(encode_jpeg(&rgb[1..], w, h, 90).is_err());
    }
}
