use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_tracker::synth::{write_dataset, Challenge, Outputs, SynthConfig};

use crate::progress;

#[derive(Args)]
pub struct SynthArgs {
    /// Folder to write: annotations.json (TAO format), videos/*.mp4,
    /// frames/NAME/*.jpg.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of videos.
    #[arg(long, default_value_t = 4)]
    pub videos: usize,
    /// Frames per video.
    #[arg(long, default_value_t = 90)]
    pub frames: u32,
    /// Everything follows from the seed: same seed, same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    pub size: (u32, u32),
    #[arg(long, default_value_t = 25.0)]
    pub fps: f64,
    /// Full occlusions per video (a larger object passing right over a
    /// smaller one) [default: one in most videos].
    #[arg(long, value_name = "N")]
    pub occlusions: Option<u32>,
    /// The chance that a moving object has a look-alike twin (same shape
    /// and colour) moving alongside it.
    #[arg(long, value_name = "P", default_value_t = Challenge::default().twin_chance)]
    pub twins: f64,
    /// Pairs of look-alikes per video whose paths cross, one passing over
    /// the other.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub crossings: u32,
    /// Skip the MP4 files.
    #[arg(long)]
    pub no_video: bool,
    /// Skip the JPEG frame folders.
    #[arg(long)]
    pub no_frames: bool,
}

pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("size {text:?} is not WIDTHxHEIGHT"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("size {text:?} is not WIDTHxHEIGHT"))
    };
    Ok((parse(w)?, parse(h)?))
}

pub fn run(args: SynthArgs) -> Result<()> {
    let config = SynthConfig {
        width: args.size.0,
        height: args.size.1,
        frames: args.frames,
        fps: args.fps,
        seed: args.seed,
        challenge: Challenge {
            occlusions: args.occlusions,
            twin_chance: args.twins,
            crossings: args.crossings,
        },
    };
    let outputs = Outputs {
        video: !args.no_video,
        frames: !args.no_frames,
    };
    let bar = progress::bar(Some(args.videos as u64 * u64::from(args.frames)), "frames");
    let summary = write_dataset(&args.out, args.videos, &config, outputs, || bar.inc(1))
        .with_context(|| {
            format!(
                "cannot write the synthetic dataset to {}",
                args.out.display()
            )
        })?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
