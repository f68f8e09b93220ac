//! Gradient reversal: the identity forward, `-lambda` times the gradient backward,
//! checked against finite differences of the same function without it.

mod common;

use candle_core::{Device, Tensor, Var};
use gan_core::fast::layers::grad_reverse;

/// A smooth scalar function of `x` with a gradient that differs per element.
fn f(x: &Tensor, w: &Tensor) -> Tensor {
    (x.sin().unwrap() * w).unwrap().sum_all().unwrap()
}

#[test]
fn forward_is_the_identity_bit_for_bit() {
    let x = common::rand(&[3, 5], 1);
    let y = grad_reverse(&x, 0.7).unwrap();
    let (a, b) = (
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a, b);
}

#[test]
fn backward_is_minus_lambda_times_the_finite_difference_gradient() {
    let w = common::rand(&[2, 4], 2);
    let x0 = common::rand(&[2, 4], 3)
        .to_dtype(candle_core::DType::F64)
        .unwrap();
    let w = w.to_dtype(candle_core::DType::F64).unwrap();
    for lambda in [0.0, 0.5, 1.0, 3.0] {
        let x = Var::from_tensor(&x0).unwrap();
        let loss = f(&grad_reverse(x.as_tensor(), lambda).unwrap(), &w);
        let grads = loss.backward().unwrap();
        let base = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // At lambda = 0 candle prunes the path: no gradient at all, i.e. zero.
        let got = match grads.get(&x) {
            Some(g) => g.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            None => vec![0.0; base.len()],
        };
        let h = 1e-6;
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, x0.dims(), &Device::Cpu).unwrap();
                f(&t, &w).to_scalar::<f64>().unwrap()
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (got[i] - (-lambda * numeric)).abs() < 1e-6,
                "lambda {lambda}, element {i}: autograd {} vs -lambda * finite difference {}",
                got[i],
                -lambda * numeric
            );
        }
    }
}
