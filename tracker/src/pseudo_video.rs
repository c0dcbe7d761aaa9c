//! Pseudo-videos from still images, as Video OWL-ViT adds to its training
//! data: annotated videos are few, annotated images many. A virtual camera
//! moves over a still by a smooth random zoom and pan; each frame is what its
//! window sees, resampled to the still's size, and every annotated box
//! becomes a track followed through the windows (leaving and re-entering the
//! view as the camera moves).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::coco::DetectionGroundTruth;
use crate::error::{Result, TrackerError};
use crate::rng::Pcg;
use crate::training::visible_part;

/// The part of a still one frame shows: `[x, y, w, h]` in the still's
/// pixels, always inside it and with the still's aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Window {
    fn as_array(self) -> [f64; 4] {
        [self.x, self.y, self.width, self.height]
    }
}

/// How the virtual camera moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraMotion {
    pub frames: usize,
    /// The largest enlargement (1 = the whole still).
    pub max_zoom: f64,
}

/// One frame's view: where the window sits, as a zoom (≥ 1) and a place
/// (0–1 along each free range, so that the window never leaves the still).
#[derive(Debug, Clone, Copy)]
struct View {
    zoom: f64,
    at: (f64, f64),
}

impl View {
    fn random(max_zoom: f64, rng: &mut Pcg) -> Self {
        // Log-uniform: a zoom from 1× to 2× is as likely as one from 2× to 4×.
        let zoom = rng.range(0.0, max_zoom.max(1.0).ln()).exp();
        View {
            zoom,
            at: (rng.unit(), rng.unit()),
        }
    }

    fn window(self, width: u32, height: u32) -> Window {
        let (w, h) = (f64::from(width), f64::from(height));
        let (ww, wh) = (w / self.zoom, h / self.zoom);
        Window {
            x: self.at.0 * (w - ww),
            y: self.at.1 * (h - wh),
            width: ww,
            height: wh,
        }
    }
}

/// The windows of a pseudo-video over a `width`×`height` still: from one
/// random view to another, eased in and out (no jump in speed at either end),
/// with the zoom interpolated geometrically so that it looks steady.
pub fn camera_path(width: u32, height: u32, motion: CameraMotion, rng: &mut Pcg) -> Vec<Window> {
    let (from, to) = (
        View::random(motion.max_zoom, rng),
        View::random(motion.max_zoom, rng),
    );
    let last = motion.frames.saturating_sub(1).max(1) as f64;
    (0..motion.frames)
        .map(|f| {
            let s = (1.0 - (std::f64::consts::PI * f as f64 / last).cos()) / 2.0;
            let mix = |a: f64, b: f64| a + (b - a) * s;
            View {
                zoom: mix(from.zoom.ln(), to.zoom.ln()).exp(),
                at: (mix(from.at.0, to.at.0), mix(from.at.1, to.at.1)),
            }
            .window(width, height)
        })
        .collect()
}

/// What `window` of the `width`×`height` RGB still shows, resampled
/// (bilinear) to `width`×`height`.
pub fn render(rgb: &[u8], width: u32, height: u32, window: Window) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0u8; w * h * 3];
    if rgb.len() < w * h * 3 || w == 0 || h == 0 {
        return out;
    }
    let (sx, sy) = (window.width / w as f64, window.height / h as f64);
    let sample = |pos: f64, len: usize| -> (usize, usize, f64) {
        let pos = pos.clamp(0.0, (len - 1) as f64);
        let lo = pos.floor() as usize;
        (lo, (lo + 1).min(len - 1), pos - lo as f64)
    };
    for v in 0..h {
        let (y0, y1, fy) = sample(window.y + (v as f64 + 0.5) * sy - 0.5, h);
        for u in 0..w {
            let (x0, x1, fx) = sample(window.x + (u as f64 + 0.5) * sx - 0.5, w);
            let at = |x: usize, y: usize, c: usize| f64::from(rgb[(y * w + x) * 3 + c]);
            for c in 0..3 {
                let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
                let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
                out[(v * w + u) * 3 + c] = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
        }
    }
    out
}

/// A still's annotated box: `[x, y, w, h]` in pixels, its category's index
/// in the vocabulary, and the track it becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StillBox {
    pub bbox: [f64; 4],
    pub label: usize,
    pub track: u64,
}

/// The boxes `window` shows, in the pixels of its frame (the still's size);
/// boxes showing less than a tenth of themselves are left out, as the
/// synthetic world's ground truth leaves out hidden objects.
pub fn boxes_in(boxes: &[StillBox], window: Window, width: u32, height: u32) -> Vec<StillBox> {
    let (scale_x, scale_y) = (
        f64::from(width) / window.width,
        f64::from(height) / window.height,
    );
    boxes
        .iter()
        .filter_map(|b| {
            let [x, y, w, h] = visible_part(b.bbox, window.as_array())?;
            Some(StillBox {
                bbox: [x * scale_x, y * scale_y, w * scale_x, h * scale_y],
                ..*b
            })
        })
        .collect()
}

