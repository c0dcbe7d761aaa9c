//! `owltrack bench track`: where a tracking run's time goes, per stage and
//! frame, and the whole pipeline's frame rate beside the model's alone on
//! the same frames (the baseline: inference with nothing around it).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use owltrack_decoder::{Event, ReadOptions, Source, VideoReader, DEFAULT_FOLDER_FPS};
use owltrack_models::{random_model, ClipTokenizer, DType, Detector, Device, OwlConfig, Query};
use owltrack_tracker::formats::{TaoIds, TrackFormat};
use owltrack_tracker::pipeline::{
    detect_for_tracking, track_video, tracking_post_process, TrackJob,
};
use owltrack_tracker::synth::{categories, write_dataset, Outputs, SynthConfig};
use owltrack_tracker::tbd::TrackerConfig;
use serde::Serialize;

use crate::runtime::builtin_model;

#[derive(Args)]
pub struct TrackBenchArgs {
    /// Video to track in; without one, a synthetic 640×360 clip is rendered.
    pub input: Option<String>,
    /// Frames of the rendered clip.
    #[arg(long, default_value_t = 100)]
    pub frames: u32,
    /// Models to measure: `builtin` (or a checkpoint folder) and published
    /// architectures with random weights, such as owlvit-base-patch32.
    #[arg(long = "arch", default_values_t = vec!["builtin".to_string(), "owlvit-base-patch32".to_string()])]
    pub archs: Vec<String>,
    /// Also draw and encode the annotated video.
    #[arg(long)]
    pub annotate: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct TrackBench {
    model: String,
    frames: u64,
    /// The model alone: preprocessing, backbone, heads, post-processing.
    inference_only_fps: f64,
    /// Decoding, inference, tracking and writing together.
    pipeline_fps: f64,
    /// pipeline / inference only.
    ratio: f64,
    decode_wait_ms: f64,
    preprocess_ms: f64,
    backbone_ms: f64,
    heads_ms: f64,
    tracking_ms: f64,
    writing_ms: f64,
    /// One step of the video decoder per frame, when the model has one.
    decoder_ms: Option<f64>,
}

pub fn run(args: TrackBenchArgs) -> Result<()> {
    crate::runtime::set_cpu_threads(args.threads);
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let input = match &args.input {
        Some(input) => input.clone(),
        None => {
            eprintln!("rendering a {}-frame synthetic clip…", args.frames);
            let config = SynthConfig {
                frames: args.frames.max(2),
                seed: 11,
                ..SynthConfig::default()
            };
            let outputs = Outputs {
                video: true,
                frames: false,
            };
            write_dataset(scratch.path(), 1, &config, outputs, || {})?;
            let videos = scratch.path().join("videos");
            let first = std::fs::read_dir(&videos)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .next()
                .context("the synthetic clip is missing")?;
            first.display().to_string()
        }
    };
    let queries: Vec<Query> = categories()
        .into_iter()
        .take(6)
        .map(|c| Query::Text(c.name))
        .collect();
    let mut reports = Vec::new();
    for arch in &args.archs {
        let mut detector = build(arch)?;
        reports.push(measure(
            &mut detector,
            arch,
            &input,
            &queries,
            &args,
            scratch.path(),
        )?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    println!("tracking in {input} (6 queries; time per frame in ms):");
    println!(
        "{:<24} {:>6} {:>9} {:>9} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7} {:>6}",
        "model",
        "frames",
        "model fps",
        "pipe fps",
        "decode",
        "prep",
        "backbone",
        "heads",
        "track",
        "write",
        "ratio"
    );
    for r in &reports {
        println!(
            "{:<24} {:>6} {:>9.1} {:>9.1} {:>7.2} {:>7.2} {:>9.2} {:>7.2} {:>7.3} {:>7.3} {:>6.2}",
            r.model,
            r.frames,
            r.inference_only_fps,
            r.pipeline_fps,
            r.decode_wait_ms,
            r.preprocess_ms,
            r.backbone_ms,
            r.heads_ms,
            r.tracking_ms,
            r.writing_ms,
            r.ratio
        );
    }
    for r in &reports {
        if let Some(decoder) = r.decoder_ms {
            println!(
                "{}: the video decoder costs {decoder:.2} ms a frame, {:.1}% of the backbone",
                r.model,
                100.0 * decoder / r.backbone_ms.max(1e-9)
            );
        }
    }
    println!("decode: waiting for the decoder beyond inference; track and write run on their own thread.");
    println!("ratio: the pipeline's frames/s over the model's alone on the same frames (1 = all else hidden)");
    Ok(())
}

/// Per-frame time of the video decoder's step alone (the backbone and the
/// detector's heads computed beforehand), carrying its state from frame to
/// frame.
fn decoder_step_ms(detector: &Detector, frames: &[owltrack_decoder::Frame]) -> Result<Option<f64>> {
    let Some(decoder) = detector.decoder() else {
        return Ok(None);
    };
    let mut tokens = Vec::with_capacity(frames.len());
    for frame in frames {
        let pixels = detector.preprocessor().tensor(
            &frame.rgb,
            frame.width,
            frame.height,
            detector.model().device(),
        )?;
        tokens.push(
            detector
                .model()
                .heads(detector.model().backbone(&pixels)?)?,
        );
    }
    let Some(first) = tokens.first() else {
        return Ok(None);
    };
    let mut state = decoder.initial_state(first)?;
    let started = Instant::now();
    for t in &tokens {
        state = decoder.step(t, &state)?.1;
    }
    Ok(Some(
        started.elapsed().as_secs_f64() * 1000.0 / tokens.len().max(1) as f64,
    ))
}

fn build(arch: &str) -> Result<Detector> {
    if arch == "builtin" {
        return Ok(Detector::load(
            &builtin_model().display().to_string(),
            &Device::Cpu,
            DType::F32,
        )?);
    }
    if std::path::Path::new(arch).is_dir() {
        return Ok(Detector::load(arch, &Device::Cpu, DType::F32)?);
    }
    let config =
        OwlConfig::architecture(arch).with_context(|| format!("unknown architecture {arch:?}"))?;
    let model = random_model(&config, &Device::Cpu, DType::F32)?;
    let tokenizer = ClipTokenizer::from_dir(&crate::commands::train::builtin_vocabulary())?;
    Ok(Detector::from_model(model, tokenizer)?)
}

fn measure(
    detector: &mut Detector,
    name: &str,
    input: &str,
    queries: &[Query],
    args: &TrackBenchArgs,
    scratch: &std::path::Path,
) -> Result<TrackBench> {
    // Baseline: the model alone on frames already in memory.
    let mut reader = VideoReader::open(
        Source::parse(input, DEFAULT_FOLDER_FPS)?,
        ReadOptions::default(),
    )?;
    let mut frames = Vec::new();
    while let Some(event) = reader.recv() {
        if let Event::Frame(frame) = event {
            frames.push(frame);
        }
    }
    reader.finish()?;
    if frames.is_empty() {
        bail!("{input} has no frames");
    }
    let embeddings = detector.embed_queries(queries)?;
    let config = TrackerConfig::default();
    let post = tracking_post_process(&config, 0.5);
    let started = Instant::now();
    for frame in &frames {
        detect_for_tracking(
            detector,
            &frame.rgb,
            (frame.width, frame.height),
            &embeddings,
            &post,
            0.1,
        )?;
    }
    let inference_only_fps = frames.len() as f64 / started.elapsed().as_secs_f64();
    let decoder_ms = decoder_step_ms(detector, &frames)?;

    let job = TrackJob {
        queries: queries.to_vec(),
        tracker: config,
        stride: 1,
        nms_iou: 0.5,
        label_score: 0.1,
        output: Some((
            scratch.join(format!("tracks-{}.jsonl", sanitize(name))),
            TrackFormat::JsonLines,
            TaoIds::default(),
        )),
        annotate: args
            .annotate
            .then(|| scratch.join(format!("annotated-{}.mp4", sanitize(name)))),
        include_tentative: false,
        recurrent: None,
    };
    let summary = track_video(
        detector,
        Source::parse(input, DEFAULT_FOLDER_FPS)?,
        &job,
        |_, _| {},
    )?;
    let pipeline_fps = summary.frames as f64 / summary.seconds.max(1e-9);
    Ok(TrackBench {
        model: name.to_owned(),
        frames: summary.frames,
        inference_only_fps,
        pipeline_fps,
        ratio: pipeline_fps / inference_only_fps,
        decode_wait_ms: summary.stages.decode_wait_ms,
        preprocess_ms: summary.stages.preprocess_ms,
        backbone_ms: summary.stages.backbone_ms,
        heads_ms: summary.stages.heads_ms,
        tracking_ms: summary.stages.tracking_ms,
        writing_ms: summary.stages.writing_ms,
        decoder_ms,
    })
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
