//! Feature disentanglement (the lecture notes' last construction): two encoders, one for
//! what an image shows (the content: the digit) and one for how its domain draws it (the
//! domain code: colour, background), a decoder that rebuilds the image from both, and an
//! adversary that tries to tell the domain from the content code while the content
//! encoder learns to make it fail.
//!
//! With `--domain-norm` (the default) Ec standardises each domain's codes by that
//! domain's statistics, so that no linear reader finds the domain in their means.
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
use gan_core::{
    Disentangler, Domain, Every, Figure, Model, Phase, Source, Step, StepOutput, Stream, Streams,
};
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
    /// at 1, 10, 100 and 1000 in docs/DOMAINS.md; 1000 since `--domain-norm`).
    #[arg(long, default_value_t = 1000.0)]
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
    /// Weight of the kernel two-sample distance (MMD, Gretton et al. 2012) between the
    /// two domains' content codes in each batch: zero only when the two distributions
    /// agree, whatever a nonlinear reader would look at. 0: none, and not written.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub mmd_weight: f64,
    /// The content codes against A by gradient reversal (maximise A's cross-entropy on
    /// the true domains, as DANN does) instead of the cross-entropy against 1/2.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub reversal: bool,
    /// Normalise each domain's content codes by that domain's own statistics (Chang et
    /// al.'s domain-specific batch norm, without scale and shift): batch statistics in
    /// training, in evaluation those of the training images' codes settled at each
    /// checkpoint, so that the two domains' codes share their means and spreads, which
    /// is what a linear probe reads. Off: the content encoder does not know the domain
    /// (so runs before the flag, whose configs lack it, load as off).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub domain_norm: bool,
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
    domain_norm: Option<DomainNorm>,
}

/// Each domain's content codes standardised by that domain's statistics: one batch's in
/// training (with their gradient), in evaluation those of the first
/// `CALIBRATION_IMAGES` training images of the domain, settled by `Model::calibrate`
/// for the weights of each checkpoint (`domain_norm.*`, saved with the content encoder).
/// Running averages could not stand in: training is blind to each domain's mean, so the
/// encoder's raw means wander from step to step, and averages of the last ten or hundred
/// batches left the domains' means 0.1-0.2 standard deviations apart on each of the 32
/// numbers, enough for a linear probe to read 59-61% of domains (docs/DOMAINS.md).
struct DomainNorm {
    /// Means and variances of MNIST's codes, then of the target's.
    stats: [(Var, Var); 2],
}

/// Training images of each domain whose codes settle `DomainNorm`'s statistics.
const CALIBRATION_IMAGES: usize = 10_000;

impl DomainNorm {
    const EPS: f64 = 1e-5;

    fn new(dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        // Named as batch norm's statistics are, which `reinit` passes by.
        let stat = |name: &str, init: f64| -> candle_core::Result<Var> {
            Var::from_tensor(&vb.get_with_hints(dim, name, Init::Const(init))?)
        };
        Ok(Self {
            stats: [
                (stat("running_mean_s", 0.0)?, stat("running_var_s", 1.0)?),
                (stat("running_mean_t", 0.0)?, stat("running_var_t", 1.0)?),
            ],
        })
    }

    fn of(&self, domain: Domain) -> &(Var, Var) {
        &self.stats[(domain == Domain::Target) as usize]
    }

    fn forward_t(&self, c: &Tensor, domain: Domain, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            let (mean, var) = self.of(domain);
            let scale = (var.as_tensor() + Self::EPS)?.sqrt()?;
            return c.broadcast_sub(mean.as_tensor())?.broadcast_div(&scale);
        }
        let centred = c.broadcast_sub(&c.mean_keepdim(0)?)?;
        let var = centred.sqr()?.mean_keepdim(0)?;
        centred.broadcast_div(&(var + Self::EPS)?.sqrt()?)
    }

    /// Sets `domain`'s statistics to the mean and unbiased variance of its codes `c`.
    fn settle(&self, c: &Tensor, domain: Domain) -> candle_core::Result<()> {
        let n = c.dim(0)?;
        let mean = c.mean(0)?;
        let var = (c.broadcast_sub(&mean)?.sqr()?.sum(0)? / n.max(2).saturating_sub(1) as f64)?;
        let (m, v) = self.of(domain);
        m.set(&mean)?;
        v.set(&var)
    }
}

