//! The networks against Hugging Face transformers on tiny checkpoints in the
//! hub layout (fixtures made by tests/fixtures/make_fixtures.py).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use owltrack_models::{Checkpoint, OwlConfig, OwlModel, OwlVersion, PostProcess};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Case {
    name: &'static str,
    version: OwlVersion,
}

const CASES: [Case; 2] = [
    Case {
        name: "owlvit-tiny",
        version: OwlVersion::V1,
    },
    Case {
        name: "owlv2-tiny",
        version: OwlVersion::V2,
    },
];

fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join(format!("{name}-reference.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn token_rows(refs: &HashMap<String, Tensor>) -> Vec<Vec<u32>> {
    refs["input_ids"]
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(|id| id as u32).collect())
        .collect()
}

fn load(dir: &Path, dtype: DType) -> OwlModel {
    Checkpoint::from_dir(dir)
        .unwrap()
        .load(&Device::Cpu, dtype)
        .unwrap()
}

/// Every output of the model against the reference, at `tolerance`.
fn check_outputs(
    model: &OwlModel,
    refs: &HashMap<String, Tensor>,
    tolerance: f32,
) -> Vec<(String, f32)> {
    let mut diffs = Vec::new();
    let mut record = |what: &str, d: f32| {
        diffs.push((what.to_owned(), d));
        assert!(d <= tolerance, "{what}: max abs diff {d} > {tolerance}");
    };
    let queries = model.embed_text(&token_rows(refs)).unwrap();
    record("text_embeds", max_abs_diff(&queries, &refs["text_embeds"]));

    let outputs = model.image_outputs(&refs["pixel_values"]).unwrap();
    let (b, h, w, d) = refs["image_embeds"].dims4().unwrap();
    record(
        "image_embeds",
        max_abs_diff(
            &outputs.tokens,
            &refs["image_embeds"].reshape((b, h * w, d)).unwrap(),
        ),
    );
    record(
        "pred_boxes",
        max_abs_diff(&outputs.boxes, &refs["pred_boxes"]),
    );
    record(
        "class_embeds",
        max_abs_diff(
            &outputs.normalized_class_embeds().unwrap(),
            &refs["class_embeds"],
        ),
    );
    let logits = model.class_logits(&outputs, &queries, None).unwrap();
    record("logits", max_abs_diff(&logits, &refs["logits"]));
    if let Some(objectness) = &outputs.objectness {
        record(
            "objectness_logits",
            max_abs_diff(objectness, &refs["objectness_logits"]),
        );
    }

    // The second image as an example query.
    let example = model
        .image_outputs(&refs["pixel_values"].narrow(0, 1, 1).unwrap())
        .unwrap();
    let (embedding, patch) = model.embed_image_query(&example).unwrap();
    let want_patch = refs["image_query_box_index"].to_vec1::<i64>().unwrap()[0] as usize;
    assert_eq!(patch, want_patch, "image query picks the reference's patch");
    record(
        "image_query_embed",
        max_abs_diff(
            &embedding,
            &refs["image_query_embed"].flatten_all().unwrap(),
        ),
    );
    diffs
}

#[test]
fn outputs_match_transformers_in_f32() {
    for case in CASES {
        let dir = fixtures().join(case.name);
        let model = load(&dir, DType::F32);
        assert_eq!(model.config().version, case.version);
        let diffs = check_outputs(&model, &reference(case.name), 1e-4);
        eprintln!("{}: {diffs:?}", case.name);
    }
}

