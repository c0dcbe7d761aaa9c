use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_tracker::coco::{evaluate, read_results, DetectionGroundTruth, DetectionResult};

#[derive(Args)]
pub struct EvalDetectionArgs {
    /// Ground truth: a COCO detection annotations.json (a TAO dataset's
    /// works too).
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
fn warn_if_sampled(dataset: &DetectionGroundTruth, results: &[DetectionResult], listed: usize) {
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
    let mut dataset = DetectionGroundTruth::read(&args.gt)
        .with_context(|| format!("cannot read {}", args.gt.display()))?;
    let results =
        read_results(&args.pred).with_context(|| format!("cannot read {}", args.pred.display()))?;
    let listed: HashSet<u64> = dataset.images.iter().map(|i| i.id).collect();
    dataset.keep_sampled(args.every, &args.gt)?;
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
    let known: HashSet<u64> = dataset.categories.iter().map(|c| c.id).collect();
    let unknown = results
        .iter()
        .filter(|r| !known.contains(&r.category_id))
        .count();
    if unknown > 0 {
        tracing::warn!(
            "{unknown} detections name categories the ground truth does not list; \
             they are left out, as COCO does"
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
    let shown = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    println!(
        "{:<28} {:>8} {:>8} {:>8}",
        "mean",
        "",
        shown(report.ap),
        shown(report.ap50)
    );
    println!();
    let names = [
        "AP @[IoU 0.50:0.95]",
        "AP @[IoU 0.50]",
        "AP @[IoU 0.75]",
        "AP small (< 32²)",
        "AP medium",
        "AP large (> 96²)",
        "AR @[1 per image]",
        "AR @[10 per image]",
        "AR @[100 per image]",
        "AR small",
        "AR medium",
        "AR large",
    ];
    for (name, value) in names.iter().zip(report.stats()) {
        println!("{name:<28} {:>8}", shown(value));
    }
    Ok(())
}
