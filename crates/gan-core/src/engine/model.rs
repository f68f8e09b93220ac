//! The contract between a model and the engine: networks, data streams, phases, figures
//! and capabilities.
//!
//! A model's step is a list of phases, each the "update network X by descending its
//! stochastic gradient" line of the paper's algorithm box. The engine runs them in order,
//! each on its own schedule, backpropagates each phase's loss and steps the optimizers
//! of the networks that phase names, and nothing else.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use candle_nn::VarMap;

use crate::prior::Rng;

/// A mini-batch of one data stream.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, C, H, W]` images in [-1, 1] (C = 1 for MNIST, 3 for colour domains).
    pub images: Tensor,
    /// `[B]` u32 class labels, for streams whose data set has them.
    pub labels: Option<Tensor>,
}

impl Batch {
    /// The labels, or an error naming what asked for them on an unlabelled stream.
    pub fn labels(&self) -> Result<&Tensor> {
        self.labels
            .as_ref()
            .context("this model needs labels, but its data stream has none")
    }

    /// Examples in the batch.
    pub fn len(&self) -> Result<usize> {
        Ok(self.images.dim(0)?)
    }

    /// Whether the batch holds no example (never for the engine's batches).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// A named data stream a model reads every step.
///
/// Each stream is shuffled on its own: `salt` keys its permutations apart from the
/// others', so two index-aligned data sets (MNIST and an MNIST-M built from it) are never
/// drawn in lock step, unless one is declared the other's pair ([`Stream::paired_with`]):
/// then both are drawn in the same order, example i of one beside example i of the other.
/// The first stream a model declares sets the epoch; the others cycle through their own
/// epochs, and the checkpoint keeps each one's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Name the model asks for (`real`, `labelled`, `source`, `target`, ...).
    pub name: &'static str,
    /// Keys this stream's shuffling; distinct for every stream of a model.
    pub salt: u64,
    /// Examples per batch; `None` takes the run's `batch_size`.
    pub batch_size: Option<usize>,
    /// What its examples are, for the program that loads them.
    pub source: Source,
    /// The stream whose order this one follows: its data set is index-aligned with that
    /// one's (an MNIST-M-style image i is MNIST digit i on a photo), so each batch holds
    /// the same examples of both. `None`: shuffled on its own salt.
    pub paired_with: Option<&'static str>,
}

/// Where a stream's examples come from. The engine trains on whatever [`Streams`] it is
/// given; the program that builds them (gan-cli, through gan-data) reads this to know
/// what to load, so a model declares its data once.
///
/// [`Streams`]: crate::engine::Streams
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// MNIST's 60,000 training digits with their labels; `channels` 1, or 3 (the grey
    /// repeated) to sit beside a colour domain.
    Mnist {
        /// 1 or 3.
        channels: usize,
    },
    /// The training split of a target domain by its gan-data name (`mnistm`, `uci`),
    /// in the domain's own channels. Without `labels` the stream carries none, so a model
    /// that adapts without them cannot read them by mistake.
    Domain {
        /// The domain's name.
        name: &'static str,
        /// Whether the stream carries its labels (a model trained on target labels).
        labels: bool,
        /// The domain's channels, as the model's first layer expects them.
        channels: usize,
    },
    /// A few labelled MNIST training digits, `per_class` of each class, chosen by `seed`
    /// (semi-supervised learning's labelled set); one channel.
    MnistLabelled {
        /// Digits of each class.
        per_class: usize,
        /// Which ones: the same seed picks the same digits.
        seed: u64,
    },
}

impl Source {
    /// Channels of the stream's images.
    pub fn channels(&self) -> usize {
        match *self {
            Source::Mnist { channels } | Source::Domain { channels, .. } => channels,
            Source::MnistLabelled { .. } => 1,
        }
    }
}

impl Stream {
    /// A stream of MNIST with the run's batch size.
    pub const fn new(name: &'static str, salt: u64) -> Self {
        Self {
            name,
            salt,
            batch_size: None,
            source: Source::Mnist { channels: 1 },
            paired_with: None,
        }
    }

    /// The same stream with examples from `source`.
    pub const fn of(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// The real images of an ordinary GAN: salt 0, which replays the order of every run
    /// saved before streams existed.
    pub const fn real() -> Self {
        Self::new("real", 0)
    }

    /// The same stream drawn in the order of stream `leader`: the engine checks that
    /// both data sets have as many examples and batches of one size, and gives this one
    /// the leader's permutations (its own salt is then unused).
    pub const fn paired_with(mut self, leader: &'static str) -> Self {
        self.paired_with = Some(leader);
        self
    }

    /// The same stream with its own batch size.
    pub const fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }
}

