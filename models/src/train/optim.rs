//! AdamW with decoupled weight decay on matrices, global gradient-norm
//! clipping and the learning-rate schedule of [`TrainOptions`]; its state
//! (moments and step) saves and restores exactly, so runs resume.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use super::trainer::{Losses, TrainOptions};
use crate::error::{ModelError, Result};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

#[derive(Default)]
pub(crate) struct AdamW {
    /// First and second moments, by variable name.
    moments: HashMap<String, (Tensor, Tensor)>,
    /// Updates applied so far.
    pub(crate) step: usize,
}

/// The variables of `weights`, sorted by name (a fixed order makes the
/// clipping norm's sum, and so every run, reproducible).
pub(crate) fn named_vars(weights: &VarMap) -> Vec<(String, Var)> {
    let data = weights.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

impl AdamW {
    /// One update of `weights` from `gradients`.
    pub(crate) fn apply(
        &mut self,
        weights: &VarMap,
        gradients: &candle_core::backprop::GradStore,
        options: &TrainOptions,
    ) -> Result<()> {
        let vars = named_vars(weights);
        let mut squared = 0f64;
        for (_, var) in &vars {
            if let Some(g) = gradients.get(var) {
                squared += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
        }
        let norm = squared.sqrt();
        let clip = if norm > options.clip_norm {
            options.clip_norm / norm
        } else {
            1.0
        };
        let lr = options.learning_rate_at(self.step);
        let t = (self.step + 1) as i32;
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for (name, var) in vars {
            let Some(g) = gradients.get(&var) else {
                continue;
            };
            let g = (g * clip)?;
            let (m, v) = match self.moments.get(&name) {
                Some((m, v)) => (m.clone(), v.clone()),
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * BETA1)? + (&g * (1.0 - BETA1))?)?;
            let v = ((v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + EPSILON)?)?;
            let decays = var.rank() >= 2 && !name.contains("embedding");
            let theta = var.as_tensor();
            let mut next = (theta - (update * lr)?)?;
            if decays {
                next = (next - (theta * (lr * options.weight_decay))?)?;
            }
            var.set(&next)?;
            self.moments.insert(name, (m, v));
        }
        self.step += 1;
        Ok(())
    }

    /// One step down the gradient of `total`, whose parts `losses` reports;
    /// a loss that is not finite stops training with the step and the parts.
    pub(crate) fn minimise(
        &mut self,
        weights: &VarMap,
        total: &Tensor,
        losses: &Losses,
        options: &TrainOptions,
    ) -> Result<()> {
        if !losses.total.is_finite() {
            return Err(ModelError::InvalidInput(format!(
                "the loss diverged at step {}: {losses:?}",
                self.step
            )));
        }
        let gradients = total.backward()?;
        self.apply(weights, &gradients, options)
    }

    /// Writes the moments and the step to `path`.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, (m, v)) in &self.moments {
            tensors.insert(format!("m.{name}"), m.clone());
            tensors.insert(format!("v.{name}"), v.clone());
        }
        tensors.insert(
            "step".into(),
            Tensor::new(&[self.step as u32], &Device::Cpu)?,
        );
        candle_core::safetensors::save(&tensors, path).map_err(|e| ModelError::Checkpoint {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Restores what [`AdamW::save`] wrote, for the variables of `weights`.
    pub(crate) fn load(path: &Path, weights: &VarMap, device: &Device) -> Result<Self> {
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|e| ModelError::Checkpoint {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let step = tensors
            .get("step")
            .map(|t| t.to_vec1::<u32>())
            .transpose()?
            .and_then(|v| v.first().copied())
            .unwrap_or(0) as usize;
        let mut moments = HashMap::new();
        for (name, _) in named_vars(weights) {
            if let (Some(m), Some(v)) = (
                tensors.get(&format!("m.{name}")),
                tensors.get(&format!("v.{name}")),
            ) {
                moments.insert(name, (m.clone(), v.clone()));
            }
        }
        Ok(AdamW { moments, step })
    }
}
