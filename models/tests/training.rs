//! The training recipe's matching and losses against scipy and torch
//! (fixtures made by tests/fixtures/fixtures_training.py).

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use owltrack_models::train::{
    box_losses, focal_cost, match_predictions, sigmoid_focal_loss, Focal, MatchWeights,
};
use serde_json::Value;

fn cases() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/training_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn boxes(v: &Value) -> Vec<[f32; 4]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let b = floats(b);
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}

#[test]
fn matching_equals_scipy_on_the_reference_cost() {
    for case in cases()["matching"].as_array().unwrap() {
        let logits = floats(&case["logits"]);
        let queries = case["queries"].as_u64().unwrap() as usize;
        let predicted = boxes(&case["boxes"]);
        let targets = boxes(&case["targets"]);
        let labels: Vec<usize> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap() as usize)
            .collect();
        // The cost terms, one by one, as transformers and torch compute them.
        let cost = floats(&case["cost"]);
        for (i, b) in predicted.iter().enumerate() {
            for (j, t) in targets.iter().enumerate() {
                let class = focal_cost(logits[i * queries + labels[j]], Focal::default());
                let l1: f32 = b.iter().zip(t).map(|(x, y)| (x - y).abs()).sum();
                let giou = owltrack_models::boxes::generalized_iou(
                    &owltrack_models::boxes::center_to_corners(*b),
                    &owltrack_models::boxes::center_to_corners(*t),
                );
                let ours = class + l1 - giou;
                let want = cost[i * targets.len() + j];
                assert!(
                    (ours - want).abs() < 1e-4,
                    "cost[{i}][{j}] {ours} vs {want}"
                );
            }
        }
        let pairs = match_predictions(
            &logits,
            queries,
            &predicted,
            &targets,
            &labels,
            MatchWeights::default(),
            Focal::default(),
        )
        .unwrap();
        let rows: Vec<usize> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let cols: Vec<usize> = case["cols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(pairs, rows.into_iter().zip(cols).collect::<Vec<_>>());
    }
}

#[test]
fn focal_loss_and_its_gradient_equal_torchvisions() {
    for case in cases()["focal"].as_array().unwrap() {
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let logits = Var::from_vec(floats(&case["logits"]), shape.clone(), &Device::Cpu).unwrap();
        let targets = Tensor::from_vec(floats(&case["targets"]), shape, &Device::Cpu).unwrap();
        let loss = sigmoid_focal_loss(logits.as_tensor(), &targets, Focal::default()).unwrap();
        let want = case["loss"].as_f64().unwrap() as f32;
        let got = loss.to_scalar::<f32>().unwrap();
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );
        let grads = loss.backward().unwrap();
        let grad: Vec<f32> = grads
            .get(&logits)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (g, w) in grad.iter().zip(floats(&case["grad"])) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
    }
}

#[test]
fn box_losses_and_their_gradients_equal_torchs() {
    for case in cases()["boxes"].as_array().unwrap() {
        let predicted = boxes(&case["predicted"]);
        let k = predicted.len();
        let p = Var::from_vec(predicted.concat(), (k, 4), &Device::Cpu).unwrap();
        let t = Tensor::from_vec(boxes(&case["target"]).concat(), (k, 4), &Device::Cpu).unwrap();
        let (l1, giou) = box_losses(p.as_tensor(), &t).unwrap();
        let (l1v, gv) = (
            l1.to_scalar::<f32>().unwrap(),
            giou.to_scalar::<f32>().unwrap(),
        );
        assert!((l1v - case["l1"].as_f64().unwrap() as f32).abs() < 1e-5);
        assert!((gv - case["giou"].as_f64().unwrap() as f32).abs() < 1e-5);
        let grads = (l1 + giou).unwrap().backward().unwrap();
        let grad: Vec<f32> = grads
            .get(&p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = boxes(&case["grad"]).concat();
        for (g, w) in grad.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
    }
}

/// A tiny OWLv2 config with this vision tower.
fn tiny_config(vision: &str) -> owltrack_models::OwlConfig {
    owltrack_models::OwlConfig::from_json(&format!(
        r#"{{"model_type":"owlv2","projection_dim":16,
            "text_config":{{"hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":2}},
            "vision_config":{vision}}}"#
    ))
    .unwrap()
}

