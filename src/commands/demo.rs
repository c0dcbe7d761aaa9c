use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use owltrack_decoder::Source;
use owltrack_models::Query;
use owltrack_tracker::benchmark::image_ids_by_frame_index;
use owltrack_tracker::formats::{TaoIds, TrackFormat};
use owltrack_tracker::pipeline::{track_video, TrackJob};
use owltrack_tracker::synth::{write_dataset, Outputs, SynthConfig};
use owltrack_tracker::tao::TaoDataset;
use owltrack_tracker::tao_ow::{self, read_predictions, EvalOptions, Subset};
use owltrack_tracker::tbd::TrackerConfig;

use crate::progress;
use crate::runtime::ModelArgs;

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for what the demo writes.
    #[arg(long, default_value = "owltrack-demo")]
    pub out: PathBuf,
    /// Length of the synthetic video in frames (25 fps).
    #[arg(long, default_value_t = 90)]
    pub frames: u32,
    /// Which synthetic video: each seed draws other objects and paths.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Renders a synthetic video whose ground truth is known, tracks the objects
/// in it by name with the model (the built-in one by default), writes the
/// annotated video and the tracks, and scores them against the truth.
pub fn run(args: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let config = SynthConfig {
        frames: args.frames.max(2),
        seed: args.seed,
        ..SynthConfig::default()
    };
    let bar = progress::bar(Some(u64::from(config.frames)), "frames rendered");
    let outputs = Outputs {
        video: true,
        frames: false,
    };
    let summary = write_dataset(&args.out, 1, &config, outputs, || bar.inc(1))
        .context("cannot render the synthetic video")?;
    bar.finish_and_clear();
    let gt = TaoDataset::read(&summary.annotations_path)?;
    let video = gt
        .videos
        .first()
        .context("the synthetic dataset has no video")?;
    let video_path = args.out.join("videos").join(format!("{}.mp4", video.name));

    // Query every kind of object the video holds, by name.
    let mut present: Vec<u64> = gt.annotations.iter().map(|a| a.category_id).collect();
    present.sort_unstable();
    present.dedup();
    let names: Vec<String> = present
        .iter()
        .filter_map(|id| gt.categories.iter().find(|c| c.id == *id))
        .map(|c| c.name.clone())
        .collect();
    let tracks_path = args.out.join("tracks.json");
    let annotated = args.out.join("annotated.mp4");
    let job = TrackJob {
        queries: names.iter().cloned().map(Query::Text).collect(),
        tracker: TrackerConfig::default(),
        stride: 1,
        nms_iou: 0.5,
        label_score: 0.1,
        output: Some((
            tracks_path.clone(),
            TrackFormat::Tao,
            TaoIds {
                images: Some(image_ids_by_frame_index(&gt, video.id)),
                video: video.id,
                categories: Some(present.clone()),
            },
        )),
        annotate: Some(annotated.clone()),
        include_tentative: false,
        recurrent: None,
    };
    eprintln!("tracking {} in {}…", names.join(", "), video_path.display());
    let mut detector = args.model.load()?;
    let bar = progress::bar(Some(u64::from(config.frames)), "frames");
    let tracked = track_video(
        &mut detector,
        Source::File {
            path: video_path.clone(),
        },
        &job,
        |done, _| bar.set_position(done),
    )?;
    bar.finish_and_clear();

    let predictions = read_predictions(&tracks_path)?;
    let evaluation = tao_ow::evaluate(
        &gt,
        &predictions,
        EvalOptions {
            subset: Subset::All,
            max_dets: 300,
        },
        (&summary.annotations_path, &tracks_path),
    )?;
    let all = evaluation.combined.summary();
    let per_query = per_query_owta(
        &gt,
        &predictions,
        &present,
        &summary.annotations_path,
        &tracks_path,
    )?;
    println!("video        {}", video_path.display());
    println!(
        "queries      {} ({} ground-truth tracks, {} boxes)",
        names.join(", "),
        gt.tracks.len(),
        gt.annotations.len()
    );
    println!(
        "tracked      {} frames at {:.1} frames/s: {} tracks, {} boxes",
        tracked.frames,
        tracked.frames as f64 / tracked.seconds.max(1e-9),
        tracked.tracks,
        tracked.boxes
    );
    println!(
        "objects      OWTA {:.3}  DetRe {:.3}  DetPr {:.3}  AssA {:.3}  (class-agnostic, TAO-OW)",
        all.owta, all.det_re, all.det_pr, all.ass_a
    );
    println!("by query     mean OWTA {per_query:.3} (each query's tracks against its own objects)");
    println!("annotated    {}", annotated.display());
    println!("tracks       {} (TAO results)", tracks_path.display());
    Ok(())
}

/// OWTA of each query's tracks against the ground truth of its category,
/// averaged over the queries: tracking that also names things right.
fn per_query_owta(
    gt: &TaoDataset,
    predictions: &[tao_ow::Prediction],
    categories: &[u64],
    gt_path: &Path,
    pred_path: &Path,
) -> Result<f64> {
    let mut total = 0.0;
    for &category in categories {
        let mut subset = gt.clone();
        subset.annotations.retain(|a| a.category_id == category);
        let mine: Vec<tao_ow::Prediction> = predictions
            .iter()
            .filter(|p| p.category_id == Some(category))
            .cloned()
            .collect();
        let evaluation =
            tao_ow::evaluate(&subset, &mine, EvalOptions::default(), (gt_path, pred_path))?;
        total += evaluation.combined.summary().owta;
    }
    Ok(total / categories.len().max(1) as f64)
}
