//! The fast ops against candle's own ops: same values, same gradients, on random inputs
//! of odd shapes, strides, paddings and batch 1.

use candle_core::{Device, Result, Tensor, Var};
use gan_core::fast::ops::{self, Act, ConvSpec};

mod common;
use common::{close, rand};

/// Runs `fast` and `reference` on the same variables, compares outputs and the gradients
/// of `sum(out * r)` for a random `r`.
fn check(
    what: &str,
    inputs: &[Tensor],
    fast: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let run = |f: &dyn Fn(&[Tensor]) -> Result<Tensor>| -> Result<(Tensor, Vec<Tensor>)> {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts)?;
        let r = rand(y.dims(), 99);
        let grads = (&y * &r)?.sum_all()?.backward()?;
        let g: Vec<Tensor> = ts.iter().map(|t| grads.get(t).unwrap().clone()).collect();
        Ok((y, g))
    };
    let (y1, g1) = run(&fast).unwrap();
    let (y2, g2) = match run(&reference) {
        Ok(r) => r,
        // candle 0.11's conv2d backward returns a wrongly shaped input gradient when the
        // stride does not divide H + 2p - k. Those layers are linear in each input, so
        // central differences give the exact gradient (up to rounding) instead.
        Err(_) => {
            let y = reference(inputs).unwrap();
            (y, numeric_gradients(inputs, &reference))
        }
    };
    close(&format!("{what} forward"), &y1, &y2);
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        close(&format!("{what} gradient of input {i}"), a, b);
    }
}

/// Gradients of `sum(f(inputs) * r)` by central differences, one element at a time.
fn numeric_gradients(inputs: &[Tensor], f: &impl Fn(&[Tensor]) -> Result<Tensor>) -> Vec<Tensor> {
    let r = rand(f(inputs).unwrap().dims(), 99);
    let value = |ts: &[Tensor]| -> f64 {
        let y = f(ts).unwrap().to_dtype(candle_core::DType::F64).unwrap();
        let r = r.to_dtype(candle_core::DType::F64).unwrap();
        (y * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    (0..inputs.len())
        .map(|i| {
            let base = inputs[i].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let h = 0.5f32;
            let g: Vec<f32> = (0..base.len())
                .map(|j| {
                    let at = |d: f32| {
                        let mut v = base.clone();
                        v[j] += d;
                        let mut ts = inputs.to_vec();
                        ts[i] = Tensor::from_vec(v, inputs[i].dims(), &Device::Cpu).unwrap();
                        value(&ts)
                    };
                    ((at(h) - at(-h)) / (2.0 * h as f64)) as f32
                })
                .collect();
            Tensor::from_vec(g, inputs[i].dims(), &Device::Cpu).unwrap()
        })
        .collect()
}

/// `linear` on the layer's `[out, in]` weight, and `linear_in_out` on the weight
/// transposed ahead (`[in, out]`, the copy `inference` keeps).
#[test]
fn linear_matches_candle() {
    for (i, &(n, fin, fout)) in [(1, 3, 4), (5, 7, 3), (64, 74, 130)].iter().enumerate() {
        for ahead in [false, true] {
            let w = if ahead { [fin, fout] } else { [fout, fin] };
            let inputs = [
                rand(&[n, fin], i as u64),
                rand(&w, 10 + i as u64),
                rand(&[fout], 20 + i as u64),
            ];
            check(
                &format!("linear {n}x{fin}->{fout}, transposed ahead: {ahead}"),
                &inputs,
                |t| match ahead {
                    false => ops::linear(&t[0], &t[1], &t[2]),
                    true => ops::linear_in_out(&t[0], &t[1], &t[2]),
                },
                |t| {
                    let w = if ahead { t[1].clone() } else { t[1].t()? };
                    t[0].matmul(&w)?.broadcast_add(&t[2])
                },
            );
        }
    }
}

#[test]
fn conv2d_matches_candle() {
    let cases = [
        // (input dims, out channels, kernel, stride, padding)
        ([1, 1, 5, 5], 2, 3, 1, 0),
        ([2, 3, 7, 6], 4, 3, 2, 1),
        ([3, 4, 14, 14], 5, 4, 2, 1),
        ([2, 2, 9, 8], 3, 2, 3, 2),
        ([1, 3, 6, 7], 1, 1, 1, 0),
    ];
    for (i, (x, o, k, stride, padding)) in cases.into_iter().enumerate() {
        let spec = ConvSpec {
            stride,
            padding,
            ..Default::default()
        };
        let inputs = [
            rand(&x, i as u64),
            rand(&[o, x[1], k, k], 30 + i as u64),
            rand(&[o], 40 + i as u64),
        ];
        check(
            &format!("conv2d {x:?} k{k} s{stride} p{padding}"),
            &inputs,
            |t| ops::conv2d(&t[0], &t[1], &t[2], spec),
            |t| {
                t[0].conv2d(&t[1], padding, stride, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, o, 1, 1))?)
            },
        );
    }
}

