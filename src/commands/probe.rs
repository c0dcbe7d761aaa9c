use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_decoder::{probe, ReadOptions, Source, DEFAULT_FOLDER_FPS};

use crate::progress;

#[derive(Args)]
pub struct ProbeArgs {
    /// A video file, a folder of JPEG/PNG frames, a V4L2 device (/dev/videoN)
    /// or a URL (rtsp://, rtmp://, http(s):// for MP4, MPEG-TS, HLS or MJPEG).
    pub input: String,
    /// Decode every frame to count frames and decode errors exactly, instead
    /// of trusting the container's index.
    #[arg(long)]
    pub count_frames: bool,
    /// Frame rate given to a folder of frames.
    #[arg(long, default_value_t = DEFAULT_FOLDER_FPS, value_name = "FPS")]
    pub fps: f64,
    /// Seconds to wait for a network source to open or to send data.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
}

pub fn run(args: ProbeArgs) -> Result<()> {
    let source = Source::parse(&args.input, args.fps)?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let options = ReadOptions {
        open_timeout: timeout,
        read_timeout: timeout,
        ..ReadOptions::default()
    };
    let bar = progress::bar(None, "frames");
    let report = probe(&source, args.count_frames, &options, |n| {
        if n % 16 == 0 {
            bar.set_position(n);
        }
    });
    bar.finish_and_clear();
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
