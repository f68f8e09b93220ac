//! InfoGAN (Chen et al. 2016): a GAN whose generator input is split into noise z and
//! latent codes c, with a lower bound on the mutual information I(c; G(z, c)) maximised
//! through an auxiliary distribution Q(c | x) that shares the discriminator's trunk.
//!
//! Algorithm, per mini-batch:
//! 1. D: ascend log D(x) + log(1 - D(G(z, c))) (fakes detached), D unconditional.
//! 2. G and Q: descend the generator loss + lambda * L_I, where
//!    L_I = CE(c_cat, Q_cat(G(z, c))) + lambda_cont * NLL(c_cont | Q_cont(G(z, c))).
//!
//! H(c) - L_cat is the variational lower bound on I(c_cat; G(z, c)); it reaches
//! H(c) = ln K when Q recovers the category from every sample.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use gan_core::fast::layers::{
    batch_norm, conv2d, conv_transpose2d, frozen, linear, BatchNorm, Conv2d, ConvSpec,
    ConvTranspose2d, Linear,
};
use serde::{Deserialize, Serialize};

use crate::registry::Registered;
use gan_core::engine::{no_such_phase, Classifier, Conditioning};
use gan_core::init::{reinit, WeightInit};
use gan_core::loss::{
    binary_accuracy, cross_entropy, discriminator_loss, gaussian_nll, generator_loss, GeneratorLoss,
};
use gan_core::prior::{one_hot, rng, Latent, LatentSample, LatentSpec, Rng};
use gan_core::{Batch, Every, Figure, Model, Phase, Step, StepOutput};

/// The mutual-information term of one batch and its parts.
struct InfoLoss {
    l_info: Tensor,
    l_cat: Tensor,
    l_cont: Option<Tensor>,
    /// H(c) of the categorical codes, for the lower bound H(c) - L_cat.
    entropy: f64,
}

/// Settings of InfoGAN; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct InfoganConfig {
    /// Width of the incompressible noise z ~ U(-range, range).
    #[arg(long, default_value_t = 62)]
    pub z_dim: usize,
    /// Half-width of z's prior. Below 1 the noise can explain less of the data, so G
    /// has to put the big variations (which digit) into the codes (ClusterGAN's
    /// small-variance noise). 1 is not written, so older runs' checkpoints still match.
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub noise_range: f32,
    /// Steps over which z's half-width grows linearly from --noise-start to
    /// --noise-range (0: no warm-up). Small noise first makes G spend the codes on the
    /// largest variation (the digit) before the noise may carry style. 0 is not written.
    #[arg(long, default_value_t = 0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub noise_warmup: usize,
    /// z's half-width at step 1 of the warm-up.
    #[arg(long, default_value_t = 0.1)]
    #[serde(default = "tenth", skip_serializing_if = "is_tenth")]
    pub noise_start: f32,
    /// Classes of each categorical code, comma-separated (the paper: one code of 10).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub categorical: Vec<usize>,
    /// Number of continuous codes ~ U(-range, range) (the paper: 2).
    #[arg(long, default_value_t = 2)]
    pub continuous: usize,
    /// Half-width of the continuous codes' prior.
    #[arg(long, default_value_t = 1.0)]
    pub continuous_range: f32,
    /// Weight of the mutual-information term (0: a regular GAN).
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
    /// Steps at the start with no mutual-information term (lambda 0): G first learns
    /// the digits as a regular GAN, so the codes are then laid onto modes G already
    /// draws rather than onto the blobs of the first steps. 0 is not written.
    #[arg(long, default_value_t = 0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub lambda_delay: usize,
    /// Steps after --lambda-delay over which lambda grows linearly from 0 to --lambda
    /// (0: at once). 0 is not written.
    #[arg(long, default_value_t = 0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub lambda_warmup: usize,
    /// Weight of the continuous codes' NLL inside L_I; larger values make them change
    /// digit identity.
    #[arg(long, default_value_t = 0.1)]
    pub lambda_cont: f64,
    /// Q predicts only means for the continuous codes (unit variance) instead of means
    /// and log-variances.
    #[arg(long)]
    pub fixed_std: bool,
    /// Generator loss: saturating or non-saturating.
    #[arg(long, default_value = "non-saturating")]
    pub g_loss: GeneratorLoss,
    /// D's step also descends lambda * L_I on its fakes, so the trunk it shares with Q
    /// learns features that carry the codes (the paper's code does this); without it
    /// only Q's head and G learn from L_I. Runs saved before the option read as false,
    /// and false is not written, so their checkpoints still match.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub info_in_d: bool,
    /// Learning rate of G and Q (D uses --lr). A training setting: the run keeps it
    /// among its per-network learning rates, not in the model's config.
    #[arg(long, default_value_t = 1e-3)]
    #[serde(skip, default = "crate::registry::g_lr")]
    pub lr_g: f64,
}

