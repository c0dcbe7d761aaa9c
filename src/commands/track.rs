use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use owltrack_decoder::{Source, DEFAULT_FOLDER_FPS};
use owltrack_models::Query;
use owltrack_tracker::formats::{TaoIds, TrackFormat};
use owltrack_tracker::pipeline::{track_video, TrackJob, TrackSummary};
use owltrack_tracker::tbd::TrackerConfig;

use crate::progress;
use crate::runtime::{ModelArgs, TrackerChoice};

#[derive(Args)]
pub struct TrackArgs {
    /// A video file, URL, camera (/dev/videoN) or folder of frames; or a
    /// folder of videos, or a glob such as 'clips/*.mp4' (quoted), each of
    /// which gets its own outputs.
    pub input: String,
    /// A text query ("a red car"); repeat for several.
    #[arg(short = 'q', long = "query", value_name = "TEXT")]
    pub queries: Vec<String>,
    /// An example image (PNG/JPEG) of what to track; repeat for several.
    #[arg(long = "image-query", value_name = "FILE")]
    pub image_queries: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tracker: TrackerChoice,
    /// Where the tracks go: a file (a folder when there are several
    /// inputs); without it, JSON lines on standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// jsonl (one {frame, pts, tracks} object per frame), tao (TAO results
    /// JSON, for `owltrack eval` and TrackEval) or mot (MOTChallenge text).
    #[arg(long, default_value = "jsonl", value_parser = parse_format)]
    pub format: TrackFormat,
    /// Also write an MP4 with the tracks drawn (a folder when there are
    /// several inputs).
    #[arg(long, value_name = "OUT.mp4")]
    pub annotate: Option<PathBuf>,
    /// Track every N-th frame.
    #[arg(long, default_value_t = 1)]
    pub stride: u32,
    /// Track everything object-like (OWLv2 objectness), labelled with the
    /// best query where one matches: what TAO-OW scores.
    #[arg(long)]
    pub class_agnostic: bool,
    /// Detections scoring at least this start and continue tracks.
    #[arg(long, default_value_t = TrackerConfig::default().high_score)]
    pub high_score: f64,
    /// Detections between this and --high-score only continue tracks.
    #[arg(long, default_value_t = TrackerConfig::default().low_score)]
    pub low_score: f64,
    /// A new track needs at least this score.
    #[arg(long, default_value_t = TrackerConfig::default().new_track_score)]
    pub new_track_score: f64,
    /// Matched frames before a track is reported.
    #[arg(long, default_value_t = TrackerConfig::default().confirm_hits)]
    pub confirm_hits: u32,
    /// Frames a track survives without a detection.
    #[arg(long, default_value_t = TrackerConfig::default().max_lost)]
    pub max_lost: u32,
    /// Share of appearance (OWL class embeddings) in the matching cost; the
    /// rest is 1 − IoU.
    #[arg(long, default_value_t = TrackerConfig::default().appearance_weight)]
    pub appearance_weight: f64,
    /// Pairs overlapping less than this IoU are never matched.
    #[arg(long, default_value_t = TrackerConfig::default().min_iou)]
    pub min_iou: f64,
    /// Added to the matching cost when a detection answers another query
    /// than its track's label, so that a detector hesitating between close
    /// queries does not break tracks; 0.8 or more keeps queries apart. A
    /// track's label is the query its detections named with the most total
    /// score.
    #[arg(long, default_value_t = TrackerConfig::default().label_mismatch_cost)]
    pub label_mismatch_cost: f64,
    /// Detections of one query (of any query with --class-agnostic)
    /// overlapping a better one by more than this IoU are dropped.
    #[arg(long, default_value_t = 0.5)]
    pub nms_iou: f32,
    /// With --class-agnostic: label a track with its best query only when
    /// that query scores at least this.
    #[arg(long, default_value_t = 0.1)]
    pub label_score: f64,
    /// Report tentative tracks (seen fewer than --confirm-hits frames) too.
    #[arg(long)]
    pub include_tentative: bool,
}

fn parse_format(text: &str) -> Result<TrackFormat, String> {
    TrackFormat::parse(text).ok_or_else(|| format!("{text:?}: use jsonl, tao or mot"))
}

const VIDEO_EXTENSIONS: [&str; 10] = [
    "mp4", "mkv", "mov", "avi", "webm", "ts", "m4v", "mpg", "mpeg", "flv",
];

