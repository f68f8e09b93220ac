//! Feature disentanglement (the lecture notes' last construction): two encoders, one for
//! what an image shows (the content: the digit) and one for how its domain draws it (the
//! domain code: colour, background), a decoder that rebuilds the image from both, and an
//! adversary that tries to tell the domain from the content code while the content
//! encoder learns to make it fail.
//!
//! Every step (M MNIST digits x_s and M target images x_t; with `--paired`, x_t[i] is
//! x_s[i] in the target domain, an MNIST-M-style image being an MNIST digit on a photo):
//! 1. `adversary`: A descends BCE(A(Ec(x_s)), 0) + BCE(A(Ec(x_t)), 1) on the codes
//!    without their graph;
//! 2. `codes`: Ec, Ed and De descend
//!    - the reconstruction error of each image from its own two codes;
//!    - with pairs, the error of each image rebuilt from its pair's content and its own
//!      domain code, De(Ec(x_s), Ed(x_t)) against x_t and the other way round: the
//!      content must be the same in both domains, and all the rest must be in Ed;
//!    - `--shared-style-weight` times the error of each MNIST digit rebuilt from another
//!      MNIST digit's domain code: MNIST has one style, so the decoder must find the
//!      digit in the content code;
//!    - `--adversary-weight` times A's cross-entropy against 1/2 on both domains' content
//!      codes (the content should leave A at chance, not fool it the other way);
//!    - `--style-weight` times the notes' speaker-code constraint on the domain codes:
//!      each code close to its domain's mean, the two means at least `--style-margin`
//!      apart.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use gan_core::engine::no_such_phase;
use gan_core::fast::layers::frozen;
use gan_core::init::{reinit, WeightInit};
use gan_core::loss::{bce_with_logits_const, binary_accuracy};
use gan_core::prior::{rng, Rng, RngStream};
use gan_core::{Disentangler, Every, Figure, Model, Phase, Source, Step, StepOutput, Stream};
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::dann::Target;
use crate::dcgan::Generator;
use crate::encdec::{reconstruction_error, ConvEncoder};
use crate::gan::Mlp;
use crate::registry::Registered;

/// Settings of the disentangler; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct DisentangleConfig {
    /// The second domain (MNIST is the first).
    #[arg(long, value_enum, default_value = "mnistm")]
    pub target: Target,
    /// Width of the content code.
    #[arg(long, default_value_t = 32)]
    pub content_dim: usize,
    /// Width of the domain code.
    #[arg(long, default_value_t = 16)]
    pub style_dim: usize,
    /// Channels of the encoders' and the decoder's 14x14 layers (7x7: twice as many).
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// Hidden widths of the adversary on the content code, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,256")]
    pub adversary_hidden: Vec<usize>,
    /// Weight of the content code's confusion loss against the adversary (the
    /// reconstruction errors are sums over an image's pixels, hundreds each: screened
    /// at 1, 10, 100 and 1000 in docs/DOMAINS.md).
    #[arg(long, default_value_t = 100.0)]
    pub adversary_weight: f64,
    /// Draw the target in MNIST's order, so that each target image is its MNIST digit in
    /// the other domain, and train on the swapped reconstructions (MNIST-M-style only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub paired: bool,
    /// Weight of the pairs' agreement: the content codes of an MNIST digit and of its
    /// redrawing in the target domain pulled together, as a share of the codes' variance
    /// (so shrinking the codes does not satisfy it). Paired streams only; 0: none, and
    /// not written, so older runs' checkpoints still match.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub pair_weight: f64,
    /// Weight of the shared-style line: each MNIST digit rebuilt from its own content and
    /// another MNIST digit's domain code (MNIST has one style), so that whatever the
    /// domain code holds of the digit is of no use to the decoder (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub shared_style_weight: f64,
    /// Weight of each target image's reconstruction from its own two codes (the MNIST
    /// digits' keep 1). Below 1, the content code gains less from holding what the
    /// domain code has no room for (a photo's crop), which gives the domain away; the
    /// swapped reconstructions still teach the domain code the target's look. 1 is not
    /// written, so older runs' checkpoints still match.
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub target_own_weight: f64,
    /// Weight of the moment match of the two domains' content codes (their means and
    /// covariances pulled together, `Disentangle::moment_gap`): what a linear probe reads
    /// of the domain, asked away directly. 0: none, and not written.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub moment_weight: f64,
    /// Weight of the Fisher term: the squared Mahalanobis distance of the two domains'
    /// mean content codes in their within-domain covariance (what the best linear probe
    /// reads), estimated without bias from each batch, the covariance a running average
    /// (`Fisher`). 0: none, and not written.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub fisher_weight: f64,
    /// The Fisher term's running covariance: each batch's share of it.
    #[arg(long, default_value_t = 0.02)]
    #[serde(
        default = "fisher_momentum",
        skip_serializing_if = "is_fisher_momentum"
    )]
    pub fisher_momentum: f64,
    /// Weight of the speaker-code constraint on the domain codes (0: none).
    #[arg(long, default_value_t = 0.01)]
    pub style_weight: f64,
    /// The distance the two domains' mean domain codes should keep.
    #[arg(long, default_value_t = 1.0)]
    pub style_margin: f64,
}

