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
//! `Trainer::new(&model, config, run_dir)?.fit(&images, &labels)?`. A whole model, as
//! another crate would write it (here a linear G and D on 2-pixel "images"):
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{linear, Linear, VarBuilder, VarMap};
//! use gan_core::loss::{discriminator_loss, generator_loss, GeneratorLoss};
//! use gan_core::prior::{Latent, LatentSpec, Rng};
//! use gan_core::{Batch, Figure, GanModel, StepOutput, TrainConfig, Trainer};
//!
//! struct Tiny { g_vars: VarMap, d_vars: VarMap, g: Linear, d: Linear, z: LatentSpec }
//!
//! impl Tiny {
//!     fn fake(&self, n: usize, rng: &mut Rng) -> anyhow::Result<Tensor> {
//!         let z = self.z.sample(n, rng, &Device::Cpu)?.z;
//!         Ok(self.g.forward(&z)?.reshape((n, 1, 1, 2))?)
//!     }
//!     fn critic(&self, x: &Tensor) -> anyhow::Result<Tensor> {
//!         Ok(self.d.forward(&x.flatten_from(1)?)?.squeeze(1)?)
//!     }
//! }
//!
//! impl GanModel for Tiny {
//!     fn kind(&self) -> &'static str { "tiny" }
//!     fn config(&self) -> serde_json::Value { serde_json::json!({}) }
//!     fn networks(&self) -> Vec<(&'static str, &VarMap)> {
//!         vec![("g", &self.g_vars), ("d", &self.d_vars)]
//!     }
//!     fn d_step(&self, batch: &Batch, rng: &mut Rng) -> anyhow::Result<StepOutput> {
//!         let fake = self.fake(batch.images.dim(0)?, rng)?.detach();
//!         let loss = discriminator_loss(&self.critic(&batch.images)?, &self.critic(&fake)?)?;
//!         Ok(StepOutput::new(loss))
//!     }
//!     fn g_step(&self, batch: &Batch, rng: &mut Rng) -> anyhow::Result<StepOutput> {
//!         let fake = self.critic(&self.fake(batch.images.dim(0)?, rng)?)?;
//!         Ok(StepOutput::new(generator_loss(&fake, GeneratorLoss::NonSaturating)?))
//!     }
//!     fn figures(&self, rng: &mut Rng) -> anyhow::Result<Vec<Figure>> {
//!         Ok(vec![Figure { name: "samples".into(), images: self.fake(8, rng)?.tanh()?, cols: 4 }])
//!     }
//!     fn generate(&self, n: usize, _class: Option<u32>, rng: &mut Rng) -> anyhow::Result<Tensor> {
//!         self.fake(n, rng)
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let (g_vars, d_vars) = (VarMap::new(), VarMap::new());
//! let g = linear(4, 2, VarBuilder::from_varmap(&g_vars, DType::F32, &Device::Cpu))?;
//! let d = linear(2, 1, VarBuilder::from_varmap(&d_vars, DType::F32, &Device::Cpu))?;
//! let model = Tiny { g_vars, d_vars, g, d, z: LatentSpec(vec![Latent::Gaussian { dim: 4 }]) };
//!
//! // Real data: 64 two-pixel images around (0.5, -0.5).
//! let centre = Tensor::new(&[0.5f32, -0.5], &Device::Cpu)?.reshape((1, 1, 1, 2))?;
//! let images = Tensor::randn(0f32, 0.1, (64, 1, 1, 2), &Device::Cpu)?.broadcast_add(&centre)?;
//! let labels = Tensor::zeros(64, DType::U32, &Device::Cpu)?;
//!
//! let run = tempfile::tempdir()?;
//! let cfg = TrainConfig { epochs: 2, batch_size: 16, k: 1, progress: false, ..TrainConfig::default() };
//! let summaries = Trainer::new(&model, cfg, run.path())?.fit(&images, &labels)?;
//! assert_eq!(summaries.len(), 2);
//! assert!(run.path().join("checkpoints/latest.json").exists());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod alloc;
pub mod checkpoint;
pub mod device;
pub mod engine;
pub mod eval;
pub mod grads;
pub mod grid;
pub mod init;
mod kernels;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod prior;

pub use engine::{Batch, Figure, GanModel, RunConfig, StepOutput, TrainConfig, Trainer};
pub use optim::{Adam, AdamConfig};
pub use prior::{Latent, LatentSpec, Rng};
