use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use owltrack_models::{random_model, OwlConfig, Tensor, ARCHITECTURES};
use serde::Serialize;

use super::bench::ModelBenchArgs;

#[derive(Serialize)]
struct ModelBench {
    arch: String,
    dtype: String,
    threads: usize,
    image_seconds: f64,
    image_fps: f64,
    text_queries_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    torch: Option<serde_json::Value>,
    /// owltrack image fps / PyTorch image fps.
    #[serde(skip_serializing_if = "Option::is_none")]
    image_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_ratio: Option<f64>,
}

fn best_of(runs: u32, mut work: impl FnMut() -> Result<()>) -> Result<Duration> {
    work()?; // warm-up: allocations, page faults, kernel selection
    let mut best = Duration::MAX;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        work()?;
        best = best.min(started.elapsed());
    }
    Ok(best)
}

pub fn run(args: ModelBenchArgs) -> Result<()> {
    let config = OwlConfig::architecture(&args.arch).with_context(|| {
        format!(
            "unknown architecture {:?}; one of {}",
            args.arch,
            ARCHITECTURES.join(", ")
        )
    })?;
    if args.print_config {
        println!("{}", config.to_hub_json());
        return Ok(());
    }
    let dtype = match args.dtype.as_str() {
        "f32" => owltrack_models::DType::F32,
        "bf16" => owltrack_models::DType::BF16,
        other => bail!("unknown dtype {other:?}: use f32 or bf16"),
    };
    crate::runtime::set_cpu_threads(args.threads);
    let device = owltrack_models::Device::Cpu;
    eprintln!("building {} with random weights…", args.arch);
    let model = random_model(&config, &device, dtype)?;
    let size = config.vision.image_size;
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, size, size), &device)?;
    let image = best_of(args.runs, || {
        model.image_outputs(&pixels)?;
        Ok(())
    })?;
    let mut ids = vec![vec![0u32; 16]; args.queries.max(1)];
    for (q, row) in ids.iter_mut().enumerate() {
        row[0] = 49406;
        for (i, id) in row.iter_mut().enumerate().take(8).skip(1) {
            *id = 320 + (q * 7 + i) as u32;
        }
        row[8] = 49407;
    }
    let text = best_of(args.runs, || {
        model.embed_text(&ids)?;
        Ok(())
    })?;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let torch = match &args.torch {
        Some(python) => Some(run_torch(python, &config, &args, threads)?),
        None => None,
    };
    let image_fps = 1.0 / image.as_secs_f64();
    let text_qps = ids.len() as f64 / text.as_secs_f64();
    let ratio = |field: &str, ours: f64| {
        torch
            .as_ref()
            .and_then(|t| t[field].as_f64())
            .map(|theirs| ours / theirs)
    };
    let report = ModelBench {
        arch: args.arch.clone(),
        dtype: args.dtype.clone(),
        threads,
        image_seconds: image.as_secs_f64(),
        image_fps,
        text_queries_per_second: text_qps,
        image_ratio: ratio("image_fps", image_fps),
        text_ratio: ratio("text_queries_per_second", text_qps),
        torch,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} {} on {} threads, best of {}:",
        report.arch, report.dtype, threads, args.runs
    );
    println!(
        "  owltrack  image {:7.3} s/frame ({:6.2} frames/s)   text {:8.1} queries/s",
        report.image_seconds, image_fps, text_qps
    );
    if let Some(t) = &report.torch {
        println!(
            "  {}  image {:7.3} s/frame ({:6.2} frames/s)   text {:8.1} queries/s",
            t["framework"].as_str().unwrap_or("torch"),
            t["image_seconds"].as_f64().unwrap_or(f64::NAN),
            t["image_fps"].as_f64().unwrap_or(f64::NAN),
            t["text_queries_per_second"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "  ratio (owltrack / torch): image {:.2}×, text {:.2}×",
            report.image_ratio.unwrap_or(f64::NAN),
            report.text_ratio.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn run_torch(
    python: &Path,
    config: &OwlConfig,
    args: &ModelBenchArgs,
    threads: usize,
) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torch.py");
    eprintln!("timing the same architecture in PyTorch…");
    let output = Command::new(python)
        .arg(&script)
        .args([
            "--config",
            &config.to_hub_json().to_string(),
            "--dtype",
            &args.dtype,
        ])
        .args([
            "--threads",
            &threads.to_string(),
            "--runs",
            &args.runs.to_string(),
        ])
        .args(["--queries", &args.queries.max(1).to_string(), "--json"])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let last = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    serde_json::from_str(&last)
        .with_context(|| format!("unexpected output from {}: {last}", script.display()))
}
