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
    /// An image (PNG/JPEG) or a video source (file, URL, device, frame folder).
    pub input: String,
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
    if args.queries.is_empty() && args.image_queries.is_empty() {
        bail!("give at least one query: -q TEXT or --image-query FILE");
    }
    if !(0.0..=1.0).contains(&args.threshold) || !(0.0..=1.0).contains(&args.nms_iou) {
        bail!("--threshold and --nms-iou must lie in [0, 1]");
    }
    let post = PostProcess {
        threshold: args.threshold,
        nms_iou: args.nms_iou,
        top_k: args.top_k,
        clip: !args.no_clip,
    };
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

    if is_still_image(&args.input) {
        let (rgb, width, height) = read_image(Path::new(&args.input))?;
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

    let source = Source::parse(&args.input, DEFAULT_FOLDER_FPS)?;
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
