//! The fast CPU layers: convolutions as im2col + matrix products, fused batch norm and
//! activations, weight gradients written in place, and the kernels under them. On other
//! devices the same layers fall back to candle's ops.

pub mod alloc;
pub mod grads;
mod kernels;
pub mod layers;
pub mod nn;
pub mod ops;
