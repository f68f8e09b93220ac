//! Domain-adversarial training (Ganin and Lempitsky 2015; Ganin et al. 2016): a feature
//! extractor F, a label predictor C on F trained on labelled source digits (MNIST), and a
//! domain classifier D on F that tells source from target images. F learns to serve C
//! and to fail D, so that features of unlabelled target digits (MNIST-M-style colour
//! digits, or UCI's scanned ones) land where C already reads them: "a big network,
//! different parts with different goals".
//!
//! Every step (M source pairs (x_s, y_s), M unlabelled target images x_t; p the fraction
//! of the run done):
//! - `joint` (the paper): one update of F, C and D on
//!   CE(C(F(x_s)), y_s) + BCE(D(R_lambda(F(x))), domain(x)) over x in x_s and x_t, R the
//!   gradient reversal: D descends the domain loss, F ascends it, weighted by
//!   lambda_p = 2 / (1 + exp(-gamma p)) - 1;
//! - `alternating` (the notes' remedy for unstable joint training): D's phase on the
//!   features without their graph, then F and C's phase on CE + lambda_p times D's loss
//!   with the domains swapped (F wants D to call each image the other domain).
//!
//! The learning rate anneals as mu_p = mu_0 / (1 + alpha p)^beta. The baselines with the
//! same networks: `source-only` (C and F on source labels alone: the lower bound) and
//! `target-only` (on the target's own labels: the upper bound).

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::gan::Mlp;
use crate::registry::Registered;
use gan_core::engine::no_such_phase;
use gan_core::fast::layers::{
    batch_norm, conv2d, frozen, grad_reverse, BatchNorm, Conv2d, ConvSpec,
};
use gan_core::fast::nn::max_pool2d;
use gan_core::loss::{bce_with_logits, cross_entropy};
use gan_core::prior::Rng;
use gan_core::{DomainAdapter, Figure, Model, Phase, Source, Step, StepOutput, Stream};

/// Digits.
const CLASSES: usize = 10;

/// The domain MNIST is adapted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// MNIST-M-style: MNIST digits blended with patches of colour photographs.
    Mnistm,
    /// UCI's 8x8 scanned digits, upsampled to 28x28.
    Uci,
}

impl Target {
    /// gan-data's name of the domain.
    pub fn name(self) -> &'static str {
        match self {
            Target::Mnistm => "mnistm",
            Target::Uci => "uci",
        }
    }

    /// Channels of its images (MNIST is repeated to match).
    pub fn channels(self) -> usize {
        match self {
            Target::Mnistm => 3,
            Target::Uci => 1,
        }
    }
}

/// What trains F and C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Source labels plus the domain-adversarial loss.
    Dann,
    /// Source labels only: the lower bound.
    SourceOnly,
    /// The target's labels: the upper bound.
    TargetOnly,
}

/// How the adversarial game is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// One update of F, C and D through the gradient-reversal layer.
    Joint,
    /// D's update, then F and C's with the domain labels swapped.
    Alternating,
}

