use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use owltrack_decoder::{
    write_pattern_video, Event, Pacing, ReadOptions, Resize, Source, VideoReader, WriterOptions,
};
use serde::Serialize;

use crate::progress;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Decoded and scaled RGB frames per second, beside the `ffmpeg` CLI doing
    /// the same work (`ffmpeg -i INPUT -vf scale=S:S -pix_fmt rgb24 -f null -`)
    /// in the same run.
    Decode(DecodeBenchArgs),
    /// Image frames/s (image tower and heads) and text queries/s of a
    /// published OWL architecture built with random weights (nothing is
    /// downloaded), optionally beside PyTorch running the same architecture.
    Model(ModelBenchArgs),
    /// The TAO-OW evaluator (`owltrack eval`) on a generated workload of TAO
    /// val's size, optionally beside TrackEval on the same files.
    Eval(crate::commands::bench_eval::EvalBenchArgs),
    /// Per-stage time per frame of `owltrack track` (decode, inference,
    /// tracking, writing) and the pipeline's frames/s beside the model's
    /// alone, for the built-in model and a published architecture with
    /// random weights.
    Track(crate::commands::bench_track::TrackBenchArgs),
    /// The service under load: N streams from synthetic live cameras faster
    /// than the model, M WebSocket clients each, over loopback; frames/s,
    /// end-to-end latency p50/p99, dropped frames and resident memory per
    /// interval, beside the model alone on the same frames.
    Serve(crate::commands::bench_serve::ServeBenchArgs),
}

#[derive(Args)]
pub struct ModelBenchArgs {
    /// Architecture: owlvit-base-patch32, owlvit-base-patch16,
    /// owlvit-large-patch14, owlv2-base-patch16, owlv2-base-patch16-ensemble,
    /// owlv2-large-patch14-ensemble.
    #[arg(long, default_value = "owlvit-base-patch32")]
    pub arch: String,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Timed runs; the best counts.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Text queries per batch.
    #[arg(long, default_value_t = 16)]
    pub queries: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A Python with torch and transformers: runs scripts/bench_torch.py on the
    /// same architecture in the same run and prints the ratios.
    #[arg(long, value_name = "PYTHON")]
    pub torch: Option<PathBuf>,
    /// Print the architecture's config as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DecodeBenchArgs {
    /// Video to decode; without one, a 1080p H.264 clip is generated.
    pub input: Option<PathBuf>,
    /// Frames are scaled to SIZE×SIZE RGB.
    #[arg(long, default_value_t = 768)]
    pub size: u32,
    /// Timed runs of each side; the best run counts.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Length of the generated clip in seconds (30 fps).
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Decoder threads (0: FFmpeg chooses, as the CLI does).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct DecodeBench {
    input: String,
    source_width: u32,
    source_height: u32,
    codec: String,
    frames: u64,
    size: u32,
    owltrack_seconds: f64,
    owltrack_fps: f64,
    baseline_command: String,
    baseline_seconds: Option<f64>,
    baseline_fps: Option<f64>,
    /// owltrack fps / baseline fps.
    ratio: Option<f64>,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Decode(args) => decode(args),
        BenchCommand::Model(args) => crate::commands::bench_model::run(args),
        BenchCommand::Eval(args) => crate::commands::bench_eval::run(args),
        BenchCommand::Track(args) => crate::commands::bench_track::run(args),
        BenchCommand::Serve(args) => crate::commands::bench_serve::run(args),
    }
}

