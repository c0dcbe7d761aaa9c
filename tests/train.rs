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
    synth_frames(
        &data,
        &["--videos", "1", "--frames", "6", "--size", "160x120"],
    );

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
fn trains_exports_and_detects_with_a_convolutional_stem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let model = dir.path().join("stem");
    let exported = dir.path().join("stem-f16");
    synth_frames(&data, &["--videos", "1", "--frames", "2"]);
    let train = |stem: &str| {
        owltrack(&[
            "train",
            "detector",
            "--data",
            data.to_str().unwrap(),
            "--stem-channels",
            stem,
            "--steps",
            "1",
            "--batch",
            "1",
            "--out",
            model.to_str().unwrap(),
        ])
    };
    // 16-pixel patches take four halvings, not two.
    let refused = error_of(&train("8,16"));
    assert!(refused.contains("stem_channels"), "{refused}");
    ok(train("4,8,8,16"));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["vision_config"]["stem_channels"],
        serde_json::json!([4, 8, 8, 16])
    );
    ok(owltrack(&[
        "export",
        model.to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]));
    let frame = data.join("frames/synth_s0_0000/000000.jpg");
    for checkpoint in [&model, &exported] {
        let report = json_of(&owltrack(&[
            "detect",
            "--model",
            checkpoint.to_str().unwrap(),
            "--threshold",
            "0",
            "-q",
            "red circle",
            frame.to_str().unwrap(),
        ]));
        assert!(!report["detections"].as_array().unwrap().is_empty());
    }
}

#[test]
fn fine_tunes_the_builtin_model_stored_in_f16() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth_frames(&data, &["--videos", "1", "--frames", "3"]);
    let builtin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/builtin/owltrack-tiny");
    let builtin_size = serde_json::from_str::<Value>(
        &std::fs::read_to_string(builtin.join("config.json")).unwrap(),
    )
    .unwrap()["vision_config"]["image_size"]
        .as_u64()
        .unwrap();
    // At its own input size, and at another one (its position grid resized).
    let other_size = (builtin_size - 64).to_string();
    for (name, size) in [("tuned", None), ("resized", Some(other_size.as_str()))] {
        let out = dir.path().join(name);
        let mut args = vec![
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
        ];
        if let Some(size) = size {
            args.extend(["--image-size", size]);
        }
        let summary: Value = serde_json::from_str(&ok(owltrack(&args))).unwrap();
        assert_eq!(summary["steps"], 1);
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        let written_size = config["vision_config"]["image_size"].as_u64().unwrap();
        assert_eq!(
            written_size,
            size.map_or(builtin_size, |s| s.parse().unwrap())
        );
        // Fine-tuning starts from the checkpoint: its first loss is the
        // trained model's (around 1), not a fresh model's (around 4).
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
            "{name}: first loss {first_total}: the weights were not loaded"
        );
    }
}

