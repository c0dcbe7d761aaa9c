//! The TAO-OW evaluator against TrackEval's own numbers on the golden cases
//! that `fixtures/tao_ow/make_golden.py` generates and scores with TrackEval.

use std::path::{Path, PathBuf};

use owltrack_tracker::tao::TaoDataset;
use owltrack_tracker::tao_ow::{evaluate, read_predictions, EvalOptions, HotaScores, Subset};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tao_ow")
}

/// Largest difference between our scores and TrackEval's, field by field.
fn worst_difference(ours: &HotaScores, theirs: &Value, context: &str) -> f64 {
    let ours = serde_json::to_value(ours).expect("scores serialise");
    let fields = theirs.as_object().expect("a dict of fields");
    let mut worst = 0f64;
    for (field, values) in fields {
        let Some(mine) = ours.get(field) else {
            continue;
        };
        let (mine, theirs) = (
            mine.as_array().expect("array"),
            values.as_array().expect("array"),
        );
        assert_eq!(mine.len(), theirs.len(), "{context} {field}: α count");
        for (a, (m, t)) in mine.iter().zip(theirs).enumerate() {
            let (m, t) = (
                m.as_f64().unwrap_or(f64::NAN),
                t.as_f64().unwrap_or(f64::NAN),
            );
            let difference = (m - t).abs();
            assert!(
                difference <= 1e-6,
                "{context} {field}[α #{a}]: owltrack {m}, TrackEval {t}"
            );
            worst = worst.max(difference);
        }
    }
    for field in [
        "OWTA", "HOTA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA",
    ] {
        assert!(
            fields.contains_key(field),
            "{context}: TrackEval's {field} missing"
        );
    }
    worst
}

#[test]
fn matches_trackeval_on_every_golden_case() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json parses");
    let cases = expected["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10, "too few golden cases");
    let (mut compared, mut worst) = (0, 0f64);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let dir = fixtures().join(name);
        let (gt_path, pred_path) = (dir.join("gt.json"), dir.join("pred.json"));
        let gt = TaoDataset::read(&gt_path).expect("gt");
        let predictions = read_predictions(&pred_path).expect("predictions");
        let max_dets = case["max_dets"].as_u64().expect("max_dets") as usize;
        for (subset_name, result) in case["subsets"].as_object().expect("subsets") {
            let subset = Subset::parse(subset_name).expect("subset name");
            let context = format!("{name} {subset_name}");
            let options = EvalOptions { subset, max_dets };
            let ours = evaluate(&gt, &predictions, options, (&gt_path, &pred_path));
            if let Some(error) = result.get("error") {
                // TrackEval gave up on this case; so must we, or we must have
                // nothing to score.
                if let Ok(ours) = ours {
                    assert_eq!(ours.ground_truth, 0, "{context}: TrackEval raised {error}");
                }
                continue;
            }
            let ours = ours.unwrap_or_else(|e| panic!("{context}: {e}"));
            worst = worst.max(worst_difference(
                &ours.combined,
                &result["combined"],
                &context,
            ));
            let per_video = result["per_video"].as_object().expect("per_video");
            assert_eq!(per_video.len(), ours.per_video.len(), "{context}: videos");
            for video in &ours.per_video {
                let theirs = per_video
                    .get(&video.name)
                    .unwrap_or_else(|| panic!("{context}: TrackEval has no video {}", video.name));
                worst = worst.max(worst_difference(
                    &video.scores,
                    theirs,
                    &format!("{context} {}", video.name),
                ));
            }
            compared += 1;
        }
    }
    assert!(
        compared >= 20,
        "only {compared} case × subset results compared"
    );
    eprintln!("{compared} results compared; largest difference {worst:e}");
}
