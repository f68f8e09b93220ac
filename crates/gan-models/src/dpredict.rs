//! The discriminator as a predictor (the lecture notes' first idea): train D alone, so
//! that training images score high and everything else low, and produce by search:
//! x* = argmax_x D(x).
//!
//! "Everything else" comes from the search itself, as energy-based models are trained
//! (Du and Mordatch 2019): negatives are found by Langevin steps up D's score,
//! x <- clamp(x + eta clamp(grad_x D(x), -c, c) + sigma eps, -1, 1), started from a replay buffer of
//! earlier negatives (a few started afresh from uniform noise), and D learns to score
//! them low. Every step, on M training images x and M negatives x~:
//!
//! D descends mean D(x~) - mean D(x) + alpha (mean D(x)^2 + mean D(x~)^2),
//!
//! the last term keeping the scores near zero (an unbounded D could push them apart
//! forever), x carrying a little Gaussian noise. Generation is the search from noise.
//!
//! The defaults are those of common MNIST energy models (a small strided D with swish,
//! whose smooth gradient the search can follow; 60 steps of eta = 10 with the gradient
//! clamped to 0.03; sigma = 0.005): with D's first network (3x3 convolutions at full
//! size, leaky ReLU, 20 unclamped steps) the searches from noise drew no digits
//! (docs/PREDICTOR.md).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use gan_core::engine::no_such_phase;
use gan_core::fast::layers::{conv2d, frozen, linear, Conv2d, ConvSpec, Linear};
use gan_core::init::{reinit, WeightInit};
use gan_core::prior::{rng, Latent, LatentSpec, Rng, RngStream};
use gan_core::{Completer, Figure, Generator, Model, Phase, Step, StepOutput};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::registry::Registered;

/// Settings of the discriminator-as-predictor; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct DpredictConfig {
    /// Channels of D's first layer (then twice, then four times as many).
    #[arg(long, default_value_t = 16)]
    pub width: usize,
    /// Langevin steps that find each training step's negatives.
    #[arg(long, default_value_t = 60)]
    pub langevin_steps: usize,
    /// eta: the step up D's gradient.
    #[arg(long, default_value_t = 10.0)]
    pub step_size: f64,
    /// sigma: the noise of each Langevin step.
    #[arg(long, default_value_t = 0.005)]
    pub noise: f64,
    /// Negatives kept in the replay buffer.
    #[arg(long, default_value_t = 8192)]
    pub buffer: usize,
    /// The fraction of each step's negatives started afresh from uniform noise.
    #[arg(long, default_value_t = 0.05)]
    pub reinit: f64,
    /// alpha: the weight of the squared scores.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Langevin steps of generation from noise (sample, eval, figures).
    #[arg(long, default_value_t = 256)]
    pub sample_steps: usize,
    /// D's layers: conv3 (3x3 at full size, then two 4x4 of stride 2) or strided (four
    /// convolutions of stride 2 down to 2x2 and a hidden linear layer, the shape of
    /// common MNIST energy models: a quarter of conv3's products).
    #[arg(long, value_enum, default_value = "strided")]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub arch: Arch,
    /// D's activation: leaky (ReLU, slope 0.2) or swish (x sigmoid(x)), whose gradient
    /// in x is smooth, which the search follows.
    #[arg(long, value_enum, default_value = "swish")]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub activation: Activation,
    /// Each pixel's gradient clamped to [-c, c] before the step (0: not clamped), so
    /// that no search step moves a pixel more than eta c.
    #[arg(long, default_value_t = 0.03)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub grad_clamp: f64,
    /// Gaussian noise of this spread added to the training images (then clamped to
    /// [-1, 1]), so that D cannot score them high for lying exactly on MNIST's few
    /// grey levels.
    #[arg(long, default_value_t = 0.005)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub data_noise: f64,
}

/// D's layers. The serde default (a config without the key) is the first network, which
/// runs made before `--arch` used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// 3x3 to `width` at 28x28, 4x4 stride 2 to 2 `width` and 4 `width`, a linear score.
    #[default]
    Conv3,
    /// 5x5 stride 2 to `width` (16x16), 3x3 stride 2 to 2, 4 and 4 `width` (8, 4, 2),
    /// a linear layer to 4 `width` and the linear score.
    Strided,
}

/// D's activation (a config without the key: leaky, as before `--activation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Leaky ReLU, slope 0.2.
    #[default]
    Leaky,
    /// x sigmoid(x) (Ramachandran et al. 2017).
    Swish,
}