const VISION: &str = r#"{"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":2,"image_size":64,"patch_size":16}"#;

/// Two grey images with coloured squares at known places, and the queries
/// that name the squares.
fn fixed_batch() -> (Vec<owltrack_models::train::Sample>, Vec<Vec<u32>>) {
    use owltrack_models::train::Sample;
    use owltrack_models::{ClipTokenizer, OwlVersion, Preprocessor};

    let tokenizer = ClipTokenizer::from_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-bpe"),
    )
    .unwrap();
    let queries: Vec<Vec<u32>> = ["red square", "blue square", "green square"]
        .iter()
        .map(|q| tokenizer.encode(q).unwrap().ids.to_vec())
        .collect();
    let preprocessor = Preprocessor::new(OwlVersion::V2, 64).unwrap();
    let image = |squares: &[(usize, usize, usize, [u8; 3])]| {
        let (w, h) = (80usize, 80usize);
        let mut rgb = vec![120u8; w * h * 3];
        for &(x, y, side, colour) in squares {
            for py in y..y + side {
                for px in x..x + side {
                    rgb[(py * w + px) * 3..(py * w + px) * 3 + 3].copy_from_slice(&colour);
                }
            }
        }
        let boxes = squares
            .iter()
            .map(|&(x, y, side, _)| {
                let s = side as f32 / 80.0;
                [x as f32 / 80.0 + s / 2.0, y as f32 / 80.0 + s / 2.0, s, s]
            })
            .collect();
        (
            preprocessor.pixels(&rgb, w as u32, h as u32).unwrap(),
            boxes,
        )
    };
    let (a, a_boxes) = image(&[(10, 10, 20, [220, 30, 30]), (50, 45, 24, [30, 60, 220])]);
    let (b, b_boxes) = image(&[(40, 12, 30, [40, 180, 60])]);
    let batch = vec![
        Sample {
            pixels: a,
            boxes: a_boxes,
            labels: vec![0, 1],
        },
        Sample {
            pixels: b,
            boxes: b_boxes,
            labels: vec![2],
        },
    ];
    (batch, queries)
}

