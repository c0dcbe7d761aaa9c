//! Training the OWL detector on a TAO-format dataset (frames + annotations):
//! sampling, preprocessing, the loss log and its plot, checkpoints in the hub
//! layout, resuming.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use owltrack_decoder::image;
use owltrack_models::train::{Losses, Sample, TrainOptions, Trainer};
use owltrack_models::{Checkpoint, ClipTokenizer, Device, OwlConfig, OwlVersion, Preprocessor};
use serde::Serialize;

use crate::error::{Result, TrackerError};
use crate::rng::Pcg;
use crate::tao::TaoDataset;

#[derive(Debug, Clone)]
pub struct DetectorTraining {
    /// Dataset folder: annotations.json and the frames it names.
    pub data: PathBuf,
    pub out: PathBuf,
    pub config: OwlConfig,
    /// Weights to start from (a checkpoint folder's model.safetensors).
    pub init: Option<PathBuf>,
    /// Folder holding vocab.json and merges.txt, copied into checkpoints.
    pub tokenizer_dir: PathBuf,
    pub steps: usize,
    pub batch: usize,
    pub options: TrainOptions,
    pub seed: u64,
    pub save_every: usize,
    /// Queries per step at most: the batch's categories, then negatives.
    pub max_queries: usize,
    /// Continue from the checkpoint and optimiser state in `out`.
    pub resume: bool,
    /// Chance that the padding of a non-square frame (OWLv2 pads to a
    /// square) is filled with a band of another frame at the same scale.
    pub mosaic: f64,
    /// Chance that a frame is cropped and enlarged (scale augmentation).
    pub zoom: f64,
    /// Largest enlargement of a zoomed frame.
    pub max_zoom: f64,
    /// Stop after this many steps of the `steps`-long schedule (a stage of
    /// a longer run, continued elsewhere with `init`).
    pub stop_after: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub images: usize,
    pub categories: usize,
    pub first: Option<Losses>,
    pub last: Option<Losses>,
    pub seconds: f64,
}

struct Example {
    file: PathBuf,
    width: u32,
    height: u32,
    /// [x, y, w, h] in pixels and the category's index in the vocabulary.
    boxes: Vec<([f64; 4], usize)>,
}

const STATE_FILE: &str = "trainer_state.safetensors";
const LOG_FILE: &str = "losses.csv";

fn load_examples(data: &Path) -> Result<(Vec<Example>, Vec<String>)> {
    let dataset = TaoDataset::read(&data.join("annotations.json"))?;
    let vocabulary: Vec<String> = dataset.categories.iter().map(|c| c.name.clone()).collect();
    let index_of: BTreeMap<u64, usize> = dataset
        .categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i))
        .collect();
    let mut examples: BTreeMap<u64, Example> = dataset
        .images
        .iter()
        .map(|img| {
            (
                img.id,
                Example {
                    file: data.join(&img.file_name),
                    width: img.width,
                    height: img.height,
                    boxes: Vec::new(),
                },
            )
        })
        .collect();
    for a in &dataset.annotations {
        let (Some(example), Some(&category)) =
            (examples.get_mut(&a.image_id), index_of.get(&a.category_id))
        else {
            continue;
        };
        if a.bbox[2] > 0.0 && a.bbox[3] > 0.0 {
            example.boxes.push((a.bbox, category));
        }
    }
    let examples: Vec<Example> = examples
        .into_values()
        .filter(|e| e.file.is_file())
        .collect();
    if examples.is_empty() || vocabulary.is_empty() {
        return Err(TrackerError::Format {
            path: data.join("annotations.json"),
            reason: "no images with frames on disk, or no categories".into(),
        });
    }
    Ok((examples, vocabulary))
}

/// Normalised pixels, and each box as (cx, cy, w, h) with its category.
type Prepared = (Vec<f32>, Vec<([f32; 4], usize)>);

/// Visible extent a box cut by the band's edge keeps, at least: as the
/// synthetic world's ground truth, which keeps objects down to 8% visible.
const MIN_KEPT_FRACTION: f32 = 0.1;

