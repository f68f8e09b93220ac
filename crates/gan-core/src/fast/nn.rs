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
}
