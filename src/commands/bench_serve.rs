//! `owltrack bench serve`: the service under sustained load. Synthetic live
//! cameras send faster than the model can follow, so the live queues must
//! drop frames; what is measured is whether latency and memory stay flat
//! over the run. The baseline is the model alone on the camera's frames.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::StreamExt;
use owltrack_models::Query;
use owltrack_streams::camera::CameraFeed;
use owltrack_streams::server::{serve, AppState, ServerConfig};
use owltrack_streams::Inference;
use owltrack_tracker::pipeline::{detect_for_tracking, tracking_post_process};
use owltrack_tracker::synth::{categories, SynthConfig};
use owltrack_tracker::tbd::TrackerConfig;
use serde::Serialize;
use serde_json::{json, Value};

use crate::runtime::ModelArgs;

#[derive(Args)]
pub struct ServeBenchArgs {
    /// Streams, each from its own camera connection.
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// WebSocket clients per stream.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Length of the run.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// A row of figures every this many seconds.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// The cameras' frame rate.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Frames of different streams that may share one backbone pass.
    #[arg(long, default_value_t = 4)]
    pub max_batch: usize,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print the rows and the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Default)]
struct ClientTally {
    latencies_ms: Vec<f64>,
    updates: u64,
    lagged: u64,
}

#[derive(Debug, Serialize)]
struct Row {
    at_s: f64,
    /// Frames processed per second, all streams together.
    fps: f64,
    /// Updates received per second, all clients together.
    client_updates_per_s: f64,
    /// From capture to a client's receipt.
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    frames_dropped: u64,
    lagged: u64,
    rss_mb: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    model_alone_fps: f64,
    served_fps: f64,
    /// Served frames/s over the model's alone on the same frames.
    ratio: f64,
    latency_p50_first_ms: f64,
    latency_p50_last_ms: f64,
    latency_p99_first_ms: f64,
    latency_p99_last_ms: f64,
    rss_first_mb: f64,
    rss_last_mb: f64,
    /// Least-squares slope of resident memory after the first row.
    rss_slope_mb_per_min: f64,
    rows: Vec<Row>,
}

pub fn run(args: ServeBenchArgs) -> Result<()> {
    if args.streams == 0 || args.clients == 0 || args.seconds == 0 || args.interval == 0 {
        bail!("streams, clients, seconds and interval must be positive");
    }
    let config = SynthConfig {
        frames: 250,
        seed: 11,
        fps: args.fps,
        ..SynthConfig::default()
    };
    eprintln!("rendering the cameras' {} frames…", config.frames);
    let feed = CameraFeed::synthetic(&config, 0, args.fps).map_err(anyhow::Error::msg)?;
    let queries: Vec<String> = categories().into_iter().take(6).map(|c| c.name).collect();
    let mut detector = args.model.load()?;
    let model_alone_fps = model_alone(&mut detector, &config, &queries)?;
    eprintln!("model alone: {model_alone_fps:.1} frames/s");
    let inference = Inference::start(detector, args.max_batch)?;
    let runtime = crate::runtime::async_runtime()?;
    let rows = runtime.block_on(load(&args, feed, inference, &queries))?;
    let summary = summarise(model_alone_fps, rows);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{} streams × {} clients, cameras at {} fps, {} s (latency: capture to client, ms)",
        args.streams, args.clients, args.fps, args.seconds
    );
    println!(
        "{:>7} {:>7} {:>10} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "t (s)", "fps", "client/s", "p50", "p99", "dropped", "lagged", "RSS MB"
    );
    for row in &summary.rows {
        println!(
            "{:>7.0} {:>7.1} {:>10.1} {:>8.1} {:>8.1} {:>8} {:>7} {:>8.1}",
            row.at_s,
            row.fps,
            row.client_updates_per_s,
            row.latency_p50_ms,
            row.latency_p99_ms,
            row.frames_dropped,
            row.lagged,
            row.rss_mb
        );
    }
    println!(
        "served {:.1} frames/s vs the model alone {:.1} (ratio {:.2}); latency p50 {:.0} → {:.0} ms, p99 {:.0} → {:.0} ms; RSS {:.0} → {:.0} MB ({:+.2} MB/min)",
        summary.served_fps,
        summary.model_alone_fps,
        summary.ratio,
        summary.latency_p50_first_ms,
        summary.latency_p50_last_ms,
        summary.latency_p99_first_ms,
        summary.latency_p99_last_ms,
        summary.rss_first_mb,
        summary.rss_last_mb,
        summary.rss_slope_mb_per_min
    );
    Ok(())
}

/// Frames/s of detection and tracking preparation alone on the camera's
/// frames: the ceiling the service is compared with.
fn model_alone(
    detector: &mut owltrack_models::Detector,
    config: &SynthConfig,
    queries: &[String],
) -> Result<f64> {
    let world = owltrack_tracker::synth::VideoWorld::new(config, 0)?;
    let frames: Vec<Vec<u8>> = (0..40).map(|i| world.render(i).0).collect();
    let texts: Vec<Query> = queries.iter().cloned().map(Query::Text).collect();
    let embeddings = detector.embed_queries(&texts)?;
    let post = tracking_post_process(&TrackerConfig::default(), 0.5);
    let size = (config.width, config.height);
    detect_for_tracking(detector, &frames[0], size, &embeddings, &post, 0.1)?;
    let started = Instant::now();
    for rgb in &frames {
        detect_for_tracking(detector, rgb, size, &embeddings, &post, 0.1)?;
    }
    Ok(frames.len() as f64 / started.elapsed().as_secs_f64())
}

