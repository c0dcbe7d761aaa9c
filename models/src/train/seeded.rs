//! Trainable variables drawn from the project's seeded generator: candle's
//! CPU generator cannot be seeded, so without this a from-scratch run (and
//! every test that trains one) started from different weights each time.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

use crate::rng::Pcg;

/// A `VarBuilder` whose new variables land in `weights` (as with
/// `VarBuilder::from_varmap`) drawn from their init hint with a generator
/// seeded by `seed`; variables already in `weights` are returned as they are.
/// The same seed and the same order of creation give the same weights.
pub fn seeded_var_builder(
    weights: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend: Box<dyn SimpleBackend> = Box::new(SeededVarMap {
        weights: weights.clone(),
        rng: Mutex::new(Pcg::new(seed, INIT_STREAM)),
    });
    VarBuilder::from_backend(backend, dtype, device.clone())
}

/// Keeps initialisation draws apart from other uses of the same seed (the
/// batches a step draws).
const INIT_STREAM: u64 = 0x1417;

struct SeededVarMap {
    weights: VarMap,
    rng: Mutex<Pcg>,
}

impl SeededVarMap {
    fn draw(&self, shape: &Shape, init: Init) -> candle_core::Result<Tensor> {
        let count = shape.elem_count();
        let mut rng = self.rng.lock().map_err(|_| {
            candle_core::Error::Msg("the initialisation generator is poisoned".into())
        })?;
        let values: Vec<f32> = match init {
            Init::Const(value) => vec![value as f32; count],
            Init::Randn { mean, stdev } => (0..count)
                .map(|_| (mean + stdev * rng.normal()) as f32)
                .collect(),
            Init::Uniform { lo, up } => (0..count).map(|_| rng.range(lo, up) as f32).collect(),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                // candle's own rule (`Init::var`): std = gain / √fan.
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => {
                        (0..count).map(|_| (std * rng.normal()) as f32).collect()
                    }
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        (0..count)
                            .map(|_| rng.range(-bound, bound) as f32)
                            .collect()
                    }
                }
            }
        };
        Tensor::from_vec(values, shape.clone(), &Device::Cpu)
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .weights
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the variable map is poisoned".into()))?;
        if let Some(existing) = data.get(name) {
            let tensor = existing.as_tensor();
            if tensor.shape() != &shape {
                return Err(candle_core::Error::UnexpectedShape {
                    msg: format!("shape mismatch for {name}"),
                    expected: shape,
                    got: tensor.shape().clone(),
                });
            }
            return Ok(tensor.clone());
        }
        let var = Var::from_tensor(
            &self
                .draw(&shape, init)?
                .to_dtype(dtype)?
                .to_device(device)?,
        )?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_owned(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        let data = self
            .weights
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the variable map is poisoned".into()))?;
        data.get(name)
            .map(|var| var.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_owned(),
            })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.weights
            .data()
            .lock()
            .is_ok_and(|data| data.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Module;

    fn layer(seed: u64) -> (VarMap, Vec<f32>) {
        let weights = VarMap::new();
        let vb = seeded_var_builder(&weights, seed, DType::F32, &Device::Cpu);
        let linear = candle_nn::linear(64, 32, vb.pp("layer")).unwrap();
        let out = linear
            .forward(&Tensor::ones((1, 64), DType::F32, &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (weights, out)
    }

    #[test]
    fn the_same_seed_draws_the_same_weights() {
        let (weights, a) = layer(7);
        assert_eq!(a, layer(7).1);
        assert_ne!(a, layer(8).1);
        // The variables are in the map, drawn with candle's spread for a
        // linear layer's weights (Kaiming normal: gain / √fan-in).
        assert_eq!(weights.all_vars().len(), 2);
        let weight = weights.data().lock().unwrap()["layer.weight"]
            .as_tensor()
            .clone();
        let values = weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let std = (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt();
        let Init::Kaiming {
            fan, non_linearity, ..
        } = candle_nn::init::DEFAULT_KAIMING_NORMAL
        else {
            unreachable!("candle's default for linear weights is Kaiming")
        };
        let expected = non_linearity.gain() / (fan.for_shape(weight.shape()) as f64).sqrt();
        assert!(
            (f64::from(std) / expected - 1.0).abs() < 0.1,
            "std {std} against {expected}"
        );
    }
}
