use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use owltrack_streams::camera::CameraFeed;
use owltrack_tracker::synth::SynthConfig;

use crate::commands::synth::parse_size;

#[derive(Args)]
pub struct CameraArgs {
    /// Address and port to serve the camera on.
    #[arg(long, default_value = "127.0.0.1:8554")]
    pub bind: SocketAddr,
    /// Frames per second sent.
    #[arg(long, default_value_t = 25.0)]
    pub fps: f64,
    /// Length of the synthetic video the camera loops, in frames.
    #[arg(long, default_value_t = 250)]
    pub frames: u32,
    /// Seed of the synthetic world.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    pub size: (u32, u32),
}

pub fn run(args: CameraArgs) -> Result<()> {
    let config = SynthConfig {
        width: args.size.0,
        height: args.size.1,
        frames: args.frames.max(1),
        fps: args.fps,
        seed: args.seed,
        ..SynthConfig::default()
    };
    eprintln!("rendering {} frames…", config.frames);
    let feed = CameraFeed::synthetic(&config, 0, args.fps)
        .map_err(anyhow::Error::msg)
        .context("cannot prepare the camera")?;
    let runtime = crate::runtime::async_runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        let address = listener.local_addr()?;
        eprintln!(
            "synthetic camera: MJPEG at http://{address}/ ({} fps, {} frames looped); Ctrl-C stops it",
            args.fps,
            feed.frames()
        );
        tokio::select! {
            () = feed.serve(listener) => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        Ok(())
    })
}
