//! Weight gradients written in place by the collector equal those of candle's backward
//! pass, accumulate over several uses of a weight within one backward pass, start afresh
//! with the next, and give the same Adam update.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gan_core::fast::grads::Collector;
use gan_core::fast::layers::{self, frozen, ConvSpec};
use gan_core::{Adam, AdamConfig};

mod common;
use common::{close as assert_close, rand};

/// A small network using each layer kind, one weight twice (two passes summed).
struct Net {
    fc: layers::Linear,
    conv: layers::Conv2d,
    up: layers::ConvTranspose2d,
}

impl Net {
    fn new(vars: &VarMap) -> Result<Self> {
        let vb = VarBuilder::from_varmap(vars, DType::F32, &Device::Cpu);
        let s2 = ConvSpec {
            stride: 2,
            padding: 1,
            output_padding: 0,
        };
        let net = Self {
            fc: layers::linear(12, 2 * 3 * 3, vb.pp("fc"))?,
            up: layers::conv_transpose2d(2, 3, 4, s2, vb.pp("up"))?,
            conv: layers::conv2d(3, 2, 3, s2, vb.pp("conv"))?,
        };
        // Deterministic weights, the same for every VarMap built here.
        let data = vars.data().lock().unwrap();
        let mut names: Vec<_> = data.keys().cloned().collect();
        names.sort();
        for (i, n) in names.iter().enumerate() {
            let v = &data[n];
            v.set(&rand(v.dims(), 100 + i as u64))?;
        }
        Ok(net)
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let x = self.fc.forward(z)?.reshape((z.dim(0)?, 2, 3, 3))?;
        let x = self.up.forward(&x)?.tanh()?;
        self.conv.forward(&x)
    }

    /// The loss of two batches, so every weight's gradient has two contributions.
    fn loss(&self, seed: u64) -> Result<Tensor> {
        let a = self.forward(&rand(&[5, 12], seed))?;
        let b = self.forward(&rand(&[3, 12], seed + 1))?;
        (a.sqr()?.mean_all()? + (b * 0.5)?.sum_all()?)? + 0.0
    }

    fn weights(&self) -> [&Tensor; 3] {
        [self.fc.weight(), self.up.weight(), self.conv.weight()]
    }
}

#[test]
fn collected_weight_gradients_equal_candles() {
    let vars = VarMap::new();
    let net = Net::new(&vars).unwrap();
    let reference = net.loss(1).unwrap().backward().unwrap();
    let collector = Collector::new();
    let grads = collector.backward(&net.loss(1).unwrap()).unwrap();
    for (name, w) in ["fc", "up", "conv"].iter().zip(net.weights()) {
        assert!(
            grads.get(w).is_none(),
            "{name}: weight gradient left in candle's store"
        );
        let collected = collector.gradient(w).unwrap().expect("collected");
        assert_close(name, &collected, reference.get(w).unwrap());
    }
    // Everything else still comes from candle's store, unchanged.
    let data = vars.data().lock().unwrap();
    for (name, v) in data.iter().filter(|(n, _)| n.ends_with("bias")) {
        assert!(collector.gradient(v.as_tensor()).unwrap().is_none());
        assert_close(
            name,
            grads.get(v.as_tensor()).unwrap(),
            reference.get(v.as_tensor()).unwrap(),
        );
    }
}

#[test]
fn each_backward_pass_starts_afresh() {
    let vars = VarMap::new();
    let net = Net::new(&vars).unwrap();
    let collector = Collector::new();
    collector.backward(&net.loss(1).unwrap()).unwrap();
    let first = collector.gradient(net.fc.weight()).unwrap().unwrap();
    // A different loss, then the first again: the gradient is the first's, not a sum.
    collector.backward(&net.loss(5).unwrap()).unwrap();
    let other = collector.gradient(net.fc.weight()).unwrap().unwrap();
    assert!(
        (&other - &first)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 1e-3,
        "another loss gave the same gradient"
    );
    collector.backward(&net.loss(1).unwrap()).unwrap();
    let again = collector.gradient(net.fc.weight()).unwrap().unwrap();
    assert_close("fc again", &again, &first);
    // Frozen weights get no gradient at all; a pass without them leaves none behind.
    let frozen_loss = frozen(|| net.loss(1)).unwrap();
    collector.backward(&frozen_loss).unwrap();
    for w in net.weights() {
        assert!(collector.gradient(w).unwrap().is_none());
    }
    // Outside a collector's backward pass, gradients go to candle's store as usual.
    let plain = net.loss(1).unwrap().backward().unwrap();
    assert_close("plain", plain.get(net.fc.weight()).unwrap(), &first);
}