/// Fills the padding band of an OWLv2 input (below a landscape frame, right
/// of a portrait one) with the leading band of `filler`, at the same scale:
/// every patch then sees content and the step sees more objects for the same
/// cost. Boxes cut by the band's edge keep their visible part.
fn fill_padding(target: &mut Prepared, example: &Example, filler: &Prepared, size: usize) {
    let (w, h) = (example.width as usize, example.height as usize);
    if w == h || w == 0 || h == 0 || target.0.len() != filler.0.len() {
        return;
    }
    let landscape = w > h;
    let content = (w.min(h) * size).div_ceil(w.max(h)).min(size);
    let band = size - content;
    if band == 0 {
        return;
    }
    // Pixels are (3, size, size): rows, or columns of every row.
    for channel in 0..3 {
        let plane = channel * size * size;
        for row in 0..size {
            let (to, from, len) = if landscape {
                if row < content {
                    continue;
                }
                (plane + row * size, plane + (row - content) * size, size)
            } else {
                (plane + row * size + content, plane + row * size, band)
            };
            target.0[to..to + len].copy_from_slice(&filler.0[from..from + len]);
        }
    }
    let (offset, limit) = (content as f32 / size as f32, band as f32 / size as f32);
    let axis = if landscape { 1 } else { 0 };
    for &(b, category) in &filler.1 {
        let (lo, hi) = (b[axis] - b[axis + 2] / 2.0, b[axis] + b[axis + 2] / 2.0);
        let (lo_cut, hi_cut) = (lo.max(0.0), hi.min(limit));
        if hi_cut - lo_cut < MIN_KEPT_FRACTION * (hi - lo) || hi_cut <= lo_cut {
            continue;
        }
        let mut moved = b;
        moved[axis] = offset + (lo_cut + hi_cut) / 2.0;
        moved[axis + 2] = hi_cut - lo_cut;
        target.1.push((moved, category));
    }
}

/// Reads, maybe mirrors, and preprocesses one example; boxes become
/// (cx, cy, w, h) of the model's input square.
fn prepare(
    example: &Example,
    preprocessor: &Preprocessor,
    mirror: bool,
    zoom: Option<Zoom>,
) -> Result<Prepared> {
    let bytes = std::fs::read(&example.file).map_err(|e| TrackerError::io(&example.file, e))?;
    let (mut rgb, mut w, mut h) = image::decode_image(&bytes)?;
    if (w, h) != (example.width, example.height) {
        tracing::debug!(file = %example.file.display(), "frame size differs from the annotation's");
    }
    if mirror {
        let row = w as usize * 3;
        for line in rgb.chunks_mut(row) {
            for x in 0..w as usize / 2 {
                let (a, b) = (x * 3, row - 3 - x * 3);
                for c in 0..3 {
                    line.swap(a + c, b + c);
                }
            }
        }
    }
    let mut boxes: Vec<([f64; 4], usize)> = example
        .boxes
        .iter()
        .map(|&([x, y, bw, bh], category)| {
            let x = if mirror { f64::from(w) - x - bw } else { x };
            ([x, y, bw, bh], category)
        })
        .collect();
    if let Some(zoom) = zoom {
        (rgb, w, h, boxes) = zoom.apply(&rgb, w, h, boxes);
    }
    let pixels = preprocessor
        .tensor(&rgb, w, h, &Device::Cpu)
        .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))?;
    let (sx, sy) = match preprocessor.version() {
        OwlVersion::V1 => (f64::from(w), f64::from(h)),
        OwlVersion::V2 => {
            let m = f64::from(w.max(h));
            (m, m)
        }
    };
    let boxes = boxes
        .into_iter()
        .map(|([x, y, bw, bh], category)| {
            (
                [
                    ((x + bw / 2.0) / sx) as f32,
                    ((y + bh / 2.0) / sy) as f32,
                    (bw / sx) as f32,
                    (bh / sy) as f32,
                ],
                category,
            )
        })
        .collect();
    Ok((pixels, boxes))
}

/// Scale augmentation: a crop of the frame with its aspect ratio, `factor`
/// times smaller on each side, at a relative position; once resized to the
/// model's input, objects appear `factor` times larger. Small objects' shapes
/// cover too few pixels to learn from at first; enlarged ones teach the
/// image tower what tells shapes apart.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Zoom {
    factor: f64,
    /// Where the crop sits, 0–1 along each free range.
    at: (f64, f64),
}

