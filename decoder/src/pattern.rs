//! A moving test pattern, for sample videos and decoding benchmarks.

use std::path::Path;

use crate::error::Result;
use crate::writer::{VideoWriter, WriterOptions};

/// Draws frame `index` of the pattern: a diagonal gradient with three solid
/// squares (red, green, blue) moving on different paths. Deterministic, so a
/// reader can check what it decoded.
pub fn pattern_frame(width: u32, height: u32, index: u64, fps: f64) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut rgb = vec![0u8; w * h * 3];
    let t = index as f64 / fps;
    for (y, row) in rgb.chunks_mut(w * 3).enumerate() {
        for (x, px) in row.chunks_mut(3).enumerate() {
            let g = ((x + y) * 160 / (w + h).max(1)) as u8;
            px.copy_from_slice(&[40 + g / 2, 40 + g / 3, 60 + g / 2]);
        }
    }
    let side = (w.min(h) / 6).max(2);
    let squares = [
        (
            [220, 40, 40],
            0.15 + 0.7 * (0.5 + 0.5 * (t * 0.9).sin()),
            0.3,
        ),
        (
            [40, 200, 60],
            0.5,
            0.15 + 0.7 * (0.5 + 0.5 * (t * 1.3).cos()),
        ),
        ([50, 70, 230], 0.2 + 0.6 * ((t * 0.25).fract()), 0.75),
    ];
    for (colour, cx, cy) in squares {
        let x0 = ((cx * w as f64) as usize)
            .saturating_sub(side / 2)
            .min(w - side.min(w));
        let y0 = ((cy * h as f64) as usize)
            .saturating_sub(side / 2)
            .min(h - side.min(h));
        for y in y0..(y0 + side).min(h) {
            for x in x0..(x0 + side).min(w) {
                let at = (y * w + x) * 3;
                rgb[at..at + 3].copy_from_slice(&colour);
            }
        }
    }
    rgb
}

/// Writes `frames` frames of the pattern; `on_frame` sees each index written
/// (for progress bars).
pub fn write_pattern_video(
    path: &Path,
    width: u32,
    height: u32,
    frames: u64,
    options: &WriterOptions,
    mut on_frame: impl FnMut(u64),
) -> Result<u64> {
    let mut writer = VideoWriter::create(path, width, height, options)?;
    for index in 0..frames {
        writer.write(&pattern_frame(width, height, index, options.fps))?;
        on_frame(index);
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squares_move_and_stay_inside() {
        let a = pattern_frame(64, 48, 0, 25.0);
        let b = pattern_frame(64, 48, 25, 25.0);
        assert_eq!(a.len(), 64 * 48 * 3);
        assert_ne!(a, b);
        assert!(a.chunks(3).any(|p| p == [220, 40, 40]));
        assert!(b.chunks(3).any(|p| p == [50, 70, 230]));
        // Tiny frames do not panic.
        assert_eq!(pattern_frame(1, 1, 3, 25.0).len(), 3);
    }
}
