//! Triple-GAN (Li, Xu, Zhu and Zhang 2017): semi-supervised learning as a game of three.
//! A classifier C(x) -> y, a conditional generator G(z, y) -> x and a discriminator
//! D(x, y) on pairs. D's real pairs are labelled data; its fakes are unlabelled images
//! labelled by C (weight alpha) and G's images of given labels (weight 1 - alpha). C and
//! G both try to have their pairs judged real; C also learns from the few labels, and,
//! after a warm-up, from G's pairs.
//!
//! The networks and settings are those of the authors' MNIST code: C a CNN with batch
//! norm and dropout, pre-trained on the labelled examples with an entropy term on the
//! unlabelled ones and read through an exponential moving average of its weights; G and
//! D fully connected, the label concatenated at every layer, Gaussian noise in D.

use anyhow::Result;
use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::registry::Registered;
use gan_core::engine::{no_such_phase, Conditioning};
use gan_core::fast::layers::{
    batch_norm, conv2d, frozen, linear, BatchNorm, Conv2d, ConvSpec, Linear,
};
use gan_core::fast::nn::{dropout, max_pool2d};
use gan_core::loss::{bce_with_logits_const, binary_accuracy};
use gan_core::prior::{one_hot, Latent, LatentSpec, Rng};
use gan_core::{Classifier, Figure, Generator, Model, Phase, Source, Step, StepOutput, Stream};

/// Number of classes of MNIST.
const CLASSES: usize = 10;

/// Settings of Triple-GAN; the defaults (the authors' MNIST settings) are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TripleganConfig {
    /// Labelled training digits, an equal number of each class chosen by the seed (the
    /// list is saved in the run as labelled.json); 0: every label of MNIST (the ceiling).
    #[arg(long, default_value_t = 100)]
    pub labels: usize,
    /// Train C alone on the labelled digits (cross-entropy and weight decay): the
    /// supervised-only baseline of the same network.
    #[arg(long, default_value_t = false)]
    pub supervised_only: bool,
    /// alpha: the weight of C's pairs among D's fakes (G's get 1 - alpha).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Step size of every network's Adam (beta1 0.5).
    #[arg(long, default_value_t = 1e-3)]
    pub lr_all: f64,
    /// Unlabelled images per step for C (their passes make the epoch).
    #[arg(long, default_value_t = 100)]
    pub batch_u: usize,
    /// G's pairs per step, the labels evenly spread.
    #[arg(long, default_value_t = 200)]
    pub batch_g: usize,
    /// Unlabelled images per step that D also takes as real, labelled by C (the
    /// authors' code does; 0: D's real pairs are the labelled ones alone).
    #[arg(long, default_value_t = 400)]
    pub batch_pseudo: usize,
    /// Steps of C's pre-training before the game starts (the authors' 30 epochs of 120
    /// updates); 0: none.
    #[arg(long, default_value_t = 3600)]
    pub pretrain_steps: u64,
    /// C's step size in pre-training, as a fraction of --lr-all (the authors' 3e-4).
    #[arg(long, default_value_t = 0.3)]
    pub pretrain_lr_scale: f64,
    /// Weight of the entropy of C's predictions on unlabelled images.
    #[arg(long, default_value_t = 0.3)]
    pub entropy: f64,
    /// Weight of the cross-entropy of C's mean prediction against the uniform class
    /// distribution (classes used evenly): in the game, and in pre-training.
    #[arg(long, value_delimiter = ',', default_value = "0.001,0.3")]
    pub balance: Vec<f64>,
    /// Weight decay (squared L2) on C's output layer.
    #[arg(long, default_value_t = 1e-4)]
    pub decay: f64,
    /// Weight of R_P, C's cross-entropy on G's pairs...
    #[arg(long, default_value_t = 0.1)]
    pub alpha_p: f64,
    /// ...switched on at this epoch (0-based; the authors' 300).
    #[arg(long, default_value_t = 300)]
    pub rp_from_epoch: usize,
    /// The step size decays by --anneal each epoch from this one on.
    #[arg(long, default_value_t = 300)]
    pub anneal_from_epoch: usize,
    /// Per-epoch step-size factor after --anneal-from-epoch.
    #[arg(long, default_value_t = 0.995)]
    pub anneal: f64,
    /// Rate of C's moving average (what evaluation reads): a += rate (c - a) per step.
    #[arg(long, default_value_t = 0.01)]
    pub ema: f64,
    /// Width of G's noise z ~ U(0, 1).
    #[arg(long, default_value_t = 100)]
    pub z_dim: usize,
    /// Standard deviation of the noise D adds to its input images (in [0, 1])...
    #[arg(long, default_value_t = 0.3)]
    pub noise_input: f64,
    /// ...and to its hidden layers.
    #[arg(long, default_value_t = 0.5)]
    pub noise_hidden: f64,
}