/// Trains 80 steps on the fixed batch; the trainer and its first and last
/// losses.
fn overfit(
    config: owltrack_models::OwlConfig,
) -> (
    owltrack_models::train::Trainer,
    owltrack_models::train::Losses,
    owltrack_models::train::Losses,
) {
    use owltrack_models::train::{TrainOptions, Trainer};

    let (batch, queries) = fixed_batch();
    let options = TrainOptions {
        learning_rate: 3e-3,
        warmup_steps: 5,
        total_steps: 80,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(config, None, options, &Device::Cpu).unwrap();
    let first = trainer.step(&batch, &queries).unwrap();
    let mut last = first;
    for _ in 1..80 {
        last = trainer.step(&batch, &queries).unwrap();
    }
    eprintln!("first {first:?}\nlast {last:?}");
    (trainer, first, last)
}

#[test]
fn a_short_run_overfits_a_fixed_batch() {
    use owltrack_models::train::{TrainOptions, Trainer};

    let (mut trainer, first, last) = overfit(tiny_config(VISION));
    assert!(last.total < first.total / 4.0, "{first:?} → {last:?}");
    assert!(last.giou < first.giou, "boxes improve too");
    assert_eq!(trainer.step_count(), 80);
    let (batch, queries) = fixed_batch();

    // Saved state resumes exactly: the next step from a resumed trainer
    // equals the next step of the original.
    let dir = tempfile::tempdir().unwrap();
    trainer
        .save_weights(&dir.path().join("model.safetensors"))
        .unwrap();
    trainer
        .save_state(&dir.path().join("state.safetensors"))
        .unwrap();
    let config = trainer.model().config().clone();
    let options = TrainOptions {
        learning_rate: 3e-3,
        warmup_steps: 5,
        total_steps: 80,
        ..TrainOptions::default()
    };
    let mut resumed = Trainer::new(config, None, options, &Device::Cpu).unwrap();
    resumed
        .resume(
            &dir.path().join("model.safetensors"),
            &dir.path().join("state.safetensors"),
        )
        .unwrap();
    assert_eq!(resumed.step_count(), 80);
    let original = trainer.step(&batch, &queries).unwrap();
    let again = resumed.step(&batch, &queries).unwrap();
    assert!(
        (original.total - again.total).abs() < 1e-5,
        "{original:?} vs {again:?}"
    );
}

#[test]
fn a_short_run_with_a_convolutional_stem_overfits_too() {
    let vision = VISION.replace('}', r#","stem_channels":[8,8,16,16]}"#);
    let (trainer, first, last) = overfit(tiny_config(&vision));
    assert_eq!(
        trainer.model().config().vision.stem_channels,
        [8, 8, 16, 16]
    );
    assert!(last.total < first.total / 4.0, "{first:?} → {last:?}");
    assert!(last.giou < first.giou, "boxes improve too");
}

#[test]
fn position_embeddings_resize_as_torch_interpolates_them() {
    use owltrack_models::train::resize_position_embedding;

    let table = |v: &Value| -> Tensor {
        let rows: Vec<Vec<f32>> = v.as_array().unwrap().iter().map(floats).collect();
        let width = rows[0].len();
        Tensor::from_vec(rows.concat(), (rows.len(), width), &Device::Cpu).unwrap()
    };
    for case in cases()["positions"].as_array().unwrap() {
        let (before, after) = (table(&case["before"]), table(&case["after"]));
        let ours = resize_position_embedding(&before, after.dim(0).unwrap()).unwrap();
        assert_eq!(ours.dims(), after.dims());
        let worst = (ours - &after)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(worst < 1e-5, "{:?}: off by {worst}", after.dims());
    }
    // Neither side may lack the class token or the square grid.
    let ten = Tensor::zeros((10, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(resize_position_embedding(&ten, 17).is_ok());
    assert!(resize_position_embedding(&ten, 16).is_err());
    assert!(resize_position_embedding(&ten.narrow(0, 0, 9).unwrap(), 17).is_err());
    assert!(resize_position_embedding(&ten, 1).is_err());
}

/// Fine-tuning at another input size starts from the checkpoint's weights,
/// its position grid resized; every other tensor is taken as it is.
#[test]
fn a_checkpoint_fine_tunes_at_a_larger_input_size() {
    use owltrack_models::train::{resize_position_embedding, TrainOptions, Trainer};
    use owltrack_models::Checkpoint;

    let small = tiny_config(VISION);
    let trained = Trainer::new(small.clone(), None, TrainOptions::default(), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    trained
        .save_weights(&dir.path().join("model.safetensors"))
        .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        small.to_hub_json().to_string(),
    )
    .unwrap();
    let checkpoint = Checkpoint::from_dir(dir.path()).unwrap();

    let mut large = small.clone();
    large.vision.image_size = 96;
    let options = TrainOptions {
        seed: 7,
        ..TrainOptions::default()
    };
    let tuned = Trainer::new(large, Some(&checkpoint), options, &Device::Cpu).unwrap();
    let out = tempfile::tempdir().unwrap();
    tuned
        .save_weights(&out.path().join("model.safetensors"))
        .unwrap();
    let before =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let after =
        candle_core::safetensors::load(out.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut resized = 0;
    for (name, old) in &before {
        let new = &after[name];
        let want = if name.ends_with("vision_model.embeddings.position_embedding.weight") {
            resized += 1;
            assert_eq!((old.dim(0).unwrap(), new.dim(0).unwrap()), (17, 37));
            resize_position_embedding(old, 37).unwrap()
        } else {
            old.clone()
        };
        let same = want.eq(new).unwrap().flatten_all().unwrap().min(0).unwrap();
        assert_eq!(same.to_scalar::<u8>().unwrap(), 1, "{name} differs");
    }
    assert_eq!(resized, 1);
}