#[test]
fn conv_transpose2d_matches_candle() {
    let cases = [
        // (input dims, out channels, kernel, stride, padding, output padding)
        ([1, 3, 4, 4], 2, 4, 2, 1, 0),
        ([2, 5, 7, 7], 3, 4, 2, 1, 0),
        ([2, 3, 5, 6], 2, 3, 2, 0, 1),
        ([1, 2, 3, 3], 1, 3, 1, 1, 0),
        ([3, 1, 2, 5], 4, 2, 3, 0, 2),
        // 1x1 inputs: the projection of a generator's z (its own path), and the same
        // with padding or output padding (the general path).
        ([3, 5, 1, 1], 4, 7, 1, 0, 0),
        ([2, 6, 1, 1], 3, 4, 2, 0, 0),
        ([2, 3, 1, 1], 2, 5, 1, 1, 0),
        ([2, 3, 1, 1], 2, 3, 2, 0, 1),
    ];
    for (i, (x, o, k, stride, padding, output_padding)) in cases.into_iter().enumerate() {
        let spec = ConvSpec {
            stride,
            padding,
            output_padding,
        };
        let inputs = [
            rand(&x, 50 + i as u64),
            rand(&[x[1], o, k, k], 60 + i as u64),
            rand(&[o], 70 + i as u64),
        ];
        check(
            &format!("conv_transpose2d {x:?} k{k} s{stride} p{padding} op{output_padding}"),
            &inputs,
            |t| ops::conv_transpose2d(&t[0], &t[1], &t[2], spec),
            |t| {
                t[0].conv_transpose2d(&t[1], padding, output_padding, stride, 1)?
                    .broadcast_add(&t[2].reshape((1, o, 1, 1))?)
            },
        );
    }
}

/// Batch norm written with plain candle ops, the textbook way.
fn batch_norm_reference(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let mut shape = vec![1; x.rank()];
    shape[1] = c;
    let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
    let mut mean = x.clone();
    for &a in axes.iter().rev() {
        mean = mean.mean_keepdim(a)?;
    }
    let centred = x.broadcast_sub(&mean)?;
    let mut var = centred.sqr()?;
    for &a in axes.iter().rev() {
        var = var.mean_keepdim(a)?;
    }
    centred
        .broadcast_div(&(var + 1e-5)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)
}

#[test]
fn batch_norm_matches_candle() {
    let cases: [&[usize]; 5] = [&[8, 5], &[4, 3, 5, 5], &[1, 2, 3, 3], &[64, 130], &[37, 9]];
    for (i, x) in cases.into_iter().enumerate() {
        let c = x[1];
        let inputs = [
            (rand(x, 80 + i as u64) * 3.0).unwrap(),
            rand(&[c], 90 + i as u64),
            rand(&[c], 100 + i as u64),
        ];
        check(
            &format!("batch norm {x:?}"),
            &inputs,
            |t| Ok(ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0),
            |t| batch_norm_reference(&t[0], &t[1], &t[2]),
        );
    }
}

#[test]
fn batch_norm_with_activation_matches_candle() {
    let cases: [(&[usize], f64); 3] = [(&[8, 5], 0.0), (&[4, 3, 5, 5], 0.1), (&[64, 130], 0.2)];
    for (i, (x, slope)) in cases.into_iter().enumerate() {
        let c = x[1];
        let inputs = [
            (rand(x, 110 + i as u64) * 3.0).unwrap(),
            rand(&[c], 120 + i as u64),
            rand(&[c], 130 + i as u64),
        ];
        check(
            &format!("batch norm + leaky relu {slope} {x:?}"),
            &inputs,
            |t| Ok(ops::batch_norm_act_train(&t[0], &t[1], &t[2], 1e-5, slope)?.0),
            |t| {
                let y = batch_norm_reference(&t[0], &t[1], &t[2])?;
                y.maximum(0.0)? + (y.minimum(0.0)? * slope)?
            },
        );
    }
}

