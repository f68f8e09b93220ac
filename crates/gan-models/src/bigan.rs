//! BiGAN (Donahue et al. 2017; the lecture notes' second box): an encoder En(x) -> z~
//! and a decoder De(z) -> x~ that never meet in training, and a discriminator on joint
//! pairs. Each step: M real x with their codes (x, En(x)), M prior codes with their
//! images (De(z), z).
//! 1. Dis calls (x, En(x)) real and (De(z), z) fake;
//! 2. En and De together do the opposite.
//!
//! At the optimum En and De invert each other, though De(En(x)) was never trained to
//! equal x.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gan_core::engine::{no_such_phase, Encoder};
use gan_core::fast::layers::{
    batch_norm, conv2d, frozen, linear, BatchNorm, Conv2d, ConvSpec, Linear,
};
use gan_core::init::{reinit, WeightInit};
use gan_core::loss::{bce_with_logits_const, binary_accuracy};
use gan_core::prior::{rng, Latent, LatentSpec, Rng};
use gan_core::{Figure, Generator, Model, Phase, Step, StepOutput};
use serde::{Deserialize, Serialize};

use crate::encdec::EncDec;
use crate::registry::Registered;

/// Settings of BiGAN; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct BiganConfig {
    /// Width of the code z ~ U(-1, 1).
    #[arg(long, default_value_t = 32)]
    pub z_dim: usize,
    /// Channels of the 14x14 layers of En, De and Dis's image path (7x7: twice as many).
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// Width of Dis's joint layer (and of its code path).
    #[arg(long, default_value_t = 256)]
    pub joint: usize,
}

impl Default for BiganConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// Dis(x, z): a convolutional path for x, a linear one for z, joined before the logit.
struct JointDiscriminator {
    c1: Conv2d,
    c2: Conv2d,
    bn2: BatchNorm,
    zp: Linear,
    joint: Linear,
    out: Linear,
}

impl JointDiscriminator {
    fn new(cfg: &BiganConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let w = cfg.width;
        let spec = ConvSpec {
            padding: 1,
            stride: 2,
            output_padding: 0,
        };
        Ok(Self {
            c1: conv2d(1, w, 4, spec, vb.pp("c1"))?,
            c2: conv2d(w, 2 * w, 4, spec, vb.pp("c2"))?,
            bn2: batch_norm(2 * w, vb.pp("bn2"))?,
            zp: linear(cfg.z_dim, cfg.joint, vb.pp("zp"))?,
            joint: linear(2 * w * 49 + cfg.joint, cfg.joint, vb.pp("joint"))?,
            out: linear(cfg.joint, 1, vb.pp("out"))?,
        })
    }

    /// `[B]` logits of the pairs (x, z).
    fn forward(&self, x: &Tensor, z: &Tensor) -> candle_core::Result<Tensor> {
        let hx = self.c1.forward_leaky(x, 0.2)?;
        let hx = self.bn2.forward_act(&self.c2.forward(&hx)?, true, 0.2)?;
        let hz = self.zp.forward_leaky(z, 0.2)?;
        let h = Tensor::cat(&[hx.flatten_from(1)?, hz], 1)?;
        let h = self.joint.forward_leaky(&h, 0.2)?;
        self.out.forward(&h)?.flatten_all()
    }
}

/// BiGAN on MNIST.
pub struct Bigan {
    cfg: BiganConfig,
    nets: EncDec,
    dis_vars: VarMap,
    dis: JointDiscriminator,
}

