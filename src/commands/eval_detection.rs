use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_tracker::coco::{evaluate, read_results, DetectionResult};
use owltrack_tracker::tao::TaoDataset;

#[derive(Args)]
pub struct EvalDetectionArgs {
    /// Ground truth: a TAO/COCO-style annotations.json.
    #[arg(long)]
    pub gt: PathBuf,
    /// Detections: a COCO results list (`detect --dataset` writes one).
    #[arg(long)]
    pub pred: PathBuf,
    /// Score only every N-th frame of each video (by frame_index), the
    /// frames `detect --dataset --every N` read. Frames the detections do not
    /// cover count as misses, so scoring a sample against every frame's
    /// ground truth would cap recall at the sampled share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
    #[arg(long)]
    pub json: bool,
}

/// Detections on only a fraction of the frames that hold objects usually
/// mean a sampled run scored against every frame: say so, since the score
/// is then capped far below what the detector does.
fn warn_if_sampled(dataset: &TaoDataset, results: &[DetectionResult], listed: usize) {
    let covered: HashSet<u64> = results.iter().map(|r| r.image_id).collect();
    let with_objects: HashSet<u64> = dataset.annotations.iter().map(|a| a.image_id).collect();
    let hit = with_objects.intersection(&covered).count();
    if with_objects.len() >= 4 && hit * 2 < with_objects.len() {
        tracing::warn!(
            "the detections cover {hit} of the {} frames that hold objects (of {listed} listed); \
             the others count as misses. If detect read every N-th frame, pass the same --every N",
            with_objects.len()
        );
    }
}

pub fn run(args: EvalDetectionArgs) -> Result<()> {
    let mut dataset =
        TaoDataset::read(&args.gt).with_context(|| format!("cannot read {}", args.gt.display()))?;
    let results =
        read_results(&args.pred).with_context(|| format!("cannot read {}", args.pred.display()))?;
    let listed: HashSet<u64> = dataset.images.iter().map(|i| i.id).collect();
    dataset.keep_sampled(args.every);
    let sampled: HashSet<u64> = dataset.images.iter().map(|i| i.id).collect();
    if let Some(stray) = results.iter().find(|r| !sampled.contains(&r.image_id)) {
        let why = if listed.contains(&stray.image_id) {
            format!(
                "which --every {} leaves out (was detect run with another --every?)",
                args.every
            )
        } else {
            "which the ground truth does not list".to_owned()
        };
        anyhow::bail!(
            "{} has detections on image {}, {why}",
            args.pred.display(),
            stray.image_id
        );
    }
    warn_if_sampled(&dataset, &results, listed.len());
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