fn decode(args: DecodeBenchArgs) -> Result<()> {
    if args.size == 0 || args.runs == 0 {
        bail!("--size and --runs must be at least 1");
    }
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let input = match &args.input {
        Some(path) => path.clone(),
        None => generate_clip(scratch.path(), args.seconds)?,
    };
    let source = Source::File {
        path: input.clone(),
    };
    let options = ReadOptions {
        resize: Resize::Exact {
            width: args.size,
            height: args.size,
        },
        pacing: Pacing::offline(),
        threads: args.threads,
        ..ReadOptions::default()
    };

    let mut best: Option<(Duration, u64)> = None;
    let mut info = None;
    for run in 0..args.runs {
        let (elapsed, frames, stream) = time_owltrack(&source, &options)
            .with_context(|| format!("owltrack run {} on {} failed", run + 1, input.display()))?;
        info = Some(stream);
        if best.is_none_or(|(b, _)| elapsed < b) {
            best = Some((elapsed, frames));
        }
    }
    let (Some((ours, frames)), Some(info)) = (best, info) else {
        bail!("no run completed");
    };
    if frames == 0 {
        bail!("{} has no frames to decode", input.display());
    }

    let filter = format!("scale={0}:{0}", args.size);
    let baseline_args = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-i",
        &input.to_string_lossy(),
        "-vf",
        &filter,
        "-pix_fmt",
        "rgb24",
        "-f",
        "null",
        "-",
    ]
    .map(str::to_owned);
    let baseline_command = format!("ffmpeg {}", baseline_args.join(" "));
    let baseline = if ffmpeg_cli_available() {
        let mut best: Option<Duration> = None;
        for _ in 0..args.runs {
            let elapsed = time_ffmpeg_cli(&baseline_args)?;
            best = Some(best.map_or(elapsed, |b| b.min(elapsed)));
        }
        best
    } else {
        tracing::warn!("the ffmpeg CLI is not installed: no baseline to compare with");
        None
    };

    let fps = |d: Duration| frames as f64 / d.as_secs_f64();
    let report = DecodeBench {
        input: input.display().to_string(),
        source_width: info.width,
        source_height: info.height,
        codec: info.codec,
        frames,
        size: args.size,
        owltrack_seconds: ours.as_secs_f64(),
        owltrack_fps: fps(ours),
        baseline_command,
        baseline_seconds: baseline.map(|d| d.as_secs_f64()),
        baseline_fps: baseline.map(fps),
        ratio: baseline.map(|b| fps(ours) / fps(b)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "decode {} ({}×{} {}, {} frames) to {}×{} RGB, best of {}:",
            report.input,
            report.source_width,
            report.source_height,
            report.codec,
            frames,
            args.size,
            args.size,
            args.runs
        );
        println!(
            "  owltrack    {:8.1} frames/s  ({:.2} s)",
            report.owltrack_fps, report.owltrack_seconds
        );
        match (report.baseline_fps, report.baseline_seconds, report.ratio) {
            (Some(fps), Some(seconds), Some(ratio)) => {
                println!("  ffmpeg CLI  {fps:8.1} frames/s  ({seconds:.2} s)");
                println!("  ratio       {ratio:8.2}×  (owltrack / ffmpeg CLI)");
            }
            _ => println!("  ffmpeg CLI  not installed: no baseline"),
        }
        println!("  baseline: {}", report.baseline_command);
    }
    Ok(())
}

fn generate_clip(dir: &Path, seconds: u32) -> Result<PathBuf> {
    let path = dir.join("bench-1080p.mp4");
    let fps = 30.0;
    let frames = u64::from(seconds.max(1)) * 30;
    eprintln!("generating a {seconds} s 1080p H.264 clip to decode…");
    let bar = progress::bar(Some(frames), "frames");
    let options = WriterOptions {
        fps,
        keyframe_interval: Some(60),
        ..WriterOptions::default()
    };
    write_pattern_video(&path, 1920, 1080, frames, &options, |_| bar.inc(1))
        .context("cannot write the benchmark clip")?;
    bar.finish_and_clear();
    Ok(path)
}

fn time_owltrack(
    source: &Source,
    options: &ReadOptions,
) -> Result<(Duration, u64, owltrack_decoder::StreamInfo)> {
    let started = Instant::now();
    let reader = VideoReader::open(source.clone(), options.clone())?;
    let info = reader.info().clone();
    let bar = progress::bar(info.frames, "frames");
    let mut frames = 0u64;
    let mut reader = reader;
    for event in reader.by_ref() {
        if let Event::Frame(frame) = event {
            frames += 1;
            bar.set_position(frames);
            std::hint::black_box(&frame.rgb);
        }
    }
    reader.finish()?;
    bar.finish_and_clear();
    Ok((started.elapsed(), frames, info))
}

fn ffmpeg_cli_available() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn time_ffmpeg_cli(args: &[String]) -> Result<Duration> {
    let started = Instant::now();
    let output = Command::new("ffmpeg")
        .args(args)
        .output()
        .context("cannot run the ffmpeg CLI")?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "the ffmpeg CLI failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(elapsed)
}
