//! Weight gradients written in place, for the optimizer to read.
//!
//! candle's backward pass adds every gradient into a fresh zero tensor: for a 6272x1024
//! weight that is a 25 MB allocation, a 25 MB memset and a pass reading 50 MB and
//! writing 25 MB, on top of the matrix product that made the gradient, every step.
//! Inside [`Collector::backward`], the linear and convolution layers of
//! [`crate::fast::layers`] instead let their weight-gradient product write into a buffer kept
//! from step to step (the first contribution of a backward pass overwrites it, later
//! ones accumulate), and [`crate::optim::Adam::step_collected`] reads it from there.
//! Everything else (biases, batch norm, other ops) still flows through candle's
//! [`GradStore`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use gan_core::fast::grads::Collector;
//! use gan_core::fast::layers;
//! use gan_core::{Adam, AdamConfig};
//! use candle_core::Module;
//!
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! let fc = layers::linear(3, 2, vb.pp("fc"))?;
//! let mut opt = Adam::new(&vars, AdamConfig::default())?;
//! let collector = Collector::new();
//! let x = Tensor::ones((4, 3), DType::F32, &Device::Cpu)?;
//! let loss = fc.forward(&x)?.sqr()?.mean_all()?;
//! let grads = collector.backward(&loss)?;
//! // The weight's gradient is in the collector, the bias's in candle's store.
//! assert!(grads.get(fc.weight()).is_none());
//! assert!(collector.gradient(fc.weight())?.is_some());
//! opt.step_collected(&grads, &collector)?;
//! # anyhow::Ok(())
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, TensorId};

#[derive(Default)]
struct Buffer {
    data: Vec<f32>,
    /// Written during the current backward pass.
    written: bool,
}

type Buffers = Arc<Mutex<HashMap<TensorId, Buffer>>>;

thread_local! {
    /// The collector of the backward pass running on this thread, if any.
    static ACTIVE: RefCell<Option<Buffers>> = const { RefCell::new(None) };
}

/// Gradient buffers of weight variables, one per variable, reused across steps.
#[derive(Default)]
pub struct Collector {
    buffers: Buffers,
}

impl Collector {
    /// An empty collector; buffers appear as gradients are first written.
    pub fn new() -> Self {
        Self::default()
    }

    /// `loss.backward()`, with the weight gradients of gan-core's linear and convolution
    /// layers kept here instead of in the returned store. Gradients collected by an
    /// earlier call are forgotten.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        for b in self.buffers.lock().unwrap().values_mut() {
            b.written = false;
        }
        with_active(Some(self.buffers.clone()), || loss.backward())
    }

    /// Runs `f` on the gradient of `var` collected by the last [`Collector::backward`],
    /// or returns `None` when none was.
    pub(crate) fn with_gradient<R>(&self, var: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        let buffers = self.buffers.lock().unwrap();
        let b = buffers.get(&var.id()).filter(|b| b.written)?;
        Some(f(&b.data))
    }

    /// A copy of the gradient of `var` collected by the last [`Collector::backward`],
    /// shaped like `var`.
    pub fn gradient(&self, var: &Tensor) -> Result<Option<Tensor>> {
        self.with_gradient(var, |g| Tensor::from_slice(g, var.shape(), &Device::Cpu))
            .transpose()
    }
}

/// Runs `f` with `active` as this thread's collector, restoring the caller's afterwards.
fn with_active<R>(active: Option<Buffers>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Buffers>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| *a.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(ACTIVE.with(|a| std::mem::replace(&mut *a.borrow_mut(), active)));
    f()
}

/// Runs `f` with no collector active on this thread, restoring the caller's afterwards.
pub(crate) fn without_collector<R>(f: impl FnOnce() -> R) -> R {
    with_active(None, f)
}

/// Lets `write` produce the gradient of the weight variable `w` straight into its
/// buffer, when a collector is active on this thread: `write(dst, accumulate)` must
/// overwrite `dst` when `accumulate` is false and add to it otherwise. Returns false
/// (and does nothing) when no collector is active or `w` is not a variable.
pub(crate) fn collect(w: &Tensor, write: impl FnOnce(&mut [f32], bool)) -> bool {
    if !w.is_variable() {
        return false;
    }
    let Some(buffers) = ACTIVE.with(|a| a.borrow().clone()) else {
        return false;
    };
    let mut buffers = buffers.lock().unwrap();
    let b = buffers.entry(w.id()).or_default();
    let n = w.elem_count();
    if b.data.len() != n {
        b.data = vec![0.0; n];
        b.written = false;
    }
    write(&mut b.data, b.written);
    b.written = true;
    true
}