#[test]
fn trains_a_video_decoder_and_tracks_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let model = dir.path().join("with-decoder");
    synth_frames(&data, &["--videos", "2", "--frames", "8"]);
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "decoder",
            "--data",
            data.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
            "--batch",
            "2",
            "--clip-frames",
            "3",
            "--slots",
            "8",
            "--width",
            "32",
            "--save-every",
            "2",
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        owltrack(&args)
    };
    let summary: Value = serde_json::from_str(&ok(train(&["--steps", "2"]))).unwrap();
    assert_eq!(summary["steps"], 2);
    assert_eq!(summary["videos"], 2);
    for file in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "video_decoder.json",
        "video_decoder.safetensors",
        "losses.csv",
        "losses.png",
    ] {
        assert!(model.join(file).is_file(), "{file} missing");
    }
    assert_eq!(
        cached_token_files(&model).len(),
        2,
        "one token file per video"
    );
    // Resuming continues the same run, on the same cached tokens.
    ok(train(&["--steps", "3", "--resume"]));
    assert_eq!(cached_token_files(&model).len(), 2);
    let log = std::fs::read_to_string(model.join("losses.csv")).unwrap();
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3"]);

    // The checkpoint tracks with its decoder's slots.
    let frames = std::fs::read_dir(data.join("frames"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let tracks = dir.path().join("tracks.jsonl");
    ok(owltrack(&[
        "track",
        frames.to_str().unwrap(),
        "-q",
        "red circle",
        "-q",
        "blue square",
        "--model",
        model.to_str().unwrap(),
        "--tracker",
        "recurrent",
        "--birth-score",
        "0",
        "--keep-score",
        "0",
        "--include-tentative",
        "-o",
        tracks.to_str().unwrap(),
    ]));
    let lines: Vec<Value> = std::fs::read_to_string(&tracks)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    // With a zero birth score every slot is a track from the first frame
    // on, and keeps its id on every frame.
    let ids = |line: &Value| -> Vec<u64> {
        let mut ids: Vec<u64> = line["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids(&lines[0]).len(), 8);
    assert!(lines.iter().all(|l| ids(l) == ids(&lines[0])));

    // Without a decoder, the recurrent tracker is refused with the reason.
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ] {
        std::fs::copy(model.join(file), plain.join(file)).unwrap();
    }
    let refused = owltrack(&[
        "track",
        frames.to_str().unwrap(),
        "-q",
        "red circle",
        "--model",
        plain.to_str().unwrap(),
        "--tracker",
        "recurrent",
    ]);
    assert!(
        error_of(&refused).contains("video decoder"),
        "{}",
        error_of(&refused)
    );
}

#[test]
fn trains_a_video_decoder_on_pseudo_videos_from_stills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth_frames(
        &data,
        &["--videos", "1", "--frames", "6", "--size", "160x120"],
    );
    // The same frames as a plain COCO dataset of stills (no videos, tracks or
    // frame indices), with one category renamed so that the vocabulary must
    // merge the two datasets' categories by name.
    let mut coco = coco_stills_of(&data);
    let stills = dir.path().join("stills");
    std::fs::create_dir(&stills).unwrap();
    for image in coco["images"].as_array_mut().unwrap() {
        let file = format!("{}.png", image["id"]);
        let name = image["file_name"].as_str().unwrap();
        std::fs::copy(data.join(name), stills.join(&file)).unwrap();
        image["file_name"] = Value::from(file);
    }
    coco["categories"][0]["name"] = Value::from("purple hexagon");
    std::fs::write(stills.join("annotations.json"), coco.to_string()).unwrap();

    let train = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "train",
            "decoder",
            "--out",
            out.to_str().unwrap(),
            "--batch",
            "2",
            "--clip-frames",
            "3",
            "--slots",
            "8",
            "--width",
            "32",
            "--steps",
            "2",
        ];
        args.extend_from_slice(extra);
        (owltrack(&args), out)
    };
    let stills_s = stills.to_str().unwrap();
    let (output, out) = train(
        "stills-only",
        &[
            "--stills",
            stills_s,
            "--stills-max",
            "3",
            "--pseudo-per-still",
            "2",
            "--pseudo-frames",
            "5",
        ],
    );
    let summary: Value = serde_json::from_str(&ok(output)).unwrap();
    assert_eq!(summary["videos"], 0);
    assert_eq!(summary["pseudo_videos"], 6);
    assert_eq!(summary["frames"], 30);
    let first = summary["first"]["total"].as_f64().unwrap();
    assert!(first.is_finite() && first > 0.0, "{summary}");
    let cached = cached_token_files(&out);
    assert_eq!(cached.len(), 6, "{cached:?}");
    assert!(cached.iter().all(|file| file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("still-")));
    // The camera moves: a pseudo-video's frames are not one image repeated.
    let tokens = candle_core::safetensors::load(&cached[0], &candle_core::Device::Cpu)
        .unwrap()
        .remove("tokens")
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    assert_eq!(tokens.dim(0).unwrap(), 5);
    let change = |a: usize, b: usize| {
        (tokens.get(a).unwrap() - tokens.get(b).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(change(0, 4) > 0.0, "the first and last frames are the same");
    assert!(out.join("video_decoder.safetensors").is_file());

    // Videos and pseudo-videos together.
    let (output, _) = train(
        "both",
        &[
            "--data",
            data.to_str().unwrap(),
            "--stills",
            stills_s,
            "--pseudo-frames",
            "4",
            "--pseudo-share",
            "0.5",
        ],
    );
    let summary: Value = serde_json::from_str(&ok(output)).unwrap();
    assert_eq!(summary["videos"], 1);
    assert_eq!(summary["pseudo_videos"], 6);

    // Pseudo-videos shorter than a clip, and no data at all, are refused.
    let (short, _) = train("short", &["--stills", stills_s, "--pseudo-frames", "2"]);
    assert!(
        error_of(&short).contains("clip length"),
        "{}",
        error_of(&short)
    );
    let (none, _) = train("none", &[]);
    assert!(!none.status.success());
    assert!(error_of(&none).contains("--data"), "{}", error_of(&none));
}

/// The token files of a decoder training run: they lie in one folder of
/// `OUT/token-cache` named by the backbone's and the data's fingerprint.
fn cached_token_files(out: &std::path::Path) -> Vec<std::path::PathBuf> {
    let folders: Vec<_> = std::fs::read_dir(out.join("token-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "one fingerprint folder: {folders:?}");
    let mut files: Vec<_> = std::fs::read_dir(&folders[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}