fn one() -> f64 {
    1.0
}

fn fisher_momentum() -> f64 {
    0.02
}

fn is_fisher_momentum(x: &f64) -> bool {
    *x == fisher_momentum()
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl Default for DisentangleConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// Content encoder Ec, domain encoder Ed, decoder De and adversary A, each with its
/// own variables.
pub struct Disentangle {
    cfg: DisentangleConfig,
    vars: [VarMap; 4],
    content: ConvEncoder,
    style: ConvEncoder,
    decoder: Generator,
    adversary: Mlp,
    fisher: Option<Fisher>,
}

/// The networks' names, in the order of `vars`.
const NETS: [&str; 4] = ["content", "style", "decoder", "adversary"];

/// The within-domain covariance of the content codes, a running average over recent
/// batches kept among the content encoder's variables (`fisher.running_cov`: saved and
/// resumed with it, never trained): the metric in which the Fisher term measures how far
/// apart the two domains' codes lie. One batch's 64 codes a domain in 32 dimensions give
/// a covariance too noisy to invert (the `--linear-weight` try of docs/DOMAINS.md).
struct Fisher {
    cov: Var,
    momentum: f64,
}

impl Fisher {
    fn new(dim: usize, momentum: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        // Zeros: the average's start-up bias is a scale, which the ridge is relative to.
        let cov = vb.get_with_hints((dim, dim), "running_cov", Init::Const(0.0))?;
        Ok(Self {
            cov: Var::from_tensor(&cov)?,
            momentum,
        })
    }

    /// Folds the within-domain covariance of this batch's codes `s` (MNIST) and `t`
    /// (target) into the average and returns its inverse, with a ridge of a thousandth
    /// of the mean variance.
    fn metric(&self, s: &Tensor, t: &Tensor) -> Result<Tensor> {
        let centred = |x: &Tensor| x.broadcast_sub(&x.mean(0)?);
        let (cs, ct) = (centred(s)?, centred(t)?);
        let cov = ((cs.t()?.matmul(&cs)? + ct.t()?.matmul(&ct)?)? / (2 * s.dim(0)?) as f64)?;
        let k = self.momentum;
        let avg = ((self.cov.as_tensor() * (1.0 - k))? + (cov * k)?)?.detach();
        self.cov.set(&avg)?;
        let n = avg.dim(0)?;
        let host: Vec<f64> = avg
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        let mut sigma = DMatrix::from_row_slice(n, n, &host);
        let ridge = 1e-3 * sigma.trace() / n as f64 + 1e-12;
        for i in 0..n {
            sigma[(i, i)] += ridge;
        }
        let inverse = sigma
            .cholesky()
            .ok_or_else(|| anyhow::anyhow!("the content codes' covariance is not finite"))?
            .inverse();
        let values: Vec<f32> = inverse.iter().map(|&x| x as f32).collect();
        // Symmetric, so nalgebra's column order is the row order.
        Ok(Tensor::from_vec(values, (n, n), s.device())?)
    }

    /// An unbiased estimate of the squared Mahalanobis distance (in `metric`) of the
    /// two domains' mean codes from this batch: with d_i = t_i - s_i, the mean of
    /// d_i' M d_j over pairs i != j. The plain |mean(d)|^2 adds the means' sampling
    /// noise, 2 x 32 / 64 = 1 here, several times the gap a probe reads, and its
    /// gradient would shrink the codes to lower it; running averages of the means lag
    /// the encoder, which moves its gap around faster than they follow.
    pub fn distance(s: &Tensor, t: &Tensor, metric: &Tensor) -> Result<Tensor> {
        let m = s.dim(0)?;
        anyhow::ensure!(
            m >= 2 && t.dim(0)? == m,
            "the Fisher term needs two equal halves of 2+ codes"
        );
        let d = (t - s)?;
        let total = d.sum_keepdim(0)?;
        let all = total.matmul(metric)?.mul(&total)?.sum_all()?;
        let own = d.matmul(metric)?.mul(&d)?.sum_all()?;
        Ok(((all - own)? / (m * (m - 1)) as f64)?)
    }
}

impl Disentangle {
    /// Builds the four networks on `device`, weights drawn N(0, 0.02) from `seed`
    /// (the adversary: PyTorch's default).
    pub fn new(cfg: DisentangleConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(
            cfg.content_dim > 0 && cfg.style_dim > 0 && cfg.width > 0,
            "disentangle needs --content-dim, --style-dim and --width > 0"
        );
        anyhow::ensure!(
            !cfg.adversary_hidden.contains(&0),
            "disentangle needs every --adversary-hidden width > 0, got {:?}",
            cfg.adversary_hidden
        );
        anyhow::ensure!(
            cfg.adversary_weight >= 0.0
                && cfg.style_weight >= 0.0
                && cfg.style_margin >= 0.0
                && cfg.pair_weight >= 0.0
                && cfg.target_own_weight >= 0.0
                && cfg.moment_weight >= 0.0
                && cfg.fisher_weight >= 0.0,
            "disentangle needs --adversary-weight, --style-weight, --style-margin, \
             --pair-weight, --target-own-weight, --moment-weight and --fisher-weight >= 0"
        );
        anyhow::ensure!(
            cfg.fisher_momentum > 0.0 && cfg.fisher_momentum <= 1.0,
            "disentangle needs --fisher-momentum in (0, 1], got {}",
            cfg.fisher_momentum
        );
        anyhow::ensure!(
            cfg.paired || cfg.pair_weight == 0.0,
            "--pair-weight needs pairs (--paired true)"
        );
        anyhow::ensure!(
            cfg.paired || cfg.target_own_weight == 1.0,
            "--target-own-weight needs pairs (--paired true): the swapped reconstructions"
        );
        anyhow::ensure!(
            !(cfg.paired && cfg.target == Target::Uci),
            "UCI digits are not MNIST digits redrawn: they have no pairs (use --paired false)"
        );
        let vars = [VarMap::new(), VarMap::new(), VarMap::new(), VarMap::new()];
        let vb = |i: usize| VarBuilder::from_varmap(&vars[i], DType::F32, device);
        let (ch, w) = (cfg.target.channels(), cfg.width);
        let content = ConvEncoder::with_channels(ch, w, cfg.content_dim, vb(0))?;
        let fisher = match cfg.fisher_weight > 0.0 {
            true => Some(Fisher::new(
                cfg.content_dim,
                cfg.fisher_momentum,
                vb(0).pp("fisher"),
            )?),
            false => None,
        };
        let style = ConvEncoder::with_channels(ch, w, cfg.style_dim, vb(1))?;
        let decoder = Generator::with_channels(cfg.content_dim + cfg.style_dim, w, ch, vb(2))?;
        let widths: Vec<usize> = [cfg.content_dim]
            .into_iter()
            .chain(cfg.adversary_hidden.iter().copied())
            .chain([1])
            .collect();
        let adversary = Mlp::new(&widths, vb(3))?;
        let mut r = rng(seed, RngStream::Init);
        for v in &vars[..3] {
            reinit(v, WeightInit::Normal { std: 0.02 }, &mut r)?;
        }
        reinit(&vars[3], WeightInit::FanInUniform, &mut r)?;
        Ok(Self {
            cfg,
            vars,
            content,
            style,
            decoder,
            adversary,
            fisher,
        })
    }

    fn render_t(&self, c: &Tensor, s: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.decoder.forward_t(&Tensor::cat(&[c, s], 1)?, train)
    }

    /// A's logits on content codes, one per row.
    fn adversary_logits(&self, c: &Tensor) -> candle_core::Result<Tensor> {
        self.adversary.forward(c)?.squeeze(1)
    }

    /// How far apart the content codes of pairs are (`s` row i is the pair of `t` row i):
    /// their mean squared distance over the codes' variance across both domains, 0 when
    /// each pair shares its code, 2 for unrelated codes, whatever the codes' scale.
    pub fn pair_disagreement(s: &Tensor, t: &Tensor) -> Result<Tensor> {
        let both = Tensor::cat(&[s, t], 0)?;
        let var = both
            .broadcast_sub(&both.mean_keepdim(0)?)?
            .sqr()?
            .sum(1)?
            .mean_all()?;
        let dist = (s - t)?.sqr()?.sum(1)?.mean_all()?;
        Ok(dist.broadcast_div(&(var + 1e-8)?)?)
    }

    /// How far apart the two domains' content codes lie in their first two moments (what
    /// a linear probe reads): the codes scaled by their spread across both domains, then
    /// the mean squared difference of the two domains' means plus that of their
    /// covariance matrices (Sun and Saenko's CORAL, 2016). 0 when the moments agree,
    /// whatever the codes' scale.
    pub fn moment_gap(s: &Tensor, t: &Tensor) -> Result<Tensor> {
        let both = Tensor::cat(&[s, t], 0)?;
        let centred = both.broadcast_sub(&both.mean_keepdim(0)?)?;
        let spread = (centred.sqr()?.mean_all()? + 1e-8)?.sqrt()?;
        let z = centred.broadcast_div(&spread)?;
        let m = s.dim(0)?;
        let (zs, zt) = (z.narrow(0, 0, m)?, z.narrow(0, m, t.dim(0)?)?);
        let cov = |x: &Tensor| -> candle_core::Result<Tensor> {
            let c = x.broadcast_sub(&x.mean_keepdim(0)?)?;
            c.t()?.matmul(&c)? / x.dim(0)? as f64
        };
        let means = (zs.mean(0)? - zt.mean(0)?)?.sqr()?.mean_all()?;
        let covs = (cov(&zs)? - cov(&zt)?)?.sqr()?.mean_all()?;
        Ok((means + covs)?)
    }

    /// The notes' speaker-code constraint on the domain codes `s` (source) and `t`
    /// (target): the mean squared distance of each code to its domain's mean, plus the
    /// squared shortfall of the two means' distance from `margin`.
    pub fn style_constraint(s: &Tensor, t: &Tensor, margin: f64) -> Result<Tensor> {
        let (ms, mt) = (s.mean_keepdim(0)?, t.mean_keepdim(0)?);
        let spread = (s.broadcast_sub(&ms)?.sqr()?.sum(1)?.mean_all()?
            + t.broadcast_sub(&mt)?.sqr()?.sum(1)?.mean_all()?)?;
        let apart = ((ms - mt)?.sqr()?.sum_all()? + 1e-8)?.sqrt()?;
        let short = apart.affine(-1.0, margin)?.relu()?.sqr()?;
        Ok((spread + short)?)
    }
}

impl Model for Disentangle {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        NETS.iter().copied().zip(self.vars.iter()).collect()
    }

    /// MNIST in the target's channels, and the target without its labels: paired with
    /// MNIST (drawn in its order) or shuffled on its own.
    fn streams(&self) -> Vec<Stream> {
        let channels = self.cfg.target.channels();
        let target = Stream::new("target", 1).of(Source::Domain {
            name: self.cfg.target.name(),
            labels: false,
            channels,
        });
        vec![
            Stream::new("source", 0).of(Source::Mnist { channels }),
            match self.cfg.paired {
                true => target.paired_with("source"),
                false => target,
            },
        ]
    }

    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("adversary", &["adversary"]),
            // `--k` adversary steps per update of the codes (1: both every step).
            Phase::new("codes", &["content", "style", "decoder"]).every(Every::K),
        ]
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        let (xs, xt) = (&step.batch("source")?.images, &step.batch("target")?.images);
        let m = xs.dim(0)?;
        let both = Tensor::cat(&[xs, xt], 0)?;
        match phase {
            "adversary" => {
                let c = self.content.forward_t(&both, true)?.detach();
                let logits = self.adversary_logits(&c)?;
                let (ls, lt) = (logits.narrow(0, 0, m)?, logits.narrow(0, m, m)?);
                let loss = (bce_with_logits_const(&ls, 0.0)? + bce_with_logits_const(&lt, 1.0)?)?;
                let acc = (binary_accuracy(&ls, false)? + binary_accuracy(&lt, true)?) / 2.0;
                Ok(StepOutput::new(loss).with("adversary_acc", acc))
            }
            "codes" => {
                let c = self.content.forward_t(&both, true)?;
                let s = self.style.forward_t(&both, true)?;
                let own = self.render_t(&c, &s, true)?;
                let recon = if self.cfg.target_own_weight == 1.0 {
                    reconstruction_error(&own, &both)?
                } else {
                    // The mean over both halves, the target's weighted.
                    let es = reconstruction_error(&own.narrow(0, 0, m)?, xs)?;
                    let et = reconstruction_error(&own.narrow(0, m, m)?, xt)?;
                    ((es + (et * self.cfg.target_own_weight)?)? / 2.0)?
                };
                let mut metrics = vec![("recon", recon.to_scalar::<f32>()?)];
                let mut loss = recon;
                if self.cfg.paired {
                    // Each image from its pair's content and its own domain code.
                    let swapped = Tensor::cat(&[c.narrow(0, m, m)?, c.narrow(0, 0, m)?], 0)?;
                    let cross = reconstruction_error(&self.render_t(&swapped, &s, true)?, &both)?;
                    metrics.push(("cross", cross.to_scalar::<f32>()?));
                    loss = (loss + cross)?;
                    if self.cfg.pair_weight > 0.0 {
                        let apart =
                            Self::pair_disagreement(&c.narrow(0, 0, m)?, &c.narrow(0, m, m)?)?;
                        metrics.push(("apart", apart.to_scalar::<f32>()?));
                        loss = (loss + (apart * self.cfg.pair_weight)?)?;
                    }
                }
                if self.cfg.shared_style_weight > 0.0 {
                    // Source row i with source row i + 1's domain code.
                    let next: Vec<u32> = (0..m as u32).map(|i| (i + 1) % m as u32).collect();
                    let next = Tensor::new(next, xs.device())?;
                    let other = s.narrow(0, 0, m)?.index_select(&next, 0)?;
                    let shared = reconstruction_error(
                        &self.render_t(&c.narrow(0, 0, m)?, &other, true)?,
                        xs,
                    )?;
                    metrics.push(("shared", shared.to_scalar::<f32>()?));
                    loss = (loss + (shared * self.cfg.shared_style_weight)?)?;
                }
                if self.cfg.adversary_weight > 0.0 {
                    let logits = frozen(|| self.adversary_logits(&c))?;
                    let confusion = bce_with_logits_const(&logits, 0.5)?;
                    loss = (loss + (confusion * self.cfg.adversary_weight)?)?;
                }
                if self.cfg.moment_weight > 0.0 {
                    let gap = Self::moment_gap(&c.narrow(0, 0, m)?, &c.narrow(0, m, m)?)?;
                    metrics.push(("moments", gap.to_scalar::<f32>()?));
                    loss = (loss + (gap * self.cfg.moment_weight)?)?;
                }
                if let Some(fisher) = &self.fisher {
                    let (cs, ct) = (c.narrow(0, 0, m)?, c.narrow(0, m, m)?);
                    let metric = fisher.metric(&cs.detach(), &ct.detach())?;
                    let distance = Fisher::distance(&cs, &ct, &metric)?;
                    metrics.push(("fisher", distance.to_scalar::<f32>()?));
                    loss = (loss + (distance * self.cfg.fisher_weight)?)?;
                }
                if self.cfg.style_weight > 0.0 {
                    let (ss, st) = (s.narrow(0, 0, m)?, s.narrow(0, m, m)?);
                    let sc = Self::style_constraint(&ss, &st, self.cfg.style_margin)?;
                    metrics.push(("style", sc.to_scalar::<f32>()?));
                    loss = (loss + (sc * self.cfg.style_weight)?)?;
                }
                let mut out = StepOutput::new(loss);
                out.metrics = metrics;
                Ok(out)
            }
            other => Err(no_such_phase(self.kind(), other)),
        }
    }

    fn figures(&self, _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(Vec::new())
    }

    /// MNIST digits over their reconstructions.
    fn figures_of_real(&self, real: &Tensor, _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(vec![Figure {
            name: "reconstructions".into(),
            images: gan_core::engine::grid::interleave_rows(real, &self.reconstruct(real)?, 8)?,
            cols: 8,
        }])
    }

    fn disentangler(&self) -> Option<&dyn Disentangler> {
        Some(self)
    }
}

impl Disentangler for Disentangle {
    fn target(&self) -> &'static str {
        self.cfg.target.name()
    }

    fn channels(&self) -> usize {
        self.cfg.target.channels()
    }

    fn content(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.content.forward_t(images, false)?)
    }

    fn style(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.style.forward_t(images, false)?)
    }

    fn render(&self, content: &Tensor, style: &Tensor) -> Result<Tensor> {
        Ok(self.render_t(content, style, false)?)
    }

    fn target_probability(&self, images: &Tensor) -> Result<Vec<f32>> {
        let logits = self.adversary_logits(&self.content.forward_t(images, false)?)?;
        Ok(candle_nn::ops::sigmoid(&logits)?.to_vec1::<f32>()?)
    }
}

impl Registered for Disentangle {
    type Config = DisentangleConfig;
    const KIND: &'static str = "disentangle";
    const ABOUT: &'static str =
        "Feature disentanglement: content and domain encoders, a decoder, an adversary on the content";
    fn build(cfg: DisentangleConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
}