fn one() -> f32 {
    1.0
}

fn is_one(x: &f32) -> bool {
    *x == 1.0
}

fn tenth() -> f32 {
    0.1
}

fn is_tenth(x: &f32) -> bool {
    *x == 0.1
}

impl Default for InfoganConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

impl InfoganConfig {
    fn code_width(&self) -> usize {
        self.categorical.iter().sum::<usize>() + self.continuous
    }

    fn q_width(&self) -> usize {
        self.categorical.iter().sum::<usize>()
            + self.continuous * if self.fixed_std { 1 } else { 2 }
    }
}

fn bn(n: usize, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    batch_norm(n, vb)
}

/// G(z, c): FC 1024, FC 7x7x128, up-convolutions to 14x14x64 and 28x28x1 (paper, C.1).
struct Generator {
    fc1: Linear,
    bn1: BatchNorm,
    fc2: Linear,
    bn2: BatchNorm,
    up1: ConvTranspose2d,
    bn3: BatchNorm,
    up2: ConvTranspose2d,
}

impl Generator {
    fn new(input: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let up = ConvSpec {
            padding: 1,
            output_padding: 0,
            stride: 2,
        };
        Ok(Self {
            fc1: linear(input, 1024, vb.pp("fc1"))?,
            bn1: bn(1024, vb.pp("bn1"))?,
            fc2: linear(1024, 7 * 7 * 128, vb.pp("fc2"))?,
            bn2: bn(7 * 7 * 128, vb.pp("bn2"))?,
            up1: conv_transpose2d(128, 64, 4, up, vb.pp("up1"))?,
            bn3: bn(64, vb.pp("bn3"))?,
            up2: conv_transpose2d(64, 1, 4, up, vb.pp("up2"))?,
        })
    }

    fn forward_t(&self, zc: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let b = zc.dim(0)?;
        let x = self.bn1.forward_act(&self.fc1.forward(zc)?, train, 0.0)?;
        let x = self.bn2.forward_act(&self.fc2.forward(&x)?, train, 0.0)?;
        let x = x.reshape((b, 128, 7, 7))?;
        let x = self.bn3.forward_act(&self.up1.forward(&x)?, train, 0.0)?;
        gan_core::fast::nn::tanh(&self.up2.forward(&x)?)
    }
}

/// The trunk D and Q share: conv 64, conv 128, FC 1024, leaky ReLU (paper, C.1).
struct Trunk {
    c1: Conv2d,
    c2: Conv2d,
    bn2: BatchNorm,
    fc: Linear,
    bn3: BatchNorm,
}