/// Checkpoints of other shapes (tests/fixtures/make_shapes.py): patch sizes,
/// input sizes, depths, head widths, activations and eps that the main
/// fixtures do not have.
#[test]
fn checkpoints_of_other_shapes_match_transformers() {
    let shapes = fixtures().join("shapes");
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shapes.join("shapes.json")).unwrap())
            .unwrap();
    let listed = listed.as_array().unwrap();
    assert!(listed.len() >= 4, "too few shapes");
    for shape in listed {
        let name = shape["name"].as_str().unwrap();
        let model = load(&shapes.join(name), DType::F32);
        let want = if shape["v2"].as_bool().unwrap() {
            OwlVersion::V2
        } else {
            OwlVersion::V1
        };
        assert_eq!(model.config().version, want, "{name}");
        let refs = candle_core::safetensors::load(
            shapes.join(format!("{name}-reference.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let diffs = check_outputs(&model, &refs, 1e-4);
        eprintln!("{name}: {diffs:?}");
    }
}

#[test]
fn outputs_match_transformers_in_bf16_within_its_precision() {
    for case in CASES {
        let model = load(&fixtures().join(case.name), DType::BF16);
        let refs = reference(case.name);
        let queries = model.embed_text(&token_rows(&refs)).unwrap();
        let outputs = model.image_outputs(&refs["pixel_values"]).unwrap();
        let logits = model.class_logits(&outputs, &queries, None).unwrap();
        // bf16 keeps 8 bits of mantissa: a few percent of each value's size.
        let boxes = max_abs_diff(&outputs.boxes, &refs["pred_boxes"]);
        let text = max_abs_diff(&queries, &refs["text_embeds"]);
        let logits = max_abs_diff(&logits, &refs["logits"]);
        eprintln!(
            "{} bf16: boxes {boxes}, text {text}, logits {logits}",
            case.name
        );
        assert!(
            boxes < 0.05 && text < 0.05 && logits < 0.5,
            "{boxes} {text} {logits}"
        );
    }
}

#[test]
fn pytorch_pickle_gives_the_same_model() {
    let refs = reference("owlvit-tiny");
    let model = load(&fixtures().join("owlvit-tiny-bin"), DType::F32);
    check_outputs(&model, &refs, 1e-4);
}

#[test]
fn post_processing_matches_the_reference_detections() {
    for case in CASES {
        let model = load(&fixtures().join(case.name), DType::F32);
        let refs = reference(case.name);
        let text =
            std::fs::read_to_string(fixtures().join(format!("{}-detections.json", case.name)))
                .unwrap();
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        let queries = model.embed_text(&token_rows(&refs)).unwrap();
        let outputs = model.image_outputs(&refs["pixel_values"]).unwrap();
        let logits = model.class_logits(&outputs, &queries, None).unwrap();
        for (i, want) in expected["images"].as_array().unwrap().iter().enumerate() {
            let (w, h) = (
                want["width"].as_u64().unwrap() as u32,
                want["height"].as_u64().unwrap() as u32,
            );
            let flat: Vec<f32> = logits
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let boxes: Vec<[f32; 4]> = outputs
                .boxes
                .get(i)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .into_iter()
                .map(|b| [b[0], b[1], b[2], b[3]])
                .collect();
            let scale = owltrack_models::box_scale(case.version, w, h);
            let got = PostProcess::reference().run(
                &flat,
                logits.dim(2).unwrap(),
                &boxes,
                None,
                scale,
                (w, h),
            );
            // The reference keeps patch order; compare after sorting it the same way.
            let mut reference: Vec<(f32, usize, [f32; 4])> =
                (0..want["scores"].as_array().unwrap().len())
                    .map(|k| {
                        let b = want["boxes"][k].as_array().unwrap();
                        (
                            want["scores"][k].as_f64().unwrap() as f32,
                            want["labels"][k].as_u64().unwrap() as usize,
                            [0, 1, 2, 3].map(|j| b[j].as_f64().unwrap() as f32),
                        )
                    })
                    .collect();
            reference.sort_by(|a, b| b.0.total_cmp(&a.0));
            assert_eq!(
                got.len(),
                reference.len(),
                "{}: every patch is a detection at threshold 0",
                case.name
            );
            for (d, (score, label, bbox)) in got.iter().zip(&reference) {
                assert!((d.score - score).abs() < 1e-5, "{} vs {}", d.score, score);
                assert_eq!(d.label, *label);
                for j in 0..4 {
                    assert!(
                        (d.bbox[j] - bbox[j]).abs() < 1e-3,
                        "{:?} vs {:?}",
                        d.bbox,
                        bbox
                    );
                }
            }
        }
    }
}

#[test]
fn configs_with_fields_missing_take_transformers_defaults() {
    for (name, model_type) in [("owlvit-tiny", "owlvit"), ("owlv2-tiny", "owlv2")] {
        let text =
            std::fs::read_to_string(fixtures().join(format!("{name}-defaults.json"))).unwrap();
        let defaults: serde_json::Value = serde_json::from_str(&text).unwrap();
        let parsed = OwlConfig::from_json(&format!(r#"{{"model_type":"{model_type}"}}"#)).unwrap();
        let t = &defaults["text_config"];
        let v = &defaults["vision_config"];
        let pairs = [
            (parsed.text.vocab_size, &t["vocab_size"]),
            (parsed.text.hidden_size, &t["hidden_size"]),
            (parsed.text.intermediate_size, &t["intermediate_size"]),
            (parsed.text.num_hidden_layers, &t["num_hidden_layers"]),
            (parsed.text.num_attention_heads, &t["num_attention_heads"]),
            (
                parsed.text.max_position_embeddings,
                &t["max_position_embeddings"],
            ),
            (parsed.vision.hidden_size, &v["hidden_size"]),
            (parsed.vision.intermediate_size, &v["intermediate_size"]),
            (parsed.vision.num_hidden_layers, &v["num_hidden_layers"]),
            (parsed.vision.num_attention_heads, &v["num_attention_heads"]),
            (parsed.vision.image_size, &v["image_size"]),
            (parsed.vision.patch_size, &v["patch_size"]),
            (parsed.vision.num_channels, &v["num_channels"]),
            (parsed.projection_dim, &defaults["projection_dim"]),
        ];
        for (got, want) in pairs {
            assert_eq!(
                got as u64,
                want.as_u64().unwrap(),
                "{name}: {pairs:?}",
                pairs = (got, want)
            );
        }
        assert_eq!(parsed.text.hidden_act, t["hidden_act"].as_str().unwrap());
        assert_eq!(
            parsed.vision.layer_norm_eps,
            v["layer_norm_eps"].as_f64().unwrap()
        );
        assert_eq!(
            parsed.text.eos_token_id as u64,
            t["eos_token_id"].as_u64().unwrap()
        );
        assert_eq!(
            parsed.text.pad_token_id as u64,
            t["pad_token_id"].as_u64().unwrap()
        );
    }

    // A hub config with only some fields: the rest are defaults, and the tiny
    // checkpoint still loads and matches when its own fields are given.
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join("owlvit-tiny");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    for field in [
        "architectures",
        "dtype",
        "transformers_version",
        "initializer_factor",
        "logit_scale_init_value",
    ] {
        config.as_object_mut().unwrap().remove(field);
    }
    for tower in ["text_config", "vision_config"] {
        for field in [
            "hidden_act",
            "layer_norm_eps",
            "attention_dropout",
            "initializer_range",
            "model_type",
            "num_channels",
        ] {
            config[tower].as_object_mut().unwrap().remove(field);
        }
    }
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        source.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let model = load(dir.path(), DType::F32);
    check_outputs(&model, &reference("owlvit-tiny"), 1e-4);
}

/// A copy of the v1 checkpoint with its weights edited by `edit`.
fn edited_checkpoint(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let source = fixtures().join("owlvit-tiny");
    let dir = tempfile::tempdir().unwrap();
    let mut weights =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut weights);
    candle_core::safetensors::save(&weights, dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    dir
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let missing = "owlvit.vision_model.encoder.layers.1.mlp.fc2.weight";
    let dir = edited_checkpoint(|w| {
        w.remove(missing);
    });
    let error = Checkpoint::from_dir(dir.path())
        .unwrap()
        .load(&Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains(missing), "{error}");

    let misshapen = "box_head.dense2.weight";
    let dir = edited_checkpoint(|w| {
        w.insert(
            misshapen.into(),
            Tensor::zeros((5, 32), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let error = Checkpoint::from_dir(dir.path())
        .unwrap()
        .load(&Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(misshapen) || error.contains("dense2"),
        "{error}"
    );

    let empty = tempfile::tempdir().unwrap();
    let error = Checkpoint::from_dir(empty.path())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("config.json"), "{error}");
    std::fs::copy(
        fixtures().join("owlvit-tiny/config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let error = Checkpoint::from_dir(empty.path())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("model.safetensors"), "{error}");
}