impl Default for TripleganConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

/// `x + sigma * N(0, 1)`, the noise drawn from the run's generator (so a resumed run adds
/// the same noise).
fn gaussian_noise(x: &Tensor, sigma: f64, rng: &mut Rng) -> candle_core::Result<Tensor> {
    if sigma == 0.0 {
        return Ok(x.clone());
    }
    let mut v = vec![0f32; x.elem_count()];
    gan_core::prior::fill_standard_normal(rng, &mut v);
    v.iter_mut().for_each(|e| *e *= sigma as f32);
    x + Tensor::from_vec(v, x.shape(), x.device())?
}

/// Images in [-1, 1] as the authors' networks read them: [0, 1].
fn unit(x: &Tensor) -> candle_core::Result<Tensor> {
    x.affine(0.5, 0.5)
}

/// The classifier of the authors' MNIST code: 5x5 conv 32 (valid) + pool + dropout,
/// 3x3 convs 64 (same), 64 (valid) + pool + dropout, 128, 128 (same), each with batch
/// norm and ReLU, global mean pooling, a linear layer to 10 logits.
struct Cnn {
    convs: Vec<(Conv2d, BatchNorm)>,
    out: Linear,
}

impl Cnn {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let (same, valid) = (
            ConvSpec {
                padding: 1,
                stride: 1,
                output_padding: 0,
            },
            ConvSpec {
                padding: 0,
                stride: 1,
                output_padding: 0,
            },
        );
        let spec = [
            (1, 32, 5, valid),
            (32, 64, 3, same),
            (64, 64, 3, valid),
            (64, 128, 3, same),
            (128, 128, 3, same),
        ];
        let convs = spec
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, k, s))| {
                Ok((
                    conv2d(cin, cout, k, s, vb.pp(format!("conv{i}")))?,
                    batch_norm(cout, vb.pp(format!("bn{i}")))?,
                ))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            convs,
            out: linear(128, CLASSES, vb.pp("out"))?,
        })
    }

    /// Logits `[N, 10]` of images in [-1, 1]; dropout (from `rng`) and batch statistics
    /// when `rng` is given (training), running statistics without.
    fn logits(&self, x: &Tensor, mut rng: Option<&mut Rng>) -> candle_core::Result<Tensor> {
        let train = rng.is_some();
        let mut h = unit(x)?;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            h = bn.forward_act(&conv.forward(&h)?, train, 0.0)?;
            if i == 0 || i == 2 {
                h = max_pool2d(&h, 2)?;
                if let Some(r) = rng.as_deref_mut() {
                    h = dropout(&h, 0.5, r)?;
                }
            }
        }
        self.out.forward(&h.mean((2, 3))?)
    }

    /// The output layer's weight, for its decay.
    fn out_weight(&self) -> &Tensor {
        self.out.weight()
    }
}

/// G(z, y): [z, y] -> 500 -> 500 -> 784, batch norm and softplus between, the one-hot
/// label concatenated to every layer's input, a sigmoid image (mapped to [-1, 1]).
struct Gen {
    hidden: Vec<(Linear, BatchNorm)>,
    out: Linear,
}