/// Settings of domain-adversarial training; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct DannConfig {
    /// The domain to adapt to.
    #[arg(long, value_enum, default_value = "mnistm")]
    pub target: Target,
    /// dann, or a baseline with the same networks.
    #[arg(long, value_enum, default_value = "dann")]
    pub method: Method,
    /// joint (gradient reversal, the paper) or alternating phases.
    #[arg(long, value_enum, default_value = "joint")]
    pub schedule: Schedule,
    /// gamma of lambda_p = 2 / (1 + exp(-gamma p)) - 1.
    #[arg(long, default_value_t = 10.0)]
    pub gamma: f64,
    /// alpha of the annealed learning rate mu_0 / (1 + alpha p)^beta (0: constant).
    #[arg(long, default_value_t = 10.0)]
    pub lr_alpha: f64,
    /// beta of the annealed learning rate.
    #[arg(long, default_value_t = 0.75)]
    pub lr_beta: f64,
    /// Hidden widths of D, comma-separated. The paper's MNIST D has one layer of 100;
    /// its features then fool that D without hiding the domain (docs/DOMAINS.md).
    #[arg(long, value_delimiter = ',', default_value = "1024,1024")]
    pub d_hidden: Vec<usize>,
    /// Batch norm after each of F's convolutions, as the common PyTorch ports have
    /// (`--batch-norm false`: the paper's F).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_norm: bool,
    /// w, the largest weight of the domain loss in F's objective: lambda_p is scaled by
    /// it (the gradient reversal's weight; F's fooling weight with `alternating`). D's own
    /// loss keeps weight 1. Below 1 for a small target that D can tell apart outright.
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub domain_weight: f64,
    /// Weight of the entropy of C's predictions on the target images, minimised by F
    /// and C (0: none, the paper): pushes the target's features away from C's decision
    /// boundaries (conditional entropy minimisation, as in Long et al. 2016 and Shu et
    /// al.'s VADA, 2018).
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub target_entropy: f64,
    /// Weight of the entropy of C's mean prediction over a target batch, maximised by F
    /// and C (0: none): with `--target-entropy`, the information-maximisation loss (Gomes
    /// et al. 2010; Liang et al.'s SHOT, 2020), which keeps the entropy term from
    /// collapsing the target onto a few classes.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub target_diversity: f64,
    /// Ramp the target entropy's weight up with lambda_p's schedule
    /// (2 / (1 + exp(-gamma p)) - 1 times `--target-entropy`) instead of holding it
    /// constant: C first learns the digits from the source, so that the entropy does not
    /// collapse the target onto one class before C reads it.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entropy_ramp: bool,
    /// D's learning rate as a multiple of mu_0 (annealed alike).
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub d_lr_scale: f64,
    /// mu_0, the learning rate of F, C and D at the start. A training setting: the run
    /// keeps it among its per-network learning rates, not in the model's config.
    #[arg(long, default_value_t = 1e-3)]
    #[serde(skip, default = "default_lr0")]
    pub lr0: f64,
}

fn default_lr0() -> f64 {
    1e-3
}

// The settings added for UCI are left out of a run's config at their defaults, so that
// the runs (and checkpoints) written before them still load and compare equal.
fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl Default for DannConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// Ganin et al.'s MNIST feature extractor: two 5x5 convolutions (32, 48 channels), each
/// with 2x2 max pooling and ReLU (batch norm before the ReLU with `--batch-norm`):
/// 28x28 -> 12x12x32 -> 4x4x48 = 768 features.
struct Features {
    c1: Conv2d,
    c2: Conv2d,
    bn: Option<[BatchNorm; 2]>,
}

impl Features {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let layer = |c: &Conv2d, x: &Tensor, i: usize| match &self.bn {
            Some(bn) => bn[i].forward_act(&c.forward(x)?, train, 0.0),
            None => c.forward_leaky(x, 0.0),
        };
        let x = max_pool2d(&layer(&self.c1, x, 0)?, 2)?;
        max_pool2d(&layer(&self.c2, &x, 1)?, 2)?.flatten_from(1)
    }
}

/// F, C (768 -> 100 -> 100 -> 10) and D (768 -> 100 -> 1), as in Ganin et al.'s MNIST
/// experiments, each with its own variables.
pub struct Dann {
    cfg: DannConfig,
    f_vars: VarMap,
    c_vars: VarMap,
    d_vars: VarMap,
    f: Features,
    c: Mlp,
    d: Mlp,
    device: Device,
}

