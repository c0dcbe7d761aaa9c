//! Running the `owltrack` binary from tests.
#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary with `args`, free of the caller's logging and model settings.
pub fn owltrack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owltrack"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("OWLTRACK_MODEL")
        .output()
        .expect("the owltrack binary runs")
}

/// Standard output of a run that must have succeeded.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "owltrack failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard output of a successful run, as JSON.
pub fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "owltrack failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

/// Standard error of a run that must have failed.
pub fn error_of(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "owltrack succeeded where it should fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Renders a synthetic dataset as frame folders (no MP4s) into `out`:
/// `owltrack synth --out OUT --no-video EXTRA…`, which must succeed.
pub fn synth_frames(out: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "synth",
        "--out",
        out.to_str().expect("temporary paths are UTF-8"),
        "--no-video",
    ];
    args.extend_from_slice(extra);
    ok(owltrack(&args));
}

/// A detection's `box` (`[x0, y0, x1, y1]`) from `detect`'s JSON.
pub fn box_of(detection: &Value) -> [f64; 4] {
    let values: Vec<f64> = detection["box"]
        .as_array()
        .expect("a box")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    values.try_into().expect("four coordinates")
}

/// The TAO dataset `owltrack synth` wrote to `data`, as a plain COCO
/// detection dataset of stills: no videos, tracks or frame indices.
pub fn coco_stills_of(data: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(data.join("annotations.json")).expect("synth wrote it");
    let tao: Value = serde_json::from_str(&text).expect("synth writes JSON");
    // Each record keeps only the fields a COCO dataset of stills has.
    let keep = |records: &Value, fields: &[&str]| -> Vec<Value> {
        records
            .as_array()
            .expect("a list of records")
            .iter()
            .map(|record| {
                fields
                    .iter()
                    .map(|f| (f.to_string(), record[f].clone()))
                    .collect()
            })
            .collect()
    };
    let images = keep(&tao["images"], &["id", "file_name", "width", "height"]);
    let annotations = keep(
        &tao["annotations"],
        &["id", "image_id", "category_id", "bbox", "area"],
    );
    serde_json::json!({"images": images, "annotations": annotations,
        "categories": tao["categories"]})
}

/// Runs `owltrack benchmark tao-ow --data DATA --out OUT EXTRA…` (whatever
/// the outcome; callers check it).
pub fn benchmark_tao_ow(data: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "benchmark",
        "tao-ow",
        "--data",
        data.to_str().expect("temporary paths are UTF-8"),
        "--out",
        out.to_str().expect("temporary paths are UTF-8"),
    ];
    args.extend_from_slice(extra);
    owltrack(&args)
}
