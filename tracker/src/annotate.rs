//! Annotated video: each frame with its tracks' boxes, ids, labels and short
//! trails of their recent centres.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use owltrack_decoder::image::Canvas;
use owltrack_decoder::{VideoWriter, WriterOptions};

use crate::error::Result;
use crate::update::TrackUpdate;

/// Centres remembered per track for its trail.
const TRAIL: usize = 20;

/// Distinct, saturated colours; a track keeps its colour for life.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
];

pub struct Annotator {
    writer: VideoWriter,
    trails: HashMap<u64, VecDeque<(i32, i32)>>,
    width: u32,
    height: u32,
}

impl Annotator {
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Self> {
        let options = WriterOptions {
            fps: if fps.is_finite() && fps > 0.0 {
                fps
            } else {
                25.0
            },
            quality: 23,
            ..WriterOptions::default()
        };
        Ok(Annotator {
            writer: VideoWriter::create(path, width, height, &options)?,
            trails: HashMap::new(),
            width,
            height,
        })
    }

    /// Draws `update` over the frame's pixels and writes the frame at its
    /// presentation time.
    pub fn draw(&mut self, rgb: &[u8], update: &TrackUpdate) -> Result<()> {
        let mut canvas = Canvas::from_rgb(rgb, self.width, self.height)?;
        let seen: std::collections::HashSet<u64> = update.tracks.iter().map(|t| t.id).collect();
        self.trails.retain(|id, _| seen.contains(id));
        for t in &update.tracks {
            let colour = PALETTE[(t.id as usize) % PALETTE.len()];
            let [x0, y0, x1, y1] = t.corners.map(|v| v.round() as i32);
            canvas.rectangle((x0, y0), ((x1 - x0).max(1), (y1 - y0).max(1)), colour, 2)?;
            let trail = self.trails.entry(t.id).or_default();
            trail.push_back(((x0 + x1) / 2, (y0 + y1) / 2));
            if trail.len() > TRAIL {
                trail.pop_front();
            }
            for (a, b) in trail.iter().zip(trail.iter().skip(1)) {
                canvas.line(*a, *b, colour, 2)?;
            }
            let caption = match &t.label {
                Some(label) => format!("#{} {} {:.2}", t.id, label, t.score),
                None => format!("#{} {:.2}", t.id, t.score),
            };
            let baseline = if y0 > 14 { y0 - 4 } else { y1 + 14 };
            canvas.text((x0, baseline), &caption, 0.45, colour)?;
        }
        let (pixels, _, _) = canvas.to_rgb()?;
        self.writer.write_at(&pixels, update.pts)?;
        Ok(())
    }

    /// Frames written.
    pub fn finish(self) -> Result<u64> {
        Ok(self.writer.finish()?)
    }
}
