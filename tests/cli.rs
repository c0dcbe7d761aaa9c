//! End-to-end tests of the `owltrack` binary.

mod common;

use common::*;

use std::path::Path;

use owltrack_decoder::{image, pattern_frame, VideoWriter, WriterOptions};
use serde_json::Value;

fn write_video(path: &Path, width: u32, height: u32, frames: u64, fps: f64) {
    let options = WriterOptions {
        fps,
        ..WriterOptions::default()
    };
    let mut writer = VideoWriter::create(path, width, height, &options).unwrap();
    for i in 0..frames {
        writer.write(&pattern_frame(width, height, i, fps)).unwrap();
    }
    writer.finish().unwrap();
}

#[test]
fn probe_describes_a_video_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    write_video(&path, 322, 242, 36, 12.0);
    let report = json_of(&owltrack(&["probe", path.to_str().unwrap()]));
    assert!(report["container"].as_str().unwrap().contains("mp4"));
    assert_eq!(report["width"], 322);
    assert_eq!(report["height"], 242);
    assert!((report["fps"].as_f64().unwrap() - 12.0).abs() < 1e-6);
    assert!((report["duration"].as_f64().unwrap() - 3.0).abs() < 0.1);
    assert_eq!(report["frame_count"], 36);
    assert_eq!(report["frame_count_exact"], false);

    let counted = json_of(&owltrack(&[
        "probe",
        "--count-frames",
        path.to_str().unwrap(),
    ]));
    assert_eq!(counted["frame_count"], 36);
    assert_eq!(counted["frame_count_exact"], true);
    assert_eq!(counted["decode_errors"], 0);
}

#[test]
fn probe_reads_frame_folders_at_the_given_rate() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..8 {
        let rgb = pattern_frame(48, 32, i, 10.0);
        image::write_image(&dir.path().join(format!("{i:05}.jpg")), &rgb, 48, 32).unwrap();
    }
    let report = json_of(&owltrack(&[
        "probe",
        "--count-frames",
        "--fps",
        "4",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(report["container"], "image folder");
    assert_eq!(report["codec"], "mjpeg");
    assert_eq!(report["frame_count"], 8);
    assert_eq!(report["fps"], 4.0);
    assert_eq!(report["duration"], 2.0);
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![0x5a; 5000]).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!("http://{}/cam.ts", listener.local_addr().unwrap());
    drop(listener);
    let cases = [
        ("/definitely/not/here.mp4", "no such file"),
        (junk.to_str().unwrap(), "not a video"),
        ("concat:a.mp4|b.mp4", "no such file"),
        ("gopher://host/x", "scheme gopher://"),
        (refused.as_str(), "connection refused"),
    ];
    for (input, message) in cases {
        let output = owltrack(&["probe", "--timeout", "2", input]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{input}: {stderr}");
        assert!(stderr.contains(message), "{input}: {stderr}");
        assert!(!stderr.contains("panicked"), "{input}: {stderr}");
        assert!(output.stdout.is_empty());
    }
    let output = owltrack(&["probe", "--timeout", "0", "x.mp4"]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn demo_tracks_a_synthetic_video_with_the_builtin_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let stdout = ok(owltrack(&[
        "demo",
        "--out",
        out.to_str().unwrap(),
        "--frames",
        "30",
    ]));
    for line in [
        "video",
        "queries",
        "tracked      30 frames",
        "objects      OWTA",
        "by query",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let annotated = json_of(&owltrack(&[
        "probe",
        out.join("annotated.mp4").to_str().unwrap(),
        "--count-frames",
    ]));
    assert_eq!(annotated["frame_count"], 30);
    assert_eq!(annotated["width"], 640);
    let tracks: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("tracks.json")).unwrap()).unwrap();
    assert!(tracks.iter().all(|t| t["track_id"].as_u64().is_some()));
    assert!(out.join("annotations.json").is_file());
}

#[test]
fn bench_decode_compares_with_the_ffmpeg_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.mp4");
    write_video(&path, 320, 240, 20, 25.0);
    let report = json_of(&owltrack(&[
        "bench",
        "decode",
        path.to_str().unwrap(),
        "--size",
        "96",
        "--runs",
        "1",
        "--json",
    ]));
    assert_eq!(report["frames"], 20);
    assert_eq!(report["size"], 96);
    assert!(report["owltrack_fps"].as_f64().unwrap() > 0.0);
    assert!(report["baseline_command"]
        .as_str()
        .unwrap()
        .contains("scale=96:96"));
    let ratio = report["ratio"]
        .as_f64()
        .expect("the ffmpeg CLI is installed");
    assert!(ratio.is_finite() && ratio > 0.0);
}

#[test]
fn every_command_explains_itself() {
    for args in [
        &["--help"][..],
        &["probe", "--help"],
        &["bench", "decode", "--help"],
        &["demo", "--help"],
    ] {
        let output = owltrack(args);
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn synth_writes_a_tao_dataset_that_probe_and_detect_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("world");
    let summary = json_of(&owltrack(&[
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--videos",
        "2",
        "--frames",
        "12",
        "--size",
        "160x120",
        "--seed",
        "9",
    ]));
    assert_eq!(summary["videos"], 2);
    assert_eq!(summary["frames"], 24);
    assert!(summary["annotations"].as_u64().unwrap() > 0);
    let dataset: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotations.json")).unwrap())
            .unwrap();
    assert_eq!(dataset["categories"].as_array().unwrap().len(), 24);
    let video = out.join("videos/synth_s9_0001.mp4");
    let report = json_of(&owltrack(&[
        "probe",
        "--count-frames",
        video.to_str().unwrap(),
    ]));
    assert_eq!(
        (report["width"].as_u64(), report["frame_count"].as_u64()),
        (Some(160), Some(12))
    );
    let frames = out.join("frames/synth_s9_0000");
    let report = json_of(&owltrack(&[
        "probe",
        "--count-frames",
        frames.to_str().unwrap(),
    ]));
    assert_eq!(report["frame_count"], 12);

    let output = owltrack(&["synth", "--out", out.to_str().unwrap(), "--size", "12x5000"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("between 64 and 4096"));
    let output = owltrack(&["synth", "--out", out.to_str().unwrap(), "--size", "big"]);
    assert!(!output.status.success());
}
