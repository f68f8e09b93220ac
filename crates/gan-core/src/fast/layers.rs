//! Layers over the fast ops of [`crate::fast::ops`], drop-in for candle-nn's: the same
//! constructors, the same variable names and shapes (`weight`, `bias`, `running_mean`,
//! `running_var`), so checkpoints are interchangeable, and `Module`/`ModuleT` as usual.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use candle_core::{Module, ModuleT, Result, Tensor, TensorId, Var};
use candle_nn::{Init, VarBuilder};

pub use crate::fast::ops::ConvSpec;
use crate::fast::ops::{self, Act};

thread_local! {
    static FROZEN: Cell<bool> = const { Cell::new(false) };
    /// Inside [`inference`]: weights in the layout their layer reads fastest, by the id
    /// of the layer's own weight tensor (ids are never reused).
    static PREPARED: RefCell<Option<HashMap<TensorId, Tensor>>> = const { RefCell::new(None) };
}

/// Runs `f` with the weights of every layer it calls treated as constants: gradients
/// still flow through the layers to their inputs, but none is computed for the weights.
///
/// A generator step passes its fakes through the discriminator only to reach the
/// generator; the discriminator's weight gradients would be thrown away, and they cost
/// about a third of its backward pass. Batch norm still updates its running statistics.
pub fn frozen<R>(f: impl FnOnce() -> R) -> R {
    with_frozen(true, f)
}

/// Runs `f` with the frozen flag set to `value`, restoring the caller's afterwards.
pub(crate) fn with_frozen<R>(value: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FROZEN.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FROZEN.with(|c| c.replace(value)));
    f()
}

/// Runs `f` as [`frozen`], promising that no weight changes until it returns, so that a
/// layer may prepare its weights once for the whole section: a linear layer keeps a
/// row-major copy of `W^T`, which the matrix product reads as it is instead of repacking
/// the strided weight for every batch (the MLP generator's products at batch 64 ran
/// 1.5-1.8x faster on one thread so; docs/BENCHMARKS.md), and [`crate::fast::nn::tanh`]
/// is the vectorised approximation. For generating or scoring many batches with trained
/// weights (`gan-cli eval`, `sample`); the copies are dropped on return. An optimizer
/// step inside the section would not be seen by the layers that prepared.
pub fn inference<R>(f: impl FnOnce() -> R) -> R {
    if PREPARED.with(|p| p.borrow().is_some()) {
        return frozen(f);
    }
    let _restore = with_prepared(Some(HashMap::new()));
    frozen(f)
}

/// Sets the prepared-weights store to `value` until the guard drops, then restores the
/// caller's.
pub(crate) fn with_prepared(value: Option<HashMap<TensorId, Tensor>>) -> impl Drop {
    struct Restore(Option<HashMap<TensorId, Tensor>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            PREPARED.with(|p| *p.borrow_mut() = outer);
        }
    }
    Restore(PREPARED.with(|p| p.replace(value)))
}

/// Whether layers on this thread are frozen ([`frozen`]).
pub(crate) fn is_frozen() -> bool {
    FROZEN.with(|c| c.get())
}

/// A copy of this thread's prepared-weights store (the tensors shared, not copied), to
/// carry an [`inference`] section onto another thread.
pub(crate) fn prepared_store() -> Option<HashMap<TensorId, Tensor>> {
    PREPARED.with(|p| p.borrow().clone())
}

/// Whether this call is inside an [`inference`] section (and not unfrozen within it).
pub(crate) fn in_inference() -> bool {
    FROZEN.with(|c| c.get()) && PREPARED.with(|p| p.borrow().is_some())
}

/// Inside a frozen [`inference`] section, `make(w)` made once for the section; else `None`.
fn prepared(w: &Tensor, make: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Option<Tensor>> {
    if !in_inference() {
        return Ok(None);
    }
    PREPARED.with(|p| {
        let mut p = p.borrow_mut();
        let Some(store) = p.as_mut() else {
            return Ok(None);
        };
        if let Some(t) = store.get(&w.id()) {
            return Ok(Some(t.clone()));
        }
        let t = make(&w.detach())?;
        store.insert(w.id(), t.clone());
        Ok(Some(t))
    })
}

/// A weight as this call should see it: itself, or a constant view of it when frozen.
fn param(t: &Tensor) -> Cow<'_, Tensor> {
    if FROZEN.with(|c| c.get()) {
        Cow::Owned(t.detach())
    } else {
        Cow::Borrowed(t)
    }
}