impl Trunk {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let down = ConvSpec {
            padding: 1,
            stride: 2,
            output_padding: 0,
        };
        Ok(Self {
            c1: conv2d(1, 64, 4, down, vb.pp("c1"))?,
            c2: conv2d(64, 128, 4, down, vb.pp("c2"))?,
            bn2: bn(128, vb.pp("bn2"))?,
            fc: linear(7 * 7 * 128, 1024, vb.pp("fc"))?,
            bn3: bn(1024, vb.pp("bn3"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.c1.forward_leaky(x, 0.1)?;
        let x = self.bn2.forward_act(&self.c2.forward(&x)?, train, 0.1)?;
        let x = self.fc.forward(&x.flatten_from(1)?)?;
        self.bn3.forward_act(&x, train, 0.1)
    }
}

/// Q's own layers on top of the trunk: FC 128, then the code parameters.
struct QHead {
    fc: Linear,
    bn: BatchNorm,
    out: Linear,
}

impl QHead {
    fn forward_t(&self, h: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.bn.forward_act(&self.fc.forward(h)?, train, 0.1)?;
        self.out.forward(&x)
    }
}

/// InfoGAN on MNIST: networks `g`, `d` (trunk and real/fake head) and `q` (Q's head).
pub struct Infogan {
    cfg: InfoganConfig,
    prior: LatentSpec,
    g_vars: VarMap,
    d_vars: VarMap,
    q_vars: VarMap,
    g: Generator,
    trunk: Trunk,
    d_head: Linear,
    q_head: QHead,
    device: Device,
}

/// What Q says about a batch of images.
pub struct QOutput {
    /// Logits of each categorical code, `[B, K_i]`.
    pub categorical: Vec<Tensor>,
    /// Means of the continuous codes, `[B, n]` (None without continuous codes).
    pub mean: Option<Tensor>,
    /// Log-variances of the continuous codes (zeros with `fixed_std`).
    pub log_var: Option<Tensor>,
}

impl Infogan {
    /// Builds the networks on `device`, weights drawn N(0, 0.02) from `seed`.
    pub fn new(cfg: InfoganConfig, device: &Device, seed: u64) -> Result<Self> {
        if cfg.z_dim == 0 || cfg.categorical.is_empty() || cfg.categorical.contains(&0) {
            bail!("infogan needs z_dim > 0 and at least one categorical code of at least one class")
        }
        let positive = |x: f32| x > 0.0 && x.is_finite();
        if !positive(cfg.continuous_range)
            || !positive(cfg.noise_range)
            || !positive(cfg.noise_start)
            || cfg.lambda < 0.0
            || cfg.lambda_cont < 0.0
        {
            bail!(
                "infogan needs --continuous-range, --noise-range and --noise-start > 0 and \
                 non-negative lambdas"
            )
        }
        let (g_vars, d_vars, q_vars) = (VarMap::new(), VarMap::new(), VarMap::new());
        let vb = |v: &VarMap| VarBuilder::from_varmap(v, DType::F32, device);
        let g = Generator::new(cfg.z_dim + cfg.code_width(), vb(&g_vars))?;
        let trunk = Trunk::new(vb(&d_vars).pp("trunk"))?;
        let d_head = linear(1024, 1, vb(&d_vars).pp("head"))?;
        let q_head = QHead {
            fc: linear(1024, 128, vb(&q_vars).pp("fc"))?,
            bn: bn(128, vb(&q_vars).pp("bn"))?,
            out: linear(128, cfg.q_width(), vb(&q_vars).pp("out"))?,
        };
        let mut r = rng(seed, gan_core::prior::RngStream::Init);
        for vars in [&g_vars, &d_vars, &q_vars] {
            reinit(vars, WeightInit::Normal { std: 0.02 }, &mut r)?;
        }
        let r = cfg.continuous_range;
        let mut blocks = vec![Latent::Uniform {
            dim: cfg.z_dim,
            low: -cfg.noise_range,
            high: cfg.noise_range,
        }];
        blocks.extend(cfg.categorical.iter().map(|&k| Latent::Categorical { k }));
        if cfg.continuous > 0 {
            blocks.push(Latent::Uniform {
                dim: cfg.continuous,
                low: -r,
                high: r,
            });
        }
        Ok(Self {
            prior: LatentSpec(blocks),
            cfg,
            g_vars,
            d_vars,
            q_vars,
            g,
            trunk,
            d_head,
            q_head,
            device: device.clone(),
        })
    }

    /// The settings.
    pub fn config_ref(&self) -> &InfoganConfig {
        &self.cfg
    }

    /// D's logit and Q's output for images, through one pass of the shared trunk.
    pub fn discriminate(&self, x: &Tensor, train: bool) -> Result<(Tensor, QOutput)> {
        let h = self.trunk.forward_t(x, train)?;
        let logit = self.d_head.forward(&h)?.squeeze(1)?;
        Ok((logit, self.q_from(&h, train)?))
    }

    /// As [`Infogan::discriminate`] for the generator step, which updates G and Q only:
    /// D's trunk and head are passed through without gradients for their weights.
    fn discriminate_for_g(&self, x: &Tensor) -> Result<(Tensor, QOutput)> {
        let (h, logit) = frozen(|| -> Result<_> {
            let h = self.trunk.forward_t(x, true)?;
            let logit = self.d_head.forward(&h)?.squeeze(1)?;
            Ok((h, logit))
        })?;
        Ok((logit, self.q_from(&h, true)?))
    }

    fn q_from(&self, h: &Tensor, train: bool) -> Result<QOutput> {
        let out = self.q_head.forward_t(h, train)?;
        let mut offset = 0;
        let mut categorical = Vec::new();
        for &k in &self.cfg.categorical {
            categorical.push(out.narrow(1, offset, k)?);
            offset += k;
        }
        let n = self.cfg.continuous;
        let (mean, log_var) = if n == 0 {
            (None, None)
        } else if self.cfg.fixed_std {
            let mean = out.narrow(1, offset, n)?;
            let lv = mean.zeros_like()?;
            (Some(mean), Some(lv))
        } else {
            (
                Some(out.narrow(1, offset, n)?),
                Some(out.narrow(1, offset + n, n)?),
            )
        };
        Ok(QOutput {
            categorical,
            mean,
            log_var,
        })
    }

    /// L_I of Q's output on samples drawn with known codes: the categorical codes'
    /// cross-entropy plus lambda_cont times the continuous codes' Gaussian NLL.
    fn info_loss(&self, q: &QOutput, sample: &LatentSample) -> Result<InfoLoss> {
        let mut l_cat = Tensor::zeros((), DType::F32, &self.device)?;
        let mut entropy = 0.0;
        for ((logits, classes), &k) in q
            .categorical
            .iter()
            .zip(&sample.categories)
            .zip(&self.cfg.categorical)
        {
            let targets = Tensor::new(classes.as_slice(), &self.device)?;
            l_cat = (l_cat + cross_entropy(logits, &targets)?)?;
            entropy += (k as f64).ln();
        }
        let mut l_info = l_cat.clone();
        let mut l_cont = None;
        if let (Some(mean), Some(lv)) = (&q.mean, &q.log_var) {
            let width = sample.z.dim(1)?;
            let c = sample
                .z
                .narrow(1, width - self.cfg.continuous, self.cfg.continuous)?;
            let nll = gaussian_nll(&c, mean, lv)?;
            l_info = (l_info + (&nll * self.cfg.lambda_cont)?)?;
            l_cont = Some(nll);
        }
        Ok(InfoLoss {
            l_info,
            l_cat,
            l_cont,
            entropy,
        })
    }

    /// The first categorical code Q assigns to each image: InfoGAN as an unsupervised
    /// classifier. Images `[N, 1, 28, 28]` in [-1, 1]; batched to bound memory.
    pub fn classify(&self, images: &Tensor) -> Result<Vec<u32>> {
        let n = images.dim(0)?;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(500) {
            let x = images.narrow(0, start, 500.min(n - start))?;
            let (_, q) = self.discriminate(&x, false)?;
            out.extend(q.categorical[0].argmax(D::Minus1)?.to_vec1::<u32>()?);
        }
        Ok(out)
    }

    /// Generator input for explicit codes: noise rows `z` `[B, z_dim]`, the class of the
    /// first categorical code per row (others drawn at random), continuous codes `[B, n]`.
    fn input(&self, z: &Tensor, classes: &[u32], cont: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let b = classes.len();
        let mut parts = vec![
            z.clone(),
            one_hot(classes, self.cfg.categorical[0], &self.device)?,
        ];
        for &k in &self.cfg.categorical[1..] {
            parts.push(
                LatentSpec(vec![Latent::Categorical { k }])
                    .sample(b, rng, &self.device)?
                    .z,
            );
        }
        if self.cfg.continuous > 0 {
            parts.push(cont.clone());
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    fn noise(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        Ok(LatentSpec(vec![self.prior.0[0].clone()])
            .sample(n, rng, &self.device)?
            .z)
    }

    /// Figure 2 of the paper: (a) one row per category, noise fixed per column;
    /// (c), (d) one continuous code swept from -2 to 2 along each row, the category fixed
    /// per row. `order` lists the categories top to bottom (e.g. matched to digits 0-9).
    pub fn traversals(&self, order: &[u32], rng: &mut Rng) -> Result<Vec<Figure>> {
        let (rows, cols) = (order.len(), 10);
        let n = rows * cols;
        let cont_zero = Tensor::zeros((n, self.cfg.continuous), DType::F32, &self.device)?;
        // (a): column j uses noise j in every row.
        let z_cols = self.noise(cols, rng)?;
        let z = z_cols.repeat((rows, 1))?;
        let classes: Vec<u32> = order.iter().flat_map(|&c| [c; 10]).collect();
        let x = self
            .g
            .forward_t(&self.input(&z, &classes, &cont_zero, rng)?, false)?;
        let mut figs = vec![Figure {
            name: "c1_categories".into(),
            images: x,
            cols,
        }];
        // (c), (d): one noise vector per row, the swept code in columns.
        let z_rows = self.noise(rows, rng)?;
        let z = z_rows
            .unsqueeze(1)?
            .repeat((1, cols, 1))?
            .reshape((n, self.cfg.z_dim))?;
        for i in 0..self.cfg.continuous {
            let mut cont = vec![0f32; n * self.cfg.continuous];
            for r in 0..rows {
                for c in 0..cols {
                    cont[(r * cols + c) * self.cfg.continuous + i] =
                        -2.0 + 4.0 * c as f32 / (cols - 1) as f32;
                }
            }
            let cont = Tensor::from_vec(cont, (n, self.cfg.continuous), &self.device)?;
            let x = self
                .g
                .forward_t(&self.input(&z, &classes, &cont, rng)?, false)?;
            figs.push(Figure {
                name: format!("c{}_continuous", i + 2),
                images: x,
                cols,
            });
        }
        Ok(figs)
    }
}

impl Infogan {
    /// Codes and noise for training step `t` (from 1): the prior's, the noise shrunk
    /// during the warm-up.
    fn training_sample(&self, m: usize, t: u64, rng: &mut Rng) -> Result<LatentSample> {
        let mut sample = self.prior.sample(m, rng, &self.device)?;
        let scale = self.noise_scale(t);
        if scale != 1.0 {
            let z = sample.z.narrow(1, 0, self.cfg.z_dim)?.affine(scale, 0.0)?;
            let rest = sample
                .z
                .narrow(1, self.cfg.z_dim, sample.z.dim(1)? - self.cfg.z_dim)?;
            sample.z = Tensor::cat(&[&z, &rest], 1)?;
        }
        Ok(sample)
    }

    /// The factor on the prior's noise at training step `t` (from 1): from
    /// --noise-start / --noise-range at step 1 to 1 at the end of the warm-up, 1 after it
    /// and without one.
    pub fn noise_scale(&self, t: u64) -> f64 {
        let w = self.cfg.noise_warmup as u64;
        if t > w {
            return 1.0;
        }
        let f = t.saturating_sub(1) as f64 / w as f64;
        let (start, end) = (self.cfg.noise_start as f64, self.cfg.noise_range as f64);
        (start + (end - start) * f) / end
    }

    /// The weight of L_I at training step `t` (from 1): 0 during --lambda-delay, then
    /// growing linearly to --lambda over --lambda-warmup steps (step delay + i has
    /// i / warmup of it), --lambda after.
    pub fn lambda_at(&self, t: u64) -> f64 {
        let (delay, warmup) = (self.cfg.lambda_delay as u64, self.cfg.lambda_warmup as u64);
        if t <= delay {
            return 0.0;
        }
        let into = t - delay;
        if into >= warmup {
            self.cfg.lambda
        } else {
            self.cfg.lambda * into as f64 / warmup as f64
        }
    }

    /// D's line: ascend log D(x) + log(1 - D(G(z, c))) (plus, with `info_in_d`,
    /// descend lambda * L_I through the trunk it shares with Q).
    fn d_step(&self, batch: &Batch, t: u64, rng: &mut Rng) -> Result<StepOutput> {
        let m = batch.images.dim(0)?;
        let (real, _) = self.discriminate(&batch.images, true)?;
        let sample = self.training_sample(m, t, rng)?;
        let fake = self.g.forward_t(&sample.z, true)?.detach();
        let (fake_logit, q) = self.discriminate(&fake, true)?;
        let mut loss = discriminator_loss(&real, &fake_logit)?;
        let mut out = StepOutput::new(loss.clone());
        let lambda = self.lambda_at(t);
        if self.cfg.info_in_d && lambda > 0.0 {
            let info = self.info_loss(&q, &sample)?;
            loss = (loss + (&info.l_info * lambda)?)?;
            out = StepOutput::new(loss).with("d_l_info", info.l_info.to_scalar::<f32>()?);
        }
        Ok(out
            .with("d_real_acc", binary_accuracy(&real, true)?)
            .with("d_fake_acc", binary_accuracy(&fake_logit, false)?))
    }

    /// G and Q's line: descend G's loss + lambda * L_I on fresh codes.
    fn g_step(&self, m: usize, t: u64, rng: &mut Rng) -> Result<StepOutput> {
        let sample = self.training_sample(m, t, rng)?;
        let fake = self.g.forward_t(&sample.z, true)?;
        let (logit, q) = self.discriminate_for_g(&fake)?;
        let adv = generator_loss(&logit, self.cfg.g_loss)?;
        let info = self.info_loss(&q, &sample)?;
        let loss = (adv.clone() + (&info.l_info * self.lambda_at(t))?)?;
        let cat = info.l_cat.to_scalar::<f32>()?;
        let mut out = StepOutput::new(loss)
            .with("g_adv", adv.to_scalar::<f32>()?)
            .with("l_info", info.l_info.to_scalar::<f32>()?)
            .with("l_cat", cat)
            .with("mi_lower_bound", info.entropy as f32 - cat);
        if let Some(l_cont) = &info.l_cont {
            out = out.with("l_cont", l_cont.to_scalar::<f32>()?);
        }
        Ok(out)
    }
}

impl Model for Infogan {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![
            ("g", &self.g_vars),
            ("d", &self.d_vars),
            ("q", &self.q_vars),
        ]
    }

    fn averaged(&self) -> Vec<&'static str> {
        vec!["g"]
    }

    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("d", &["d"]),
            Phase::new("g", &["g", "q"]).every(Every::K),
        ]
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        let batch = step.real()?;
        match phase {
            "d" => self.d_step(batch, step.number(), step.rng),
            "g" => self.g_step(batch.len()?, step.number(), step.rng),
            other => Err(no_such_phase(self.kind(), other)),
        }
    }

    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>> {
        let order: Vec<u32> = (0..self.cfg.categorical[0] as u32).collect();
        self.traversals(&order, rng)
    }

    fn figures_in_order(&self, classes: &[u32], rng: &mut Rng) -> Result<Vec<Figure>> {
        self.traversals(classes, rng)
    }

    fn generator(&self) -> Option<&dyn gan_core::Generator> {
        Some(self)
    }

    fn classifier(&self) -> Option<&dyn Classifier> {
        Some(self)
    }
}

impl gan_core::Generator for Infogan {
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor> {
        let k = self.cfg.categorical[0] as u32;
        let Some(c) = class else {
            let zc = self.prior.sample(n, rng, &self.device)?.z;
            return Ok(self.g.forward_t(&zc, false)?);
        };
        if c >= k {
            bail!("category {c} out of range: the first categorical code has {k} classes")
        }
        let r = self.cfg.continuous_range;
        let cont = LatentSpec(vec![Latent::Uniform {
            dim: self.cfg.continuous.max(1),
            low: -r,
            high: r,
        }])
        .sample(n, rng, &self.device)?
        .z
        .narrow(1, 0, self.cfg.continuous)?;
        let z = self.noise(n, rng)?;
        Ok(self
            .g
            .forward_t(&self.input(&z, &vec![c; n], &cont, rng)?, false)?)
    }

