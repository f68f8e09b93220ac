//! The original GAN (Goodfellow et al. 2014): multilayer perceptrons on flattened MNIST.
//!
//! Algorithm 1: for each training iteration, k times: draw m noise samples and m
//! examples, ascend V(D, G) in D; then draw m noise samples and descend G's loss, either
//! log(1 - D(G(z))) (saturating, the minimax game itself) or -log D(G(z))
//! (non-saturating, the paper's practical choice).

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gan_core::fast::layers::{batch_norm, frozen, linear, BatchNorm, Linear};
use serde::{Deserialize, Serialize};

use crate::registry::Registered;
use gan_core::engine::no_such_phase;
use gan_core::fast::nn::dropout;
use gan_core::init::{reinit, WeightInit};
use gan_core::loss::{binary_accuracy, discriminator_loss, generator_loss, GeneratorLoss};
use gan_core::prior::{rng, Latent, LatentSpec, Rng};
use gan_core::{Batch, Every, Figure, Generator, Model, Phase, Step, StepOutput};

/// Settings of the MLP GAN; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct GanConfig {
    /// Width of the noise z ~ N(0, I).
    #[arg(long, default_value_t = 100)]
    pub z_dim: usize,
    /// Hidden widths of G, comma-separated (D mirrors them, widest first).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024")]
    pub hidden: Vec<usize>,
    /// Generator loss: saturating (the minimax game) or non-saturating.
    #[arg(long, default_value = "non-saturating")]
    pub g_loss: GeneratorLoss,
    /// Dropout probability on D's hidden layers while training (the paper trains D with
    /// dropout). 0 is not written, so older runs' checkpoints still match.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub d_dropout: f64,
    /// Batch norm on G's hidden layers (Ioffe and Szegedy 2015, after the paper; the
    /// usual way to an MLP generator that trains in minutes). Off is not written.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub g_batch_norm: bool,
    /// Learning rate of G (D uses --lr): 5x D's, as in dcgan and infogan; with the
    /// averaged G of `--ema-decay` it took the MNIST-FID from 142-205 to about 23
    /// (docs/RESULTS.md). A training setting: the run keeps it among its per-network
    /// learning rates, not in the model's config.
    #[arg(long, default_value_t = 1e-3)]
    #[serde(skip, default = "crate::registry::g_lr")]
    pub lr_g: f64,
}

impl Default for GanConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// A stack of linear layers with leaky ReLU between them (slope 0.2, or 0: ReLU),
/// optionally batch norm before each activation.
pub(crate) struct Mlp {
    layers: Vec<Linear>,
    norms: Vec<BatchNorm>,
    slope: f64,
}

impl Mlp {
    /// Leaky ReLU of slope 0.2 between the layers, as GAN discriminators and generators use.
    pub(crate) fn new(widths: &[usize], vb: VarBuilder) -> Result<Self> {
        Self::with_slope(widths, 0.2, vb)
    }

    /// ReLU between the layers.
    pub(crate) fn relu(widths: &[usize], vb: VarBuilder) -> Result<Self> {
        Self::with_slope(widths, 0.0, vb)
    }

    /// Leaky ReLU of slope 0.2 after a batch norm on every hidden layer.
    pub(crate) fn with_batch_norm(widths: &[usize], vb: VarBuilder) -> Result<Self> {
        let mut mlp = Self::with_slope(widths, 0.2, vb.clone())?;
        mlp.norms = widths[1..widths.len() - 1]
            .iter()
            .enumerate()
            .map(|(i, &w)| batch_norm(w, vb.pp(format!("bn{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(mlp)
    }

    fn with_slope(widths: &[usize], slope: f64, vb: VarBuilder) -> Result<Self> {
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| linear(w[0], w[1], vb.pp(format!("fc{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            layers,
            norms: Vec::new(),
            slope,
        })
    }

    /// The forward pass, batch statistics (and their running averages) when `train`.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if self.norms.is_empty() {
            return self.forward(x);
        }
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if let Some(bn) = self.norms.get(i) {
                x = bn.forward_act(&x, train, self.slope)?;
            }
        }
        Ok(x)
    }
}

impl Mlp {
    /// The forward pass with dropout of probability `p` on every hidden layer's output,
    /// masks from `rng`: Goodfellow et al.'s and Mirza and Osindero's discriminators
    /// are trained with dropout. `p = 0` is [`Module::forward`].
    pub(crate) fn forward_dropout(
        &self,
        x: &Tensor,
        p: f64,
        rng: &mut Rng,
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = match i + 1 < self.layers.len() {
                true => dropout(&layer.forward_leaky(&x, self.slope)?, p, rng)?,
                false => layer.forward(&x)?,
            };
        }
        Ok(x)
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = match i + 1 < self.layers.len() {
                true => layer.forward_leaky(&x, self.slope)?,
                false => layer.forward(&x)?,
            };
        }
        Ok(x)
    }
}

/// The MLP GAN: G maps z to 784 pixels through tanh, D maps 784 pixels to one logit.
pub struct Gan {
    cfg: GanConfig,
    prior: LatentSpec,
    g_vars: VarMap,
    d_vars: VarMap,
    g: Mlp,
    d: Mlp,
    device: Device,
}