/// Gradient reversal (Ganin and Lempitsky 2015): the identity going forward, the
/// gradient multiplied by `-lambda` going back. Domain-adversarial training puts it
/// between the feature extractor and the domain classifier, so that one backward pass
/// trains the classifier to tell the domains apart and the features to hide them.
///
/// Built as `x' + (x - x') * -lambda` with `x'` a constant copy of `x`: the second term
/// is exactly zero going forward, so the output equals `x` bit for bit on every device.
pub fn grad_reverse(x: &Tensor, lambda: f64) -> Result<Tensor> {
    let fixed = x.detach();
    (x - &fixed)?.affine(-lambda, 0.0)? + fixed
}

/// A fully connected layer, `x W^T + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// A linear layer from `input` to `output` features, PyTorch's initialisation.
pub fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let bound = 1.0 / (input as f64).sqrt();
    let uniform = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok(Linear {
        weight: vb.get_with_hints((output, input), "weight", uniform)?,
        bias: vb.get_with_hints(output, "bias", uniform)?,
    })
}

impl Linear {
    /// `leaky_relu(self.forward(x), slope)`: the same values as one op, the activation
    /// written over the product's output (one tensor fewer, and one gradient fewer for
    /// the backward pass to add up); inside an [`inference`] section applied as the
    /// packed product writes its output.
    pub fn forward_leaky(&self, x: &Tensor, slope: f64) -> Result<Tensor> {
        self.forward_with(x, Some(Act::Leaky(slope)))
    }

    /// `swish(self.forward(x))` as one op in training (as [`Self::forward_leaky`]).
    pub fn forward_swish(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Some(Act::Swish))
    }

    /// The layer, then `act` if one is given; inside an inference section one op on the
    /// prepared weight (a swish after it).
    fn forward_with(&self, x: &Tensor, act: Option<Act>) -> Result<Tensor> {
        if let Some(p) = prepared(&self.weight, ops::prepare_linear)? {
            let b = self.bias.detach();
            let leaky = match act {
                Some(Act::Leaky(a)) => Some(a),
                _ => None,
            };
            let y = ops::linear_prepared(x, &self.weight, &p, &b, leaky)?;
            return match act {
                Some(Act::Swish) => ops::swish(&y),
                _ => Ok(y),
            };
        }
        let (w, b) = (param(&self.weight), param(&self.bias));
        match act {
            Some(act) => ops::linear_act(x, &w, &b, act),
            None => ops::linear(x, &w, &b),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None)
    }
}

/// A 2-D convolution with a square kernel.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    spec: ConvSpec,
}

/// A convolution from `input` to `output` channels with a `kernel x kernel` window.
pub fn conv2d(
    input: usize,
    output: usize,
    kernel: usize,
    spec: ConvSpec,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let bound = 1.0 / ((input * kernel * kernel) as f64).sqrt();
    let uniform = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok(Conv2d {
        weight: vb.get_with_hints((output, input, kernel, kernel), "weight", uniform)?,
        bias: vb.get_with_hints(output, "bias", uniform)?,
        spec,
    })
}

impl Conv2d {
    /// The kernel.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `leaky_relu(self.forward(x), slope)`, the same bits as one op (as
    /// [`Linear::forward_leaky`]).
    pub fn forward_leaky(&self, x: &Tensor, slope: f64) -> Result<Tensor> {
        self.forward_act(x, Act::Leaky(slope))
    }

    /// `swish(self.forward(x))`, the same bits as one op.
    pub fn forward_swish(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Act::Swish)
    }

    fn forward_act(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        let (w, b) = (param(&self.weight), param(&self.bias));
        ops::conv2d_act(x, &w, &b, self.spec, act)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &param(&self.weight), &param(&self.bias), self.spec)
    }
}

/// A transposed 2-D convolution (the upsampling layer of DCGAN-style generators).
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    spec: ConvSpec,
}

