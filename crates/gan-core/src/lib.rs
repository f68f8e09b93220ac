//! gan-core: what every model of gan-rs shares.
//!
//! - [`engine`]: the contract a model signs ([`Model`]: networks, named data
//!   [`Stream`]s, [`Phase`]s, figures, capabilities), the [`Trainer`] that runs it with
//!   logging, sample grids, atomic checkpoints and exact resume, and the run folder;
//! - [`fast`]: the fast CPU layers and the kernels under them, and gradient reversal;
//! - [`eval`]: the evaluation maths (MNIST-FID, coverage, Inception-Score analogue,
//!   conditional accuracy, Hungarian matching);
//! - [`loss`], [`prior`], [`optim`], [`init`], [`device`]: losses, seeded noise and
//!   codes, Adam, weight initialisation, device selection.
//!
//! A model implements [`Model`]; training it is then
//! `Trainer::new(&model, config, run_dir)?.fit(&streams)?`. A whole model, as another
//! crate would write it: a linear G against a linear D on 2-pixel "images", plus a
//! second stream of "target" data that only a third phase reads, run every other step.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{linear, Linear, VarBuilder, VarMap};
//! use gan_core::engine::no_such_phase;
//! use gan_core::loss::{discriminator_loss, generator_loss, GeneratorLoss};
//! use gan_core::prior::{Latent, LatentSpec, Rng};
//! use gan_core::{Dataset, Every, Figure, Generator, Model, Phase, Step, StepOutput, Stream,
//!     Streams, TrainConfig, Trainer};
//!
//! struct Tiny { g_vars: VarMap, d_vars: VarMap, t_vars: VarMap, g: Linear, d: Linear, t: Linear, z: LatentSpec }
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
//! impl Model for Tiny {
//!     fn kind(&self) -> &'static str { "tiny" }
//!     fn config(&self) -> serde_json::Value { serde_json::json!({}) }
//!     fn networks(&self) -> Vec<(&'static str, &VarMap)> {
//!         vec![("g", &self.g_vars), ("d", &self.d_vars), ("t", &self.t_vars)]
//!     }
//!     fn streams(&self) -> Vec<Stream> { vec![Stream::real(), Stream::new("target", 1)] }
//!     fn phases(&self) -> Vec<Phase> {
//!         vec![
//!             Phase::new("d", &["d"]),
//!             Phase::new("g", &["g"]).every(Every::K),
//!             Phase::new("t", &["t"]).every(Every::N(2)),
//!         ]
//!     }
//!     fn run_phase(&self, phase: &str, step: &mut Step) -> anyhow::Result<StepOutput> {
//!         let real = &step.real()?.images;
//!         match phase {
//!             "d" => {
//!                 let fake = self.fake(real.dim(0)?, step.rng)?.detach();
//!                 let loss = discriminator_loss(&self.critic(real)?, &self.critic(&fake)?)?;
//!                 Ok(StepOutput::new(loss))
//!             }
//!             "g" => {
//!                 let fake = self.critic(&self.fake(real.dim(0)?, step.rng)?)?;
//!                 Ok(StepOutput::new(generator_loss(&fake, GeneratorLoss::NonSaturating)?))
//!             }
//!             // t regresses the target stream's pixels onto their mean.
//!             "t" => {
//!                 let x = step.batch("target")?.images.flatten_from(1)?;
//!                 let err = (self.t.forward(&x)? - x.mean_keepdim(1)?)?;
//!                 Ok(StepOutput::new(err.sqr()?.mean_all()?))
//!             }
//!             other => Err(no_such_phase(self.kind(), other)),
//!         }
//!     }
//!     fn figures(&self, rng: &mut Rng) -> anyhow::Result<Vec<Figure>> {
//!         Ok(vec![Figure { name: "samples".into(), images: self.fake(8, rng)?.tanh()?, cols: 4 }])
//!     }
//!     fn generator(&self) -> Option<&dyn Generator> { Some(self) }
//! }
//!
//! impl Generator for Tiny {
//!     fn generate(&self, n: usize, _class: Option<u32>, rng: &mut Rng) -> anyhow::Result<Tensor> {
//!         self.fake(n, rng)
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let dev = Device::Cpu;
//! let (g_vars, d_vars, t_vars) = (VarMap::new(), VarMap::new(), VarMap::new());
//! let g = linear(4, 2, VarBuilder::from_varmap(&g_vars, DType::F32, &dev))?;
//! let d = linear(2, 1, VarBuilder::from_varmap(&d_vars, DType::F32, &dev))?;
//! let t = linear(2, 1, VarBuilder::from_varmap(&t_vars, DType::F32, &dev))?;
//! let z = LatentSpec(vec![Latent::Gaussian { dim: 4 }]);
//! let model = Tiny { g_vars, d_vars, t_vars, g, d, t, z };
//!
//! // Real data: 64 two-pixel images around (0.5, -0.5); target data: 40 around 0.
//! let centre = Tensor::new(&[0.5f32, -0.5], &dev)?.reshape((1, 1, 1, 2))?;
//! let real = Tensor::randn(0f32, 0.1, (64, 1, 1, 2), &dev)?.broadcast_add(&centre)?;
//! let target = Tensor::randn(0f32, 0.1, (40, 1, 1, 2), &dev)?;
//! let data = Streams::real(Dataset::new(real, None)?).with("target", Dataset::new(target, None)?);
//!
//! let run = tempfile::tempdir()?;
//! let cfg = TrainConfig { epochs: 2, batch_size: 16, k: 1, progress: false, ..TrainConfig::default() };
//! let summaries = Trainer::new(&model, cfg, run.path())?.fit(&data)?;
//! assert_eq!(summaries.len(), 2);
//! assert!(summaries[1].means.contains_key("t_loss"));
//! assert!(run.path().join("checkpoints/latest.json").exists());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod device;
pub mod engine;
pub mod eval;
pub mod fast;
pub mod init;
pub mod loss;
pub mod optim;
pub mod prior;

pub use engine::{
    Batch, Classifier, Completer, Dataset, Disentangler, Domain, DomainAdapter, Encoder, Every,
    Figure, Generator, Model, Phase, RunConfig, Source, Step, StepOutput, Stream, Streams,
    TrainConfig, Trainer,
};
pub use optim::{Adam, AdamConfig};
pub use prior::{Latent, LatentSpec, Rng, RngStream};
