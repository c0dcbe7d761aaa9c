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