impl Gen {
    fn new(z_dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            hidden: vec![
                (
                    linear(z_dim + CLASSES, 500, vb.pp("fc0"))?,
                    batch_norm(500, vb.pp("bn0"))?,
                ),
                (
                    linear(500 + CLASSES, 500, vb.pp("fc1"))?,
                    batch_norm(500, vb.pp("bn1"))?,
                ),
            ],
            out: linear(500 + CLASSES, 784, vb.pp("out"))?,
        })
    }

    fn forward_t(&self, z: &Tensor, y: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = z.clone();
        for (fc, bn) in &self.hidden {
            let a = bn.forward_t(&fc.forward(&Tensor::cat(&[&h, y], 1)?)?, train)?;
            h = gan_core::fast::nn::softplus(&a)?;
        }
        // 2 sigmoid(a) - 1: the authors' sigmoid image on the data's [-1, 1] scale.
        gan_core::fast::nn::tanh(&(self.out.forward(&Tensor::cat(&[&h, y], 1)?)? * 0.5)?)
    }
}

/// D(x, y): 784 -> 1000 -> 500 -> 250 -> 250 -> 250 -> 1 with leaky ReLUs, the one-hot
/// label concatenated to every layer's input, Gaussian noise on the input (in [0, 1])
/// and on every hidden layer while training. Returns logits.
struct Disc {
    layers: Vec<Linear>,
    noise_input: f64,
    noise_hidden: f64,
}

impl Disc {
    fn new(noise_input: f64, noise_hidden: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let widths = [784, 1000, 500, 250, 250, 250, 1];
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| linear(w[0] + CLASSES, w[1], vb.pp(format!("fc{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            layers,
            noise_input,
            noise_hidden,
        })
    }

    fn logits(&self, x: &Tensor, y: &Tensor, rng: &mut Rng) -> candle_core::Result<Tensor> {
        let mut h = gaussian_noise(&unit(&x.flatten_from(1)?)?, self.noise_input, rng)?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let hy = Tensor::cat(&[&h, y], 1)?;
            h = match i < last {
                true => gaussian_noise(&layer.forward_leaky(&hy, 0.2)?, self.noise_hidden, rng)?,
                false => layer.forward(&hy)?,
            };
        }
        h.squeeze(1)
    }
}

/// D's loss, the negative of Li et al.'s utility for D: its real pairs judged real, C's
/// pairs (weight alpha) and G's (weight 1 - alpha) judged fake; binary cross-entropies
/// of D's logits, each averaged over its pairs.
pub fn d_loss(real: &Tensor, by_c: &Tensor, by_g: &Tensor, alpha: f64) -> Result<Tensor> {
    let r = bce_with_logits_const(real, 1.0)?;
    let c = (bce_with_logits_const(by_c, 0.0)? * alpha)?;
    let g = (bce_with_logits_const(by_g, 0.0)? * (1.0 - alpha))?;
    Ok(((r + c)? + g)?)
}

/// C's adversarial loss on unlabelled images, the authors' argmax approximation: the
/// pair (x, argmax C(x)) judged by D (`d_logits`, constants to C), weighted by C's
/// probability of that label (`p_max`, through which C's gradient flows), times alpha:
/// alpha mean(p_max BCE(D(x, y_hat), real)).
pub fn c_adversarial(p_max: &Tensor, d_logits: &Tensor, alpha: f64) -> Result<Tensor> {
    let per_pair = (gan_core::loss::softplus(d_logits)? - d_logits)?.detach();
    Ok(((p_max * per_pair)?.mean_all()? * alpha)?)
}

/// The unlabelled terms of C's loss from its log-probabilities `log_p` `[N, K]`: the mean
/// entropy of its predictions (confident predictions), and the cross-entropy of their
/// mean against the uniform distribution (every class used), as the authors'
/// `categorical_crossentropy_ssl_separated`.
pub fn c_unlabelled_terms(log_p: &Tensor) -> Result<(Tensor, Tensor)> {
    let p = log_p.exp()?;
    let entropy = (&p * log_p)?.sum(1)?.mean_all()?.neg()?;
    let balance = p.mean(0)?.clamp(1e-6f32, 1f32)?.log()?.mean_all()?.neg()?;
    Ok((entropy, balance))
}