#[test]
fn batch_norm_reports_batch_statistics() {
    let x = Tensor::new(&[[1f32, 10.0], [3.0, 20.0]], &Device::Cpu).unwrap();
    let one = Tensor::ones(2, candle_core::DType::F32, &Device::Cpu).unwrap();
    let zero = one.zeros_like().unwrap();
    let (_, stats) = ops::batch_norm_train(&x, &one, &zero, 1e-5).unwrap();
    assert_eq!(stats.mean.to_vec1::<f32>().unwrap(), [2.0, 15.0]);
    assert_eq!(stats.var.to_vec1::<f32>().unwrap(), [1.0, 25.0]);
    assert_eq!(stats.count, 2);
}

/// A layer with its activation (leaky ReLU, swish) fused into its op gives the two ops'
/// bits, output and every gradient, and leaves one node in the graph instead of two (a
/// negative slope, which the fused gradient cannot read off the output's sign, falls back
/// to two).
#[test]
fn fused_activations_give_the_two_ops_bits() {
    type Layer = dyn Fn(&[Tensor], Option<Act>) -> Result<Tensor>;
    // The output and each input's gradient of sum(y * r), as bits, and the graph's size.
    let run = |inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor>| {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts).unwrap();
        let nodes = y.sorted_nodes().len();
        let r = rand(y.dims(), 99);
        let loss = (&y * &r).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let mut out = vec![bits(&y)];
        out.extend(ts.iter().map(|t| bits(grads.get(t).unwrap())));
        // The same graph backpropagated a second time gives the same gradients.
        let again = loss.backward().unwrap();
        for (k, t) in ts.iter().enumerate() {
            assert!(
                bits(again.get(t).unwrap()) == out[k + 1],
                "second backward, input {k}"
            );
        }
        (out, nodes)
    };
    let conv = |spec: ConvSpec| -> Box<Layer> {
        Box::new(move |t, act| match act {
            Some(a) => ops::conv2d_act(&t[0], &t[1], &t[2], spec, a),
            None => ops::conv2d(&t[0], &t[1], &t[2], spec),
        })
    };
    let linear = || -> Box<Layer> {
        Box::new(|t, act| match act {
            Some(a) => ops::linear_act(&t[0], &t[1], &t[2], a),
            None => ops::linear(&t[0], &t[1], &t[2]),
        })
    };
    let spec = |stride, padding| ConvSpec {
        stride,
        padding,
        ..Default::default()
    };
    // The last of each kind spans two of the element-wise kernels' chunks of 16,384.
    let cases: Vec<(String, Vec<Tensor>, Box<Layer>)> = vec![
        (
            "conv [3, 4, 14, 14] -> 6, k4 s2 p1".into(),
            vec![
                rand(&[3, 4, 14, 14], 1),
                rand(&[6, 4, 4, 4], 2),
                rand(&[6], 3),
            ],
            conv(spec(2, 1)),
        ),
        (
            "conv [4, 3, 30, 30] -> 8, k3 s1 p1".into(),
            vec![
                rand(&[4, 3, 30, 30], 4),
                rand(&[8, 3, 3, 3], 5),
                rand(&[8], 6),
            ],
            conv(spec(1, 1)),
        ),
        (
            "linear 5x7 -> 3".into(),
            vec![rand(&[5, 7], 7), rand(&[3, 7], 8), rand(&[3], 9)],
            linear(),
        ),
        (
            "linear 64x300 -> 300".into(),
            vec![
                rand(&[64, 300], 10),
                rand(&[300, 300], 11),
                rand(&[300], 12),
            ],
            linear(),
        ),
    ];
    for (what, inputs, layer) in &cases {
        for act in [
            Act::Leaky(0.0),
            Act::Leaky(0.2),
            Act::Leaky(-0.5),
            Act::Swish,
        ] {
            let apply = |y: Tensor| match act {
                Act::Leaky(a) => ops::leaky_relu(&y, a),
                Act::Swish => ops::swish(&y),
            };
            let (fused, nodes) = run(inputs, &|t| layer(t, Some(act)));
            let (apart, apart_nodes) = run(inputs, &|t| apply(layer(t, None)?));
            assert!(fused == apart, "{what}, {act:?}: not the two ops' bits");
            assert_eq!(apart_nodes, 5, "{what}: x, w, b, the layer, the activation");
            let want = if act == Act::Leaky(-0.5) { 5 } else { 4 };
            assert_eq!(nodes, want, "{what}, {act:?}: nodes of the fused graph");
            // Without a gradient to come (no state kept), the same output.
            let plain = layer(inputs, Some(act)).unwrap();
            let bits: Vec<u32> = plain
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert!(
                bits == fused[0],
                "{what}, {act:?}: untracked output differs"
            );
        }
    }
}