/// How often a phase runs, counted in steps (one batch of every stream per step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// Every step.
    Step,
    /// Every k-th step, k from the run's settings (Algorithm 1's k discriminator steps
    /// per generator step).
    K,
    /// Every n-th step.
    N(u64),
}

/// One update of a step: the networks it moves and how often it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Short name; its loss is logged as `<name>_loss`.
    pub name: &'static str,
    /// The networks whose optimizers step on this phase's loss.
    pub networks: Vec<&'static str>,
    /// Its schedule.
    pub every: Every,
    /// It runs only after this many steps of the run (a phase that starts after a
    /// warm-up); 0 by default.
    pub from_step: u64,
    /// It runs only within the run's first this-many steps (a pre-training phase);
    /// `None`: to the end.
    pub until_step: Option<u64>,
}

impl Phase {
    /// A phase that runs every step.
    pub fn new(name: &'static str, networks: &[&'static str]) -> Self {
        Self {
            name,
            networks: networks.to_vec(),
            every: Every::Step,
            from_step: 0,
            until_step: None,
        }
    }

    /// The same phase, run only once `steps` steps of the run are done.
    pub fn from_step(mut self, steps: u64) -> Self {
        self.from_step = steps;
        self
    }

    /// The same phase, run only within the run's first `steps` steps.
    pub fn until_step(mut self, steps: u64) -> Self {
        self.until_step = Some(steps);
        self
    }

    /// The same phase on another schedule.
    pub fn every(mut self, every: Every) -> Self {
        self.every = every;
        self
    }

    /// Whether the phase runs at `step` (1-based: the step being done).
    pub fn runs_at(&self, step: u64, k: usize) -> bool {
        if step <= self.from_step || self.until_step.is_some_and(|u| step > u) {
            return false;
        }
        match self.every {
            Every::Step => true,
            Every::K => step.is_multiple_of(k as u64),
            Every::N(n) => step.is_multiple_of(n.max(1)),
        }
    }
}

/// What a phase sees: the step's batches, the run's noise generator, and tensors handed
/// on by earlier phases of the same step.
pub struct Step<'a> {
    batches: &'a BTreeMap<String, Batch>,
    /// The run's noise; checkpointed, so a resumed run draws what it would have drawn.
    pub rng: &'a mut Rng,
    carry: BTreeMap<&'static str, Tensor>,
    progress: f64,
    number: u64,
    epoch: usize,
}

impl<'a> Step<'a> {
    /// A step over `batches` (by stream name).
    pub fn new(batches: &'a BTreeMap<String, Batch>, rng: &'a mut Rng) -> Self {
        Self {
            batches,
            rng,
            carry: BTreeMap::new(),
            progress: 0.0,
            number: 1,
            epoch: 0,
        }
    }

    /// The same step as step `number` (1-based) of the run, in epoch `epoch` (0-based)
    /// of its first stream.
    pub fn numbered(mut self, number: u64, epoch: usize) -> Self {
        self.number = number;
        self.epoch = epoch;
        self
    }

    /// Which step of the run this is, from 1.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The epoch of the run's first stream this step belongs to, from 0: schedules
    /// counted in epochs (Triple-GAN's warm-up) read it.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The same step at `progress` through its run (see [`Step::progress`]).
    pub fn at(mut self, progress: f64) -> Self {
        self.progress = progress;
        self
    }

    /// How far through the run this step is, in [0, 1): the steps done before it over
    /// the steps of the run's `--epochs` of its first stream (`--max-steps` stops a run
    /// early without changing this; a resumed run with more epochs stretches what is
    /// left). Schedules that anneal with training, such as DANN's adversarial weight,
    /// read it; 0 outside a run.
    pub fn progress(&self) -> f64 {
        self.progress
    }

    /// This step's batch of `stream`.
    pub fn batch(&self, stream: &str) -> Result<&'a Batch> {
        match self.batches.get(stream) {
            Some(b) => Ok(b),
            None => bail!(
                "no batch of stream {stream:?} in this step (it has {:?}): declare the stream in Model::streams",
                self.batches.keys().collect::<Vec<_>>()
            ),
        }
    }

    /// The batch of the `real` stream, the one an ordinary GAN reads.
    pub fn real(&self) -> Result<&'a Batch> {
        self.batch("real")
    }

    /// Hands a tensor to the later phases of this step (the official PyTorch DCGAN
    /// example gives D's fakes to G's update: one generator forward per step).
    pub fn put(&mut self, name: &'static str, t: Tensor) {
        self.carry.insert(name, t);
    }

    /// Takes what an earlier phase of this step handed on, if it did.
    pub fn take(&mut self, name: &str) -> Option<Tensor> {
        self.carry.remove(name)
    }
}