    fn conditioning(&self) -> Conditioning {
        Conditioning::Code(self.cfg.categorical[0])
    }
}

/// Q's first categorical code, read as a classifier found without labels.
impl Classifier for Infogan {
    fn classify(&self, images: &Tensor) -> Result<Vec<u32>> {
        Infogan::classify(self, images)
    }

    fn classes(&self) -> usize {
        self.cfg.categorical[0]
    }

    fn supervised(&self) -> bool {
        false
    }

    /// softmax of Q's first categorical code.
    fn probabilities(&self, images: &Tensor) -> Result<Option<Tensor>> {
        let n = images.dim(0)?;
        let mut parts = Vec::new();
        for start in (0..n).step_by(500) {
            let x = images.narrow(0, start, 500.min(n - start))?;
            let (_, q) = self.discriminate(&x, false)?;
            parts.push(candle_nn::ops::softmax_last_dim(
                &q.categorical[0].contiguous()?,
            )?);
        }
        Ok(Some(Tensor::cat(&parts, 0)?))
    }
}

impl Registered for Infogan {
    type Config = InfoganConfig;
    const KIND: &'static str = "infogan";
    const ABOUT: &'static str =
        "InfoGAN: G(z, c) with categorical and continuous codes, Q(c|x) on D's trunk";
    fn build(cfg: InfoganConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
    fn network_lr(cfg: &InfoganConfig) -> Vec<(&'static str, f64)> {
        vec![("g", cfg.lr_g), ("q", cfg.lr_g)]
    }
}

pub use gan_core::eval::metrics::CodeEval;

impl Infogan {
    /// Scores c1 as an unsupervised classifier of `images` (`[N, 1, 28, 28]` in [-1, 1])
    /// with true `labels`: argmax Q(c1 | x), matched to digits by the Hungarian algorithm.
    pub fn evaluate_codes(&self, images: &Tensor, labels: &[u8]) -> Result<CodeEval> {
        let categories = self.classify(images)?;
        CodeEval::new(&categories, labels, self.cfg.categorical[0], 10)
    }
}