impl Default for DpredictConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// D: convolutions and linear layers, no batch norm (a score that depends on the rest of
/// the batch would be no function of x to climb).
struct Critic {
    convs: Vec<Conv2d>,
    hidden: Option<Linear>,
    out: Linear,
    activation: Activation,
}

impl Critic {
    fn new(
        w: usize,
        arch: Arch,
        activation: Activation,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let spec = |padding, stride| ConvSpec {
            padding,
            stride,
            output_padding: 0,
        };
        Ok(match arch {
            Arch::Conv3 => Self {
                convs: vec![
                    conv2d(1, w, 3, spec(1, 1), vb.pp("c1"))?,
                    conv2d(w, 2 * w, 4, spec(1, 2), vb.pp("c2"))?,
                    conv2d(2 * w, 4 * w, 4, spec(1, 2), vb.pp("c3"))?,
                ],
                hidden: None,
                out: linear(4 * w * 49, 1, vb.pp("out"))?,
                activation,
            },
            Arch::Strided => Self {
                convs: vec![
                    conv2d(1, w, 5, spec(4, 2), vb.pp("c1"))?,
                    conv2d(w, 2 * w, 3, spec(1, 2), vb.pp("c2"))?,
                    conv2d(2 * w, 4 * w, 3, spec(1, 2), vb.pp("c3"))?,
                    conv2d(4 * w, 4 * w, 3, spec(1, 2), vb.pp("c4"))?,
                ],
                hidden: Some(linear(4 * w * 4, 4 * w, vb.pp("hidden"))?),
                out: linear(4 * w, 1, vb.pp("out"))?,
                activation,
            },
        })
    }

    /// A hidden layer and its activation (fused into the layer's op).
    fn conv_act(&self, c: &Conv2d, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.activation {
            Activation::Leaky => c.forward_leaky(x, 0.2),
            Activation::Swish => c.forward_swish(x),
        }
    }

    /// [`Self::conv_act`] for a linear layer.
    fn linear_act(&self, l: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.activation {
            Activation::Leaky => l.forward_leaky(x, 0.2),
            Activation::Swish => l.forward_swish(x),
        }
    }

    /// `[B]` scores.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = self.conv_act(c, &h)?;
        }
        let mut h = h.flatten_from(1)?;
        if let Some(l) = &self.hidden {
            h = self.linear_act(l, &h)?;
        }
        self.out.forward(&h)?.flatten_all()
    }
}

/// D and its replay buffer.
pub struct Dpredict {
    cfg: DpredictConfig,
    d_vars: VarMap,
    d: Critic,
    buffer_vars: VarMap,
    device: Device,
}

/// Images a thread climbs at least in a search step (fewer: one thread for all). The
/// products of a group of 16 rows or fewer round differently from the whole batch's on
/// the AVX-512 VM (searches of 17-33 images split in two gave other bits; 34 and more,
/// and training's batch of 64, the same), so groups keep twice that.
const SEARCH_ROWS: usize = 32;

/// `n` images of N(0, 1) noise, `[n, 1, 28, 28]`.
fn gaussian(n: usize, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let spec = LatentSpec(vec![Latent::Gaussian { dim: 784 }]);
    Ok(spec.sample(n, rng, device)?.z.reshape((n, 1, 28, 28))?)
}

/// `n` images of uniform noise in [-1, 1].
fn uniform(n: usize, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let spec = LatentSpec(vec![Latent::Uniform {
        dim: 784,
        low: -1.0,
        high: 1.0,
    }]);
    Ok(spec.sample(n, rng, device)?.z.reshape((n, 1, 28, 28))?)
}

