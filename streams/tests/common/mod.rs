//! What the service's tests share: the built-in model and synthetic videos.

use std::path::{Path, PathBuf};

use owltrack_models::{DType, Detector, Device};
use owltrack_tracker::synth::{write_dataset, Outputs, SynthConfig};

pub fn detector() -> Detector {
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/builtin/owltrack-tiny");
    Detector::load(builtin.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap()
}

/// A synthetic video (`frames` long, 640×360 at 25 fps) in a fresh folder,
/// under `videos/`.
pub fn synthetic_video(frames: u32, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        frames,
        seed,
        ..SynthConfig::default()
    };
    let outputs = Outputs {
        video: true,
        frames: false,
    };
    write_dataset(dir.path(), 1, &config, outputs, || {}).unwrap();
    let video = std::fs::read_dir(dir.path().join("videos"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (dir, video)
}