/// The index of the category `name` in `vocabulary`, added if new: datasets
/// trained on together share their categories by name.
pub(crate) fn vocabulary_label(vocabulary: &mut Vec<String>, name: &str) -> usize {
    vocabulary
        .iter()
        .position(|known| known == name)
        .unwrap_or_else(|| {
            vocabulary.push(name.to_string());
            vocabulary.len() - 1
        })
}

/// An annotated still image.
#[derive(Debug, Clone)]
pub struct Still {
    pub id: u64,
    pub file: PathBuf,
    pub width: u32,
    pub height: u32,
    pub boxes: Vec<StillBox>,
}

/// The annotated stills of the COCO-format dataset in `data`
/// (`annotations.json` and the images it names), at most `limit` of them
/// spread evenly over the dataset; category names are looked up in (and
/// added to) `vocabulary`. Images missing on disk are skipped.
pub fn load_stills(
    data: &Path,
    limit: Option<usize>,
    vocabulary: &mut Vec<String>,
) -> Result<Vec<Still>> {
    let path = data.join("annotations.json");
    let dataset = DetectionGroundTruth::read(&path)?;
    let label_of: BTreeMap<u64, usize> = dataset
        .categories
        .iter()
        .map(|c| (c.id, vocabulary_label(vocabulary, &c.name)))
        .collect();
    let mut boxes: BTreeMap<u64, Vec<StillBox>> = BTreeMap::new();
    // A crowd region is many objects under one box: no single track.
    for a in dataset.annotations.iter().filter(|a| !a.iscrowd) {
        let Some(&label) = label_of.get(&a.category_id) else {
            continue;
        };
        if a.bbox[2] > 0.0 && a.bbox[3] > 0.0 {
            boxes.entry(a.image_id).or_default().push(StillBox {
                bbox: a.bbox,
                label,
                track: a.id,
            });
        }
    }
    let (mut missing, mut without_size) = (0usize, 0usize);
    let stills: Vec<Still> = dataset
        .images
        .iter()
        .filter_map(|image| {
            let (Some(width @ 2..), Some(height @ 2..)) = (image.width, image.height) else {
                without_size += 1;
                return None;
            };
            let file = data.join(&image.file_name);
            if !file.is_file() {
                missing += 1;
                return None;
            }
            Some(Still {
                id: image.id,
                file,
                width,
                height,
                boxes: boxes.remove(&image.id).unwrap_or_default(),
            })
        })
        .collect();
    if missing > 0 {
        tracing::warn!(missing, data = %data.display(), "stills named by the annotations but not on disk were skipped");
    }
    if without_size > 0 {
        tracing::warn!(without_size, data = %data.display(), "stills without a width and height of at least 2 were skipped");
    }
    if stills.is_empty() {
        return Err(TrackerError::Format {
            path,
            reason: "no annotated images on disk".into(),
        });
    }
    Ok(match limit {
        Some(limit) if limit < stills.len() => (0..limit)
            .map(|i| stills[i * stills.len() / limit].clone())
            .collect(),
        _ => stills,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOTION: CameraMotion = CameraMotion {
        frames: 24,
        max_zoom: 3.0,
    };

    #[test]
    fn the_camera_moves_smoothly_inside_the_still() {
        for seed in 0..20 {
            let path = camera_path(640, 360, MOTION, &mut Pcg::new(seed, 1));
            assert_eq!(path.len(), 24);
            for w in &path {
                assert!(w.x >= -1e-9 && w.y >= -1e-9, "{w:?}");
                assert!(w.x + w.width <= 640.0 + 1e-9 && w.y + w.height <= 360.0 + 1e-9);
                assert!((w.width / w.height - 640.0 / 360.0).abs() < 1e-9);
                let zoom = 640.0 / w.width;
                assert!((1.0 - 1e-9..=3.0 + 1e-9).contains(&zoom), "{zoom}");
            }
            // Smooth: the speed changes little from one frame to the next,
            // never jumps, and starts and ends near rest.
            let step = |a: &Window, b: &Window| {
                (a.x - b.x).abs() + (a.y - b.y).abs() + (a.width - b.width).abs()
            };
            let steps: Vec<f64> = path.windows(2).map(|p| step(&p[0], &p[1])).collect();
            let fastest = steps.iter().cloned().fold(0.0, f64::max);
            let mean = steps.iter().sum::<f64>() / steps.len() as f64;
            assert!(fastest <= 2.5 * mean + 1e-9, "{steps:?}");
            assert!(steps
                .windows(2)
                .all(|s| (s[1] - s[0]).abs() <= 0.25 * fastest + 1e-9));
            assert!(steps[0] <= 0.25 * fastest + 1e-9 && steps[22] <= 0.25 * fastest + 1e-9);
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_path_and_others_differ() {
        let a = camera_path(320, 240, MOTION, &mut Pcg::new(5, 9));
        assert_eq!(a, camera_path(320, 240, MOTION, &mut Pcg::new(5, 9)));
        assert_ne!(a, camera_path(320, 240, MOTION, &mut Pcg::new(5, 10)));
    }

    #[test]
    fn the_whole_still_renders_as_itself_and_a_zoom_enlarges() {
        // A 4×2 still whose pixel (x, y) holds 10 x + 100 y in every channel.
        let rgb: Vec<u8> = (0..2u8)
            .flat_map(|y| (0..4u8).flat_map(move |x| [10 * x + 100 * y; 3]))
            .collect();
        let whole = Window {
            x: 0.0,
            y: 0.0,
            width: 4.0,
            height: 2.0,
        };
        assert_eq!(render(&rgb, 4, 2, whole), rgb);
        // The right half, enlarged 2×: each output pixel centre maps to
        // x = 2 + (u + 0.5) / 2 − 0.5 in the still, between its pixels.
        let right = Window {
            x: 2.0,
            y: 0.0,
            width: 2.0,
            height: 1.0,
        };
        let zoomed = render(&rgb, 4, 2, right);
        let row0: Vec<u8> = zoomed[..12].chunks(3).map(|p| p[0]).collect();
        assert_eq!(row0, vec![18, 23, 28, 30]);
        // The bottom output row samples y = 0.25: 0.25 × 100 added.
        let row1: Vec<u8> = zoomed[12..].chunks(3).map(|p| p[0]).collect();
        assert_eq!(row1, vec![43, 48, 53, 55]);
    }

    #[test]
    fn boxes_follow_the_window_and_leave_with_it() {
        let boxes = [
            StillBox {
                bbox: [110.0, 60.0, 20.0, 10.0],
                label: 1,
                track: 7,
            },
            StillBox {
                bbox: [0.0, 0.0, 10.0, 10.0],
                label: 2,
                track: 8,
            },
        ];
        let window = Window {
            x: 100.0,
            y: 50.0,
            width: 100.0,
            height: 50.0,
        };
        let seen = boxes_in(&boxes, window, 200, 100);
        assert_eq!(
            seen,
            vec![StillBox {
                bbox: [20.0, 20.0, 40.0, 20.0],
                label: 1,
                track: 7
            }]
        );
    }

    /// Rendered pseudo-frames of a synthetic still: each object's box in the
    /// frame bounds its colour's pixels there, as closely as resampling
    /// allows.
    #[test]
    fn rendered_boxes_bound_the_objects_pixels() {
        let (w, h) = (160u32, 120u32);
        let mut rgb = vec![40u8; (w * h * 3) as usize];
        let objects = [
            ([30.0, 20.0, 24.0, 16.0], [250u8, 0, 0]),
            ([100.0, 70.0, 30.0, 30.0], [0, 250, 0]),
        ];
        for (bbox, colour) in objects {
            for y in bbox[1] as usize..(bbox[1] + bbox[3]) as usize {
                for x in bbox[0] as usize..(bbox[0] + bbox[2]) as usize {
                    let at = (y * w as usize + x) * 3;
                    rgb[at..at + 3].copy_from_slice(&colour);
                }
            }
        }
        let boxes: Vec<StillBox> = objects
            .iter()
            .enumerate()
            .map(|(i, (bbox, _))| StillBox {
                bbox: *bbox,
                label: i,
                track: i as u64,
            })
            .collect();
        let motion = CameraMotion {
            frames: 12,
            max_zoom: 2.5,
        };
        let mut checked = 0;
        for seed in 0..6 {
            for window in camera_path(w, h, motion, &mut Pcg::new(seed, 3)) {
                let frame = render(&rgb, w, h, window);
                for b in boxes_in(&boxes, window, w, h) {
                    let colour = objects[b.label].1;
                    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
                    for y in 0..h {
                        for x in 0..w {
                            let at = ((y * w + x) * 3) as usize;
                            let close = (0..3).all(|c| frame[at + c].abs_diff(colour[c]) < 30);
                            if close {
                                (x0, y0) = (x0.min(x), y0.min(y));
                                (x1, y1) = (x1.max(x + 1), y1.max(y + 1));
                            }
                        }
                    }
                    assert!(x0 < x1, "object {} not drawn", b.label);
                    let [bx, by, bw, bh] = b.bbox;
                    let zoom = f64::from(w) / window.width;
                    for (edge, truth) in [(x0, bx), (y0, by), (x1, bx + bw), (y1, by + bh)] {
                        assert!(
                            (f64::from(edge) - truth).abs() <= zoom + 1.0,
                            "edge {edge} vs {truth} at zoom {zoom}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "{checked}");
    }
}
