//! The autoencoder: the encoder family's first baseline. En(x) -> z, De(z) -> x~, both
//! descending the reconstruction error ||x~ - x||^2 alone. Faithful reconstructions, no
//! prior to sample from.

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use gan_core::engine::{no_such_phase, Encoder};
use gan_core::prior::{rng, Rng};
use gan_core::{Figure, Model, Phase, Step, StepOutput};
use serde::{Deserialize, Serialize};

use crate::encdec::{reconstruction_error, EncDec};
use crate::registry::Registered;

/// Settings of the autoencoder; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct AeConfig {
    /// Width of the code z.
    #[arg(long, default_value_t = 32)]
    pub z_dim: usize,
    /// Channels of the encoder's and decoder's 14x14 layers (7x7: twice as many).
    #[arg(long, default_value_t = 32)]
    pub width: usize,
}

impl Default for AeConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// The autoencoder on MNIST.
pub struct Ae {
    cfg: AeConfig,
    nets: EncDec,
}

impl Ae {
    /// Builds En and De on `device`, weights drawn from `seed`.
    pub fn new(cfg: AeConfig, device: &Device, seed: u64) -> Result<Self> {
        let mut r = rng(seed, gan_core::prior::RngStream::Init);
        let nets = EncDec::new(
            Self::KIND,
            cfg.z_dim,
            cfg.width,
            false,
            None,
            device,
            &mut r,
        )?;
        Ok(Self { cfg, nets })
    }
}

impl Model for Ae {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        self.nets.networks()
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase::new("recon", &["en", "de"])]
    }

    /// En and De descend ||De(En(x)) - x||^2.
    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        if phase != "recon" {
            return Err(no_such_phase(self.kind(), phase));
        }
        let x = &step.real()?.images;
        let x_hat = self
            .nets
            .de
            .forward_t(&self.nets.en.forward_t(x, true)?, true)?;
        Ok(StepOutput::new(reconstruction_error(&x_hat, x)?))
    }

    fn figures(&self, _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(Vec::new())
    }

    fn figures_of_real(&self, real: &Tensor, _rng: &mut Rng) -> Result<Vec<Figure>> {
        self.nets.reconstruction_figures(real)
    }

    fn encoder(&self) -> Option<&dyn Encoder> {
        Some(&self.nets)
    }
}

impl Registered for Ae {
    type Config = AeConfig;
    const KIND: &'static str = "ae";
    const ABOUT: &'static str =
        "Autoencoder: En and De descend the reconstruction error alone (the encoder family's baseline)";
    fn build(cfg: AeConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
}
