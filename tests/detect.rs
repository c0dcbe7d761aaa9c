//! `owltrack detect` end to end on the tiny reference checkpoints: image in,
//! the same detections as transformers' pipeline out.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use owltrack_decoder::image;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures")
}

/// The reference's source image `index` as a PNG.
fn reference_image(name: &str, index: usize, dir: &Path) -> PathBuf {
    let refs = candle_core::safetensors::load(
        fixtures().join(format!("{name}-reference.safetensors")),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let pixels = &refs[&format!("image{index}")];
    let (h, w, _) = pixels.dims3().unwrap();
    let rgb: Vec<u8> = pixels.flatten_all().unwrap().to_vec1().unwrap();
    let path = dir.join(format!("{name}-{index}.png"));
    image::write_image(&path, &rgb, w as u32, h as u32).unwrap();
    path
}

#[test]
fn detect_gives_transformers_detections_on_an_image() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["owlvit-tiny", "owlv2-tiny"] {
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("{name}-detections.json"))).unwrap(),
        )
        .unwrap();
        let queries: Vec<&str> = expected["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap())
            .collect();
        for (index, want) in expected["images"].as_array().unwrap().iter().enumerate() {
            let image = reference_image(name, index, dir.path());
            let model = fixtures().join(name);
            let mut args = vec!["detect", "--model", model.to_str().unwrap()];
            for q in &queries {
                args.extend(["-q", q]);
            }
            args.extend([
                "--threshold",
                "0",
                "--nms-iou",
                "1",
                "--top-k",
                "0",
                "--no-clip",
                image.to_str().unwrap(),
            ]);
            let output = owltrack(&args);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let got: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(got["width"], want["width"]);
            assert_eq!(got["height"], want["height"]);
            let detections = got["detections"].as_array().unwrap();
            let mut reference: Vec<(f64, u64, Vec<f64>)> =
                (0..want["scores"].as_array().unwrap().len())
                    .map(|k| {
                        (
                            want["scores"][k].as_f64().unwrap(),
                            want["labels"][k].as_u64().unwrap(),
                            want["boxes"][k]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|v| v.as_f64().unwrap())
                                .collect(),
                        )
                    })
                    .collect();
            reference.sort_by(|a, b| b.0.total_cmp(&a.0));
            assert_eq!(
                detections.len(),
                reference.len(),
                "{name}: one detection per patch"
            );
            for (d, (score, label, bbox)) in detections.iter().zip(&reference) {
                assert!(
                    (d["score"].as_f64().unwrap() - score).abs() < 1e-4,
                    "{name}: {d} vs {score}"
                );
                assert_eq!(d["label"].as_u64().unwrap(), *label, "{name}: {d}");
                assert_eq!(d["query"], queries[*label as usize]);
                for j in 0..4 {
                    assert!(
                        (d["box"][j].as_f64().unwrap() - bbox[j]).abs() < 1e-2,
                        "{name}: {d} vs {bbox:?}"
                    );
                }
            }
            let scores: Vec<f64> = detections
                .iter()
                .map(|d| d["score"].as_f64().unwrap())
                .collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by score");
        }
    }
}

#[test]
fn detect_defaults_threshold_suppress_cap_and_clip() {
    let dir = tempfile::tempdir().unwrap();
    let image = reference_image("owlv2-tiny", 1, dir.path());
    let model = fixtures().join("owlv2-tiny");
    let output = owltrack(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "-q",
        "a red circle",
        "--top-k",
        "5",
        image.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    let detections = got["detections"].as_array().unwrap();
    assert!(!detections.is_empty() && detections.len() <= 5);
    let (w, h) = (
        got["width"].as_f64().unwrap(),
        got["height"].as_f64().unwrap(),
    );
    for d in detections {
        assert!(d["score"].as_f64().unwrap() > 0.1);
        let b = box_of(d);
        assert!(
            b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h,
            "clipped: {b:?}"
        );
    }
}

#[test]
fn detect_runs_on_video_and_image_queries() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("v.mp4");
    let mut writer =
        owltrack_decoder::VideoWriter::create(&video, 64, 48, &Default::default()).unwrap();
    for i in 0..3 {
        writer
            .write(&owltrack_decoder::pattern_frame(64, 48, i, 25.0))
            .unwrap();
    }
    writer.finish().unwrap();
    let example = reference_image("owlvit-tiny", 0, dir.path());
    let model = fixtures().join("owlvit-tiny");
    let output = owltrack(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "-q",
        "a red circle",
        "--image-query",
        example.to_str().unwrap(),
        "--threshold",
        "0",
        video.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["frame"], i as u64);
        assert_eq!(line["width"], 64);
        let queries: Vec<&str> = line["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["query"].as_str().unwrap())
            .collect();
        assert!(
            queries
                .iter()
                .all(|q| *q == "a red circle" || *q == "owlvit-tiny-0.png"),
            "{queries:?}"
        );
    }
}

#[test]
fn detect_explains_bad_models_and_queries() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["detect", "--model", "/nope/model", "-q", "x", "a.png"],
            "no such folder",
        ),
        (
            &[
                "detect",
                "--model",
                "models/tests/fixtures/owlvit-tiny",
                "a.png",
            ],
            "at least one query",
        ),
        (
            &[
                "detect",
                "--model",
                "models/tests/fixtures/owlvit-tiny",
                "-q",
                "x",
                "--dtype",
                "f8",
                "a.png",
            ],
            "dtype",
        ),
        (
            &[
                "detect",
                "--model",
                "models/tests/fixtures/owlvit-tiny",
                "-q",
                "x",
                "--device",
                "cuda",
                "a.png",
            ],
            "CUDA",
        ),
    ];
    for (args, message) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_owltrack"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // A hub id not in the cache, offline: says where the cache is and how to fill it.
    let output = Command::new(env!("CARGO_BIN_EXE_owltrack"))
        .args([
            "detect",
            "--model",
            "google/owlv2-base-patch16",
            "-q",
            "x",
            "a.png",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HOME",
            std::env::temp_dir().join("owltrack-empty-hf-home"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not in the Hugging Face cache")
            && stderr.contains("owltrack-empty-hf-home"),
        "{stderr}"
    );
}

#[test]
fn hub_ids_resolve_through_the_hugging_face_cache() {
    // The cache layout huggingface_hub writes: refs/main names a snapshot.
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--owltrack-test--owlvit-tiny");
    let snapshot = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ] {
        std::fs::copy(
            fixtures().join("owlvit-tiny").join(file),
            snapshot.join(file),
        )
        .unwrap();
    }
    let image = reference_image("owlvit-tiny", 0, home.path());
    let output = Command::new(env!("CARGO_BIN_EXE_owltrack"))
        .args([
            "detect",
            "--model",
            "owltrack-test/owlvit-tiny",
            "-q",
            "a red circle",
            image.to_str().unwrap(),
        ])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["width"], 80);
}