impl Dann {
    /// Builds the three networks on `device` with PyTorch's default initialisation,
    /// drawn from `seed`.
    pub fn new(cfg: DannConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(
            cfg.gamma >= 0.0 && cfg.lr_alpha >= 0.0 && cfg.lr_beta >= 0.0,
            "dann needs --gamma, --lr-alpha and --lr-beta >= 0 (got {}, {}, {})",
            cfg.gamma,
            cfg.lr_alpha,
            cfg.lr_beta
        );
        anyhow::ensure!(
            cfg.domain_weight >= 0.0
                && cfg.target_entropy >= 0.0
                && cfg.target_diversity >= 0.0
                && cfg.d_lr_scale > 0.0,
            "dann needs --domain-weight, --target-entropy and --target-diversity >= 0 and \
             --d-lr-scale > 0 (got {}, {}, {}, {})",
            cfg.domain_weight,
            cfg.target_entropy,
            cfg.target_diversity,
            cfg.d_lr_scale
        );
        anyhow::ensure!(
            !cfg.d_hidden.contains(&0),
            "dann needs every --d-hidden width > 0, got {:?}",
            cfg.d_hidden
        );
        let (f_vars, c_vars, d_vars) = (VarMap::new(), VarMap::new(), VarMap::new());
        let vb = |v: &VarMap| VarBuilder::from_varmap(v, DType::F32, device);
        let valid = ConvSpec {
            padding: 0,
            stride: 1,
            output_padding: 0,
        };
        let f = Features {
            c1: conv2d(cfg.target.channels(), 32, 5, valid, vb(&f_vars).pp("c1"))?,
            c2: conv2d(32, 48, 5, valid, vb(&f_vars).pp("c2"))?,
            bn: match cfg.batch_norm {
                true => Some([
                    batch_norm(32, vb(&f_vars).pp("bn1"))?,
                    batch_norm(48, vb(&f_vars).pp("bn2"))?,
                ]),
                false => None,
            },
        };
        let c = Mlp::relu(&[768, 100, 100, CLASSES], vb(&c_vars))?;
        let d_widths: Vec<usize> = [768]
            .into_iter()
            .chain(cfg.d_hidden.iter().copied())
            .chain([1])
            .collect();
        let d = Mlp::relu(&d_widths, vb(&d_vars))?;
        let mut r = gan_core::prior::rng(seed, gan_core::prior::RngStream::Init);
        for v in [&f_vars, &c_vars, &d_vars] {
            gan_core::init::reinit(v, gan_core::init::WeightInit::FanInUniform, &mut r)?;
        }
        Ok(Self {
            cfg,
            f_vars,
            c_vars,
            d_vars,
            f,
            c,
            d,
            device: device.clone(),
        })
    }

    /// lambda_p, the weight of the domain loss in F's objective at `progress` p
    /// (`--domain-weight` times the paper's schedule).
    pub fn lambda(&self, progress: f64) -> f64 {
        self.cfg.domain_weight * self.ramp(progress)
    }

    /// The paper's schedule 2 / (1 + exp(-gamma p)) - 1, from 0 to nearly 1.
    fn ramp(&self, progress: f64) -> f64 {
        2.0 / (1.0 + (-self.cfg.gamma * progress).exp()) - 1.0
    }

    /// The scale of the target entropy and diversity weights at `progress` p: 1, or
    /// lambda_p's schedule with `--entropy-ramp`.
    fn entropy_weight(&self, progress: f64) -> f64 {
        match self.cfg.entropy_ramp {
            true => self.ramp(progress),
            false => 1.0,
        }
    }

    /// `scale` times (`--target-entropy` times the mean entropy of C's predictions on the
    /// target features `h_t`, minus `--target-diversity` times the entropy of their mean),
    /// or `None` when both weights are 0 (the graph is then the paper's).
    fn entropy_term(&self, h_t: &Tensor, scale: f64) -> Result<Option<Tensor>> {
        let (we, wd) = (self.cfg.target_entropy, self.cfg.target_diversity);
        if we <= 0.0 && wd <= 0.0 {
            return Ok(None);
        }
        let log_p = candle_nn::ops::log_softmax(&self.c.forward(h_t)?, 1)?;
        let p = log_p.exp()?;
        let cond = (&p * &log_p)?.sum(1)?.mean_all()?.neg()?;
        let mean = p.mean(0)?;
        let marg = (&mean * (mean.clamp(1e-8f32, 1f32)?.log()?))?
            .sum_all()?
            .neg()?;
        let term = ((cond * we)? - (marg * wd)?)?;
        Ok(Some((term * scale)?))
    }

    /// D's logits for features `h`, one per row.
    fn domain_logits(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        self.d.forward(h)?.squeeze(1)
    }