impl Zoom {
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        rgb: &[u8],
        w: u32,
        h: u32,
        boxes: Vec<([f64; 4], usize)>,
    ) -> (Vec<u8>, u32, u32, Vec<([f64; 4], usize)>) {
        let factor = self.factor.max(1.0);
        let cw = ((f64::from(w) / factor).round() as u32).clamp(1, w);
        let ch = ((f64::from(h) / factor).round() as u32).clamp(1, h);
        let x0 = (self.at.0.clamp(0.0, 1.0) * f64::from(w - cw)).round() as u32;
        let y0 = (self.at.1.clamp(0.0, 1.0) * f64::from(h - ch)).round() as u32;
        let mut crop = Vec::with_capacity(cw as usize * ch as usize * 3);
        for row in y0..y0 + ch {
            let start = (row as usize * w as usize + x0 as usize) * 3;
            crop.extend_from_slice(&rgb[start..start + cw as usize * 3]);
        }
        let window = [f64::from(x0), f64::from(y0), f64::from(cw), f64::from(ch)];
        let kept = boxes
            .into_iter()
            .filter_map(|(bbox, category)| Some((visible_part(bbox, window)?, category)))
            .collect();
        (crop, cw, ch, kept)
    }
}

/// The part of `bbox` (`[x, y, w, h]`) that shows through `window` (`[x, y,
/// w, h]` in the same pixels), in the window's pixels; `None` when less than
/// `MIN_KEPT_FRACTION` of the box shows.
pub(crate) fn visible_part(bbox: [f64; 4], window: [f64; 4]) -> Option<[f64; 4]> {
    let [x, y, bw, bh] = bbox;
    let [fx, fy, fw, fh] = window;
    let (ax, ay) = ((x - fx).max(0.0), (y - fy).max(0.0));
    let (bx, by) = ((x + bw - fx).min(fw), (y + bh - fy).min(fh));
    let visible = (bx - ax).max(0.0) * (by - ay).max(0.0);
    (visible > 0.0 && visible >= f64::from(MIN_KEPT_FRACTION) * bw * bh).then_some([
        ax,
        ay,
        bx - ax,
        by - ay,
    ])
}

