//! `owltrack bench eval`: the TAO-OW evaluator on a workload of TAO val's
//! size, beside TrackEval on the same files when Python and TrackEval are
//! present.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use owltrack_tracker::tao::TaoDataset;
use owltrack_tracker::tao_ow::{
    evaluate, generate_workload, read_predictions, EvalOptions, Subset, WorkloadShape,
};
use serde::Serialize;

#[derive(Args)]
pub struct EvalBenchArgs {
    /// Videos in the generated workload (TAO val: about 1,000).
    #[arg(long, default_value_t = 1000)]
    pub videos: usize,
    /// Annotated frames per video (TAO val: about 36 on average).
    #[arg(long, default_value_t = 36)]
    pub frames: usize,
    /// Ground-truth objects per video.
    #[arg(long, default_value_t = 6)]
    pub objects: usize,
    /// Predictions per frame (28 × 36,000 frames ≈ a million).
    #[arg(long, default_value_t = 28)]
    pub predictions: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Timed runs of owltrack; the best counts.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Keep the generated gt.json and pred.json here (default: a scratch
    /// folder, removed afterwards).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A Python with numpy and scipy, to time TrackEval on the same files.
    #[arg(long, value_name = "PYTHON", requires = "trackeval")]
    pub python: Option<PathBuf>,
    /// A TrackEval checkout (the folder holding `trackeval/`).
    #[arg(long, value_name = "DIR", requires = "python")]
    pub trackeval: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct EvalBench {
    videos: usize,
    frames: usize,
    ground_truth: usize,
    predictions: usize,
    /// Reading both files and evaluating, best of the runs.
    owltrack_seconds: f64,
    owltrack_owta: f64,
    trackeval_seconds: Option<f64>,
    trackeval_owta: Option<f64>,
    /// TrackEval seconds / owltrack seconds.
    speedup: Option<f64>,
}

pub fn run(args: EvalBenchArgs) -> Result<()> {
    if args.videos == 0 || args.frames == 0 || args.runs == 0 {
        bail!("--videos, --frames and --runs must be at least 1");
    }
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "generating {} videos × {} frames, {} predictions per frame…",
        args.videos, args.frames, args.predictions
    );
    let (gt, predictions) = generate_workload(WorkloadShape {
        videos: args.videos,
        frames: args.frames,
        objects: args.objects,
        predictions: args.predictions,
        seed: args.seed,
    });
    let (gt_path, pred_path) = (dir.join("gt.json"), dir.join("pred.json"));
    gt.write(&gt_path)?;
    let text = serde_json::to_string(&predictions)?;
    std::fs::write(&pred_path, text)
        .with_context(|| format!("cannot write {}", pred_path.display()))?;
    let options = EvalOptions {
        subset: Subset::All,
        max_dets: 300,
    };

    let mut best: Option<(f64, f64)> = None;
    let mut counts = (0, 0, 0);
    for _ in 0..args.runs {
        let started = Instant::now();
        let gt = TaoDataset::read(&gt_path)?;
        let predictions = read_predictions(&pred_path)?;
        let evaluation = evaluate(&gt, &predictions, options, (&gt_path, &pred_path))?;
        let seconds = started.elapsed().as_secs_f64();
        counts = (
            evaluation.frames,
            evaluation.ground_truth,
            predictions.len(),
        );
        let owta = evaluation.combined.summary().owta;
        if best.is_none_or(|(b, _)| seconds < b) {
            best = Some((seconds, owta));
        }
    }
    let Some((ours, owta)) = best else {
        bail!("no run completed");
    };

    let trackeval = match (&args.python, &args.trackeval) {
        (Some(python), Some(checkout)) => {
            eprintln!("running TrackEval on the same files…");
            Some(run_trackeval(python, checkout, &gt_path, &pred_path)?)
        }
        _ => None,
    };
    let report = EvalBench {
        videos: args.videos,
        frames: counts.0,
        ground_truth: counts.1,
        predictions: counts.2,
        owltrack_seconds: ours,
        owltrack_owta: owta,
        trackeval_seconds: trackeval.map(|t| t.0),
        trackeval_owta: trackeval.map(|t| t.1),
        speedup: trackeval.map(|t| t.0 / ours),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "TAO-OW evaluation of {} videos, {} frames with ground truth, {} boxes, {} predictions:",
        report.videos, report.frames, report.ground_truth, report.predictions
    );
    println!(
        "  owltrack   {:8.2} s  (read + evaluate, best of {}; OWTA {:.6})",
        ours, args.runs, owta
    );
    match trackeval {
        Some((seconds, owta)) => {
            println!("  TrackEval  {seconds:8.2} s  (OWTA {owta:.6})");
            println!("  speed-up   {:8.1}×", seconds / ours);
        }
        None => println!("  TrackEval  not run (give --python and --trackeval)"),
    }
    Ok(())
}

/// Seconds TrackEval took and the OWTA it found.
fn run_trackeval(
    python: &PathBuf,
    checkout: &PathBuf,
    gt: &std::path::Path,
    pred: &std::path::Path,
) -> Result<(f64, f64)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/trackeval_tao_ow.py");
    let output = Command::new(python)
        .arg(&script)
        .arg("--trackeval")
        .arg(checkout)
        .arg("--gt")
        .arg(gt)
        .arg("--pred")
        .arg(pred)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "TrackEval failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(last)
        .with_context(|| format!("unexpected TrackEval runner output: {last}"))?;
    match (parsed["seconds"].as_f64(), parsed["owta"].as_f64()) {
        (Some(seconds), Some(owta)) => Ok((seconds, owta)),
        _ => bail!("unexpected TrackEval runner output: {last}"),
    }
}