    /// M source rows then M target rows: 0 for source, 1 for target.
    fn domains(&self, m: usize, t: usize) -> Result<Tensor> {
        let v: Vec<f32> = (0..m + t).map(|i| if i < m { 0.0 } else { 1.0 }).collect();
        Ok(Tensor::from_vec(v, m + t, &self.device)?)
    }

    /// The labelled line of every method: C's cross-entropy on F of `x`, and its accuracy.
    fn label_loss(&self, h: &Tensor, y: &Tensor) -> Result<(Tensor, f32)> {
        let logits = self.c.forward(h)?;
        let right = logits
            .argmax(1)?
            .eq(y)?
            .to_dtype(DType::F32)?
            .mean_all()?
            .to_scalar::<f32>()?;
        Ok((cross_entropy(&logits, y)?, right))
    }
}

impl Dann {
    /// The joint line: C's cross-entropy on the labelled source images plus D's loss on
    /// the features of both domains passed through the gradient reversal R_lambda. One
    /// backward pass then trains C and D on their losses and F on C's loss minus lambda
    /// times D's.
    pub fn joint_loss(
        &self,
        source: &Tensor,
        labels: &Tensor,
        target: &Tensor,
        lambda: f64,
    ) -> Result<StepOutput> {
        self.joint_loss_with(source, labels, target, lambda, 1.0)
    }

    /// [`Self::joint_loss`] with the target entropy and diversity terms scaled by
    /// `entropy` (when `--target-entropy` or `--target-diversity` is on).
    fn joint_loss_with(
        &self,
        source: &Tensor,
        labels: &Tensor,
        target: &Tensor,
        lambda: f64,
        entropy: f64,
    ) -> Result<StepOutput> {
        let (m, t) = (source.dim(0)?, target.dim(0)?);
        let h = self
            .f
            .forward_t(&Tensor::cat(&[source, target], 0)?, true)?;
        let (ce, acc) = self.label_loss(&h.narrow(0, 0, m)?, labels)?;
        let dom = self.domains(m, t)?;
        let logits = self.domain_logits(&grad_reverse(&h, lambda)?)?;
        let mut loss = (ce + bce_with_logits(&logits, &dom)?)?;
        if let Some(e) = self.entropy_term(&h.narrow(0, m, t)?, entropy)? {
            loss = (loss + e)?;
        }
        Ok(StepOutput::new(loss)
            .with("label_acc", acc)
            .with("domain_acc", domain_accuracy(&logits, &dom)?))
    }
}

impl Dann {
    /// D's loss on the features of both domains with no reversal: what D descends, and
    /// what the joint line makes F ascend (the reference the tests hold it to).
    pub fn domain_loss(&self, source: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (m, t) = (source.dim(0)?, target.dim(0)?);
        let h = self
            .f
            .forward_t(&Tensor::cat(&[source, target], 0)?, true)?;
        Ok(bce_with_logits(
            &self.domain_logits(&h)?,
            &self.domains(m, t)?,
        )?)
    }
}

/// The fraction of `logits` on the right side of zero for `targets` (0 or 1).
fn domain_accuracy(logits: &Tensor, targets: &Tensor) -> Result<f32> {
    Ok(logits
        .ge(0.0)?
        .to_dtype(DType::F32)?
        .eq(targets)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?)
}