pub fn train_detector(
    job: &DetectorTraining,
    mut on_step: impl FnMut(usize, &Losses),
) -> Result<TrainSummary> {
    if job.steps == 0 || job.batch == 0 || job.max_queries == 0 {
        return Err(TrackerError::InvalidOption(
            "steps, batch and max queries must be positive".into(),
        ));
    }
    let started = std::time::Instant::now();
    let (examples, vocabulary) = load_examples(&job.data)?;
    let tokenizer = ClipTokenizer::from_dir(&job.tokenizer_dir)?;
    let tokens: Vec<Vec<u32>> = vocabulary
        .iter()
        .map(|name| tokenizer.encode(name).map(|e| e.ids.to_vec()))
        .collect::<std::result::Result<_, _>>()?;
    let preprocessor = Preprocessor::new(job.config.version, job.config.vision.image_size)?;
    std::fs::create_dir_all(&job.out).map_err(|e| TrackerError::io(&job.out, e))?;

    let init = job.init.as_deref().map(Checkpoint::from_dir).transpose()?;
    let mut trainer = Trainer::new(
        job.config.clone(),
        init.as_ref(),
        job.options.clone(),
        &Device::Cpu,
    )?;
    let state = job.out.join(STATE_FILE);
    if job.resume && state.is_file() {
        trainer.resume(&job.out.join("model.safetensors"), &state)?;
        tracing::info!(step = trainer.step_count(), "resuming");
    }
    let mut log = LossLog::open(&job.out, trainer.step_count())?;

    let (mut first, mut last) = (None, None);
    let last_step = job.stop_after.map_or(job.steps, |stop| stop.min(job.steps));
    while trainer.step_count() < last_step {
        let step = trainer.step_count();
        // The batch of step n depends only on (seed, n): resuming replays it.
        let mut rng = Pcg::new(job.seed, step as u64 + 1);
        let mut batch_examples = Vec::with_capacity(job.batch);
        for _ in 0..job.batch {
            let example = &examples[rng.below(examples.len())];
            // Without zoom no numbers are drawn for it, so a run with
            // `zoom = 0` samples exactly the batches it sampled before zoom
            // existed.
            let mut zoom = || {
                (job.zoom > 0.0 && rng.chance(job.zoom)).then(|| Zoom {
                    factor: rng.range(1.0, job.max_zoom.max(1.0)),
                    at: (rng.unit(), rng.unit()),
                })
            };
            let (first_zoom, filler_zoom) = (zoom(), zoom());
            let mut prepared = prepare(example, &preprocessor, rng.chance(0.5), first_zoom)?;
            if rng.chance(job.mosaic) {
                let filler = &examples[rng.below(examples.len())];
                let band = prepare(filler, &preprocessor, rng.chance(0.5), filler_zoom)?;
                fill_padding(&mut prepared, example, &band, preprocessor.size());
            }
            batch_examples.push(prepared);
        }
        // Queries: every category in the batch, then random negatives.
        let mut chosen: Vec<usize> = Vec::new();
        for (_, boxes) in &batch_examples {
            for &(_, category) in boxes {
                if !chosen.contains(&category) {
                    chosen.push(category);
                }
            }
        }
        let mut rest: Vec<usize> = (0..vocabulary.len())
            .filter(|c| !chosen.contains(c))
            .collect();
        while chosen.len() < job.max_queries.max(1) && !rest.is_empty() {
            chosen.push(rest.swap_remove(rng.below(rest.len())));
        }
        let queries: Vec<Vec<u32>> = chosen.iter().map(|&c| tokens[c].clone()).collect();
        let batch: Vec<Sample> = batch_examples
            .into_iter()
            .map(|(pixels, boxes)| Sample {
                pixels,
                labels: boxes
                    .iter()
                    .map(|&(_, c)| chosen.iter().position(|&q| q == c).unwrap_or(0))
                    .collect(),
                boxes: boxes.into_iter().map(|(b, _)| b).collect(),
            })
            .collect();
        let losses = trainer.step(&batch, &queries)?;
        log.write(step, job.options.learning_rate_at(step), &losses)?;
        first.get_or_insert(losses);
        last = Some(losses);
        on_step(step + 1, &losses);
        let done = trainer.step_count();
        if done % job.save_every.max(1) == 0 || done == last_step {
            save_checkpoint(&trainer, job)?;
        }
    }
    Ok(TrainSummary {
        steps: trainer.step_count(),
        images: examples.len(),
        categories: vocabulary.len(),
        first,
        last,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The loss log of a training run (`losses.csv` in its folder): started
/// afresh with a header, or appended to when a run resumes — after the rows
/// of the checkpoint's steps: an interrupted run logged steps past its last
/// checkpoint, which the resumed run takes (and logs) again.
pub(crate) struct LossLog {
    path: PathBuf,
    file: std::fs::File,
}

impl LossLog {
    pub(crate) fn open(dir: &Path, resumed_at: usize) -> Result<Self> {
        let path = dir.join(LOG_FILE);
        if resumed_at == 0 && path.exists() {
            std::fs::remove_file(&path).map_err(|e| TrackerError::io(&path, e))?;
        }
        if resumed_at > 0 && path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| TrackerError::io(&path, e))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    // The header, and the steps the checkpoint holds.
                    line.split(',')
                        .next()
                        .and_then(|step| step.parse::<usize>().ok())
                        .is_none_or(|step| step <= resumed_at)
                })
                .flat_map(|line| [line, "\n"])
                .collect();
            std::fs::write(&path, kept).map_err(|e| TrackerError::io(&path, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrackerError::io(&path, e))?;
        if resumed_at == 0 {
            writeln!(
                file,
                "step,learning_rate,total,class,l1,giou,objectness,spread"
            )
            .map_err(|e| TrackerError::io(&path, e))?;
        }
        Ok(LossLog { path, file })
    }

    /// The row of step `step` (counted from 0; written from 1).
    pub(crate) fn write(&mut self, step: usize, learning_rate: f64, losses: &Losses) -> Result<()> {
        writeln!(
            self.file,
            "{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
            step + 1,
            learning_rate,
            losses.total,
            losses.class,
            losses.l1,
            losses.giou,
            losses.objectness,
            losses.spread
        )
        .map_err(|e| TrackerError::io(&self.path, e))
    }

    /// Redraws the loss plot (`losses.png` beside the log).
    pub(crate) fn plot(&self) -> Result<()> {
        plot_losses(&self.path, &self.path.with_file_name("losses.png"))
    }
}

/// Writes a trainer's weights and optimiser state so that `--resume` never
/// pairs the weights of one step with the moments of another: both go to
/// temporary files first and replace the previous pair only once both are
/// written, so a failed write (a full disk) leaves the last checkpoint whole.
pub(crate) fn save_weights_and_state(
    weights: &Path,
    state: &Path,
    write_weights: impl FnOnce(&Path) -> Result<()>,
    write_state: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let partial = |path: &Path| {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        path.with_file_name(name)
    };
    let (new_weights, new_state) = (partial(weights), partial(state));
    let written = write_weights(&new_weights).and_then(|()| write_state(&new_state));
    if let Err(error) = written {
        for leftover in [&new_weights, &new_state] {
            // Best effort: the write's own error is the one to report.
            let _ = std::fs::remove_file(leftover);
        }
        return Err(error);
    }
    std::fs::rename(&new_weights, weights).map_err(|e| TrackerError::io(weights, e))?;
    std::fs::rename(&new_state, state).map_err(|e| TrackerError::io(state, e))
}

/// A checkpoint `detect` loads (config.json, model.safetensors, vocab.json,
/// merges.txt), plus the optimiser state and the loss plot.
fn save_checkpoint(trainer: &Trainer, job: &DetectorTraining) -> Result<()> {
    let out = &job.out;
    save_weights_and_state(
        &out.join("model.safetensors"),
        &out.join(STATE_FILE),
        |path| Ok(trainer.save_weights(path)?),
        |path| Ok(trainer.save_state(path)?),
    )?;
    let config_path = out.join("config.json");
    let text = serde_json::to_string_pretty(&job.config.to_hub_json()).map_err(|e| {
        TrackerError::Format {
            path: config_path.clone(),
            reason: e.to_string(),
        }
    })?;
    std::fs::write(&config_path, text).map_err(|e| TrackerError::io(&config_path, e))?;
    for file in ["vocab.json", "merges.txt"] {
        let (from, to) = (job.tokenizer_dir.join(file), out.join(file));
        if from != to {
            std::fs::copy(&from, &to).map_err(|e| TrackerError::io(&from, e))?;
        }
    }
    plot_losses(&out.join(LOG_FILE), &out.join("losses.png"))
}

/// Draws the loss curves of a log (log scale, smoothed) into a PNG.
pub fn plot_losses(log: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(log).map_err(|e| TrackerError::io(log, e))?;
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|line| {
            line.split(',')
                .filter_map(|v| v.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|r| r.len() == 8)
        .collect();
    let (w, h) = (900i32, 420i32);
    let (left, right, top, bottom) = (70, 170, 20, 40);
    let mut canvas = image::Canvas::new(w as u32, h as u32, [255, 255, 255])?;
    canvas.rectangle(
        (left, top),
        (w - left - right, h - top - bottom),
        [0, 0, 0],
        1,
    )?;
    if rows.len() < 2 {
        return Ok(canvas.save(png)?);
    }
    let series = [
        (2, "total", [0, 0, 0]),
        (3, "class", [200, 40, 40]),
        (4, "L1", [40, 120, 200]),
        (5, "GIoU", [40, 160, 60]),
        (6, "objectness", [200, 150, 0]),
        (7, "query spread", [140, 60, 170]),
    ];
    let smooth = |column: usize| -> Vec<f64> {
        let mut out = Vec::with_capacity(rows.len());
        let mut average = rows[0][column];
        for row in &rows {
            average = 0.9 * average + 0.1 * row[column];
            out.push(average.max(1e-6).log10());
        }
        out
    };
    let curves: Vec<(Vec<f64>, &str, [u8; 3])> = series
        .iter()
        .map(|&(c, name, colour)| (smooth(c), name, colour))
        .filter(|(v, _, _)| v.iter().any(|x| *x > -5.9))
        .collect();
    let (lo, hi) = curves
        .iter()
        .flat_map(|(v, _, _)| v.iter().copied())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let steps = rows.last().map_or(1.0, |r| r[0]).max(1.0);
    let to_x = |step: f64| left + ((step / steps) * f64::from(w - left - right)) as i32;
    let to_y = |v: f64| top + ((hi - v) / (hi - lo) * f64::from(h - top - bottom)) as i32;
    let mut decade = lo;
    while decade <= hi {
        canvas.line(
            (left, to_y(decade)),
            (w - right, to_y(decade)),
            [225, 225, 225],
            1,
        )?;
        canvas.text(
            (8, to_y(decade) + 4),
            &format!("1e{decade:.0}"),
            0.4,
            [60, 60, 60],
        )?;
        decade += 1.0;
    }
    canvas.text(
        (left, h - 12),
        &format!("step (0 to {steps:.0}); losses smoothed, log scale"),
        0.45,
        [60, 60, 60],
    )?;
    for (k, (values, name, colour)) in curves.iter().enumerate() {
        for i in 1..values.len() {
            canvas.line(
                (to_x(rows[i - 1][0]), to_y(values[i - 1])),
                (to_x(rows[i][0]), to_y(values[i])),
                *colour,
                1,
            )?;
        }
        let y = top + 20 + 22 * k as i32;
        canvas.line((w - right + 15, y - 4), (w - right + 40, y - 4), *colour, 2)?;
        canvas.text((w - right + 48, y), name, 0.5, *colour)?;
    }
    Ok(canvas.save(png)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(width: u32, height: u32) -> Example {
        Example {
            file: PathBuf::new(),
            width,
            height,
            boxes: Vec::new(),
        }
    }

    /// An 8×8 input whose every pixel holds `base` plus its plane offset.
    fn input(base: f32, boxes: Vec<([f32; 4], usize)>) -> Prepared {
        ((0..3 * 64).map(|i| base + i as f32).collect(), boxes)
    }

    #[test]
    fn a_failed_checkpoint_write_keeps_the_previous_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (weights, state) = (dir.path().join("w"), dir.path().join("s"));
        let write = |text: &'static str| {
            move |path: &Path| std::fs::write(path, text).map_err(|e| TrackerError::io(path, e))
        };
        save_weights_and_state(&weights, &state, write("w1"), write("s1")).unwrap();
        let full_disk = |path: &Path| {
            Err(TrackerError::io(
                path,
                std::io::Error::other("no space left on device"),
            ))
        };
        assert!(save_weights_and_state(&weights, &state, write("w2"), full_disk).is_err());
        assert_eq!(std::fs::read_to_string(&weights).unwrap(), "w1");
        assert_eq!(std::fs::read_to_string(&state).unwrap(), "s1");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["s", "w"]);
        save_weights_and_state(&weights, &state, write("w3"), write("s3")).unwrap();
        assert_eq!(std::fs::read_to_string(&weights).unwrap(), "w3");
        assert_eq!(std::fs::read_to_string(&state).unwrap(), "s3");
    }

    #[test]
    fn a_resumed_log_drops_the_steps_past_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let losses = |total| Losses {
            total,
            class: 0.0,
            l1: 0.0,
            giou: 0.0,
            objectness: 0.0,
            spread: 0.0,
        };
        let steps = |dir: &Path| -> Vec<String> {
            std::fs::read_to_string(dir.join(LOG_FILE))
                .unwrap()
                .lines()
                .map(|line| line.split(',').next().unwrap().to_string())
                .collect()
        };
        let mut log = LossLog::open(dir.path(), 0).unwrap();
        for step in 0..5 {
            log.write(step, 1e-3, &losses(1.0)).unwrap();
        }
        drop(log);
        // Interrupted after step 5, resumed from the checkpoint of step 3.
        let mut log = LossLog::open(dir.path(), 3).unwrap();
        assert_eq!(steps(dir.path()), ["step", "1", "2", "3"]);
        log.write(3, 1e-3, &losses(2.0)).unwrap();
        drop(log);
        assert_eq!(steps(dir.path()), ["step", "1", "2", "3", "4"]);
        // A fresh run starts the log again.
        drop(LossLog::open(dir.path(), 0).unwrap());
        assert_eq!(steps(dir.path()), ["step"]);
    }

    #[test]
    fn padding_below_a_wide_frame_takes_the_top_of_another() {
        // A 16×8 frame fills rows 0..4 of the 8×8 square; rows 4..8 are padding.
        let mut target = input(0.0, vec![([0.5, 0.25, 0.5, 0.5], 0)]);
        let filler = input(
            1000.0,
            vec![
                // Wholly inside the band (rows 0..4 of the filler).
                ([0.25, 0.25, 0.25, 0.25], 1),
                // Cut by the band's edge: y from 0.375 to 0.625, half visible.
                ([0.5, 0.5, 0.25, 0.25], 2),
                // Below the band.
                ([0.5, 0.875, 0.25, 0.25], 3),
            ],
        );
        fill_padding(&mut target, &example(16, 8), &filler, 8);
        for channel in 0..3 {
            for row in 0..8 {
                for col in 0..8 {
                    let at = channel * 64 + row * 8 + col;
                    let want = if row < 4 {
                        at as f32
                    } else {
                        1000.0 + (at - 32) as f32
                    };
                    assert_eq!(target.0[at], want, "channel {channel} row {row} col {col}");
                }
            }
        }
        let boxes = &target.1;
        assert_eq!(boxes.len(), 3, "{boxes:?}");
        assert_eq!(boxes[1], ([0.25, 0.75, 0.25, 0.25], 1));
        let (cut, category) = boxes[2];
        assert_eq!(category, 2);
        assert!((cut[1] - (0.5 + 0.4375)).abs() < 1e-6 && (cut[3] - 0.125).abs() < 1e-6);
        assert_eq!([cut[0], cut[2]], [0.5, 0.25]);
    }

    #[test]
    fn padding_right_of_a_tall_frame_takes_the_left_of_another() {
        let mut target = input(0.0, Vec::new());
        let filler = input(1000.0, vec![([0.125, 0.5, 0.25, 0.5], 4)]);
        fill_padding(&mut target, &example(4, 8), &filler, 8);
        assert_eq!(target.0[3], 3.0);
        assert_eq!(target.0[4], 1000.0);
        assert_eq!(target.0[8 + 7], 1000.0 + 8.0 + 3.0);
        assert_eq!(target.1, vec![([0.625, 0.5, 0.25, 0.5], 4)]);
    }

    #[test]
    fn zoom_crops_and_keeps_the_boxes_it_shows() {
        // A 4×2 frame whose pixel (x, y) holds x + 10 y in every channel.
        let rgb: Vec<u8> = (0..2u8)
            .flat_map(|y| (0..4u8).flat_map(move |x| [x + 10 * y; 3]))
            .collect();
        let zoom = Zoom {
            factor: 2.0,
            at: (1.0, 0.0),
        };
        let boxes = vec![
            ([2.5, 0.0, 1.0, 1.0], 1), // inside the crop
            ([1.0, 0.0, 2.0, 1.0], 2), // half inside
            ([0.0, 0.0, 1.0, 1.0], 3), // outside
        ];
        let (crop, w, h, kept) = zoom.apply(&rgb, 4, 2, boxes);
        assert_eq!((w, h), (2, 1));
        assert_eq!(crop, vec![2, 2, 2, 3, 3, 3]);
        assert_eq!(
            kept,
            vec![([0.5, 0.0, 1.0, 1.0], 1), ([0.0, 0.0, 1.0, 1.0], 2)]
        );
    }

    #[test]
    fn square_frames_have_no_padding_to_fill() {
        let mut target = input(0.0, Vec::new());
        let before = target.clone();
        fill_padding(&mut target, &example(8, 8), &input(1000.0, vec![]), 8);
        assert_eq!(target, before);
    }
}