impl Gan {
    /// Builds both networks on `device`, weights drawn from `seed`.
    pub fn new(cfg: GanConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(
            cfg.z_dim > 0 && !cfg.hidden.is_empty() && !cfg.hidden.contains(&0),
            "gan needs --z-dim > 0 and at least one hidden layer, every width > 0 (got \
             --z-dim {} --hidden {:?})",
            cfg.z_dim,
            cfg.hidden
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&cfg.d_dropout),
            "gan needs 0 <= --d-dropout < 1, got {}",
            cfg.d_dropout
        );
        let (g_vars, d_vars) = (VarMap::new(), VarMap::new());
        let g_widths: Vec<usize> = [cfg.z_dim]
            .into_iter()
            .chain(cfg.hidden.iter().copied())
            .chain([784])
            .collect();
        let d_widths: Vec<usize> = [784]
            .into_iter()
            .chain(cfg.hidden.iter().rev().copied())
            .chain([1])
            .collect();
        let g_vb = VarBuilder::from_varmap(&g_vars, DType::F32, device);
        let g = match cfg.g_batch_norm {
            true => Mlp::with_batch_norm(&g_widths, g_vb)?,
            false => Mlp::new(&g_widths, g_vb)?,
        };
        let d = Mlp::new(
            &d_widths,
            VarBuilder::from_varmap(&d_vars, DType::F32, device),
        )?;
        let mut r = rng(seed, gan_core::prior::RngStream::Init);
        reinit(&g_vars, WeightInit::FanInUniform, &mut r)?;
        reinit(&d_vars, WeightInit::FanInUniform, &mut r)?;
        let prior = LatentSpec(vec![Latent::Gaussian { dim: cfg.z_dim }]);
        Ok(Self {
            cfg,
            prior,
            g_vars,
            d_vars,
            g,
            d,
            device: device.clone(),
        })
    }

    fn fake(&self, n: usize, rng: &mut Rng, train: bool) -> Result<Tensor> {
        let z = self.prior.sample(n, rng, &self.device)?.z;
        Ok(gan_core::fast::nn::tanh(&self.g.forward_t(&z, train)?)?)
    }

    /// D's logits while training: with the config's dropout, masks from `rng`.
    fn critic(&self, flat: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        Ok(self
            .d
            .forward_dropout(flat, self.cfg.d_dropout, rng)?
            .squeeze(1)?)
    }
}

impl Gan {
    /// Algorithm 1, D's line: ascend log D(x) + log(1 - D(G(z))) on m examples and m
    /// fresh noise samples.
    fn d_step(&self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        let m = batch.images.dim(0)?;
        let real = self.critic(&batch.images.flatten_from(1)?, rng)?;
        let fake = self.fake(m, rng, true)?.detach();
        let fake = self.critic(&fake, rng)?;
        let loss = discriminator_loss(&real, &fake)?;
        Ok(StepOutput::new(loss)
            .with("d_real_acc", binary_accuracy(&real, true)?)
            .with("d_fake_acc", binary_accuracy(&fake, false)?))
    }

    /// Algorithm 1, G's line: descend G's loss on m fresh noise samples.
    fn g_step(&self, m: usize, rng: &mut Rng) -> Result<StepOutput> {
        let fake = self.fake(m, rng, true)?;
        // D is only passed through: no gradient for its weights.
        let logit = frozen(|| self.critic(&fake, rng))?;
        Ok(StepOutput::new(generator_loss(&logit, self.cfg.g_loss)?))
    }
}

impl Model for Gan {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("g", &self.g_vars), ("d", &self.d_vars)]
    }

    fn averaged(&self) -> Vec<&'static str> {
        vec!["g"]
    }

    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("d", &["d"]),
            Phase::new("g", &["g"]).every(Every::K),
        ]
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        let batch = step.real()?;
        match phase {
            "d" => self.d_step(batch, step.rng),
            "g" => self.g_step(batch.len()?, step.rng),
            other => Err(no_such_phase(self.kind(), other)),
        }
    }

    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(vec![Figure {
            name: "samples".into(),
            images: self.generate(64, None, rng)?,
            cols: 8,
        }])
    }

    fn generator(&self) -> Option<&dyn Generator> {
        Some(self)
    }
}

impl Generator for Gan {
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor> {
        crate::unconditional(Self::KIND, class)?;
        Ok(self.fake(n, rng, false)?.reshape((n, 1, 28, 28))?)
    }
}

impl Registered for Gan {
    type Config = GanConfig;
    const KIND: &'static str = "gan";
    const ABOUT: &'static str =
        "The original GAN of Goodfellow et al. (2014): MLPs on flattened MNIST";
    /// About 3.5 minutes here. With G at 1e-3 and the averaged G, the MNIST-FID falls
    /// below 40 by epoch 10 and on to about 23 by 20, but the class histogram drifts
    /// the other way (KL from uniform 0.014-0.016 at 10 epochs, 0.024-0.028 at 20):
    /// 10 meets both of issue 17's goals (docs/RESULTS.md).
    const EPOCHS: usize = 10;
    /// Samples come from the averaged G: MNIST-FID 29.1 against the last step's 81.0
    /// at step 9,500 (seed 1; docs/RESULTS.md).
    const EMA: Option<f64> = Some(0.999);
    fn build(cfg: GanConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
    fn network_lr(cfg: &GanConfig) -> Vec<(&'static str, f64)> {
        vec![("g", cfg.lr_g)]
    }
}
