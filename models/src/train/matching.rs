//! Matching predictions to targets with the lowest total cost, one to one.

use crate::boxes::{center_to_corners, generalized_iou};
use crate::detect::sigmoid;
use crate::error::{ModelError, Result};

/// The focal loss's shape: γ focuses on hard examples, α weighs positives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Focal {
    pub gamma: f32,
    pub alpha: f32,
}

impl Default for Focal {
    /// OWL-ViT's values.
    fn default() -> Self {
        Focal {
            gamma: 2.0,
            alpha: 0.3,
        }
    }
}

/// Weights of the matching cost's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchWeights {
    pub class: f32,
    pub l1: f32,
    pub giou: f32,
}

impl Default for MatchWeights {
    fn default() -> Self {
        MatchWeights {
            class: 1.0,
            l1: 1.0,
            giou: 1.0,
        }
    }
}

/// The classification cost of calling a prediction with logit `logit`
/// positive: the focal loss of that, minus the focal loss of calling it
/// negative (as DETR-style matchers with focal losses do).
pub fn focal_cost(logit: f32, focal: Focal) -> f32 {
    let p = sigmoid(logit);
    let positive = focal.alpha * (1.0 - p).powf(focal.gamma) * -(p + 1e-8).ln();
    let negative = (1.0 - focal.alpha) * p.powf(focal.gamma) * -(1.0 - p + 1e-8).ln();
    positive - negative
}

/// Assigns targets to predictions at the lowest total cost.
///
/// `logits` is N × Q (row-major), `boxes` the N predicted boxes and
/// `targets` the M target boxes, all (cx, cy, w, h) normalised; target `j`
/// has query `labels[j]`. Returns (prediction, target) pairs, one per target
/// when N ≥ M, sorted by prediction.
pub fn match_predictions(
    logits: &[f32],
    queries: usize,
    boxes: &[[f32; 4]],
    targets: &[[f32; 4]],
    labels: &[usize],
    weights: MatchWeights,
    focal: Focal,
) -> Result<Vec<(usize, usize)>> {
    let n = boxes.len();
    if logits.len() != n * queries
        || labels.len() != targets.len()
        || labels.iter().any(|&l| l >= queries)
    {
        return Err(ModelError::InvalidInput(format!(
            "matching needs {n}×{queries} logits and a valid query for each of {} targets",
            targets.len()
        )));
    }
    if n == 0 || targets.is_empty() {
        return Ok(Vec::new());
    }
    let target_corners: Vec<[f32; 4]> = targets.iter().map(|t| center_to_corners(*t)).collect();
    let mut cost = Vec::with_capacity(n * targets.len());
    for (i, b) in boxes.iter().enumerate() {
        let corners = center_to_corners(*b);
        for (j, t) in targets.iter().enumerate() {
            let class = focal_cost(logits[i * queries + labels[j]], focal);
            let l1: f32 = b.iter().zip(t).map(|(x, y)| (x - y).abs()).sum();
            let giou = generalized_iou(&corners, &target_corners[j]);
            cost.push(f64::from(
                weights.class * class + weights.l1 * l1 - weights.giou * giou,
            ));
        }
    }
    if cost.iter().any(|c| !c.is_finite()) {
        return Err(ModelError::InvalidInput(
            "matching cost is not finite (NaN logits or boxes?)".into(),
        ));
    }
    let (rows, cols) = lsap::solve(n, targets.len(), &cost, false)
        .map_err(|e| ModelError::InvalidInput(format!("assignment failed: {e:?}")))?;
    Ok(rows.into_iter().zip(cols).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_obvious_pairs() {
        // Three predictions, two targets: prediction 2 sits on target 0 and is
        // confident about its query; prediction 0 sits on target 1.
        let boxes = [
            [0.2, 0.2, 0.1, 0.1],
            [0.5, 0.5, 0.3, 0.3],
            [0.8, 0.8, 0.2, 0.2],
        ];
        let targets = [[0.8, 0.8, 0.2, 0.2], [0.21, 0.2, 0.1, 0.1]];
        let logits = [0.0, 3.0, 0.0, 0.0, 4.0, -2.0];
        let pairs = match_predictions(
            &logits,
            2,
            &boxes,
            &targets,
            &[0, 1],
            MatchWeights::default(),
            Focal::default(),
        )
        .unwrap();
        assert_eq!(pairs, [(0, 1), (2, 0)]);
        assert!(match_predictions(
            &logits,
            2,
            &boxes,
            &targets,
            &[0, 2],
            MatchWeights::default(),
            Focal::default()
        )
        .is_err());
        assert!(match_predictions(
            &logits,
            2,
            &boxes,
            &[],
            &[],
            MatchWeights::default(),
            Focal::default()
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn focal_cost_prefers_confident_positives() {
        let focal = Focal::default();
        assert!(focal_cost(4.0, focal) < focal_cost(0.0, focal));
        assert!(focal_cost(0.0, focal) < focal_cost(-4.0, focal));
    }
}
