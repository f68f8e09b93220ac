//! VAE-GAN (Larsen et al. 2016; the lecture notes' algorithm box): a VAE whose decoder is
//! also a GAN's generator. Each step, from one forward pass: M real x; z~ = En(x)
//! (reparameterised), x~ = De(z~); M prior codes z, x^ = De(z). Then three updates, a
//! phase each, so that no network takes another's gradient:
//! 1. En descends the reconstruction error and KL(q(z|x) || N(0, I));
//! 2. De descends gamma * the reconstruction error, and makes Dis call x~ and x^ real;
//! 3. Dis calls x real and x~, x^ fake (binary), or tells the three apart (three-class).
//!
//! The reconstruction error is taken in pixel space, or in the feature space of Dis's
//! 7x7 layer as Larsen et al. do (`--recon feature`).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gan_core::engine::{no_such_phase, Encoder};
use gan_core::fast::layers::frozen;
use gan_core::init::{reinit, WeightInit};
use gan_core::loss::{bce_with_logits_const, cross_entropy, kl_to_standard_normal};
use gan_core::prior::{rng, Latent, LatentSpec, Rng};
use gan_core::{Figure, Generator, Model, Phase, Step, StepOutput};
use serde::{Deserialize, Serialize};

use crate::dcgan::Discriminator;
use crate::encdec::{reconstruction_error, EncDec};
use crate::registry::Registered;
use crate::vae::reparameterise;

/// Which discriminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DisKind {
    /// Real against fake (x~ and x^ both fake).
    Binary,
    /// Real, reconstructed and generated told apart (softmax over 3).
    ThreeClass,
}

/// Where the reconstruction error is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReconKind {
    /// Squared error of the pixels.
    Pixel,
    /// Squared error of Dis's 7x7 features (Larsen et al.'s learned similarity).
    Feature,
}

/// Settings of VAE-GAN; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct VaeganConfig {
    /// Width of the code z.
    #[arg(long, default_value_t = 32)]
    pub z_dim: usize,
    /// Channels of the 14x14 layers of En, De and Dis (7x7: twice as many).
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// The discriminator: binary, or three-class (real / reconstructed / generated).
    #[arg(long, value_enum, default_value = "binary")]
    pub dis: DisKind,
    /// The reconstruction error: in pixel space, or in Dis's feature space.
    #[arg(long, value_enum, default_value = "pixel")]
    pub recon: ReconKind,
    /// Weight of the reconstruction error against the adversarial terms in De's loss.
    #[arg(long, default_value_t = 0.01)]
    pub gamma: f64,
    /// Weight of the KL term in En's loss.
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,
}

impl Default for VaeganConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// VAE-GAN on MNIST.
pub struct Vaegan {
    cfg: VaeganConfig,
    nets: EncDec,
    dis_vars: VarMap,
    dis: Discriminator,
}

/// Class indices of the three-class discriminator.
const REAL: u32 = 0;
const RECONSTRUCTED: u32 = 1;
const GENERATED: u32 = 2;

/// The three-class discriminator's loss: cross-entropy of its logits `[B, 3]` against
/// one class for the whole batch.
pub fn three_class_loss(logits: &Tensor, class: u32) -> Result<Tensor> {
    let b = logits.dim(0)?;
    let target = Tensor::full(class, b, logits.device())?;
    Ok(cross_entropy(logits, &target)?)
}

impl Vaegan {
    /// Builds En, De and Dis on `device`, weights drawn N(0, 0.02) from `seed`.
    pub fn new(cfg: VaeganConfig, device: &Device, seed: u64) -> Result<Self> {
        if !(cfg.gamma >= 0.0 && cfg.beta >= 0.0 && cfg.gamma.is_finite() && cfg.beta.is_finite()) {
            bail!("vaegan needs --gamma >= 0 and --beta >= 0")
        }
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
        let dis_vars = VarMap::new();
        let outputs = match cfg.dis {
            DisKind::Binary => 1,
            DisKind::ThreeClass => 3,
        };
        let dis = Discriminator::with_outputs(
            1,
            cfg.width,
            outputs,
            VarBuilder::from_varmap(&dis_vars, DType::F32, device),
        )?;
        reinit(&dis_vars, WeightInit::Normal { std: 0.02 }, &mut r)?;
        Ok(Self {
            cfg,
            nets,
            dis_vars,
            dis,
        })
    }

    /// Dis's logits and features for `x`.
    fn discriminate(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.dis.features(x, true)?;
        Ok((self.dis.logits(&f)?, f))
    }

