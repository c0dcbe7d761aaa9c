use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_decoder::{probe, write_pattern_video, ReadOptions, Source, WriterOptions};

use crate::progress;

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for what the demo writes.
    #[arg(long, default_value = "owltrack-demo")]
    pub out: PathBuf,
    /// Length of the sample video in frames (25 fps).
    #[arg(long, default_value_t = 150)]
    pub frames: u64,
}

/// Writes a sample video of moving squares, then probes it, decoding every
/// frame: the whole decoding path on a machine with nothing but owltrack.
pub fn run(args: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let video = args.out.join("sample.mp4");
    let options = WriterOptions::default();
    let bar = progress::bar(Some(args.frames), "frames written");
    write_pattern_video(&video, 640, 360, args.frames, &options, |_| bar.inc(1))
        .with_context(|| format!("cannot write {}", video.display()))?;
    bar.finish_and_clear();
    eprintln!("wrote {}", video.display());

    let source = Source::File { path: video };
    let report = probe(&source, true, &ReadOptions::default(), |_| {})
        .with_context(|| format!("cannot probe {source}"))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
