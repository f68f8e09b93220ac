//! Seeded weight initialisation.
//!
//! candle's CPU device cannot be seeded, so the initialisers of candle-nn draw different
//! weights on every run. Models build their layers as usual and then call [`reinit`],
//! which redraws every parameter from the run's seed: two runs with one seed start from
//! the same weights.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::Rng as _;
use rand_distr::{Distribution, Normal};

use crate::prior::Rng;

/// How weights (tensors of rank 2 or more) are drawn; biases always start at zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightInit {
    /// N(0, std²) weights, batch-norm scales N(1, std²): the DCGAN paper's scheme (0.02).
    Normal {
        /// Standard deviation.
        std: f32,
    },
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for linear and conv layers:
    /// it keeps activations of a deep MLP at a usable scale.
    FanInUniform,
}

/// Redraws every parameter of `vars` (in name order, so the draw is reproducible).
/// Batch-norm running statistics (`running_*`) keep their values.
pub fn reinit(vars: &VarMap, init: WeightInit, rng: &mut Rng) -> Result<()> {
    let data = vars.data().lock().unwrap();
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    for name in names {
        let var = &data[&name];
        if name.contains("running_") || !var.dtype().is_float() {
            continue;
        }
        let dims = var.dims().to_vec();
        let n = var.elem_count();
        let values: Vec<f32> = if dims.len() >= 2 {
            let fan_in = dims[1..].iter().product::<usize>().max(1);
            match init {
                WeightInit::Normal { std } => normal(n, 0.0, std, rng),
                WeightInit::FanInUniform => {
                    let b = 1.0 / (fan_in as f32).sqrt();
                    (0..n).map(|_| rng.random_range(-b..b)).collect()
                }
            }
        } else if name.ends_with("weight") {
            // A rank-1 weight is a normalisation scale.
            match init {
                WeightInit::Normal { std } => normal(n, 1.0, std, rng),
                WeightInit::FanInUniform => vec![1.0; n],
            }
        } else {
            vec![0.0; n]
        };
        let t = Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

fn normal(n: usize, mean: f32, std: f32, rng: &mut Rng) -> Vec<f32> {
    let d = Normal::new(mean, std).expect("std is finite and positive");
    (0..n).map(|_| d.sample(rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn reproducible_and_scaled() {
        let make = || {
            let vars = VarMap::new();
            let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
            candle_nn::linear(400, 30, vb.pp("fc")).unwrap();
            vars
        };
        let (a, b) = (make(), make());
        reinit(
            &a,
            WeightInit::Normal { std: 0.02 },
            &mut crate::prior::rng(5, crate::prior::RngStream::Training),
        )
        .unwrap();
        reinit(
            &b,
            WeightInit::Normal { std: 0.02 },
            &mut crate::prior::rng(5, crate::prior::RngStream::Training),
        )
        .unwrap();
        let wa = crate::engine::checkpoint::var_tensors(&a)["fc.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let wb = crate::engine::checkpoint::var_tensors(&b)["fc.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(wa, wb);
        let sd = (wa.iter().map(|x| x * x).sum::<f32>() / wa.len() as f32).sqrt();
        assert!((sd - 0.02).abs() < 0.002, "{sd}");
        let bias = crate::engine::checkpoint::var_tensors(&a)["fc.bias"]
            .to_vec1::<f32>()
            .unwrap();
        assert!(bias.iter().all(|&x| x == 0.0));
        reinit(
            &a,
            WeightInit::FanInUniform,
            &mut crate::prior::rng(5, crate::prior::RngStream::Training),
        )
        .unwrap();
        let w = crate::engine::checkpoint::var_tensors(&a)["fc.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(w.iter().all(|x| x.abs() <= 0.05) && w.iter().any(|x| x.abs() > 0.04));
    }
}
