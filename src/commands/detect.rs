use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use owltrack_decoder::{image, Event, ReadOptions, Source, VideoReader, DEFAULT_FOLDER_FPS};
use owltrack_models::{Detection, PostProcess, Query};
use serde::Serialize;

use crate::progress;
use crate::runtime::ModelArgs;

#[derive(Args)]
pub struct DetectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A text query ("a red car"); repeat for several.
    #[arg(short = 'q', long = "query", value_name = "TEXT")]
    pub queries: Vec<String>,
    /// An example image (PNG/JPEG) of what to find; repeat for several.
    #[arg(long = "image-query", value_name = "FILE")]
    pub image_queries: Vec<PathBuf>,
    /// Report detections scoring above this (0 keeps every patch).
    #[arg(long, default_value_t = 0.1)]
    pub threshold: f32,
    /// Per-query non-maximum suppression: drop boxes overlapping a better one
    /// of the same query by more than this IoU (1 turns it off).
    #[arg(long, default_value_t = 0.3, value_name = "IOU")]
    pub nms_iou: f32,
    /// Keep at most this many detections per image, best first (0: all).
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub top_k: usize,
    /// Leave boxes that reach past the image unclipped.
    #[arg(long)]
    pub no_clip: bool,
    /// Report every (box, query) pair above the threshold, not only each
    /// box's best query (for per-category evaluation such as AP).
    #[arg(long)]
    pub all_queries: bool,
    /// Detect in every image of a COCO or TAO-format dataset (a folder with
    /// annotations.json and the images it names), querying its categories,
    /// and write COCO detection results (for `owltrack eval-detection`) to
    /// --output. Unreadable images are named and skipped.
    #[arg(long, value_name = "DIR", conflicts_with = "input")]
    pub dataset: Option<PathBuf>,
    /// With --dataset: use every N-th frame of each video (by frame_index).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub every: u64,
    /// Where --dataset results go (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// An image (PNG/JPEG) or a video source (file, URL, device, frame folder).
    #[arg(required_unless_present = "dataset")]
    pub input: Option<String>,
}

#[derive(Serialize)]
struct Named<'a> {
    #[serde(rename = "box")]
    bbox: [f32; 4],
    score: f32,
    label: usize,
    query: &'a str,
}

#[derive(Serialize)]
struct ImageLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    frame: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pts: Option<f64>,
    width: u32,
    height: u32,
    detections: Vec<Named<'a>>,
}

fn named<'a>(detections: &[Detection], queries: &'a [Query]) -> Vec<Named<'a>> {
    detections
        .iter()
        .map(|d| Named {
            bbox: d.bbox,
            score: d.score,
            label: d.label,
            query: queries.get(d.label).map_or("", Query::name),
        })
        .collect()
}

fn is_still_image(input: &str) -> bool {
    let ext = Path::new(input)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(
        ext.as_deref(),
        Some("png" | "jpg" | "jpeg" | "bmp" | "webp")
    ) && Path::new(input).is_file()
}

fn read_image(path: &Path) -> Result<(Vec<u8>, u32, u32)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    image::decode_image(&bytes)
        .with_context(|| format!("{} is not a readable image", path.display()))
}

pub fn run(args: DetectArgs) -> Result<()> {
    if let Some(dir) = &args.dataset {
        return run_dataset(&args, dir);
    }
    if args.queries.is_empty() && args.image_queries.is_empty() {
        bail!("give at least one query: -q TEXT or --image-query FILE");
    }
    let post = post_process(&args)?;
    let input = args.input.clone().unwrap_or_default();
    let mut detector = args.model.load()?;
    let mut queries: Vec<Query> = args.queries.iter().cloned().map(Query::Text).collect();
    for path in &args.image_queries {
        let (rgb, width, height) = read_image(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        queries.push(Query::Image {
            name,
            rgb,
            width,
            height,
        });
    }
    let embeddings = detector
        .embed_queries(&queries)
        .context("cannot embed the queries")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();

    if is_still_image(&input) {
        let (rgb, width, height) = read_image(Path::new(&input))?;
        let result = detector.detect(&rgb, width, height, &embeddings, &post)?;
        let line = ImageLine {
            frame: None,
            pts: None,
            width,
            height,
            detections: named(&result.detections, &queries),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        return Ok(());
    }

    let source = Source::parse(&input, DEFAULT_FOLDER_FPS)?;
    let mut reader = VideoReader::open(source, ReadOptions::default())?;
    let bar = progress::bar(reader.info().frames, "frames");
    while let Some(event) = reader.recv() {
        let Event::Frame(frame) = event else { continue };
        let result = detector.detect(&frame.rgb, frame.width, frame.height, &embeddings, &post)?;
        let line = ImageLine {
            frame: Some(frame.index),
            pts: Some(frame.pts),
            width: frame.width,
            height: frame.height,
            detections: named(&result.detections, &queries),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    reader.finish()?;
    Ok(())
}

fn post_process(args: &DetectArgs) -> Result<PostProcess> {
    if !(0.0..=1.0).contains(&args.threshold) || !(0.0..=1.0).contains(&args.nms_iou) {
        bail!("--threshold and --nms-iou must lie in [0, 1]");
    }
    Ok(PostProcess {
        threshold: args.threshold,
        nms_iou: args.nms_iou,
        top_k: args.top_k,
        clip: !args.no_clip,
        all_queries: args.all_queries,
        objectness: false,
    })
}

fn run_dataset(args: &DetectArgs, dir: &Path) -> Result<()> {
    use owltrack_tracker::coco::{DetectionGroundTruth, DetectionResult};

    let post = post_process(args)?;
    let annotations = dir.join("annotations.json");
    let mut dataset = DetectionGroundTruth::read(&annotations)?;
    dataset.keep_sampled(args.every, &annotations)?;
    let mut detector = args.model.load()?;
    let queries: Vec<Query> = dataset
        .categories
        .iter()
        .map(|c| Query::Text(c.name.clone()))
        .collect();
    let embeddings = detector
        .embed_queries(&queries)
        .context("cannot embed the categories")?;
    let images = &dataset.images;
    let bar = progress::bar(Some(images.len() as u64), "images");
    let mut results = Vec::new();
    let mut unreadable = 0usize;
    for image in images {
        let path = dir.join(&image.file_name);
        // One bad frame should not cost a long run: it is named, counted
        // and skipped (its objects then count as missed).
        let (rgb, width, height) = match read_image(&path) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!("skipping image {}: {error:#}", image.id);
                unreadable += 1;
                bar.inc(1);
                continue;
            }
        };
        let result = detector.detect(&rgb, width, height, &embeddings, &post)?;
        for d in result.detections {
            let [x0, y0, x1, y1] = d.bbox.map(f64::from);
            results.push(DetectionResult {
                image_id: image.id,
                category_id: dataset.categories[d.label].id,
                bbox: [x0, y0, x1 - x0, y1 - y0],
                score: f64::from(d.score),
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if unreadable == images.len() && unreadable > 0 {
        bail!(
            "none of the {unreadable} images of {} could be read",
            dir.display()
        );
    }
    if unreadable > 0 {
        tracing::warn!(
            "{unreadable} of {} images could not be read and have no detections",
            images.len()
        );
    }
    let text = serde_json::to_string(&results)?;
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}
