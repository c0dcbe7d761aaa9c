//! The detection evaluator against pycocotools' own numbers on the golden
//! cases that `fixtures/coco_ap/make_golden.py` generates and scores with
//! `COCOeval`.

use std::path::{Path, PathBuf};

use owltrack_tracker::coco::{evaluate, read_results, DetectionGroundTruth};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco_ap")
}

/// COCO's -1 is our `None`; values agree to rounding.
fn assert_same(ours: Option<f64>, theirs: &Value, context: &str) {
    let theirs = theirs.as_f64().filter(|&v| v != -1.0);
    match (ours, theirs) {
        (Some(a), Some(b)) => assert!(
            (a - b).abs() <= 1e-12,
            "{context}: owltrack {a}, pycocotools {b}"
        ),
        (a, b) => assert_eq!(a, b, "{context}: owltrack {a:?}, pycocotools {b:?}"),
    }
}

#[test]
fn matches_pycocotools_on_every_golden_case() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json parses");
    let cases = expected["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8, "too few golden cases");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let folder = fixtures().join(name);
        let truth = DetectionGroundTruth::read(&folder.join("gt.json")).expect("gt.json");
        let results = read_results(&folder.join("pred.json")).expect("pred.json");
        let report = evaluate(&truth, &results);
        let stats = case["stats"].as_array().expect("stats");
        assert_eq!(stats.len(), 12);
        for (k, (ours, theirs)) in report.stats().into_iter().zip(stats).enumerate() {
            assert_same(ours, theirs, &format!("{name} stats[{k}]"));
        }
        let categories = case["categories"].as_object().expect("categories");
        for (id, theirs) in categories {
            let ours = report.categories.iter().find(|c| c.id.to_string() == *id);
            match (ours, theirs.is_null()) {
                (None, true) => {}
                (Some(ours), false) => {
                    assert_same(Some(ours.ap), &theirs["ap"], &format!("{name} {id} AP"));
                    assert_same(
                        Some(ours.ap50),
                        &theirs["ap50"],
                        &format!("{name} {id} AP50"),
                    );
                }
                (ours, _) => {
                    panic!("{name} category {id}: owltrack {ours:?}, pycocotools {theirs}")
                }
            }
        }
    }
}
