//! gan-core: what every GAN of gan-rs shares.
//!
//! - [`loss`]: the minimax value function, saturating and non-saturating generator losses,
//!   stable BCE on logits, cross-entropy, Gaussian NLL, KL to N(0, I);
//! - [`prior`]: seeded noise and latent codes;
//! - [`optim`]: Adam with the GAN papers' settings and a state that checkpoints carry;
//! - [`engine`]: the training loop a model plugs into, with logging, sample grids,
//!   atomic checkpoints and exact resume;
//! - [`checkpoint`], [`grid`], [`init`], [`device`]: the pieces it is built from.
//!
//! A model implements [`engine::GanModel`]; training it is then
//! `Trainer::new(&model, config, run_dir)?.fit(&images, &labels)?`.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod device;
pub mod engine;
pub mod grid;
pub mod init;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod prior;

pub use engine::{Batch, Figure, GanModel, RunConfig, StepOutput, TrainConfig, Trainer};
pub use optim::{Adam, AdamConfig};
pub use prior::{Latent, LatentSpec, Rng};