/// Triple-GAN's three players, C's moving average, and its settings.
pub struct Triplegan {
    cfg: TripleganConfig,
    c_vars: VarMap,
    g_vars: VarMap,
    d_vars: VarMap,
    ema_vars: VarMap,
    c: Cnn,
    ema: Cnn,
    g: Gen,
    d: Disc,
    device: Device,
    seed: u64,
}

impl Triplegan {
    /// Builds the networks on `device`, weights drawn from `seed` (which also picks the
    /// labelled digits).
    pub fn new(cfg: TripleganConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(
            cfg.labels.is_multiple_of(CLASSES),
            "--labels must be a multiple of 10 (an equal number of each digit), or 0 for \
             every label; got {}",
            cfg.labels
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&cfg.alpha),
            "--alpha must be in [0, 1], got {}",
            cfg.alpha
        );
        anyhow::ensure!(
            cfg.batch_u > 0 && cfg.batch_g >= CLASSES && cfg.z_dim > 0,
            "triplegan needs --batch-u > 0, --batch-g >= 10 and --z-dim > 0"
        );
        anyhow::ensure!(
            cfg.balance.len() == 2,
            "--balance takes two weights (in the game, in pre-training), got {:?}",
            cfg.balance
        );
        anyhow::ensure!(
            cfg.lr_all > 0.0
                && cfg.pretrain_lr_scale > 0.0
                && cfg.anneal > 0.0
                && cfg.ema > 0.0
                && cfg.ema <= 1.0,
            "triplegan needs --lr-all, --pretrain-lr-scale, --anneal > 0 and --ema in (0, 1]"
        );
        let vars = [VarMap::new(), VarMap::new(), VarMap::new(), VarMap::new()];
        let vb = |v: &VarMap| VarBuilder::from_varmap(v, DType::F32, device);
        let c = Cnn::new(vb(&vars[0]))?;
        let g = Gen::new(cfg.z_dim, vb(&vars[1]))?;
        let d = Disc::new(cfg.noise_input, cfg.noise_hidden, vb(&vars[2]))?;
        let ema = Cnn::new(vb(&vars[3]))?;
        let mut r = gan_core::prior::rng(seed, gan_core::prior::RngStream::Init);
        for v in &vars[..3] {
            gan_core::init::reinit(v, gan_core::init::WeightInit::FanInUniform, &mut r)?;
        }
        let [c_vars, g_vars, d_vars, ema_vars] = vars;
        // The average starts at C's own weights.
        copy_vars(&c_vars, &ema_vars, 1.0)?;
        Ok(Self {
            cfg,
            c_vars,
            g_vars,
            d_vars,
            ema_vars,
            c,
            ema,
            g,
            d,
            device: device.clone(),
            seed,
        })
    }

    /// The labels of G's batch: `n` spread evenly over the classes, in order.
    fn even_labels(n: usize) -> Vec<u32> {
        (0..n).map(|i| (i * CLASSES / n) as u32).collect()
    }

    /// G's images `[n, 1, 28, 28]` of labels `y` (u32), noise from `rng`.
    fn fake(&self, y: &[u32], train: bool, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
        let n = y.len();
        let noise = LatentSpec(vec![Latent::Uniform {
            dim: self.cfg.z_dim,
            low: 0.0,
            high: 1.0,
        }]);
        let z = noise.sample(n, rng, &self.device)?.z;
        let y1 = one_hot(y, CLASSES, &self.device)?;
        let x = self.g.forward_t(&z, &y1, train)?.reshape((n, 1, 28, 28))?;
        Ok((x, y1))
    }

    /// C's label for each image (argmax, training mode: as the game sees it), one-hot,
    /// with no gradient anywhere.
    fn c_labels(&self, x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let logits = frozen(|| self.c.logits(x, Some(rng)))?.detach();
        let y = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        Ok(one_hot(&y, CLASSES, &self.device)?)
    }

    /// a += rate (c - a) for every variable of C (running statistics too).
    fn update_average(&self) -> Result<()> {
        copy_vars(&self.c_vars, &self.ema_vars, self.cfg.ema)
    }

    /// C's supervised terms on the labelled batch: cross-entropy and the output layer's
    /// weight decay, with the batch accuracy.
    fn labelled_terms(&self, step: &mut Step) -> Result<(Tensor, f32)> {
        let lab = step.batch("labelled")?;
        let logits = self.c.logits(&lab.images, Some(step.rng))?;
        let ce = gan_core::loss::cross_entropy(&logits, lab.labels()?)?;
        let decay = (self.c.out_weight().sqr()?.sum_all()? * self.cfg.decay)?;
        let acc = logits
            .argmax(D::Minus1)?
            .eq(lab.labels()?)?
            .to_dtype(DType::F32)?
            .mean_all()?
            .to_scalar::<f32>()?;
        Ok(((ce + decay)?, acc))
    }

    /// C's loss without the game: labels, plus the unlabelled entropy and balance terms
    /// when `balance` is given (pre-training); labels alone for the supervised baseline.
    fn c_pre_step(&self, step: &mut Step, balance: Option<f64>) -> Result<StepOutput> {
        self.update_average()?;
        let (sup, acc) = self.labelled_terms(step)?;
        let Some(balance) = balance else {
            return Ok(StepOutput::new(sup).with("c_acc_l", acc));
        };
        let xu = &step.batch("unlabelled")?.images;
        let log_p = candle_nn::ops::log_softmax(&self.c.logits(xu, Some(step.rng))?, 1)?;
        let (ent, bal) = c_unlabelled_terms(&log_p)?;
        let loss = ((sup + (&ent * self.cfg.entropy)?)? + (&bal * balance)?)?;
        Ok(StepOutput::new(loss)
            .with("c_acc_l", acc)
            .with("c_entropy", ent.to_scalar::<f32>()?))
    }

    /// D's line: real pairs (labelled, and unlabelled ones labelled by C) against C's
    /// pairs and G's.
    fn d_step(&self, step: &mut Step) -> Result<StepOutput> {
        let lab = step.batch("labelled")?;
        // The authors give D max(N / 100, 1) labelled pairs a step beside the pseudo-real.
        let n_l = if self.cfg.batch_pseudo > 0 {
            (self.cfg.labels / 100).max(1).min(lab.len()?)
        } else {
            lab.len()?
        };
        let mut real_x = vec![lab.images.narrow(0, 0, n_l)?];
        let mut real_y = vec![candle_nn::encoding::one_hot(
            lab.labels()?.narrow(0, 0, n_l)?,
            CLASSES,
            1f32,
            0f32,
        )?];
        if self.cfg.batch_pseudo > 0 {
            let xp = step.batch("pseudo")?.images.clone();
            real_y.push(self.c_labels(&xp, step.rng)?);
            real_x.push(xp);
        }
        let real = self.d.logits(
            &Tensor::cat(&real_x, 0)?,
            &Tensor::cat(&real_y, 0)?,
            step.rng,
        )?;
        let xu = step.batch("unlabelled")?.images.clone();
        let yu = self.c_labels(&xu, step.rng)?;
        let by_c = self.d.logits(&xu, &yu, step.rng)?;
        let (xg, yg) = frozen(|| self.fake(&Self::even_labels(self.cfg.batch_g), true, step.rng))?;
        let by_g = self.d.logits(&xg.detach(), &yg, step.rng)?;
        Ok(
            StepOutput::new(d_loss(&real, &by_c, &by_g, self.cfg.alpha)?)
                .with("d_real_acc", binary_accuracy(&real, true)?)
                .with("d_c_acc", binary_accuracy(&by_c, false)?)
                .with("d_g_acc", binary_accuracy(&by_g, false)?),
        )
    }

    /// G's line: (1 - alpha) times the cross-entropy of its pairs judged real.
    fn g_step(&self, step: &mut Step) -> Result<StepOutput> {
        let (xg, yg) = self.fake(&Self::even_labels(self.cfg.batch_g), true, step.rng)?;
        let logits = frozen(|| self.d.logits(&xg, &yg, step.rng))?;
        Ok(StepOutput::new(
            (bce_with_logits_const(&logits, 1.0)? * (1.0 - self.cfg.alpha))?,
        ))
    }

    /// C's line: its adversarial term on unlabelled images, the labels (R_L), the
    /// unlabelled entropy and balance, and after the warm-up R_P on G's pairs.
    fn c_step(&self, step: &mut Step) -> Result<StepOutput> {
        self.update_average()?;
        let (sup, acc) = self.labelled_terms(step)?;
        let xu = step.batch("unlabelled")?.images.clone();
        let log_p = candle_nn::ops::log_softmax(&self.c.logits(&xu, Some(step.rng))?, 1)?;
        let (ent, bal) = c_unlabelled_terms(&log_p)?;
        let p = log_p.exp()?;
        let p_max = p.max(D::Minus1)?;
        let y_hat = p.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let y_hat = one_hot(&y_hat, CLASSES, &self.device)?;
        let d_logits = frozen(|| self.d.logits(&xu, &y_hat, step.rng))?.detach();
        let adv = c_adversarial(&p_max, &d_logits, self.cfg.alpha)?;
        let mut loss =
            (((adv + sup)? + (&ent * self.cfg.entropy)?)? + (&bal * self.cfg.balance[0])?)?;
        if self.rp_on(step.epoch()) {
            loss = (loss + (self.rp(step)? * self.cfg.alpha_p)?)?;
        }
        Ok(StepOutput::new(loss)
            .with("c_acc_l", acc)
            .with("c_entropy", ent.to_scalar::<f32>()?))
    }

    /// Whether R_P is on in epoch `epoch` (0-based).
    pub fn rp_on(&self, epoch: usize) -> bool {
        self.cfg.alpha_p > 0.0 && epoch >= self.cfg.rp_from_epoch
    }

    /// R_P: C's cross-entropy on G's pairs, G's images constants.
    fn rp(&self, step: &mut Step) -> Result<Tensor> {
        let y = Self::even_labels(self.cfg.batch_g);
        let (xg, _) = frozen(|| self.fake(&y, true, step.rng))?;
        let logits = self.c.logits(&xg.detach(), Some(step.rng))?;
        Ok(gan_core::loss::cross_entropy(
            &logits,
            &Tensor::new(y, &self.device)?,
        )?)
    }

    /// C's moving average's class for each image (what evaluation scores).
    pub fn predict(&self, images: &Tensor) -> Result<Vec<u32>> {
        let n = images.dim(0)?;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(500) {
            let x = images.narrow(0, start, 500.min(n - start))?;
            out.extend(
                self.ema
                    .logits(&x, None)?
                    .argmax(D::Minus1)?
                    .to_vec1::<u32>()?,
            );
        }
        Ok(out)
    }
}

