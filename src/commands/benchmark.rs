use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use owltrack_tracker::benchmark::{category_queries, run_benchmark, BenchmarkJob};
use owltrack_tracker::pipeline::TrackJob;
use owltrack_tracker::recurrent::SlotTrackerConfig;
use owltrack_tracker::tao::TaoDataset;
use owltrack_tracker::tbd::TrackerConfig;

use crate::progress;
use crate::runtime::{ModelArgs, TrackerChoice};

#[derive(Subcommand)]
pub enum BenchmarkCommand {
    /// Track every video of a TAO-format dataset (frame folders plus an
    /// annotation JSON, as TAO-OW ships and `owltrack synth` writes), write
    /// the predictions, and score them with `owltrack eval`'s TAO-OW
    /// evaluation (all, known and unknown subsets).
    TaoOw(TaoOwArgs),
}

#[derive(Args)]
pub struct TaoOwArgs {
    /// Dataset folder: frames (the images' `file_name`s are relative to it)
    /// and the annotations.
    #[arg(long)]
    pub data: PathBuf,
    /// Split: looks for DATA/annotations/SPLIT.json, then DATA/SPLIT.json,
    /// then DATA/annotations.json.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// The annotation file, instead of looking it up by --split.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tracker: TrackerChoice,
    /// Track by the dataset's category names instead of class-agnostically
    /// by objectness (TAO-OW scores objects whatever their class).
    #[arg(long)]
    pub by_query: bool,
    /// With --by-query and --tracker detection: added to the matching cost
    /// when a detection answers another query than its track's label (as
    /// in `owltrack track`); 0.8 or more keeps queries apart.
    #[arg(long, default_value_t = TrackerConfig::default().label_mismatch_cost)]
    pub label_mismatch_cost: f64,
    /// Predictions kept per image for the evaluation (TrackEval's default).
    #[arg(long, default_value_t = 300)]
    pub max_dets: usize,
    /// Where predictions.json and scores.json go.
    #[arg(long, default_value = "owltrack-benchmark")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: BenchmarkCommand) -> Result<()> {
    match command {
        BenchmarkCommand::TaoOw(args) => tao_ow(args),
    }
}

fn annotations(args: &TaoOwArgs) -> Result<PathBuf> {
    if let Some(gt) = &args.gt {
        return Ok(gt.clone());
    }
    let candidates = [
        args.data
            .join("annotations")
            .join(format!("{}.json", args.split)),
        args.data.join(format!("{}.json", args.split)),
        args.data.join("annotations.json"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no annotations found: tried {}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn tao_ow(args: TaoOwArgs) -> Result<()> {
    let recurrent = args
        .tracker
        .recurrent(SlotTrackerConfig::default().confirm_hits)?;
    let gt_path = annotations(&args)?;
    let gt =
        TaoDataset::read(&gt_path).with_context(|| format!("cannot read {}", gt_path.display()))?;
    let queries = category_queries(&gt);
    if queries.is_empty() {
        bail!("{} lists no categories to query", gt_path.display());
    }
    let mut detector = args.model.load()?;
    args.tracker.configure_decoder(&mut detector)?;
    let job = BenchmarkJob {
        gt_path: gt_path.clone(),
        frames_root: args.data.clone(),
        track: TrackJob {
            queries,
            tracker: TrackerConfig {
                class_agnostic: !args.by_query,
                label_mismatch_cost: args.label_mismatch_cost,
                ..TrackerConfig::default()
            },
            stride: 1,
            nms_iou: 0.5,
            label_score: 0.1,
            output: None,
            annotate: None,
            include_tentative: false,
            recurrent,
        },
        out: args.out.clone(),
        max_dets: args.max_dets,
    };
    job.track
        .tracker
        .validate()
        .map_err(|e| anyhow::anyhow!("bad tracker setting: {e}"))?;
    let total: u64 = gt.videos.len() as u64;
    let bar = progress::bar(Some(total), "videos");
    let mut current = String::new();
    let result = run_benchmark(&mut detector, &job, |video, _, _| {
        if video != current {
            if !current.is_empty() {
                bar.inc(1);
            }
            current = video.to_owned();
            bar.set_message(video.to_owned());
        }
    })?;
    bar.finish_and_clear();
    let scores_path = args.out.join("scores.json");
    write_json(&scores_path, &result)?;
    let failed: Vec<_> = result.videos.iter().filter(|v| v.error.is_some()).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "TAO-OW benchmark on {} ({} videos, {} frames tracked in {:.1} s, {:.1} frames/s)",
            gt_path.display(),
            result.videos.len(),
            result.frames,
            result.seconds,
            result.frames as f64 / result.seconds.max(1e-9)
        );
        println!(
            "{:<8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "subset", "boxes", "OWTA", "HOTA", "DetRe", "DetPr", "AssA", "LocA"
        );
        for e in &result.evaluations {
            let m = e.combined.summary();
            println!(
                "{:<8} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                e.subset.to_string(),
                e.ground_truth,
                m.owta,
                m.hota,
                m.det_re,
                m.det_pr,
                m.ass_a,
                m.loc_a
            );
        }
        println!("ID switches: {}", result.id_switches);
        println!(
            "predictions: {}; scores: {}",
            result.predictions_path.display(),
            scores_path.display()
        );
    }
    for v in &failed {
        eprintln!(
            "{}: failed: {}",
            v.name,
            v.error.as_deref().unwrap_or_default()
        );
    }
    if !failed.is_empty() {
        bail!("{} of {} videos failed", failed.len(), result.videos.len());
    }
    Ok(())
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
