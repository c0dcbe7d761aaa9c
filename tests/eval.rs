//! `owltrack eval` and `owltrack benchmark tao-ow` through the binary.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tracker/tests/fixtures/tao_ow")
        .join(case)
}

#[test]
fn json_report_matches_trackeval() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(golden("expected.json")).unwrap()).unwrap();
    let case = &expected["cases"][1];
    let name = case["name"].as_str().unwrap();
    for subset in ["all", "known", "unknown"] {
        let report = json_of(&owltrack(&[
            "eval",
            "--gt",
            golden(name).join("gt.json").to_str().unwrap(),
            "--pred",
            golden(name).join("pred.json").to_str().unwrap(),
            "--subset",
            subset,
            "--max-dets",
            &case["max_dets"].to_string(),
            "--per-video",
            "--json",
        ]));
        let theirs = &case["subsets"][subset]["combined"];
        for field in ["OWTA", "HOTA", "DetRe", "AssA"] {
            let per_alpha = theirs[field].as_array().unwrap();
            let mean =
                per_alpha.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / per_alpha.len() as f64;
            let ours = report["combined"]["mean"][field].as_f64().unwrap();
            assert!(
                (ours - mean).abs() < 1e-6,
                "{subset} {field}: {ours} vs {mean}"
            );
        }
        assert_eq!(
            report["per_video"].as_array().unwrap().len(),
            case["subsets"][subset]["per_video"]
                .as_object()
                .unwrap()
                .len()
        );
    }
    // The table names the subset and every headline metric.
    let table = ok(owltrack(&[
        "eval",
        "--gt",
        golden(name).join("gt.json").to_str().unwrap(),
        "--pred",
        golden(name).join("pred.json").to_str().unwrap(),
    ]));
    assert!(table.contains("subset all") && table.contains("OWTA") && table.contains("combined"));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gt = golden("case_00").join("gt.json");
    let bad = dir.path().join("bad.json");
    for (content, expected) in [
        (
            "[{\"image_id\": 101, \"bbox\": [0, 0, 1",
            "not a TAO results list",
        ),
        (
            "[{\"image_id\": 987654, \"bbox\": [0, 0, 1, 1], \"score\": 1, \"track_id\": 1}]",
            "image 987654 is not in the ground truth",
        ),
        (
            "[{\"image_id\": 101, \"bbox\": [0, 0, -1, 1], \"score\": 1, \"track_id\": 1}]",
            "negative width or height",
        ),
        (
            "[{\"image_id\": 101, \"bbox\": [0, 0, 1, 1], \"score\": 1, \"track_id\": -3}]",
            "negative track id -3",
        ),
    ] {
        std::fs::write(&bad, content).unwrap();
        let run = owltrack(&[
            "eval",
            "--gt",
            gt.to_str().unwrap(),
            "--pred",
            bad.to_str().unwrap(),
        ]);
        let stderr = error_of(&run);
        assert!(stderr.contains(expected), "{content}: {stderr}");
    }
    let run = owltrack(&[
        "eval",
        "--gt",
        gt.to_str().unwrap(),
        "--pred",
        "/nonexistent.json",
    ]);
    assert!(error_of(&run).contains("/nonexistent.json"));
}

#[test]
fn benchmark_runs_a_synthetic_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    synth_frames(
        &data,
        &["--videos", "2", "--frames", "12", "--seed", "6060"],
    );
    let report = json_of(&benchmark_tao_ow(&data, &out, &["--json"]));
    assert_eq!(report["frames"], 24);
    let all = &report["evaluations"][0];
    assert_eq!(all["subset"], "all");
    assert!(out.join("predictions.json").is_file() && out.join("scores.json").is_file());
    // The predictions score the same through `owltrack eval`.
    let again = json_of(&owltrack(&[
        "eval",
        "--gt",
        data.join("annotations.json").to_str().unwrap(),
        "--pred",
        out.join("predictions.json").to_str().unwrap(),
        "--json",
    ]));
    let per_alpha = all["combined"]["OWTA"].as_array().unwrap();
    let mean = per_alpha.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / per_alpha.len() as f64;
    let owta = again["combined"]["mean"]["OWTA"].as_f64().unwrap();
    assert!((owta - mean).abs() < 1e-12, "{owta} vs {mean}");

    // A video whose frames are gone is reported; the exit status says so.
    let frames = data.join("frames");
    let first = std::fs::read_dir(&frames)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_dir_all(&first).unwrap();
    let run = benchmark_tao_ow(&data, &out, &[]);
    let stderr = error_of(&run);
    assert!(stderr.contains("1 of 2 videos failed"), "{stderr}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("OWTA"));
}