impl Dpredict {
    /// Builds D with PyTorch's default initialisation and a buffer of uniform noise,
    /// both drawn from `seed`.
    pub fn new(cfg: DpredictConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(cfg.width > 0, "dpredict needs --width > 0");
        anyhow::ensure!(
            cfg.buffer > 0 && (0.0..=1.0).contains(&cfg.reinit),
            "dpredict needs --buffer > 0 and --reinit in [0, 1]"
        );
        anyhow::ensure!(
            cfg.step_size > 0.0 && cfg.noise >= 0.0 && cfg.alpha >= 0.0,
            "dpredict needs --step-size > 0, --noise >= 0 and --alpha >= 0"
        );
        anyhow::ensure!(
            cfg.grad_clamp >= 0.0 && cfg.data_noise >= 0.0,
            "dpredict needs --grad-clamp >= 0 and --data-noise >= 0"
        );
        let d_vars = VarMap::new();
        let d = Critic::new(
            cfg.width,
            cfg.arch,
            cfg.activation,
            VarBuilder::from_varmap(&d_vars, DType::F32, device),
        )?;
        let mut r = rng(seed, RngStream::Init);
        reinit(&d_vars, WeightInit::FanInUniform, &mut r)?;
        let buffer_vars = VarMap::new();
        buffer_vars.get(
            (cfg.buffer, 1, 28, 28),
            "images",
            Init::Const(0.0),
            DType::F32,
            device,
        )?;
        let model = Self {
            cfg,
            d_vars,
            d,
            buffer_vars,
            device: device.clone(),
        };
        model
            .buffer_var()?
            .set(&uniform(model.cfg.buffer, &mut r, device)?)?;
        Ok(model)
    }

    fn buffer_var(&self) -> Result<Var> {
        let data = self.buffer_vars.data().lock().expect("buffer lock");
        data.get("images").cloned().context("dpredict's buffer")
    }

    /// D's scores of `images` `[N, 1, 28, 28]`, one each.
    pub fn score(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.d.forward(images)?)
    }

    /// `steps` Langevin steps up D's score from `start`; where `free` is given (1 for
    /// pixels the search may change, 0 for those it must keep), only those pixels move.
    /// Each step returns through `visit` (the search's path, for figures).
    pub fn search(
        &self,
        start: &Tensor,
        steps: usize,
        free: Option<&Tensor>,
        rng: &mut Rng,
        mut visit: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let n = start.dim(0)?;
        let mut x = start.detach();
        for i in 0..steps {
            // The whole batch's noise, drawn as one batch would draw it, then each group
            // of images climbs on its own thread (their rows never meet).
            let eps = match self.cfg.noise > 0.0 {
                true => Some((gaussian(n, rng, &self.device)? * self.cfg.noise)?),
                false => None,
            };
            let rows = |t: &Tensor, at: usize, len: usize| match t.dim(0)? == n {
                true => t.narrow(0, at, len),
                false => Ok(t.clone()),
            };
            let parts = gan_core::fast::par_rows(n, SEARCH_ROWS, |at, len| {
                self.step_up(
                    &x.narrow(0, at, len)?,
                    eps.as_ref().map(|e| e.narrow(0, at, len)).transpose()?,
                    free.map(|m| rows(m, at, len)).transpose()?,
                )
            })?;
            x = match parts.len() {
                1 => parts.into_iter().next().context("no rows")?,
                _ => Tensor::cat(&parts, 0)?,
            };
            visit(i + 1, &x)?;
        }
        Ok(x)
    }

    /// One Langevin step of images `x` up D's score: the clamped gradient times eta, plus
    /// the step's noise `eps` (already times sigma), only where `free` is 1 if given.
    fn step_up(&self, x: &Tensor, eps: Option<Tensor>, free: Option<Tensor>) -> Result<Tensor> {
        let v = Var::from_tensor(x)?;
        // D's weights take no gradient here: only the images move.
        let total = frozen(|| self.d.forward(v.as_tensor()))?.sum_all()?;
        let grads = total.backward()?;
        let g = grads
            .get(v.as_tensor())
            .context("no gradient of D's score reached the images")?;
        let g = match self.cfg.grad_clamp {
            c if c > 0.0 => g.clamp(-c as f32, c as f32)?,
            _ => g.clone(),
        };
        let mut delta = (g * self.cfg.step_size)?;
        if let Some(eps) = eps {
            delta = (delta + eps)?;
        }
        if let Some(m) = free {
            delta = delta.broadcast_mul(&m)?;
        }
        Ok((x + delta)?.clamp(-1f32, 1f32)?.detach())
    }

    /// `n` searches of `sample_steps` from uniform noise.
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let start = uniform(n, rng, &self.device)?;
        self.search(&start, self.cfg.sample_steps, None, rng, |_, _| Ok(()))
    }

    /// The step's negatives: M distinct buffer rows (a `reinit` share of them noise
    /// again) moved by the search, and written back to the buffer.
    fn negatives(&self, m: usize, rng: &mut Rng) -> Result<Tensor> {
        let b = self.cfg.buffer;
        anyhow::ensure!(
            m <= b,
            "dpredict's buffer ({b}) holds fewer negatives than a batch ({m})"
        );
        let rows: Vec<u32> = rand::seq::index::sample(rng, b, m)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let fresh: Vec<f32> = (0..m)
            .map(|_| f32::from(rng.random::<f64>() < self.cfg.reinit))
            .collect();
        let idx = Tensor::new(rows, &self.device)?;
        let buffer = self.buffer_var()?;
        let kept = buffer.as_tensor().index_select(&idx, 0)?;
        let noise = uniform(m, rng, &self.device)?;
        let fresh = Tensor::from_vec(fresh, (m, 1, 1, 1), &self.device)?;
        // fresh * noise + (1 - fresh) * kept
        let start =
            (kept.broadcast_mul(&fresh.affine(-1.0, 1.0)?)? + noise.broadcast_mul(&fresh)?)?;
        let neg = self.search(&start, self.cfg.langevin_steps, None, rng, |_, _| Ok(()))?;
        let old = buffer.as_tensor().index_select(&idx, 0)?;
        buffer.set(&buffer.as_tensor().index_add(&idx, &(&neg - old)?, 0)?)?;
        Ok(neg)
    }
}