fn unix_millis() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn load(
    args: &ServeBenchArgs,
    feed: CameraFeed,
    inference: Inference,
    queries: &[String],
) -> Result<Vec<Row>> {
    let camera_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let camera = camera_listener.local_addr()?;
    let camera_task = tokio::spawn(feed.serve(camera_listener));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(
        inference,
        ServerConfig {
            max_streams: args.streams,
            ..ServerConfig::default()
        },
    );
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..args.streams {
        let answer: Value = http
            .post(format!("http://{address}/v1/streams"))
            .json(&json!({"source": format!("http://{camera}/"), "queries": queries}))
            .send()
            .await?
            .json()
            .await?;
        let id = answer["id"]
            .as_str()
            .with_context(|| format!("the server refused a stream: {answer}"))?;
        ids.push(id.to_owned());
    }
    let tally = Arc::new(Mutex::new(ClientTally::default()));
    let mut clients = Vec::new();
    for id in &ids {
        for _ in 0..args.clients {
            let url = format!("ws://{address}/v1/streams/{id}/ws");
            let (mut socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .context("cannot connect a client")?;
            let tally = Arc::clone(&tally);
            clients.push(tokio::spawn(async move {
                while let Some(Ok(message)) = socket.next().await {
                    let Ok(text) = message.to_text() else {
                        continue;
                    };
                    let Ok(message) = serde_json::from_str::<Value>(text) else {
                        continue;
                    };
                    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                    if message["type"] == "update" {
                        if let Some(captured) = message["captured_at_ms"].as_f64() {
                            tally.latencies_ms.push(unix_millis() - captured);
                        }
                        tally.updates += 1;
                    } else if message["event"] == "lagged" {
                        tally.lagged += message["count"].as_u64().unwrap_or(0);
                    }
                }
            }));
        }
    }

    let started = Instant::now();
    let mut rows = Vec::new();
    let mut last = (Instant::now(), 0u64, 0u64);
    let bar = crate::progress::bar(Some(args.seconds), "s");
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let remaining = Duration::from_secs(args.seconds).saturating_sub(started.elapsed());
        let wait = Duration::from_secs(args.interval).min(remaining);
        let tick = Instant::now();
        while tick.elapsed() < wait {
            tokio::time::sleep(Duration::from_millis(500)).await;
            bar.set_position(started.elapsed().as_secs().min(args.seconds));
        }
        let (mut frames, mut dropped) = (0u64, 0u64);
        for id in &ids {
            let status: Value = http
                .get(format!("http://{address}/v1/streams/{id}"))
                .send()
                .await?
                .json()
                .await?;
            frames += status["frames"].as_u64().unwrap_or(0);
            dropped += status["frames_dropped"].as_u64().unwrap_or(0);
        }
        let taken = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
        let now = Instant::now();
        let seconds = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let mut latencies = taken.latencies_ms;
        latencies.sort_by(f64::total_cmp);
        rows.push(Row {
            at_s: started.elapsed().as_secs_f64(),
            fps: frames.saturating_sub(last.1) as f64 / seconds,
            client_updates_per_s: taken.updates as f64 / seconds,
            latency_p50_ms: percentile(&latencies, 0.5),
            latency_p99_ms: percentile(&latencies, 0.99),
            frames_dropped: dropped.saturating_sub(last.2),
            lagged: taken.lagged,
            rss_mb: resident_mb(),
        });
        last = (now, frames, dropped);
    }
    bar.finish_and_clear();
    for client in &clients {
        client.abort();
    }
    let _ = stop.send(());
    server.await??;
    camera_task.abort();
    Ok(rows)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// This process's resident memory (VmRSS), in MB.
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn summarise(model_alone_fps: f64, rows: Vec<Row>) -> Summary {
    let first = rows.first();
    let last = rows.last();
    let served_fps = if rows.is_empty() {
        0.0
    } else {
        rows.iter().map(|r| r.fps).sum::<f64>() / rows.len() as f64
    };
    // The first row holds start-up (model warm-up, allocator growth); the
    // slope is over the rest.
    let steady: Vec<(f64, f64)> = rows
        .iter()
        .skip(1)
        .map(|r| (r.at_s / 60.0, r.rss_mb))
        .collect();
    Summary {
        model_alone_fps,
        served_fps,
        ratio: served_fps / model_alone_fps,
        latency_p50_first_ms: first.map_or(f64::NAN, |r| r.latency_p50_ms),
        latency_p50_last_ms: last.map_or(f64::NAN, |r| r.latency_p50_ms),
        latency_p99_first_ms: first.map_or(f64::NAN, |r| r.latency_p99_ms),
        latency_p99_last_ms: last.map_or(f64::NAN, |r| r.latency_p99_ms),
        rss_first_mb: first.map_or(f64::NAN, |r| r.rss_mb),
        rss_last_mb: last.map_or(f64::NAN, |r| r.rss_mb),
        rss_slope_mb_per_min: slope(&steady),
        rows,
    }
}

fn slope(points: &[(f64, f64)]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}