/// `detect --dataset --every N` writes detections for every N-th frame only;
/// `eval-detection --every N` scores those frames, and says so when a
/// sample is scored against every frame.
#[test]
fn eval_detection_scores_the_frames_a_sampled_run_read() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<Value> = (0..10)
        .map(|i| {
            serde_json::json!({"id": i + 1, "video_id": 1, "frame_index": i,
                "file_name": format!("frames/v/{i:06}.jpg"), "width": 64, "height": 64})
        })
        .collect();
    let annotations: Vec<Value> = (0..10)
        .map(|i| {
            serde_json::json!({"id": i + 1, "image_id": i + 1, "video_id": 1, "track_id": 1,
                "category_id": 1, "bbox": [4.0 + i as f64, 8.0, 20.0, 16.0]})
        })
        .collect();
    let gt = dir.path().join("gt.json");
    std::fs::write(
        &gt,
        serde_json::json!({"videos": [{"id": 1, "name": "v", "width": 64, "height": 64}],
            "images": images, "annotations": annotations, "tracks": [],
            "categories": [{"id": 1, "name": "red circle"}]})
        .to_string(),
    )
    .unwrap();
    // Exact boxes on frames 0 and 5, as a run with --every 5 would give.
    let pred = dir.path().join("pred.json");
    let sampled: Vec<&Value> = annotations
        .iter()
        .filter(|a| (a["image_id"].as_u64().unwrap() - 1) % 5 == 0)
        .collect();
    let results: Vec<Value> = sampled
        .iter()
        .map(|a| {
            serde_json::json!({"image_id": a["image_id"], "category_id": 1,
                "bbox": a["bbox"], "score": 0.9})
        })
        .collect();
    std::fs::write(&pred, serde_json::to_string(&results).unwrap()).unwrap();
    let eval_detection = |extra: &[&str]| {
        let mut args = vec![
            "eval-detection",
            "--gt",
            gt.to_str().unwrap(),
            "--pred",
            pred.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        owltrack(&args)
    };

    let sampled_report = json_of(&eval_detection(&["--every", "5", "--json"]));
    // 1 − 1e-16: COCO's precision has an epsilon in its denominator.
    let perfect = sampled_report["ap50"].as_f64().unwrap();
    assert!((perfect - 1.0).abs() < 1e-12, "{perfect}");
    assert_eq!(
        sampled_report["categories"][0]["ground_truth"].as_u64(),
        Some(2)
    );

    let everything = eval_detection(&["--json"]);
    let report = json_of(&everything);
    let capped = report["ap50"].as_f64().unwrap();
    assert!(capped < 0.3, "two of ten frames found: AP50 {capped}");
    let warning = String::from_utf8_lossy(&everything.stderr);
    assert!(
        warning.contains("cover 2 of the 10 frames") && warning.contains("--every"),
        "{warning}"
    );

    let message = error_of(&eval_detection(&["--every", "3"]));
    assert!(
        message.contains("image 6") && message.contains("--every 3"),
        "{message}"
    );
}

/// A COCO detection dataset of stills (no videos, no frame indices) goes
/// through `detect --dataset` and `eval-detection` as a TAO one does; an
/// image that cannot be read is named and skipped, not fatal.
#[test]
fn detect_and_eval_detection_take_a_plain_coco_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("stills");
    synth_frames(
        &data,
        &[
            "--videos", "1", "--frames", "3", "--size", "320x180", "--seed", "4",
        ],
    );
    let mut coco = coco_stills_of(&data);
    coco["images"].as_array_mut().unwrap().push(
        serde_json::json!({"id": 77, "file_name": "missing.jpg", "width": 320, "height": 180}),
    );
    let gt = data.join("annotations.json");
    std::fs::write(&gt, coco.to_string()).unwrap();
    let pred = dir.path().join("pred.json");
    let detect = |extra: &[&str]| {
        let mut args = vec![
            "detect",
            "--dataset",
            data.to_str().unwrap(),
            "--threshold",
            "0.05",
        ];
        args.extend_from_slice(extra);
        owltrack(&args)
    };
    let run = detect(&["--all-queries", "-o", pred.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    assert!(
        log.contains("skipping image 77") && log.contains("1 of 4 images"),
        "{log}"
    );
    let results: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&pred).unwrap()).unwrap();
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| r["image_id"] != 77));

    let report = ok(owltrack(&[
        "eval-detection",
        "--gt",
        gt.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
    ]));
    assert!(
        report.contains("AP @[IoU 0.75]") && report.contains("AR @[100 per image]"),
        "{report}"
    );
    // Stills have no every-N-th frame: both commands refuse to guess one.
    let message = error_of(&detect(&["--every", "2"]));
    assert!(message.contains("frame_index"), "{message}");
}