impl Model for Dann {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![
            ("f", &self.f_vars),
            ("c", &self.c_vars),
            ("d", &self.d_vars),
        ]
    }

    /// The source sets the epoch for every method, so that they all take the same steps;
    /// the target carries its labels only for the upper bound.
    fn streams(&self) -> Vec<Stream> {
        let channels = self.cfg.target.channels();
        vec![
            Stream::new("source", 0).of(Source::Mnist { channels }),
            Stream::new("target", 1).of(Source::Domain {
                name: self.cfg.target.name(),
                labels: self.cfg.method == Method::TargetOnly,
                channels,
            }),
        ]
    }

    fn phases(&self) -> Vec<Phase> {
        match (self.cfg.method, self.cfg.schedule) {
            (Method::Dann, Schedule::Joint) => vec![Phase::new("fcd", &["f", "c", "d"])],
            (Method::Dann, Schedule::Alternating) => {
                vec![Phase::new("d", &["d"]), Phase::new("fc", &["f", "c"])]
            }
            _ => vec![Phase::new("fc", &["f", "c"])],
        }
    }

    fn lr_scale(&self, progress: f64) -> f64 {
        (1.0 + self.cfg.lr_alpha * progress).powf(-self.cfg.lr_beta)
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        let lambda = self.lambda(step.progress());
        let (source, target) = (step.batch("source")?, step.batch("target")?);
        let (m, t) = (source.len()?, target.len()?);
        let both = || Tensor::cat(&[&source.images, &target.images], 0);
        match (phase, self.cfg.method) {
            ("fc", Method::SourceOnly | Method::TargetOnly) => {
                let b = if self.cfg.method == Method::SourceOnly {
                    source
                } else {
                    target
                };
                let (loss, acc) =
                    self.label_loss(&self.f.forward_t(&b.images, true)?, b.labels()?)?;
                Ok(StepOutput::new(loss).with("label_acc", acc))
            }
            ("fcd", Method::Dann) => {
                let entropy = self.entropy_weight(step.progress());
                Ok(self
                    .joint_loss_with(
                        &source.images,
                        source.labels()?,
                        &target.images,
                        lambda,
                        entropy,
                    )?
                    .with("lambda", lambda as f32))
            }
            ("d", Method::Dann) => {
                let h = self.f.forward_t(&both()?, true)?.detach();
                let dom = self.domains(m, t)?;
                let logits = self.domain_logits(&h)?;
                Ok(StepOutput::new(bce_with_logits(&logits, &dom)?)
                    .with("domain_acc", domain_accuracy(&logits, &dom)?))
            }
            ("fc", Method::Dann) => {
                let h = self.f.forward_t(&both()?, true)?;
                let (ce, acc) = self.label_loss(&h.narrow(0, 0, m)?, source.labels()?)?;
                // The domains swapped: F is rewarded when D calls each image the other one.
                let swapped = self.domains(m, t)?.affine(-1.0, 1.0)?;
                let logits = frozen(|| self.domain_logits(&h))?;
                let fool = bce_with_logits(&logits, &swapped)?;
                let mut loss = (ce + (fool * lambda)?)?;
                let entropy = self.entropy_weight(step.progress());
                if let Some(e) = self.entropy_term(&h.narrow(0, m, t)?, entropy)? {
                    loss = (loss + e)?;
                }
                Ok(StepOutput::new(loss)
                    .with("label_acc", acc)
                    .with("lambda", lambda as f32))
            }
            (other, _) => Err(no_such_phase(self.kind(), other)),
        }
    }

    fn figures(&self, _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(Vec::new())
    }

    fn domain_adapter(&self) -> Option<&dyn DomainAdapter> {
        Some(self)
    }
}

impl DomainAdapter for Dann {
    fn target(&self) -> &'static str {
        self.cfg.target.name()
    }

    fn channels(&self) -> usize {
        self.cfg.target.channels()
    }

    fn features(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.f.forward_t(images, false)?)
    }

    fn classify(&self, images: &Tensor) -> Result<Vec<u32>> {
        let h = self.f.forward_t(images, false)?;
        Ok(self.c.forward(&h)?.argmax(1)?.to_vec1::<u32>()?)
    }

    fn target_probability(&self, images: &Tensor) -> Result<Vec<f32>> {
        let h = self.f.forward_t(images, false)?;
        Ok(candle_nn::ops::sigmoid(&self.domain_logits(&h)?)?.to_vec1::<f32>()?)
    }
}

impl Registered for Dann {
    type Config = DannConfig;
    const KIND: &'static str = "dann";
    const ABOUT: &'static str =
        "Domain-adversarial training: MNIST's labels carried to an unlabelled target domain";
    fn build(cfg: DannConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
    fn network_lr(cfg: &DannConfig) -> Vec<(&'static str, f64)> {
        vec![
            ("f", cfg.lr0),
            ("c", cfg.lr0),
            ("d", cfg.lr0 * cfg.d_lr_scale),
        ]
    }
}