/// A transposed convolution from `input` to `output` channels; its kernel is stored
/// `[input, output, kernel, kernel]` as in PyTorch.
pub fn conv_transpose2d(
    input: usize,
    output: usize,
    kernel: usize,
    spec: ConvSpec,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    let bound = 1.0 / ((output * kernel * kernel) as f64).sqrt();
    let uniform = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok(ConvTranspose2d {
        weight: vb.get_with_hints((input, output, kernel, kernel), "weight", uniform)?,
        bias: vb.get_with_hints(output, "bias", uniform)?,
        spec,
    })
}

impl ConvTranspose2d {
    /// The kernel.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv_transpose2d(x, &param(&self.weight), &param(&self.bias), self.spec)
    }
}

/// Batch normalisation over dimension 1 of `[N, C, ...]`, with learned scale and shift
/// and running statistics for evaluation.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

/// A batch norm over `channels` with PyTorch's defaults: eps 1e-5, momentum 0.1.
pub fn batch_norm(channels: usize, vb: VarBuilder) -> Result<BatchNorm> {
    let stat = |name: &str, init: f64| -> Result<Var> {
        let t = vb.get_with_hints(channels, name, Init::Const(init))?;
        // The VarMap hands out the variable's own tensor: wrapping it again as a Var
        // shares the storage, so `set` updates what checkpoints save.
        Var::from_tensor(&t)
    };
    Ok(BatchNorm {
        weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
        bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
        running_mean: stat("running_mean", 0.0)?,
        running_var: stat("running_var", 1.0)?,
        eps: 1e-5,
        momentum: 0.1,
    })
}

impl BatchNorm {
    /// Batch norm then a leaky ReLU of `slope` (0: ReLU), fused into one op when training.
    pub fn forward_act(&self, x: &Tensor, train: bool, slope: f64) -> Result<Tensor> {
        if !train {
            if let Some(y) = self.frozen_eval(x, Some(slope))? {
                return Ok(y);
            }
            return ops::leaky_relu(&self.forward_t(x, false)?, slope);
        }
        self.train_forward(x, Some(slope))
    }

    /// Evaluation mode inside [`frozen`]: scale and shift are constants, so the
    /// normalisation and the activation are one pass over `x` (generation's path).
    /// `None` outside a frozen section, where the weights may want gradients.
    fn frozen_eval(&self, x: &Tensor, slope: Option<f64>) -> Result<Option<Tensor>> {
        if !FROZEN.with(|c| c.get()) {
            return Ok(None);
        }
        let (scale, shift) = self.eval_coefficients()?;
        ops::channel_affine(x, &scale.detach(), &shift.detach(), slope).map(Some)
    }

    /// `weight / sqrt(running_var + eps)` and `bias - running_mean * scale`.
    fn eval_coefficients(&self) -> Result<(Tensor, Tensor)> {
        let (w, b) = (param(&self.weight), param(&self.bias));
        let scale = (w.as_ref() / (self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
        let shift = (b.as_ref() - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    fn train_forward(&self, x: &Tensor, act: Option<f64>) -> Result<Tensor> {
        let (w, b) = (param(&self.weight), param(&self.bias));
        let (y, stats) = match act {
            None => ops::batch_norm_train(x, &w, &b, self.eps)?,
            Some(a) => ops::batch_norm_act_train(x, &w, &b, self.eps, a)?,
        };
        let m = self.momentum;
        let unbiased = stats.count as f64 / (stats.count.max(2) - 1) as f64;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (stats.mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (stats.var * (m * unbiased))?)?;
        self.running_mean.set(&rm.detach())?;
        self.running_var.set(&rv.detach())?;
        Ok(y)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let mut shape = vec![1; x.rank()];
        shape[1] = c;
        if !train {
            if let Some(y) = self.frozen_eval(x, None)? {
                return Ok(y);
            }
            let (scale, shift) = self.eval_coefficients()?;
            return x
                .broadcast_mul(&scale.reshape(shape.as_slice())?)?
                .broadcast_add(&shift.reshape(shape.as_slice())?);
        }
        self.train_forward(x, None)
    }
}
