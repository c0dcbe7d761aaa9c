//! Training end to end through the binary: synth → train → detect → evaluate.

mod common;

use common::*;

use serde_json::Value;

#[test]
fn synth_train_resume_detect_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let model = dir.path().join("model");
    let (data_s, model_s) = (data.to_str().unwrap(), model.to_str().unwrap());
    ok(owltrack(&[
        "synth",
        "--out",
        data_s,
        "--videos",
        "1",
        "--frames",
        "6",
        "--size",
        "160x120",
        "--no-video",
    ]));

    let summary: Value = serde_json::from_str(&ok(owltrack(&[
        "train",
        "detector",
        "--data",
        data_s,
        "--arch",
        "tiny",
        "--steps",
        "2",
        "--batch",
        "2",
        "--warmup",
        "1",
        "--save-every",
        "1",
        "--out",
        model_s,
    ])))
    .unwrap();
    assert_eq!(summary["steps"], 2);
    assert_eq!(summary["categories"], 24);
    for file in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "losses.csv",
        "losses.png",
        "trainer_state.safetensors",
    ] {
        assert!(model.join(file).is_file(), "{file} missing");
    }
    // Resuming continues the same run: the log gains one row, not three.
    ok(owltrack(&[
        "train", "detector", "--data", data_s, "--arch", "tiny", "--steps", "3", "--batch", "2",
        "--warmup", "1", "--out", model_s, "--resume",
    ]));
    let log = std::fs::read_to_string(model.join("losses.csv")).unwrap();
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3"]);

    // The checkpoint is one `detect` loads; its results evaluate.
    let results = dir.path().join("results.json");
    ok(owltrack(&[
        "detect",
        "--model",
        model_s,
        "--dataset",
        data_s,
        "--threshold",
        "0",
        "-o",
        results.to_str().unwrap(),
    ]));
    let report: Value = serde_json::from_str(&ok(owltrack(&[
        "eval-detection",
        "--gt",
        data.join("annotations.json").to_str().unwrap(),
        "--pred",
        results.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let ap50 = report["ap50"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ap50));
    assert!(!report["categories"].as_array().unwrap().is_empty());

    // Detections on images the ground truth lacks, or with negative sizes, are refused.
    let gt = data.join("annotations.json");
    for (results_text, message) in [
        (
            r#"[{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]"#,
            "image 999",
        ),
        (
            r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 0.5}]"#,
            "invalid detection",
        ),
    ] {
        std::fs::write(&results, results_text).unwrap();
        let output = owltrack(&[
            "eval-detection",
            "--gt",
            gt.to_str().unwrap(),
            "--pred",
            results.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(message),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn fine_tunes_the_builtin_model_stored_in_f16() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("tuned");
    ok(owltrack(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--videos",
        "1",
        "--frames",
        "3",
        "--no-video",
    ]));
    let builtin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/builtin/owltrack-tiny");
    let summary: Value = serde_json::from_str(&ok(owltrack(&[
        "train",
        "detector",
        "--data",
        data.to_str().unwrap(),
        "--init",
        builtin.to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "1",
        "--out",
        out.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(summary["steps"], 1);
    // Fine-tuning starts from the checkpoint: its first loss is the trained
    // model's (around 1), not a fresh model's (around 4).
    let log = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    let first_total: f64 = log
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_total < 2.5,
        "first loss {first_total}: the weights were not loaded"
    );
}
