//! The fast CPU layers: convolutions as im2col + matrix products, fused batch norm and
//! activations, weight gradients written in place, and the kernels under them. On other
//! devices the same layers fall back to candle's ops.

pub mod alloc;
pub mod grads;
mod kernels;
pub mod layers;
pub mod nn;
pub mod ops;

/// Runs `f` as if on a fresh thread: no layer frozen ([`layers::frozen`]) or preparing its
/// weights ([`layers::inference`]) and no gradient collector active
/// ([`grads::Collector::backward`]), the caller's state restored after.
///
/// All three are thread-local, and rayon runs other work on a thread while it waits: a
/// worker waiting inside one trainer's frozen forward pass can pick up another trainer's
/// whole step (several trainers in one process, as in a sweep or a test binary), which would
/// then see the first one's weights frozen. Code that runs a unit of training as a rayon
/// job wraps it in this.
pub fn isolated<R>(f: impl FnOnce() -> R) -> R {
    let _restore = layers::with_prepared(None);
    layers::with_frozen(false, || grads::without_collector(f))
}