fn is_video_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The inputs INPUT names: itself, or the videos of a folder or glob.
fn expand_inputs(input: &str) -> Result<Vec<String>> {
    if input.contains(['*', '?', '[']) && !Path::new(input).exists() {
        let mut found: Vec<String> = glob::glob(input)
            .with_context(|| format!("bad pattern {input:?}"))?
            .filter_map(|entry| entry.ok())
            .filter(|p| p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        found.sort();
        if found.is_empty() {
            bail!("no file matches {input:?}");
        }
        return Ok(found);
    }
    let path = Path::new(input);
    if path.is_dir() {
        let mut videos: Vec<String> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {input}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_video_file(p))
            .map(|p| p.display().to_string())
            .collect();
        if !videos.is_empty() {
            videos.sort_by(|a, b| owltrack_decoder::natural_cmp(a, b));
            return Ok(videos);
        }
    }
    // A single source: file, URL, device, or a folder of frames.
    Ok(vec![input.to_owned()])
}

fn stem(input: &str) -> String {
    let path = Path::new(input.trim_end_matches('/'));
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into())
}

fn read_image_query(path: &Path) -> Result<Query> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (rgb, width, height) = owltrack_decoder::image::decode_image(&bytes)
        .with_context(|| format!("{} is not a readable image", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Query::Image {
        name,
        rgb,
        width,
        height,
    })
}

pub fn run(args: TrackArgs) -> Result<()> {
    let recurrent = args.tracker.recurrent(args.confirm_hits)?;
    if args.queries.is_empty() && args.image_queries.is_empty() {
        bail!("give at least one query: -q TEXT or --image-query FILE");
    }
    if args.stride == 0 {
        bail!("--stride must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.nms_iou) {
        bail!("--nms-iou must lie in [0, 1]");
    }
    let config = TrackerConfig {
        high_score: args.high_score,
        low_score: args.low_score,
        new_track_score: args.new_track_score,
        confirm_hits: args.confirm_hits,
        max_lost: args.max_lost,
        appearance_weight: args.appearance_weight,
        min_iou: args.min_iou,
        label_mismatch_cost: args.label_mismatch_cost,
        class_agnostic: args.class_agnostic,
        ..TrackerConfig::default()
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("bad tracker setting: {e}"))?;
    let inputs = expand_inputs(&args.input)?;
    let several = inputs.len() > 1;
    for dir in [&args.output, &args.annotate].into_iter().flatten() {
        if several {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
    }

    let mut queries: Vec<Query> = args.queries.iter().cloned().map(Query::Text).collect();
    for path in &args.image_queries {
        queries.push(read_image_query(path)?);
    }
    let mut detector = args.model.load()?;
    args.tracker.configure_decoder(&mut detector)?;

    let mut failed = Vec::new();
    for input in &inputs {
        let output = match (&args.output, several) {
            (Some(dir), true) => dir.join(format!("{}.{}", stem(input), args.format.extension())),
            (Some(file), false) => file.clone(),
            (None, true) => bail!("several inputs need --output DIR"),
            (None, false) => PathBuf::from("-"),
        };
        let annotate = match (&args.annotate, several) {
            (Some(dir), true) => Some(dir.join(format!("{}.mp4", stem(input)))),
            (other, _) => other.clone(),
        };
        let job = TrackJob {
            queries: queries.clone(),
            tracker: config.clone(),
            stride: args.stride,
            nms_iou: args.nms_iou,
            label_score: args.label_score,
            output: Some((output.clone(), args.format, TaoIds::default())),
            annotate,
            include_tentative: args.include_tentative,
            recurrent: recurrent.clone(),
        };
        match track_one(&mut detector, input, &job) {
            Ok(summary) => {
                eprintln!(
                    "{input}: {} frames, {} tracks, {:.1} frames/s{}",
                    summary.frames,
                    summary.tracks,
                    summary.frames as f64 / summary.seconds.max(1e-9),
                    if output.as_os_str() == "-" {
                        String::new()
                    } else {
                        format!(" → {}", output.display())
                    }
                );
            }
            Err(error) => {
                eprintln!("{input}: failed: {error:#}");
                failed.push(input.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} inputs failed: {}",
            failed.len(),
            inputs.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn track_one(
    detector: &mut owltrack_models::Detector,
    input: &str,
    job: &TrackJob,
) -> Result<TrackSummary> {
    let source = Source::parse(input, DEFAULT_FOLDER_FPS)?;
    let bar = progress::bar(None, "frames");
    let summary = track_video(detector, source, job, |done, total| {
        if let Some(total) = total {
            if bar.length() != Some(total) {
                bar.set_length(total);
                bar.set_style(progress::bar(Some(total), "frames").style());
            }
        }
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    Ok(summary)
}