#[test]
fn leaky_relu_matches_candle() {
    // The second shape spans three of the kernels' chunks of 16,384, the last one short.
    for (slope, shape) in [
        (0.0, &[3, 4, 5][..]),
        (0.1, &[3, 4, 5]),
        (0.2, &[3, 7, 40, 41]),
    ] {
        let inputs = [rand(shape, 7)];
        check(
            &format!("leaky relu {slope}"),
            &inputs,
            |t| ops::leaky_relu(&t[0], slope),
            |t| {
                let neg = t[0].minimum(0.0)?;
                t[0].maximum(0.0)? + (neg * slope)?
            },
        );
    }
}

#[test]
fn swish_matches_candle() {
    let inputs = [(rand(&[3, 4, 5], 8) * 6.0).unwrap()];
    check(
        "swish",
        &inputs,
        |t| ops::swish(&t[0]),
        |t| t[0].clone() * candle_nn::ops::sigmoid(&t[0])?,
    );
}

#[test]
fn softplus_is_the_losses_bit_for_bit_with_its_gradient() {
    // Both signs, zero, the large values where exp(-|x|) underflows, and 40 x 41 more.
    let mut v: Vec<f32> = vec![0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0, 100.0, -100.0];
    v.extend(
        (rand(&[40, 41], 5) * 12.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    let x = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
    let r = rand(&[v.len()], 6);
    let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> (Vec<u32>, Vec<u32>) {
        let var = Var::from_tensor(&x).unwrap();
        let y = f(var.as_tensor()).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let bits = |t: &Tensor| {
            t.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|f| f.to_bits())
                .collect()
        };
        (bits(&y), bits(grads.get(&var).unwrap()))
    };
    let (y1, g1) = run(&|t| ops::softplus(t));
    let (y2, g2) = run(&|t| gan_core::loss::softplus(t));
    assert_eq!(y1, y2, "forward");
    assert_eq!(g1, g2, "gradient");
    // Without a gradient to keep for, the forward pass is the same.
    let plain = ops::softplus(&x).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(plain.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), y1);
}

#[test]
fn softplus_in_inference_is_the_vectorised_one_within_a_few_ulp() {
    let v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.01).collect();
    let x = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
    let exact = gan_core::loss::softplus(&x)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let fast = gan_core::fast::layers::inference(|| ops::softplus(&x))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(fast, exact, "inference takes the approximation");
    // The reference itself rounds 1 + exp(-|x|) before its logarithm, an absolute error
    // up to half an epsilon where the tail is small (at -40 it gives 0, the approximation
    // 4.2e-18, the true value).
    for ((x, a), b) in v.iter().zip(&fast).zip(&exact) {
        assert!(
            (a - b).abs() <= 4.0 * f32::EPSILON * b.abs() + f32::EPSILON,
            "softplus({x}): {a} against {b}"
        );
    }
    let nan = Tensor::new(&[f32::NAN], &Device::Cpu).unwrap();
    let nan = gan_core::fast::layers::inference(|| ops::softplus(&nan)).unwrap();
    assert!(nan.to_vec1::<f32>().unwrap()[0].is_nan());
    // Outside inference, and wherever a gradient is wanted, candle's bits.
    assert_eq!(ops::softplus(&x).unwrap().to_vec1::<f32>().unwrap(), exact);
}

#[test]
fn gradients_only_where_needed() {
    // A data batch (not a variable) gets no gradient; the weights still do.
    let x = rand(&[2, 3, 6, 6], 1);
    let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 2)).unwrap();
    let b = Var::from_tensor(&rand(&[4], 3)).unwrap();
    let spec = ConvSpec::default();
    let y = ops::conv2d(&x, &w, &b, spec).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let reference = x
        .conv2d(&w, 0, 1, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    close(
        "weight gradient",
        grads.get(&w).unwrap(),
        reference.get(&w).unwrap(),
    );
    let db = grads.get(&b).unwrap().to_vec1::<f32>().unwrap();
    assert!(db.iter().all(|&v| (v - 2.0 * 16.0).abs() < 1e-4), "{db:?}");
}