/// A backward pass for one layer's variables (a phase of the engine stepping one
/// network whose graph runs through others) gives those the whole pass's gradients bit
/// for bit and computes none for the others: upstream of the wanted layer (through it
/// to the layer before), downstream (the branch below it handed zeros) and in between.
#[test]
fn backward_for_some_variables_gives_theirs_and_no_others() {
    let vars = VarMap::new();
    let net = Net::new(&vars).unwrap();
    let collector = Collector::new();
    collector.backward(&net.loss(2).unwrap()).unwrap();
    let whole: Vec<Vec<u32>> = net
        .weights()
        .iter()
        .map(|w| bits(&collector.gradient(w).unwrap().unwrap()).unwrap())
        .collect();
    let data = vars.data().lock().unwrap();
    for (i, layer) in ["fc", "up", "conv"].iter().enumerate() {
        let (weight, bias) = (
            data[&format!("{layer}.weight")].clone(),
            data[&format!("{layer}.bias")].clone(),
        );
        let plain = net.loss(2).unwrap().backward().unwrap();
        let whole_bias = bits(plain.get(bias.as_tensor()).unwrap()).unwrap();
        let grads = collector
            .backward_for(&net.loss(2).unwrap(), [weight.id(), bias.id()])
            .unwrap();
        let own = collector.gradient(weight.as_tensor()).unwrap();
        assert_eq!(
            bits(&own.expect("collected")).unwrap(),
            whole[i],
            "{layer} weight"
        );
        assert_eq!(
            bits(grads.get(bias.as_tensor()).unwrap()).unwrap(),
            whole_bias,
            "{layer} bias"
        );
        for (other, w) in ["fc", "up", "conv"].iter().zip(net.weights()) {
            if other != layer {
                assert!(
                    collector.gradient(w).unwrap().is_none() && grads.get(w).is_none(),
                    "backward for {layer}: {other}'s weight took a gradient"
                );
                let b = data[&format!("{other}.bias")].as_tensor();
                assert!(
                    grads.get(b).is_none(),
                    "backward for {layer}: {other}'s bias took a gradient"
                );
            }
        }
    }
    // Wanting every variable is the plain pass.
    let all: Vec<_> = data.values().map(|v| v.id()).collect();
    collector.backward_for(&net.loss(2).unwrap(), all).unwrap();
    for (w, whole) in net.weights().iter().zip(&whole) {
        assert_eq!(
            &bits(&collector.gradient(w).unwrap().unwrap()).unwrap(),
            whole
        );
    }
}

#[test]
fn adam_on_collected_gradients_matches_adam_on_candles() {
    let config = AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    };
    let (va, vb) = (VarMap::new(), VarMap::new());
    let (a, b) = (Net::new(&va).unwrap(), Net::new(&vb).unwrap());
    let (mut oa, mut ob) = (
        Adam::new(&va, config).unwrap(),
        Adam::new(&vb, config).unwrap(),
    );
    let collector = Collector::new();
    for step in 0..3 {
        oa.step(&a.loss(step).unwrap().backward().unwrap()).unwrap();
        let grads = collector.backward(&b.loss(step).unwrap()).unwrap();
        ob.step_collected(&grads, &collector).unwrap();
    }
    let (da, db) = (va.data().lock().unwrap(), vb.data().lock().unwrap());
    for (name, v) in da.iter() {
        assert_close(name, db[name].as_tensor(), v.as_tensor());
    }
    // And the steps did something: the weights left their initial values.
    let fresh = Net::new(&VarMap::new()).unwrap();
    for (w, w0) in b.weights().iter().zip(fresh.weights()) {
        let moved = (*w - w0).unwrap().abs().unwrap().max_all().unwrap();
        assert!(moved.to_scalar::<f32>().unwrap() > 1e-3);
    }
}

/// Evaluation-mode batch norm inside `frozen` (one fused pass, the generators' path in
/// `eval` and `sample`) gives the unfrozen path's output bit for bit, with and without
/// the activation, and the same gradient for its input.
#[test]
fn frozen_evaluation_batch_norm_is_the_plain_one() -> Result<()> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let bn = layers::batch_norm(5, vb)?;
    {
        let data = vars.data().lock().unwrap();
        for (i, name) in ["weight", "bias", "running_mean"].iter().enumerate() {
            data[*name].set(&rand(&[5], 7 + i as u64))?;
        }
        data["running_var"].set(&(rand(&[5], 11).abs()? + 0.1)?)?;
    }
    for shape in [&[4, 5, 3, 2][..], &[6, 5][..]] {
        for slope in [None, Some(0.2), Some(0.0)] {
            let x = candle_core::Var::from_tensor(&rand(shape, 3))?;
            let run = |frozen_weights: bool| -> Result<(Vec<u32>, Tensor)> {
                let f = || match slope {
                    Some(a) => bn.forward_act(x.as_tensor(), false, a),
                    None => candle_core::ModuleT::forward_t(&bn, x.as_tensor(), false),
                };
                let y = if frozen_weights { frozen(f)? } else { f()? };
                // A weighted sum, so that the gradient differs from element to element.
                let w = rand(shape, 5);
                let grads = (&y * &w)?.sum_all()?.backward()?;
                let bits = y.flatten_all()?.to_vec1::<f32>()?;
                Ok((
                    bits.iter().map(|v| v.to_bits()).collect(),
                    grads.get(x.as_tensor()).unwrap().clone(),
                ))
            };
            let (plain, plain_grad) = run(false)?;
            let (fused, fused_grad) = run(true)?;
            assert_eq!(plain, fused, "output {shape:?} slope {slope:?}");
            assert_close(&format!("dx {shape:?} {slope:?}"), &fused_grad, &plain_grad);
        }
    }
    Ok(())
}