impl Model for Dpredict {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("d", &self.d_vars)]
    }

    fn buffers(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("buffer", &self.buffer_vars)]
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase::new("d", &["d"])]
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        if phase != "d" {
            return Err(no_such_phase(self.kind(), phase));
        }
        let mut x = step.real()?.images.clone();
        if self.cfg.data_noise > 0.0 {
            let eps = (gaussian(x.dim(0)?, step.rng, &self.device)? * self.cfg.data_noise)?;
            x = (x + eps)?.clamp(-1f32, 1f32)?;
        }
        let neg = self.negatives(x.dim(0)?, step.rng)?;
        let (sr, sn) = (self.d.forward(&x)?, self.d.forward(&neg)?);
        let loss = ((sn.mean_all()? - sr.mean_all()?)?
            + ((sr.sqr()?.mean_all()? + sn.sqr()?.mean_all()?)? * self.cfg.alpha)?)?;
        Ok(StepOutput::new(loss)
            .with("score_real", sr.mean_all()?.to_scalar::<f32>()?)
            .with("score_negative", sn.mean_all()?.to_scalar::<f32>()?))
    }

    /// 64 searches from noise, and the path of eight of them.
    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>> {
        const SNAPSHOTS: usize = 8;
        let start = uniform(64, rng, &self.device)?;
        let steps = self.cfg.sample_steps;
        let mut path = vec![start.narrow(0, 0, 8)?];
        let every = steps.div_ceil(SNAPSHOTS - 1).max(1);
        let found = self.search(&start, steps, None, rng, |i, x| {
            if i % every == 0 || i == steps {
                path.push(x.narrow(0, 0, 8)?);
            }
            Ok(())
        })?;
        // One row per chain, one column per snapshot.
        let path = Tensor::stack(&path, 1)?;
        let cols = path.dim(1)?;
        Ok(vec![
            Figure {
                name: "samples".into(),
                images: found,
                cols: 8,
            },
            Figure {
                name: "search_path".into(),
                images: path.flatten_to(1)?,
                cols,
            },
        ])
    }

    fn generator(&self) -> Option<&dyn Generator> {
        Some(self)
    }

    fn completer(&self) -> Option<&dyn Completer> {
        Some(self)
    }
}

impl Completer for Dpredict {
    /// The search over the free pixels only, started from uniform noise there.
    fn complete(&self, images: &Tensor, free: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let noise = uniform(images.dim(0)?, rng, &self.device)?;
        let start =
            (images.broadcast_mul(&free.affine(-1.0, 1.0)?)? + noise.broadcast_mul(free)?)?;
        self.search(
            &start,
            self.cfg.sample_steps,
            Some(free),
            rng,
            |_, _| Ok(()),
        )
    }
}

impl Generator for Dpredict {
    /// The search x* = argmax_x D(x) from uniform noise.
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor> {
        crate::unconditional(Self::KIND, class)?;
        self.sample(n, rng)
    }
}

impl Registered for Dpredict {
    type Config = DpredictConfig;
    const KIND: &'static str = "dpredict";
    const ABOUT: &'static str =
        "The discriminator as a predictor: D trained alone against its own search, x* = argmax_x D(x)";
    /// Three epochs: the searches from noise draw digits (docs/PREDICTOR.md, seeds 0-2);
    /// each step is 61 passes of D, about 12 minutes an epoch on the 2-core VM beside
    /// another training.
    const EPOCHS: usize = 3;
    fn build(cfg: DpredictConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
}