#[test]
fn bad_shapes_are_errors() {
    let x = rand(&[1, 3, 4, 4], 1);
    let w = rand(&[2, 5, 3, 3], 2);
    let b = rand(&[2], 3);
    let err = ops::conv2d(&x, &w, &b, ConvSpec::default()).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    let big = rand(&[2, 3, 9, 9], 4);
    assert!(ops::conv2d(&x, &big, &b, ConvSpec::default()).is_err());
    let spec = ConvSpec {
        stride: 2,
        padding: 0,
        output_padding: 2,
    };
    let wt = rand(&[3, 2, 3, 3], 5);
    assert!(ops::conv_transpose2d(&x, &wt, &b, spec).is_err());
    assert!(ops::batch_norm_train(&rand(&[4], 1), &b, &b, 1e-5).is_err());
}

#[test]
fn tanh_is_within_a_few_ulp_of_candles_with_its_gradient() {
    // Every 1e-4 over [-10, 10] (both saturated ends, zero, the small values) for the
    // error bound; the gradient on random inputs.
    let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 1e-4).collect();
    let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
    let ours = ops::tanh(&x).unwrap().to_vec1::<f32>().unwrap();
    let theirs = x.tanh().unwrap().to_vec1::<f32>().unwrap();
    let worst = xs
        .iter()
        .zip(ours.iter().zip(&theirs))
        .map(|(x, (a, b))| {
            (
                (a - b).abs() / b.abs().max(f32::MIN_POSITIVE) / f32::EPSILON,
                *x,
            )
        })
        .fold((0f32, 0f32), |m, e| if e.0 > m.0 { e } else { m });
    assert!(worst.0 <= 4.0, "{} ulp at x = {}", worst.0, worst.1);
    check(
        "tanh",
        &[rand(&[7, 13], 4)],
        |t| ops::tanh(&t[0]),
        |t| t[0].tanh(),
    );
}

#[test]
fn transposed_is_candles_transpose() {
    for (i, &(r, c)) in [(1, 1), (3, 70), (33, 65), (100, 31)].iter().enumerate() {
        let w = rand(&[r, c], 30 + i as u64);
        let ours = ops::transposed(&w).unwrap();
        let theirs = w.t().unwrap().contiguous().unwrap();
        assert_eq!(ours.dims(), &[c, r]);
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{r} x {c}"
        );
    }
}

#[test]
fn tanh_exact_is_candles_bit_for_bit_with_its_gradient() {
    // Three of the kernels' chunks, the last one short, with zeros and saturated values.
    let scale = Tensor::new(&[0f32, 6.0, 12.0], &Device::Cpu).unwrap();
    let x = rand(&[5, 83, 3], 11)
        .broadcast_mul(&scale)
        .unwrap()
        .repeat((1, 1, 33))
        .unwrap();
    let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let v = Var::from_tensor(&x).unwrap();
        let y = f(v.as_tensor()).unwrap();
        let r = rand(y.dims(), 5);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = g.get(v.as_tensor()).unwrap().flatten_all().unwrap();
        (
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            dx.to_vec1::<f32>().unwrap(),
        )
    };
    let (y1, g1) = run(&|t| ops::tanh_exact(t));
    let (y2, g2) = run(&|t| t.tanh());
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y1), bits(&y2), "values");
    assert_eq!(bits(&g1), bits(&g2), "gradients");
}

#[test]
fn max_pool_passes_the_gradient_to_each_windows_first_maximum() {
    for (shape, k) in [
        ([2usize, 3, 7, 9], 2usize),
        ([1, 2, 24, 24], 2),
        ([2, 1, 8, 7], 3),
    ] {
        let mut x = rand(&shape, 21)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Ties in the first window (across rows) and the second (within a row): each
        // window's gradient must go to the first of the two.
        x[1] = 5.0;
        x[shape[3]] = 5.0;
        x[k] = 6.0;
        x[k + 1] = 6.0;
        let x = Tensor::from_vec(x, &shape[..], &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let y = ops::max_pool2d(v.as_tensor(), k).unwrap();
        let want_y = x.max_pool2d(k).unwrap();
        assert_eq!(y.dims(), want_y.dims());
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|f| f.to_bits()).collect()
        };
        assert_eq!(bits(&y), bits(&want_y), "{shape:?} forward");
        let r = rand(y.dims(), 3);
        let dx = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = dx.get(v.as_tensor()).unwrap().flatten_all().unwrap();
        // The expected gradient, window by window.
        let (h, w) = (shape[2], shape[3]);
        let (oh, ow) = (h / k, w / k);
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let rs = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut want = vec![0f32; xs.len()];
        for plane in 0..shape[0] * shape[1] {
            for o in 0..oh * ow {
                let (mut best, mut at) = (f32::NEG_INFINITY, 0);
                for t in 0..k * k {
                    let i = plane * h * w + (o / ow * k + t / k) * w + o % ow * k + t % k;
                    if xs[i] > best {
                        (best, at) = (xs[i], i);
                    }
                }
                want[at] = rs[plane * oh * ow + o];
            }
        }
        assert_eq!(dx.to_vec1::<f32>().unwrap(), want, "{shape:?} gradient");
    }
    let x = rand(&[1, 1, 3, 3], 1);
    assert!(ops::max_pool2d(&x, 0).is_err());
    assert!(ops::max_pool2d(&x, 4).is_err());
}