/// `to += rate (from - to)` for every variable of `from`, by name (rate 1: a copy).
fn copy_vars(from: &VarMap, to: &VarMap, rate: f64) -> Result<()> {
    let src = from.data().lock().expect("a VarMap's lock");
    let dst = to.data().lock().expect("a VarMap's lock");
    for (name, v) in src.iter() {
        let a = dst
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("the moving average has no variable {name}"))?;
        let next = if rate >= 1.0 {
            v.as_tensor().detach()
        } else {
            (a.as_tensor() + ((v.as_tensor() - a.as_tensor())? * rate)?)?
        };
        a.set(&next)?;
    }
    Ok(())
}

impl Model for Triplegan {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![
            ("c", &self.c_vars),
            ("g", &self.g_vars),
            ("d", &self.d_vars),
        ]
    }

    fn buffers(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("c_average", &self.ema_vars)]
    }

    fn streams(&self) -> Vec<Stream> {
        let labelled = match self.cfg.labels {
            0 => Source::Mnist { channels: 1 },
            n => Source::MnistLabelled {
                per_class: n / CLASSES,
                seed: self.seed,
            },
        };
        let lab_batch = match self.cfg.labels {
            0 => 100,
            n => n.min(100),
        };
        let unlabelled = Source::Domain {
            name: "mnist",
            labels: false,
            channels: 1,
        };
        let mut s = vec![
            Stream::new("unlabelled", 0)
                .of(unlabelled)
                .with_batch_size(self.cfg.batch_u),
            Stream::new("labelled", 1)
                .of(labelled)
                .with_batch_size(lab_batch),
        ];
        if self.cfg.batch_pseudo > 0 && !self.cfg.supervised_only {
            s.push(
                Stream::new("pseudo", 2)
                    .of(unlabelled)
                    .with_batch_size(self.cfg.batch_pseudo),
            );
        }
        s
    }

    fn phases(&self) -> Vec<Phase> {
        if self.cfg.supervised_only {
            return vec![Phase::new("c_sup", &["c"])];
        }
        let p = self.cfg.pretrain_steps;
        let mut phases = Vec::new();
        if p > 0 {
            phases.push(Phase::new("c_pre", &["c"]).until_step(p));
        }
        phases.extend([
            Phase::new("d", &["d"]).from_step(p),
            Phase::new("g", &["g"]).from_step(p),
            Phase::new("c", &["c"]).from_step(p),
        ]);
        phases
    }

    fn lr_scale_at(&self, _progress: f64, step: u64, epoch: usize) -> f64 {
        if !self.cfg.supervised_only && step <= self.cfg.pretrain_steps {
            return self.cfg.pretrain_lr_scale;
        }
        let decays = (epoch + 1).saturating_sub(self.cfg.anneal_from_epoch);
        self.cfg.anneal.powi(decays as i32)
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        match phase {
            "c_pre" => self.c_pre_step(step, Some(self.cfg.balance[1])),
            "c_sup" => self.c_pre_step(step, None),
            "d" => self.d_step(step),
            "g" => self.g_step(step),
            "c" => self.c_step(step),
            other => Err(no_such_phase(self.kind(), other)),
        }
    }

    /// G's samples, one row per label.
    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>> {
        let y: Vec<u32> = (0..CLASSES as u32).flat_map(|d| [d; 10]).collect();
        let (images, _) = self.fake(&y, false, rng)?;
        Ok(vec![Figure {
            name: "samples".into(),
            images,
            cols: 10,
        }])
    }

    fn generator(&self) -> Option<&dyn Generator> {
        (!self.cfg.supervised_only).then_some(self as &dyn Generator)
    }

    fn classifier(&self) -> Option<&dyn Classifier> {
        Some(self)
    }
}