impl Bigan {
    /// Builds En, De and Dis on `device`, weights drawn N(0, 0.02) from `seed`.
    pub fn new(cfg: BiganConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(cfg.joint > 0, "bigan needs --joint > 0");
        let mut r = rng(seed, gan_core::prior::RngStream::Init);
        let prior = LatentSpec(vec![Latent::Uniform {
            dim: cfg.z_dim,
            low: -1.0,
            high: 1.0,
        }]);
        let nets = EncDec::new(
            Self::KIND,
            cfg.z_dim,
            cfg.width,
            false,
            Some(prior),
            device,
            &mut r,
        )?;
        let dis_vars = VarMap::new();
        let dis =
            JointDiscriminator::new(&cfg, VarBuilder::from_varmap(&dis_vars, DType::F32, device))?;
        reinit(&dis_vars, WeightInit::Normal { std: 0.02 }, &mut r)?;
        Ok(Self {
            cfg,
            nets,
            dis_vars,
            dis,
        })
    }

    /// Dis's logits for (x, z): public for tests that probe what Dis looks at.
    pub fn score(&self, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        Ok(self.dis.forward(x, z)?)
    }

    /// The step's two kinds of pair: (x, En(x)) and (De(z), z).
    fn pairs(&self, step: &mut Step) -> Result<[(Tensor, Tensor); 2]> {
        let x = step.real()?.images.clone();
        let z = self.nets.prior_codes(x.dim(0)?, step.rng)?;
        let encoded = self.nets.en.forward_t(&x, true)?;
        let decoded = self.nets.de.forward_t(&z, true)?;
        Ok([(x, encoded), (decoded, z)])
    }
}

impl Model for Bigan {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        let mut nets = self.nets.networks();
        nets.push(("dis", &self.dis_vars));
        nets
    }

    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("dis", &["dis"]),
            Phase::new("ende", &["en", "de"]),
        ]
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        match phase {
            // Dis: (x, En(x)) real, (De(z), z) fake; En and De only feed it. The pairs,
            // graphs and all, go on to En and De's line: one forward pass a step.
            "dis" => {
                let [(x, ex), (dz, z)] = self.pairs(step)?;
                let real = self.dis.forward(&x, &ex.detach())?;
                let fake = self.dis.forward(&dz.detach(), &z)?;
                let loss =
                    (bce_with_logits_const(&real, 1.0)? + bce_with_logits_const(&fake, 0.0)?)?;
                step.put("en_x", ex);
                step.put("de_z", dz);
                step.put("z", z);
                Ok(StepOutput::new(loss)
                    .with("dis_real_acc", binary_accuracy(&real, true)?)
                    .with("dis_fake_acc", binary_accuracy(&fake, false)?))
            }
            // En and De: the opposite labels, through a Dis that takes no gradient.
            "ende" => {
                let x = step.real()?.images.clone();
                let (Some(ex), Some(dz), Some(z)) =
                    (step.take("en_x"), step.take("de_z"), step.take("z"))
                else {
                    anyhow::bail!("bigan's ende phase runs after its dis phase")
                };
                let (real, fake) = frozen(|| -> Result<(Tensor, Tensor)> {
                    Ok((self.dis.forward(&x, &ex)?, self.dis.forward(&dz, &z)?))
                })?;
                let loss =
                    (bce_with_logits_const(&real, 0.0)? + bce_with_logits_const(&fake, 1.0)?)?;
                Ok(StepOutput::new(loss))
            }
            other => Err(no_such_phase(self.kind(), other)),
        }
    }

    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>> {
        self.nets.figures(rng)
    }

    fn figures_of_real(&self, real: &Tensor, _rng: &mut Rng) -> Result<Vec<Figure>> {
        self.nets.reconstruction_figures(real)
    }

    fn generator(&self) -> Option<&dyn Generator> {
        self.nets.as_generator()
    }

    /// Its reconstructions De(En(x)) were never trained to equal x, only to fool a Dis
    /// on pairs.
    fn encoder(&self) -> Option<&dyn Encoder> {
        Some(&self.nets)
    }
}

impl Registered for Bigan {
    type Config = BiganConfig;
    const KIND: &'static str = "bigan";
    const ABOUT: &'static str =
        "BiGAN: encoder and decoder trained apart, a discriminator on (x, z) pairs";
    fn build(cfg: BiganConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
}