    /// The reconstruction error of `x_hat` against `x`, where the config says.
    fn recon_error(&self, x_hat: &Tensor, x: &Tensor) -> Result<Tensor> {
        match self.cfg.recon {
            ReconKind::Pixel => Ok(reconstruction_error(x_hat, x)?),
            // Dis is only passed through: its weights take no gradient from this term.
            ReconKind::Feature => frozen(|| -> Result<Tensor> {
                let fx = self.dis.features(x, true)?.detach();
                let fh = self.dis.features(x_hat, true)?;
                Ok(reconstruction_error(&fh, &fx)?)
            }),
        }
    }

    /// En's line: ||x~ - x|| + beta KL, from the step's one forward pass, which it hands
    /// on (x~, x^ and the reconstruction error, graphs and all) to De's line.
    fn en_step(&self, step: &mut Step) -> Result<StepOutput> {
        let x = step.real()?.images.clone();
        let (mean, log_var) = self.nets.posterior(&x, true)?;
        let z_tilde = reparameterise(&mean, &log_var, step.rng)?;
        let x_tilde = self.nets.de.forward_t(&z_tilde, true)?;
        let z = self.nets.prior_codes(x.dim(0)?, step.rng)?;
        let x_hat = self.nets.de.forward_t(&z, true)?;
        let recon = self.recon_error(&x_tilde, &x)?;
        let kl = kl_to_standard_normal(&mean, &log_var)?;
        step.put("x_tilde", x_tilde);
        step.put("x_hat", x_hat);
        step.put("recon", recon.clone());
        let loss = (&recon + (&kl * self.cfg.beta)?)?;
        Ok(StepOutput::new(loss)
            .with("recon", recon.to_scalar::<f32>()?)
            .with("kl", kl.to_scalar::<f32>()?))
    }

    /// De's line: gamma ||x~ - x|| plus Dis calling x~ and x^ real.
    fn de_step(&self, step: &mut Step) -> Result<StepOutput> {
        let (Some(x_tilde), Some(x_hat), Some(recon)) =
            (step.take("x_tilde"), step.take("x_hat"), step.take("recon"))
        else {
            bail!("vaegan's de phase runs after its en phase, which hands it the forward pass")
        };
        // Dis is only passed through: no gradient for its weights.
        let (lt, lh) = frozen(|| -> Result<(Tensor, Tensor)> {
            Ok((self.discriminate(&x_tilde)?.0, self.discriminate(&x_hat)?.0))
        })?;
        let adv = match self.cfg.dis {
            DisKind::Binary => {
                (bce_with_logits_const(&lt.flatten_all()?, 1.0)?
                    + bce_with_logits_const(&lh.flatten_all()?, 1.0)?)?
            }
            DisKind::ThreeClass => (three_class_loss(&lt, REAL)? + three_class_loss(&lh, REAL)?)?,
        };
        // Both kinds of fake go back to Dis's line, without their graphs.
        step.put("x_tilde", x_tilde.detach());
        step.put("x_hat", x_hat.detach());
        let loss = ((&recon * self.cfg.gamma)? + &adv)?;
        Ok(StepOutput::new(loss).with("de_adv", adv.to_scalar::<f32>()?))
    }

    /// Dis's line: x real, x~ and x^ fake (or each its own class).
    fn dis_step(&self, step: &mut Step) -> Result<StepOutput> {
        let x = step.real()?.images.clone();
        let (Some(x_tilde), Some(x_hat)) = (step.take("x_tilde"), step.take("x_hat")) else {
            bail!("vaegan's dis phase runs after its de phase")
        };
        let (lx, lt, lh) = (
            self.discriminate(&x)?.0,
            self.discriminate(&x_tilde)?.0,
            self.discriminate(&x_hat)?.0,
        );
        let loss = match self.cfg.dis {
            DisKind::Binary => {
                (bce_with_logits_const(&lx.flatten_all()?, 1.0)?
                    + bce_with_logits_const(&lt.flatten_all()?, 0.0)?
                    + bce_with_logits_const(&lh.flatten_all()?, 0.0)?)?
            }
            DisKind::ThreeClass => {
                (three_class_loss(&lx, REAL)?
                    + three_class_loss(&lt, RECONSTRUCTED)?
                    + three_class_loss(&lh, GENERATED)?)?
            }
        };
        Ok(StepOutput::new(loss))
    }
}

impl Model for Vaegan {
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
            Phase::new("en", &["en"]),
            Phase::new("de", &["de"]),
            Phase::new("dis", &["dis"]),
        ]
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        match phase {
            "en" => self.en_step(step),
            "de" => self.de_step(step),
            "dis" => self.dis_step(step),
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

    fn encoder(&self) -> Option<&dyn Encoder> {
        Some(&self.nets)
    }
}

impl Registered for Vaegan {
    type Config = VaeganConfig;
    const KIND: &'static str = "vaegan";
    const ABOUT: &'static str =
        "VAE-GAN: encoder, decoder (= generator) and discriminator, a phase each from one forward pass";
    fn build(cfg: VaeganConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
}