/// What one phase computed: the loss to descend and numbers worth logging.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Scalar loss; the engine backpropagates it into the phase's networks.
    pub loss: Tensor,
    /// Extra per-step metrics (e.g. discriminator accuracy), logged as they are.
    pub metrics: Vec<(&'static str, f32)>,
}

impl StepOutput {
    /// A step output with no extra metrics.
    pub fn new(loss: Tensor) -> Self {
        Self {
            loss,
            metrics: Vec::new(),
        }
    }

    /// Adds a metric to log.
    pub fn with(mut self, name: &'static str, value: f32) -> Self {
        self.metrics.push((name, value));
        self
    }
}

/// A picture a model wants drawn every epoch: images tiled `cols` to a row.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem under the run's `samples/` folder.
    pub name: String,
    /// `[N, C, H, W]` in [-1, 1].
    pub images: Tensor,
    /// Images per row.
    pub cols: usize,
}

/// What a generator can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditioning {
    /// Nothing: it draws from its prior only.
    None,
    /// A class label it was trained with (cGAN): sample `i` of label `y` should be digit `y`.
    Label(usize),
    /// A categorical code learnt without labels (InfoGAN's c1): its categories mean
    /// whatever training made of them, matched to classes by evaluation.
    Code(usize),
}

/// A model that draws images. `Sync`, as [`Model`] is: evaluation lends it to one of
/// rayon's workers to generate ([`crate::fast::on_worker`]).
pub trait Generator: Sync {
    /// `n` images `[n, C, H, W]` in [-1, 1]; `class` picks a label or category where
    /// [`Generator::conditioning`] offers one, and is refused otherwise.
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor>;
    /// What `class` means to this generator.
    fn conditioning(&self) -> Conditioning {
        Conditioning::None
    }
}

