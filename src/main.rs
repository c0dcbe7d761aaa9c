//! The `owltrack` command line: parse, wire the crates together, report.

mod commands;
mod progress;
mod runtime;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Open-vocabulary video tracking with OWL-ViT / OWLv2.
///
/// owltrack decodes video from files, network streams, webcams and frame
/// folders with FFmpeg, finds objects described in free text, and tracks them
/// through time.
#[derive(Parser)]
#[command(name = "owltrack", version, about, long_about)]
struct Cli {
    /// Log detail on stderr: error, warn, info, debug or trace (or a
    /// tracing filter such as `owltrack_decoder=debug`). RUST_LOG also works.
    #[arg(long, global = true, default_value = "warn", value_name = "FILTER")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects described by text (or example images) in an image or
    /// a video, printing JSON.
    Detect(Box<commands::detect::DetectArgs>),
    /// Score tracks on TAO-OW: OWTA, HOTA, DetRe, DetPr, AssA, AssRe, AssPr
    /// and LocA, as TrackEval's TAO-OW evaluation computes them.
    Eval(commands::eval::EvalArgs),
    /// Track objects described by text through videos: tracks as JSON lines,
    /// TAO results or MOT text, optionally an annotated MP4.
    Track(Box<commands::track::TrackArgs>),
    /// COCO-style AP and AP50 of detections against ground truth.
    EvalDetection(commands::eval_detection::EvalDetectionArgs),
    /// Describe a video source as JSON: container, codec, size, frame rate,
    /// duration, frame count.
    Probe(commands::probe::ProbeArgs),
    /// Measure owltrack against a named baseline on this machine.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Run a tracker over a benchmark dataset and score it.
    #[command(subcommand)]
    Benchmark(commands::benchmark::BenchmarkCommand),
    /// Render a synthetic video dataset with exact ground truth (TAO format).
    Synth(commands::synth::SynthArgs),
    /// Train models.
    #[command(subcommand)]
    Train(commands::train::TrainCommand),
    /// Copy a checkpoint with its weights stored in another number format
    /// (f16 halves the size on disk).
    Export(commands::export::ExportArgs),
    /// Run the built-in demonstration on a sample video it generates.
    Demo(commands::demo::DemoArgs),
    /// Serve live streams: REST control (/v1/streams), tracks over
    /// WebSocket, Prometheus metrics, an OpenAPI document and a viewer page.
    Serve(Box<commands::serve::ServeArgs>),
    /// A synthetic live camera: a synthetic video looped as MJPEG over HTTP,
    /// a stand-in for an IP camera when trying `serve`.
    Camera(commands::camera::CameraArgs),
}

/// Keeps freed tensor buffers in the heap instead of handing them back to
/// the kernel: inference allocates and frees the same few megabyte-sized
/// buffers every layer, and fresh pages cost a fault and a clear each time
/// (about 4% of a frame's time).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes glibc's allocator; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    init_logging(&cli.log);
    let outcome = match cli.command {
        Command::Detect(args) => commands::detect::run(*args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Track(args) => commands::track::run(*args),
        Command::EvalDetection(args) => commands::eval_detection::run(args),
        Command::Bench(command) => commands::bench::run(command),
        Command::Benchmark(command) => commands::benchmark::run(command),
        Command::Demo(args) => commands::demo::run(args),
        Command::Serve(args) => commands::serve::run(*args),
        Command::Camera(args) => commands::camera::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Synth(args) => commands::synth::run(args),
        Command::Train(command) => commands::train::run(command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|env| EnvFilter::try_new(env).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