/// The networks' names, in the order of `vars`.
const NETS: [&str; 4] = ["content", "style", "decoder", "adversary"];

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
                && cfg.mmd_weight >= 0.0,
            "disentangle needs --adversary-weight, --style-weight, --style-margin, \
             --pair-weight, --target-own-weight, --moment-weight and --mmd-weight >= 0"
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
        let domain_norm = match cfg.domain_norm {
            true => Some(DomainNorm::new(cfg.content_dim, vb(0).pp("domain_norm"))?),
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
            domain_norm,
        })
    }

    /// Content codes of images all from `domain`.
    fn content_t(&self, x: &Tensor, domain: Domain, train: bool) -> candle_core::Result<Tensor> {
        let c = self.content.forward_t(x, train)?;
        match &self.domain_norm {
            Some(norm) => norm.forward_t(&c, domain, train),
            None => Ok(c),
        }
    }

    /// Content codes of a training batch: `m` MNIST images, then as many of the target.
    fn content_both(&self, both: &Tensor, m: usize) -> candle_core::Result<Tensor> {
        let c = self.content.forward_t(both, true)?;
        match &self.domain_norm {
            Some(norm) => Tensor::cat(
                &[
                    norm.forward_t(&c.narrow(0, 0, m)?, Domain::Source, true)?,
                    norm.forward_t(&c.narrow(0, m, c.dim(0)? - m)?, Domain::Target, true)?,
                ],
                0,
            ),
            None => Ok(c),
        }
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

    /// The squared kernel two-sample distance of codes `s` and `t` (unbiased: each
    /// domain's within pairs exclude a code with itself), summed over Gaussian kernels
    /// of widths 2 sigma^2 = d/2, 2d and 8d for d numbers a code (about the squared
    /// distance of two standardised codes, 2d, and a quarter and four times it).
    pub fn mmd(s: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (m, n, d) = (s.dim(0)?, t.dim(0)?, s.dim(1)?);
        anyhow::ensure!(
            m > 1 && n > 1,
            "the kernel distance needs two codes a domain"
        );
        let sq = |a: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
            let na = a.sqr()?.sum_keepdim(1)?;
            let nb = b.sqr()?.sum_keepdim(1)?.t()?;
            na.broadcast_add(&nb)?
                .sub(&(a.matmul(&b.t()?)? * 2.0)?)?
                .relu()
        };
        let (dss, dtt, dst) = (sq(s, s)?, sq(t, t)?, sq(s, t)?);
        let mut total = Tensor::zeros((), DType::F32, s.device())?;
        for width in [0.5, 2.0, 8.0] {
            let k = |dist: &Tensor| (dist * (-1.0 / (width * d as f64)))?.exp()?.sum_all();
            // k(x, x) = 1: the diagonals add m and n.
            let within_s = ((k(&dss)? - m as f64)? / (m * (m - 1)) as f64)?;
            let within_t = ((k(&dtt)? - n as f64)? / (n * (n - 1)) as f64)?;
            let across = (k(&dst)? / (m * n) as f64)?;
            total = (total + within_s + within_t - (across * 2.0)?)?;
        }
        Ok(total)
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
                let c = self.content_both(&both, m)?.detach();
                let logits = self.adversary_logits(&c)?;
                let (ls, lt) = (logits.narrow(0, 0, m)?, logits.narrow(0, m, m)?);
                let loss = (bce_with_logits_const(&ls, 0.0)? + bce_with_logits_const(&lt, 1.0)?)?;
                let acc = (binary_accuracy(&ls, false)? + binary_accuracy(&lt, true)?) / 2.0;
                Ok(StepOutput::new(loss).with("adversary_acc", acc))
            }
            "codes" => {
                let c = self.content_both(&both, m)?;
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
                    let confusion = match self.cfg.reversal {
                        false => bce_with_logits_const(&logits, 0.5)?,
                        true => {
                            let (ls, lt) = (logits.narrow(0, 0, m)?, logits.narrow(0, m, m)?);
                            let ce = (bce_with_logits_const(&ls, 0.0)?
                                + bce_with_logits_const(&lt, 1.0)?)?;
                            (ce * -0.5)?
                        }
                    };
                    loss = (loss + (confusion * self.cfg.adversary_weight)?)?;
                }
                if self.cfg.mmd_weight > 0.0 {
                    let mmd = Self::mmd(&c.narrow(0, 0, m)?, &c.narrow(0, m, m)?)?;
                    metrics.push(("mmd", mmd.to_scalar::<f32>()?));
                    loss = (loss + (mmd * self.cfg.mmd_weight)?)?;
                }
                if self.cfg.moment_weight > 0.0 {
                    let gap = Self::moment_gap(&c.narrow(0, 0, m)?, &c.narrow(0, m, m)?)?;
                    metrics.push(("moments", gap.to_scalar::<f32>()?));
                    loss = (loss + (gap * self.cfg.moment_weight)?)?;
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

    /// With `--domain-norm`: each domain's code statistics, from the codes the encoder
    /// gives the first training images of its stream in evaluation mode.
    fn calibrate(&self, data: &Streams) -> Result<()> {
        let Some(norm) = &self.domain_norm else {
            return Ok(());
        };
        for (stream, domain) in [("source", Domain::Source), ("target", Domain::Target)] {
            let images = &data.get(stream)?.images;
            let n = images.dim(0)?.min(CALIBRATION_IMAGES);
            let blocks = (0..n)
                .step_by(500)
                .map(|i| {
                    let x = images.narrow(0, i, 500.min(n - i))?;
                    frozen(|| self.content.forward_t(&x, false))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            norm.settle(&Tensor::cat(&blocks, 0)?, domain)?;
        }
        Ok(())
    }

    fn figures(&self, _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(Vec::new())
    }

    /// MNIST digits over their reconstructions.
    fn figures_of_real(&self, real: &Tensor, _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(vec![Figure {
            name: "reconstructions".into(),
            images: gan_core::engine::grid::interleave_rows(
                real,
                &self.reconstruct(real, Domain::Source)?,
                8,
            )?,
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

    fn content(&self, images: &Tensor, domain: Domain) -> Result<Tensor> {
        Ok(self.content_t(images, domain, false)?)
    }

    fn style(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.style.forward_t(images, false)?)
    }

    fn render(&self, content: &Tensor, style: &Tensor) -> Result<Tensor> {
        Ok(self.render_t(content, style, false)?)
    }

    fn target_probability(&self, images: &Tensor, domain: Domain) -> Result<Vec<f32>> {
        let logits = self.adversary_logits(&self.content_t(images, domain, false)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn column_stats(x: &Tensor) -> (Vec<f32>, Vec<f32>) {
        let mean = x.mean(0).unwrap();
        let var = x
            .broadcast_sub(&mean)
            .unwrap()
            .sqr()
            .unwrap()
            .mean(0)
            .unwrap();
        (mean.to_vec1().unwrap(), var.to_vec1().unwrap())
    }

    #[test]
    fn domain_norm_standardises_each_domain_by_its_own_statistics() {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let norm = DomainNorm::new(2, vb).unwrap();
        // MNIST's codes around (1, -2), the target's around (5, 3) and wider.
        let s = Tensor::new(
            &[[0f32, -2.0], [2.0, -1.0], [1.0, -3.0], [1.0, -2.0]],
            &Device::Cpu,
        )
        .unwrap();
        let t = ((&s * 3.0).unwrap() + 4.0)
            .unwrap()
            .broadcast_add(&Tensor::new(&[0f32, 8.0], &Device::Cpu).unwrap());
        let t = t.unwrap();
        for (x, d) in [(&s, Domain::Source), (&t, Domain::Target)] {
            let (mean, var) = column_stats(&norm.forward_t(x, d, true).unwrap());
            for (m, v) in mean.iter().zip(&var) {
                assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-4, "{mean:?} {var:?}");
            }
        }
        // Evaluation: each domain's settled mean and unbiased variance.
        let probe = Tensor::new(&[[1f32, 1.0]], &Device::Cpu).unwrap();
        for (x, d) in [(&s, Domain::Source), (&t, Domain::Target)] {
            norm.settle(x, d).unwrap();
        }
        for (x, d) in [(&s, Domain::Source), (&t, Domain::Target)] {
            let (mean, var) = column_stats(x);
            let got = norm
                .forward_t(&probe, d, false)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for j in 0..2 {
                let (rm, rv) = (mean[j], var[j] * 4.0 / 3.0);
                let want = (1.0 - rm) / (rv + DomainNorm::EPS as f32).sqrt();
                assert!(
                    (got[0][j] - want).abs() < 1e-4,
                    "{d:?} {j}: {} vs {want}",
                    got[0][j]
                );
            }
        }
    }
}
