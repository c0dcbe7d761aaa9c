use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_tracker::tao::TaoDataset;
use owltrack_tracker::tao_ow::{
    self, read_predictions, EvalOptions, Evaluation, HotaScores, Subset,
};

#[derive(Args)]
pub struct EvalArgs {
    /// Ground truth: a TAO / TAO-OW annotations JSON.
    #[arg(long)]
    pub gt: PathBuf,
    /// Tracks: a TAO results JSON (a list of {image_id, bbox, score,
    /// track_id, …}), as `owltrack track --format tao` writes.
    #[arg(long)]
    pub pred: PathBuf,
    /// Ground truth evaluated: known (TAO ids of COCO classes), unknown
    /// (other ids below 2000, distractors removed) or all (nothing removed).
    #[arg(long, default_value = "all", value_parser = parse_subset)]
    pub subset: Subset,
    /// Predictions kept per image, best scores first (0: all). TrackEval's
    /// TAO-OW default is 300.
    #[arg(long, default_value_t = 300)]
    pub max_dets: usize,
    /// Also report every video.
    #[arg(long)]
    pub per_video: bool,
    /// Print JSON: the means over α, every metric at every α, and the counts.
    #[arg(long)]
    pub json: bool,
}

fn parse_subset(text: &str) -> Result<Subset, String> {
    Subset::parse(text).ok_or_else(|| format!("{text:?}: use known, unknown or all"))
}

pub fn run(args: EvalArgs) -> Result<()> {
    let gt =
        TaoDataset::read(&args.gt).with_context(|| format!("cannot read {}", args.gt.display()))?;
    let predictions = read_predictions(&args.pred)
        .with_context(|| format!("cannot read {}", args.pred.display()))?;
    let options = EvalOptions {
        subset: args.subset,
        max_dets: args.max_dets,
    };
    let mut evaluation = tao_ow::evaluate(&gt, &predictions, options, (&args.gt, &args.pred))?;
    if !args.per_video {
        evaluation.per_video.clear();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_report(&evaluation))?
        );
    } else {
        print_table(&evaluation);
    }
    Ok(())
}

fn json_report(evaluation: &Evaluation) -> serde_json::Value {
    let scores = |s: &HotaScores| {
        serde_json::json!({
            "mean": s.summary(),
            "per_alpha": s,
        })
    };
    serde_json::json!({
        "subset": evaluation.subset,
        "max_dets": evaluation.max_dets,
        "videos": evaluation.videos,
        "frames": evaluation.frames,
        "ground_truth": evaluation.ground_truth,
        "predictions": evaluation.predictions,
        "alphas": evaluation.alphas,
        "combined": scores(&evaluation.combined),
        "per_video": evaluation
            .per_video
            .iter()
            .map(|v| serde_json::json!({"name": v.name, "scores": scores(&v.scores)}))
            .collect::<Vec<_>>(),
    })
}

fn print_table(evaluation: &Evaluation) {
    println!(
        "TAO-OW, subset {}, {} videos, {} frames with ground truth, {} boxes, {} predictions evaluated (at most {} per image)",
        evaluation.subset,
        evaluation.videos,
        evaluation.frames,
        evaluation.ground_truth,
        evaluation.predictions,
        evaluation.max_dets
    );
    let header = "OWTA     HOTA     DetA     DetRe    DetPr    AssA     AssRe    AssPr    LocA";
    let row = |s: &HotaScores| {
        let m = s.summary();
        [
            m.owta, m.hota, m.det_a, m.det_re, m.det_pr, m.ass_a, m.ass_re, m.ass_pr, m.loc_a,
        ]
        .iter()
        .map(|v| format!("{:<8.3}", 100.0 * v))
        .collect::<Vec<_>>()
        .join(" ")
    };
    let width = evaluation
        .per_video
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(0)
        .max("combined".len());
    println!("\n{:<width$}  {header}   (means over α, in %)", "");
    for v in &evaluation.per_video {
        println!("{:<width$}  {}", v.name, row(&v.scores));
    }
    println!("{:<width$}  {}", "combined", row(&evaluation.combined));
    println!("\nper α (combined):");
    println!("α      OWTA     HOTA     DetRe    AssA     LocA");
    let c = &evaluation.combined;
    for (a, alpha) in evaluation.alphas.iter().enumerate() {
        println!(
            "{alpha:<5.2}  {:<8.3} {:<8.3} {:<8.3} {:<8.3} {:<8.3}",
            100.0 * c.owta[a],
            100.0 * c.hota[a],
            100.0 * c.det_re[a],
            100.0 * c.ass_a[a],
            100.0 * c.loc_a[a]
        );
    }
}