/// A model that assigns images to classes.
pub trait Classifier {
    /// One class per image of `images` `[N, C, H, W]` in [-1, 1].
    fn classify(&self, images: &Tensor) -> Result<Vec<u32>>;
    /// Number of classes it chooses from.
    fn classes(&self) -> usize;
    /// Whether its classes are the data set's labels (trained with labels), or
    /// categories found without them that evaluation must first match to labels.
    fn supervised(&self) -> bool;
    /// The probability of each class, `[N, classes]`, where the classifier has them:
    /// the evaluation's label-free measures of a code read them. `None` by default.
    fn probabilities(&self, _images: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// A model that learns features two domains share (domain-adversarial training): a
/// feature extractor F, a label predictor on F, and a domain classifier on F.
pub trait DomainAdapter {
    /// The target domain it adapts MNIST to, by gan-data's name (`mnistm`, `uci`).
    fn target(&self) -> &'static str;
    /// Channels it reads: MNIST is given as 1, or as 3 beside a colour target.
    fn channels(&self) -> usize;
    /// F(x), `[N, F]`, for images of either domain.
    fn features(&self, images: &Tensor) -> Result<Tensor>;
    /// The label predictor's digit for each image.
    fn classify(&self, images: &Tensor) -> Result<Vec<u32>>;
    /// The domain classifier's probability that each image is from the target domain.
    fn target_probability(&self, images: &Tensor) -> Result<Vec<f32>>;
}

/// Which of a [`Disentangler`]'s two domains images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// MNIST.
    Source,
    /// The second domain, [`Disentangler::target`].
    Target,
}

/// A model that splits an image into what it shows and how it looks: a content code (the
/// digit) and a domain code (the style of its domain), and renders any content in any
/// style. Its adversary tries to tell the domain from the content code.
pub trait Disentangler {
    /// The second domain, by gan-data's name (the first is MNIST).
    fn target(&self) -> &'static str;
    /// Channels it reads (MNIST repeated to match a colour target).
    fn channels(&self) -> usize;
    /// Content codes `[N, C]` of images `[N, C, H, W]` in [-1, 1], all from `domain`: a
    /// content encoder may normalise its codes by its domain's statistics, as domains are
    /// known in the notes' setting (each utterance's speaker).
    fn content(&self, images: &Tensor, domain: Domain) -> Result<Tensor>;
    /// Domain codes `[N, S]`.
    fn style(&self, images: &Tensor) -> Result<Tensor>;
    /// Images rendered from content codes `[N, C]` and domain codes `[N, S]`.
    fn render(&self, content: &Tensor, style: &Tensor) -> Result<Tensor>;
    /// The adversary's probability that each image's content code comes from the target
    /// domain (the images all from `domain`, as for [`Disentangler::content`]).
    fn target_probability(&self, images: &Tensor, domain: Domain) -> Result<Vec<f32>>;
    /// The images, all from `domain`, rebuilt from their own two codes.
    fn reconstruct(&self, images: &Tensor, domain: Domain) -> Result<Tensor> {
        self.render(&self.content(images, domain)?, &self.style(images)?)
    }
    /// The swap grid: cell (i, j) renders the content of `contents` i (from `domains` i)
    /// in the style of `styles` j, `[R * K, C, H, W]` row by row.
    fn swap(&self, contents: &Tensor, domains: &[Domain], styles: &Tensor) -> Result<Tensor> {
        let r = contents.dim(0)?;
        anyhow::ensure!(
            domains.len() == r,
            "swap: {r} content images but {} domains",
            domains.len()
        );
        let rows = (0..r)
            .map(|i| self.content(&contents.narrow(0, i, 1)?, domains[i]))
            .collect::<Result<Vec<_>>>()?;
        let (c, s) = (Tensor::cat(&rows, 0)?, self.style(styles)?);
        let k = s.dim(0)?;
        let idx_c: Vec<u32> = (0..r * k).map(|i| (i / k) as u32).collect();
        let idx_s: Vec<u32> = (0..r * k).map(|i| (i % k) as u32).collect();
        let dev = c.device();
        self.render(
            &c.index_select(&Tensor::new(idx_c, dev)?, 0)?,
            &s.index_select(&Tensor::new(idx_s, dev)?, 0)?,
        )
    }
}

/// A model that predicts a structured output: the missing part of an image, given the
/// rest (the notes' prediction by search, x* = argmax over the free pixels).
pub trait Completer {
    /// `images` `[N, 1, H, W]` in [-1, 1] completed where `free` (`[1, 1, H, W]`, 1 for
    /// a pixel to predict, 0 for a given one) says; the given pixels come back as they
    /// were.
    fn complete(&self, images: &Tensor, free: &Tensor, rng: &mut Rng) -> Result<Tensor>;
}

/// A model that maps images to a latent representation, and back.
pub trait Encoder {
    /// Codes `[N, D]` of images `[N, C, H, W]` in [-1, 1] (a VAE's posterior means).
    fn encode(&self, images: &Tensor) -> Result<Tensor>;
    /// The encoder's layer before its output, `[N, F]`: the features that
    /// representation learning is usually judged on.
    fn features(&self, images: &Tensor) -> Result<Tensor>;
    /// Images `[N, C, H, W]` in [-1, 1] decoded from codes `[N, D]`.
    fn decode(&self, codes: &Tensor) -> Result<Tensor>;
    /// The images decoded from their codes: De(En(x)).
    fn reconstruct(&self, images: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(images)?)
    }
    /// The straight line in code space from En(a_i) to En(b_i), decoded at `steps`
    /// evenly spaced points (both ends included): `[P * steps, C, H, W]`, pair by pair.
    /// Whether the images between two digits are digits too says how smooth the code
    /// space is.
    fn interpolate(&self, a: &Tensor, b: &Tensor, steps: usize) -> Result<Tensor> {
        anyhow::ensure!(
            steps >= 2,
            "an interpolation needs at least 2 steps, got {steps}"
        );
        anyhow::ensure!(
            a.dims() == b.dims(),
            "interpolation ends differ in shape: {:?} and {:?}",
            a.dims(),
            b.dims()
        );
        let (za, zb) = (self.encode(a)?, self.encode(b)?);
        let (p, d) = za.dims2()?;
        let t: Vec<f32> = (0..steps).map(|i| i as f32 / (steps - 1) as f32).collect();
        let t = Tensor::from_vec(t, (1, steps, 1), za.device())?;
        let (za, zb) = (za.unsqueeze(1)?, zb.unsqueeze(1)?);
        // z(t) = za + t (zb - za), [P, steps, D] flattened pair by pair.
        let path = za.broadcast_add(&(zb - &za)?.broadcast_mul(&t)?)?;
        self.decode(&path.reshape((p * steps, d))?)
    }
}