/// A 16 -> 8 linear layer of fresh weights, with the variables that hold them.
fn layer_16_to_8() -> (candle_nn::VarMap, gan_core::fast::layers::Linear) {
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &Device::Cpu);
    let layer = gan_core::fast::layers::linear(16, 8, vb.pp("l")).unwrap();
    (vars, layer)
}

/// Row groups on the threads: in order, all rows, and each group computing as the
/// calling thread would: frozen weights stay frozen, an inference section stays one.
#[test]
fn row_groups_carry_the_callers_frozen_and_inference_state() {
    use candle_core::Module;
    use gan_core::fast::layers::{frozen, inference};
    use gan_core::fast::par_rows;
    let (_vars, layer) = layer_16_to_8();
    let x = (rand(&[96, 16], 11) * 4.0).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let groups = par_rows(96, 32, |at, len| Ok((at, len))).unwrap();
        assert_eq!(groups, vec![(0, 48), (48, 48)]);
        assert_eq!(
            par_rows(40, 32, |at, len| Ok((at, len))).unwrap(),
            vec![(0, 40)]
        );
        // Large batches: groups under twice the minimum, several to a thread.
        assert_eq!(
            par_rows(256, 32, |at, len| Ok((at, len))).unwrap(),
            vec![(0, 64), (64, 64), (128, 64), (192, 64)]
        );
        // Frozen: the weights take no gradient, so the outputs track nothing.
        let tracked = |t: &[Tensor]| t.iter().map(|y| y.track_op()).collect::<Vec<_>>();
        let run = || par_rows(96, 32, |at, len| Ok(layer.forward(&x.narrow(0, at, len)?)?));
        assert_eq!(tracked(&run().unwrap()), [true, true]);
        assert_eq!(tracked(&frozen(run).unwrap()), [false, false]);
        // Inference: tanh is the vectorised approximation in every group.
        let tanh = || {
            let parts = par_rows(96, 32, |at, len| {
                Ok(gan_core::fast::nn::tanh(&x.narrow(0, at, len)?)?)
            });
            Tensor::cat(&parts.unwrap(), 0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let whole = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let approx = inference(|| whole(gan_core::fast::nn::tanh(&x).unwrap()));
        let exact = whole(gan_core::fast::nn::tanh(&x).unwrap());
        assert_ne!(approx, exact);
        assert_eq!(inference(tanh), approx);
        assert_eq!(tanh(), exact);
    });
}

/// `on_worker` runs its work on a rayon worker (so parallel ops start there instead of
/// being handed over whole), with the caller's frozen flag and inference section.
#[test]
fn work_moved_onto_a_worker_keeps_the_callers_frozen_and_inference_state() {
    use candle_core::Module;
    use gan_core::fast::layers::{frozen, inference};
    use gan_core::fast::on_worker;
    let (_vars, layer) = layer_16_to_8();
    let x = (rand(&[12, 16], 11) * 4.0).unwrap();
    assert!(
        rayon::current_thread_index().is_none(),
        "the test's own thread"
    );
    assert!(on_worker(|| rayon::current_thread_index().is_some()));
    let run = || on_worker(|| layer.forward(&x).unwrap().track_op());
    assert!(run());
    assert!(!frozen(run));
    let whole = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let tanh = || on_worker(|| whole(gan_core::fast::nn::tanh(&x).unwrap()));
    let approx = inference(|| whole(gan_core::fast::nn::tanh(&x).unwrap()));
    assert_ne!(approx, tanh(), "outside a section: the exact tanh");
    assert_eq!(inference(tanh), approx);
}
