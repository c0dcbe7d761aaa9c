use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_tracker::coco::{evaluate, read_results};
use owltrack_tracker::tao::TaoDataset;

#[derive(Args)]
pub struct EvalDetectionArgs {
    /// Ground truth: a TAO/COCO-style annotations.json.
    #[arg(long)]
    pub gt: PathBuf,
    /// Detections: a COCO results list (`detect --dataset` writes one).
    #[arg(long)]
    pub pred: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalDetectionArgs) -> Result<()> {
    let dataset =
        TaoDataset::read(&args.gt).with_context(|| format!("cannot read {}", args.gt.display()))?;
    let results =
        read_results(&args.pred).with_context(|| format!("cannot read {}", args.pred.display()))?;
    let known: std::collections::HashSet<u64> = dataset.images.iter().map(|i| i.id).collect();
    if let Some(stray) = results.iter().find(|r| !known.contains(&r.image_id)) {
        anyhow::bail!(
            "{} has detections on image {}, which the ground truth does not list",
            args.pred.display(),
            stray.image_id
        );
    }
    let report = evaluate(&dataset, &results);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<28} {:>8} {:>8} {:>8}",
        "category", "boxes", "AP", "AP50"
    );
    for c in &report.categories {
        println!(
            "{:<28} {:>8} {:>8.3} {:>8.3}",
            c.name, c.ground_truth, c.ap, c.ap50
        );
    }
    println!(
        "{:<28} {:>8} {:>8.3} {:>8.3}",
        "mean", "", report.ap, report.ap50
    );
    Ok(())
}