impl Generator for Triplegan {
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor> {
        let y: Vec<u32> = match class {
            Some(c) if c as usize >= CLASSES => {
                anyhow::bail!("--label must be a digit 0-9, got {c}")
            }
            Some(c) => vec![c; n],
            None => (0..n)
                .map(|_| rng.random_range(0..CLASSES as u32))
                .collect(),
        };
        Ok(self.fake(&y, false, rng)?.0)
    }

    fn conditioning(&self) -> Conditioning {
        Conditioning::Label(CLASSES)
    }
}

impl Classifier for Triplegan {
    fn classify(&self, images: &Tensor) -> Result<Vec<u32>> {
        self.predict(images)
    }

    fn classes(&self) -> usize {
        CLASSES
    }

    fn supervised(&self) -> bool {
        true
    }
}

impl Registered for Triplegan {
    type Config = TripleganConfig;
    const KIND: &'static str = "triplegan";
    const ABOUT: &'static str =
        "Triple-GAN: classifier, conditional generator and pair discriminator; semi-supervised (100 labels)";
    fn build(cfg: TripleganConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
    fn network_lr(cfg: &TripleganConfig) -> Vec<(&'static str, f64)> {
        vec![("c", cfg.lr_all), ("g", cfg.lr_all), ("d", cfg.lr_all)]
    }
}