/// A model the engine trains, as the engine sees it.
///
/// `phases` reads like the paper's algorithm box; `run_phase` computes one of its lines.
/// Fakes given to a discriminator must be `detach()`ed so that its phase costs no
/// generator backward pass. What the model can do after training is offered through
/// the capability methods, each `None` unless the model has it.
pub trait Model: Send + Sync {
    /// Short name of the model (`gan`, `dcgan`, ...); checkpoints carry it.
    fn kind(&self) -> &'static str;
    /// The model's hyper-parameters; a checkpoint resumes only into the same ones.
    fn config(&self) -> serde_json::Value;
    /// Every network with its own variables (and its own optimizer).
    fn networks(&self) -> Vec<(&'static str, &VarMap)>;
    /// State that is no network's weights but belongs to the run: an energy model's
    /// replay buffer of earlier negatives, say. Checkpointed and restored with the
    /// networks, under names of its own, and stepped by no optimizer; none by default.
    fn buffers(&self) -> Vec<(&'static str, &VarMap)> {
        Vec::new()
    }
    /// Networks whose samples are better drawn from a running average of their weights
    /// (a GAN's generator): with [`crate::engine::TrainConfig::ema`] set, the trainer
    /// keeps that average, and figures and [`crate::engine::load_weights`] use it (see
    /// [`crate::engine::ema`]). None by default.
    fn averaged(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// The data streams of a step, the epoch-setting one first.
    fn streams(&self) -> Vec<Stream> {
        vec![Stream::real()]
    }
    /// The phases of a step, in the order they run.
    fn phases(&self) -> Vec<Phase>;
    /// Every network's learning rate at `progress` (see [`Step::progress`]) as a
    /// fraction of its configured one: a schedule that anneals the step size. Constant
    /// unless the model says otherwise.
    fn lr_scale(&self, progress: f64) -> f64 {
        let _ = progress;
        1.0
    }
    /// The same at step `step` (1-based) of epoch `epoch` (0-based), for schedules
    /// counted in steps or epochs rather than the run's fraction; [`Model::lr_scale`]
    /// unless the model says otherwise.
    fn lr_scale_at(&self, progress: f64, step: u64, epoch: usize) -> f64 {
        let _ = (step, epoch);
        self.lr_scale(progress)
    }
    /// The loss of phase `phase` (one of [`Model::phases`]' names) on this step.
    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput>;
    /// Settles what evaluation reads and training does not, from the training data
    /// `data` with the weights as they are: called before each checkpoint and each
    /// epoch's figures. Running averages of such statistics lag weights that keep
    /// moving; exact ones for the saved weights do not, and since training never reads
    /// them, resuming stays exact. Nothing by default.
    fn calibrate(&self, _data: &super::Streams) -> Result<()> {
        Ok(())
    }
    /// The pictures of the model at this point; `rng` is the same every call, so that the
    /// grids of successive epochs show the same noise.
    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>>;
    /// Pictures that need real images, drawn every epoch beside [`Model::figures`]:
    /// `real` is the same few images of the first stream every time (reconstructions,
    /// say); none by default.
    fn figures_of_real(&self, _real: &Tensor, _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(Vec::new())
    }
    /// The same figures with their rows in the order of `classes` (a model whose
    /// categories evaluation matched to labels draws them 0-9); none by default.
    fn figures_in_order(&self, _classes: &[u32], _rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(Vec::new())
    }
    /// Its generator, if it has one.
    fn generator(&self) -> Option<&dyn Generator> {
        None
    }
    /// Its classifier, if it has one.
    fn classifier(&self) -> Option<&dyn Classifier> {
        None
    }
    /// Its encoder, if it has one.
    fn encoder(&self) -> Option<&dyn Encoder> {
        None
    }
    /// Its domain-adapted classifier, if it is one.
    fn domain_adapter(&self) -> Option<&dyn DomainAdapter> {
        None
    }
    /// Its completion of partial images, if it predicts by search.
    fn completer(&self) -> Option<&dyn Completer> {
        None
    }
    /// Its content and domain encoders, if it disentangles the two.
    fn disentangler(&self) -> Option<&dyn Disentangler> {
        None
    }
}

/// The error for a phase name a model does not know, for `run_phase`'s last arm.
pub fn no_such_phase(kind: &str, name: &str) -> anyhow::Error {
    anyhow::anyhow!("{kind} has no phase {name:?}")
}
