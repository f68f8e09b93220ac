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
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::LocalKey;

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
    /// The variables the backward pass running on this thread wants gradients of, where
    /// its graph also reaches others ([`Collector::backward_for`]).
    static WANTED: RefCell<Option<Wanted>> = const { RefCell::new(None) };
}

/// The wanted variables, and what is known of which tensors lead to one of them.
struct Wanted {
    vars: HashSet<TensorId>,
    reaches: HashMap<TensorId, bool>,
}

/// Whether the backward pass running on this thread needs the gradient of `t`, an input
/// of an op whose backward is being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing upstream of `t` takes a gradient, or `t` is a variable the pass does not want.
    No,
    /// Only variables the pass does not want lie upstream: candle still expects a
    /// gradient for `t` (a zero one changes nothing the pass is asked for).
    Zeros,
    /// Compute it.
    Yes,
}

/// What the backward pass running on this thread needs of `t`'s gradient.
pub(crate) fn need(t: &Tensor) -> Need {
    if !t.track_op() {
        return Need::No;
    }
    WANTED.with(|w| {
        let mut w = w.borrow_mut();
        let Some(w) = w.as_mut() else {
            return Need::Yes;
        };
        if t.is_variable() {
            return if w.vars.contains(&t.id()) {
                Need::Yes
            } else {
                Need::No
            };
        }
        if let Some(&r) = w.reaches.get(&t.id()) {
            return if r { Need::Yes } else { Need::Zeros };
        }
        // A walk of `t`'s graph; where it meets no wanted variable, neither does any
        // tensor on the way, which later ops of the pass then find here.
        let nodes = t.sorted_nodes();
        if nodes
            .iter()
            .any(|n| n.is_variable() && w.vars.contains(&n.id()))
        {
            w.reaches.insert(t.id(), true);
            Need::Yes
        } else {
            w.reaches.extend(nodes.iter().map(|n| (n.id(), false)));
            Need::Zeros
        }
    })
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
        self.run(loss, None)
    }

    /// [`Collector::backward`] for the gradients of the variables in `wanted` alone, as
    /// PyTorch's `backward(inputs=...)`: where the graph also reaches other variables
    /// (another network's, not frozen), gan-core's layers compute no weight gradient for
    /// them, and a branch of the graph that leads to none of `wanted` is handed zeros
    /// instead of its gradient (its products skipped). The gradients of `wanted` are
    /// those of [`Collector::backward`], bit for bit; the returned store may hold
    /// gradients of other variables (ops outside gan-core's layers), zero or partial:
    /// read only those of `wanted`.
    pub fn backward_for(
        &self,
        loss: &Tensor,
        wanted: impl IntoIterator<Item = TensorId>,
    ) -> Result<GradStore> {
        let vars: HashSet<TensorId> = wanted.into_iter().collect();
        // One walk of the graph, to leave passes that reach only wanted variables as
        // they were.
        let others = loss
            .sorted_nodes()
            .iter()
            .any(|n| n.is_variable() && !vars.contains(&n.id()));
        let wanted = others.then(|| Wanted {
            vars,
            reaches: HashMap::new(),
        });
        self.run(loss, wanted)
    }

    fn run(&self, loss: &Tensor, wanted: Option<Wanted>) -> Result<GradStore> {
        for b in self.buffers.lock().unwrap().values_mut() {
            b.written = false;
        }
        with_wanted(wanted, || {
            with_active(Some(self.buffers.clone()), || loss.backward())
        })
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

/// Runs `f` with `value` in the thread-local `slot`, restoring the caller's afterwards
/// (also when `f` panics).
fn with_slot<T: 'static, R>(
    slot: &'static LocalKey<RefCell<Option<T>>>,
    value: Option<T>,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static>(&'static LocalKey<RefCell<Option<T>>>, Option<T>);
    impl<T> Drop for Restore<T> {
        fn drop(&mut self) {
            let old = self.1.take();
            self.0.with(|s| *s.borrow_mut() = old);
        }
    }
    let old = slot.with(|s| std::mem::replace(&mut *s.borrow_mut(), value));
    let _restore = Restore(slot, old);
    f()
}

/// Runs `f` with `active` as this thread's collector, restoring the caller's afterwards.
fn with_active<R>(active: Option<Buffers>, f: impl FnOnce() -> R) -> R {
    with_slot(&ACTIVE, active, f)
}

/// Runs `f` with `wanted` as this thread's wanted variables, restoring the caller's
/// afterwards.
fn with_wanted<R>(wanted: Option<Wanted>, f: impl FnOnce() -> R) -> R {
    with_slot(&WANTED, wanted, f)
}

/// Runs `f` with no collector active on this thread (and no variables singled out as
/// wanted), restoring the caller's afterwards.
pub(crate) fn without_collector<R>(f: impl FnOnce() -> R) -> R {
    with_wanted(None, || with_active(None, f))
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
