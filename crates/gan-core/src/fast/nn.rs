//! Small layers the models share.

use candle_core::{Result, Tensor};

/// Leaky ReLU through the fused kernel of [`crate::fast::ops::leaky_relu`]: candle-nn's
/// version builds its backward pass from comparison masks and casts, an order of
/// magnitude slower on CPU.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    crate::fast::ops::leaky_relu(x, slope)
}

/// ReLU through the same fused kernel (candle's backward of `relu` also builds masks).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    crate::fast::ops::relu(x)
}

/// `tanh`, the generators' output layer: inside [`crate::fast::layers::inference`] the
/// vectorised approximation of [`crate::fast::ops::tanh`] (3 units in the last place at
/// most), elsewhere candle's own arithmetic (over the threads), so that training keeps
/// the bits of earlier runs.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    if crate::fast::layers::in_inference() {
        crate::fast::ops::tanh(x)
    } else {
        crate::fast::ops::tanh_exact(x)
    }
}

/// Max pooling over `k x k` windows with stride `k` through
/// [`crate::fast::ops::max_pool2d`]: candle's values, but the true gradient (candle 0.11's
/// backward gives a 2x2 window's maximum a quarter of it) and over the threads.
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    crate::fast::ops::max_pool2d(x, k)
}

/// Swish (`x sigmoid(x)`) through the fused kernel of [`crate::fast::ops::swish`].
pub fn swish(x: &Tensor) -> Result<Tensor> {
    crate::fast::ops::swish(x)
}

/// Softplus through the fused kernel of [`crate::fast::ops::softplus`].
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    crate::fast::ops::softplus(x)
}

/// Inverted dropout: each unit zeroed with probability `p`, the rest scaled by 1/(1-p),
/// the mask drawn from `rng` (the run's stream, so that a resumed run draws the same
/// masks). `p = 0` returns `x` unchanged without drawing.
pub fn dropout(x: &Tensor, p: f64, rng: &mut crate::prior::Rng) -> Result<Tensor> {
    use rand::Rng as _;
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout needs 0 <= p < 1, got {p}")
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let v: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f64>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    x * Tensor::from_vec(v, x.shape(), x.device())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_nn_in_value_and_gradient() {
        let x = Var::new(&[-2.0f32, -0.5, -1e-3, 0.3, 4.0], &Device::Cpu).unwrap();
        let ours = leaky_relu(x.as_tensor(), 0.2).unwrap();
        let theirs = candle_nn::ops::leaky_relu(x.as_tensor(), 0.2).unwrap();
        assert_eq!(
            ours.to_vec1::<f32>().unwrap(),
            theirs.to_vec1::<f32>().unwrap()
        );
        let g = (ours.sum_all().unwrap()).backward().unwrap();
        let g = g.get(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, vec![0.2, 0.2, 0.2, 1.0, 1.0]);
    }

    #[test]
    fn dropout_zeroes_a_fraction_p_and_keeps_the_mean() {
        use crate::prior::{rng, RngStream};
        let x = Tensor::ones(20_000, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut r = rng(3, RngStream::Training);
        let y = dropout(&x, 0.3, &mut r).unwrap().to_vec1::<f32>().unwrap();
        let zeroed = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        let mean = y.iter().sum::<f32>() as f64 / y.len() as f64;
        assert!((zeroed - 0.3).abs() < 0.015, "zeroed {zeroed}");
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        // The same stream draws the same mask; p = 0 draws nothing.
        let again = dropout(&x, 0.3, &mut rng(3, RngStream::Training)).unwrap();
        assert_eq!(again.to_vec1::<f32>().unwrap(), y);
        let mut r0 = rng(3, RngStream::Training);
        let kept = dropout(&x, 0.0, &mut r0).unwrap();
        assert_eq!(kept.to_vec1::<f32>().unwrap(), vec![1.0; 20_000]);
        let first_after = dropout(&x, 0.3, &mut r0).unwrap();
        assert_eq!(first_after.to_vec1::<f32>().unwrap(), y);
        assert!(dropout(&x, 1.0, &mut r0).is_err());
        assert!(dropout(&x, -0.1, &mut r0).is_err());
    }
}