/// A linear layer inside `inference` (its weight packed or transposed once for the
/// section, the generators' path in `eval` and `sample`) gives the plain layer's output
/// (to rounding: packed products sum in another order) and the same input gradient; the
/// prepared weight lives for one section only. 300 inputs: more than one block of the
/// packed kernels' sum.
#[test]
fn inference_linear_is_the_plain_one_and_sees_new_weights_in_a_new_section() -> Result<()> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let fc = layers::linear(300, 130, vb)?;
    let x = candle_core::Var::from_tensor(&rand(&[9, 300], 3))?;
    let run = |f: &dyn Fn() -> Result<Tensor>| -> Result<(Tensor, Tensor)> {
        let y = f()?;
        let grads = (&y * &rand(&[9, 130], 5))?.sum_all()?.backward()?;
        Ok((y, grads.get(x.as_tensor()).unwrap().clone()))
    };
    let (plain, plain_grad) = run(&|| fc.forward(x.as_tensor()))?;
    let (prepared, prepared_grad) = run(&|| layers::inference(|| fc.forward(x.as_tensor())))?;
    assert_close("output", &prepared, &plain);
    assert_close("dx", &prepared_grad, &plain_grad);
    // Within one section the layer reads its copy; the next section copies again.
    let weight = vars.data().lock().unwrap()["weight"].clone();
    let (before, changed_inside) = layers::inference(|| -> Result<_> {
        let before = fc.forward(x.as_tensor())?;
        weight.set(&(weight.as_tensor() * 2.0)?)?;
        Ok((before, fc.forward(x.as_tensor())?))
    })?;
    assert_close("inside the section", &changed_inside, &before);
    let after = layers::inference(|| fc.forward(x.as_tensor()))?;
    assert_close("a new section", &after, &fc.forward(x.as_tensor())?);
    let moved = (&after - &before)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(moved > 1e-3, "the new section did not see the new weights");
    Ok(())
}

/// A hidden layer's fused leaky ReLU (`forward_leaky`) inside `inference`, where the
/// packed product applies it as it writes, gives the layer then the activation bit for
/// bit, and their gradient for the input; outside a section it is those two ops.
#[test]
fn fused_leaky_layer_is_the_layer_then_the_activation() -> Result<()> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let fc = layers::linear(300, 130, vb)?;
    let x = candle_core::Var::from_tensor(&rand(&[9, 300], 3))?;
    let g = rand(&[9, 130], 5);
    for slope in [0.2, 0.0] {
        let two_ops = || gan_core::fast::nn::leaky_relu(&fc.forward(x.as_tensor())?, slope);
        let fused = || fc.forward_leaky(x.as_tensor(), slope);
        let with_grad = |y: Tensor| -> Result<(Tensor, Tensor)> {
            let grads = (&y * &g)?.sum_all()?.backward()?;
            Ok((y, grads.get(x.as_tensor()).unwrap().clone()))
        };
        let (want, want_dx) = with_grad(layers::inference(two_ops)?)?;
        let (got, got_dx) = with_grad(layers::inference(fused)?)?;
        assert!(bits(&got)? == bits(&want)?, "slope {slope}: fused output");
        assert_close("fused dx", &got_dx, &want_dx);
        let negative = want
            .lt(0.0)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert!(
            slope == 0.0 || negative > 100.0,
            "too few negative outputs to test"
        );
        assert!(bits(&fused()?)? == bits(&two_ops()?)?, "outside a section");
    }
    Ok(())
}

/// The generators' output tanh is candle's own (training's bits) outside an inference
/// section, including inside a plain `frozen` one, and the vectorised approximation inside.
#[test]
fn output_tanh_is_exact_outside_inference_and_approximated_inside() -> Result<()> {
    let x = rand(&[40, 50], 8);
    let exact = bits(&x.tanh()?)?;
    let approx = bits(&gan_core::fast::ops::tanh(&x)?)?;
    assert!(
        exact != approx,
        "the approximation should differ somewhere here"
    );
    let nn_tanh = || gan_core::fast::nn::tanh(&x);
    assert!(bits(&nn_tanh()?)? == exact, "outside: not candle's tanh");
    assert!(
        bits(&frozen(nn_tanh)?)? == exact,
        "frozen: not candle's tanh"
    );
    let inside = bits(&layers::inference(nn_tanh)?)?;
    assert!(inside == approx, "inference: not the approximation");
    Ok(())
}

/// A tensor's elements as bit patterns, to compare results exactly.
fn bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}
