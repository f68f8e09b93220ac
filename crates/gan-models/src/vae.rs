//! The variational autoencoder (Kingma and Welling 2014): the encoder family's second
//! baseline. En(x) gives the mean and log-variance of q(z|x); z~ = mean + sigma * eps
//! (reparameterised, so the gradient reaches En through the sample); De(z~) -> x~.
//! En and De descend ||x~ - x||^2 + beta * KL(q(z|x) || N(0, I)); De then draws
//! images from the prior N(0, I).

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use gan_core::engine::{no_such_phase, Encoder};
use gan_core::loss::kl_to_standard_normal;
use gan_core::prior::{rng, Latent, LatentSpec, Rng};
use gan_core::{Figure, Generator, Model, Phase, Step, StepOutput};
use serde::{Deserialize, Serialize};

use crate::encdec::{reconstruction_error, EncDec};
use crate::registry::Registered;

/// Settings of the VAE; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct VaeConfig {
    /// Width of the code z.
    #[arg(long, default_value_t = 32)]
    pub z_dim: usize,
    /// Channels of the encoder's and decoder's 14x14 layers (7x7: twice as many).
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// Weight of the KL term.
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,
}

impl Default for VaeConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// The VAE on MNIST.
pub struct Vae {
    cfg: VaeConfig,
    nets: EncDec,
}

/// `z = mean + exp(log_var / 2) * eps`, eps ~ N(0, I) from `rng`: a sample of q(z|x)
/// that gradients flow through to the mean and the log-variance.
pub fn reparameterise(mean: &Tensor, log_var: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    let (n, d) = mean.dims2()?;
    let eps = LatentSpec(vec![Latent::Gaussian { dim: d }])
        .sample(n, rng, mean.device())?
        .z;
    Ok((mean + (log_var * 0.5)?.exp()?.mul(&eps)?)?)
}

impl Vae {
    /// Builds En and De on `device`, weights drawn from `seed`.
    pub fn new(cfg: VaeConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(
            cfg.beta >= 0.0 && cfg.beta.is_finite(),
            "vae needs --beta >= 0, got {}",
            cfg.beta
        );
        let mut r = rng(seed, gan_core::prior::RngStream::Init);
        let prior = LatentSpec(vec![Latent::Gaussian { dim: cfg.z_dim }]);
        let nets = EncDec::new(
            Self::KIND,
            cfg.z_dim,
            cfg.width,
            true,
            Some(prior),
            device,
            &mut r,
        )?;
        Ok(Self { cfg, nets })
    }
}

impl Model for Vae {
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
        vec![Phase::new("elbo", &["en", "de"])]
    }

    /// En and De descend the negative evidence lower bound (up to constants).
    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        if phase != "elbo" {
            return Err(no_such_phase(self.kind(), phase));
        }
        let x = &step.real()?.images;
        let (mean, log_var) = self.nets.posterior(x, true)?;
        let z = reparameterise(&mean, &log_var, step.rng)?;
        let x_hat = self.nets.de.forward_t(&z, true)?;
        let recon = reconstruction_error(&x_hat, x)?;
        let kl = kl_to_standard_normal(&mean, &log_var)?;
        let loss = (&recon + (&kl * self.cfg.beta)?)?;
        Ok(StepOutput::new(loss)
            .with("recon", recon.to_scalar::<f32>()?)
            .with("kl", kl.to_scalar::<f32>()?))
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

    fn encoder(&self) -> Option<&dyn Encoder> {
        Some(&self.nets)
    }
}

impl Registered for Vae {
    type Config = VaeConfig;
    const KIND: &'static str = "vae";
    const ABOUT: &'static str =
        "Variational autoencoder: reconstruction + KL to N(0, I); samples from the prior";
    fn build(cfg: VaeConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
}
