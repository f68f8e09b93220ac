//! The one adversarial training loop (Algorithm 1 of Goodfellow et al. 2014) that every
//! model of gan-rs plugs into.
//!
//! A model says which networks it has, what the discriminator's and the generator's
//! losses are, and what pictures to draw; the [`Trainer`] does the rest: k discriminator
//! updates per generator update, one Adam per network over that network's variables,
//! a progress bar, a JSONL metrics log, sample grids every epoch, and checkpoints from
//! which a run resumes exactly where it stopped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{atomic_write, load_tensors, load_vars, save_tensors, var_tensors};
use crate::grads::Collector;
use crate::optim::{Adam, AdamConfig};
use crate::prior::{rng, Rng};

/// A mini-batch of real data.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, 1, 28, 28]` images in [-1, 1].
    pub images: Tensor,
    /// `[B]` u32 class labels (ignored by unconditional models).
    pub labels: Tensor,
}

/// What one phase of a step computed: the loss to descend and numbers worth logging.
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

/// A generative adversarial model, as the engine sees it.
///
/// Each method reads like a line of the paper's algorithm box: `d_step` is "update the
/// discriminator by ascending its stochastic gradient", `g_step` "update the generator
/// by descending its stochastic gradient". The fakes given to the discriminator must be
/// `detach()`ed so that its step costs no generator backward pass.
pub trait GanModel: Send + Sync {
    /// Short name of the model (`gan`, `dcgan`, ...); checkpoints carry it.
    fn kind(&self) -> &'static str;
    /// The model's hyper-parameters; a checkpoint resumes only into the same ones.
    fn config(&self) -> serde_json::Value;
    /// Every network with its own variables.
    fn networks(&self) -> Vec<(&'static str, &VarMap)>;
    /// Networks updated by the discriminator phase.
    fn d_networks(&self) -> Vec<&'static str> {
        vec!["d"]
    }
    /// Networks updated by the generator phase.
    fn g_networks(&self) -> Vec<&'static str> {
        vec!["g"]
    }
    /// The discriminator's loss on one real batch and as many fresh fakes.
    fn d_step(&self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput>;
    /// The generator's loss (the real batch is there for models that need it).
    fn g_step(&self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput>;
    /// The pictures of the model at this point; `rng` is the same every call, so that the
    /// grids of successive epochs show the same noise.
    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>>;
    /// `n` generated images `[n, 1, 28, 28]` in [-1, 1]; `class` picks the label of a
    /// conditional model (or the category of a model with a categorical code).
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor>;
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Real images per discriminator step.
    pub batch_size: usize,
    /// Discriminator steps per generator step (k of Algorithm 1).
    pub k: usize,
    /// Seeds weights, noise and data order.
    pub seed: u64,
    /// Optimizer settings of every network...
    pub adam: AdamConfig,
    /// ...but for the learning rates named here, by network (InfoGAN's G and Q learn 5x
    /// faster than its D).
    #[serde(default)]
    pub network_lr: BTreeMap<String, f64>,
    /// Also checkpoint every this many steps (0: only at the end of each epoch).
    pub checkpoint_every: u64,
    /// Stop after this many discriminator steps in all (for benchmarks and tests).
    pub max_steps: Option<u64>,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            k: 1,
            seed: 0,
            adam: AdamConfig::default(),
            network_lr: BTreeMap::new(),
            checkpoint_every: 0,
            max_steps: None,
            progress: true,
        }
    }
}

impl TrainConfig {
    /// Refuses settings that cannot train, before any work is done.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch size must be at least 1")
        }
        if self.k == 0 {
            bail!("k (discriminator steps per generator step) must be at least 1")
        }
        if self.epochs == 0 {
            bail!("epochs must be at least 1")
        }
        for lr in std::iter::once(&self.adam.lr).chain(self.network_lr.values()) {
            if !(*lr > 0.0 && lr.is_finite()) {
                bail!("learning rate must be a positive number, got {lr}")
            }
        }
        Ok(())
    }
}

/// What a run folder's `config.json` holds: enough to rebuild the model and go on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// [`GanModel::kind`].
    pub model: String,
    /// [`GanModel::config`].
    pub model_config: serde_json::Value,
    /// The training settings.
    pub train: TrainConfig,
}

impl RunConfig {
    /// Reads `RUN_DIR/config.json`.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not a run folder: no readable config.json",
                run_dir.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a gan-rs run config", path.display()))
    }
}

/// Where the loop stands; saved in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopState {
    model: String,
    model_config: serde_json::Value,
    /// Epoch in progress (or the next one, with `batch` 0).
    epoch: usize,
    /// Next batch of that epoch.
    batch: usize,
    /// Discriminator steps done.
    step: u64,
    rng: Rng,
    adam_steps: BTreeMap<String, u64>,
    seconds: f64,
}

/// Per-epoch means of every logged number.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EpochSummary {
    /// Epoch index (0-based).
    pub epoch: usize,
    /// Wall time of the epoch's steps, figures and checkpoint.
    pub seconds: f64,
    /// Real images through the discriminator per second.
    pub images_per_second: f64,
    /// Mean of each metric over the epoch's steps.
    pub means: BTreeMap<String, f64>,
}

/// Runs a [`GanModel`] over a training set, writing everything into one run folder:
/// `config.json`, `metrics.jsonl` (one line per step), `epochs.jsonl`,
/// `samples/<figure>.png` (latest) and `samples/<figure>_epochNNN.png`, and
/// `checkpoints/`.
///
/// ```no_run
/// # use gan_core::engine::{GanModel, TrainConfig, Trainer};
/// # fn demo(model: &dyn GanModel, images: candle_core::Tensor, labels: candle_core::Tensor) -> anyhow::Result<()> {
/// let cfg = TrainConfig { epochs: 2, ..TrainConfig::default() };
/// let mut trainer = Trainer::new(model, cfg, "runs/demo".as_ref())?;
/// let summaries = trainer.fit(&images, &labels)?;
/// println!("last epoch took {:.1} s", summaries.last().unwrap().seconds);
/// # Ok(()) }
/// ```
pub struct Trainer<'m> {
    model: &'m dyn GanModel,
    cfg: TrainConfig,
    run_dir: PathBuf,
    opts: BTreeMap<String, Adam>,
    /// Weight gradients of the step, written in place (see [`crate::grads`]).
    grads: Collector,
    state: LoopState,
}

impl<'m> Trainer<'m> {
    /// A fresh run in `run_dir`, which must not hold a run already (resume it instead).
    pub fn new(model: &'m dyn GanModel, cfg: TrainConfig, run_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        if run_dir.join("checkpoints").exists() || run_dir.join("config.json").exists() {
            bail!(
                "{} already holds a run: pass --resume {} to continue it, or choose another --out",
                run_dir.display(),
                run_dir.display()
            )
        }
        std::fs::create_dir_all(run_dir.join("samples"))
            .with_context(|| format!("creating run folder {}", run_dir.display()))?;
        let run = RunConfig {
            model: model.kind().into(),
            model_config: model.config(),
            train: cfg.clone(),
        };
        atomic_write(
            &run_dir.join("config.json"),
            serde_json::to_string_pretty(&run)?.as_bytes(),
        )?;
        let opts = make_optimizers(model, &cfg)?;
        let state = LoopState {
            model: model.kind().into(),
            model_config: model.config(),
            epoch: 0,
            batch: 0,
            step: 0,
            rng: rng(cfg.seed, 0),
            adam_steps: BTreeMap::new(),
            seconds: 0.0,
        };
        Ok(Self {
            model,
            cfg,
            grads: Collector::new(),
            run_dir: run_dir.into(),
            opts,
            state,
        })
    }

    /// Continues the run in `run_dir` from its latest checkpoint: weights, optimizer
    /// moments, random state and position in the data are restored, so the run goes on
    /// as if it had not stopped. `cfg` may raise `epochs`; the rest must be the run's.
    pub fn resume(model: &'m dyn GanModel, cfg: TrainConfig, run_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        let saved = RunConfig::read(run_dir)?;
        let same = TrainConfig {
            epochs: cfg.epochs,
            max_steps: cfg.max_steps,
            progress: cfg.progress,
            ..saved.train.clone()
        };
        if same != cfg {
            bail!(
                "--resume keeps the run's settings; only --epochs may change (run has {:?})",
                saved.train
            )
        }
        let ckpt = latest_checkpoint(run_dir)?;
        let state: LoopState = read_json(&ckpt.join("state.json"))?;
        check_model(model, &state.model, &state.model_config, &ckpt)?;
        load_networks(model, &ckpt)?;
        let mut opts = make_optimizers(model, &cfg)?;
        for (name, opt) in opts.iter_mut() {
            let moments = load_tensors(
                &ckpt.join(format!("{name}.adam.safetensors")),
                &device_of(model),
            )?;
            let steps = state.adam_steps.get(name).copied().unwrap_or(0);
            opt.load_state(&moments, steps)
                .with_context(|| format!("optimizer of {name} in {}", ckpt.display()))?;
        }
        truncate_metrics(&run_dir.join("metrics.jsonl"), state.step)?;
        let run = RunConfig {
            train: cfg.clone(),
            ..saved
        };
        atomic_write(
            &run_dir.join("config.json"),
            serde_json::to_string_pretty(&run)?.as_bytes(),
        )?;
        Ok(Self {
            model,
            cfg,
            grads: Collector::new(),
            run_dir: run_dir.into(),
            opts,
            state,
        })
    }

    /// Discriminator steps done so far.
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Trains on `images` `[N, 1, 28, 28]` and `labels` `[N]` until the configured epoch
    /// count (or `max_steps`), returning one summary per epoch run by this call.
    pub fn fit(&mut self, images: &Tensor, labels: &Tensor) -> Result<Vec<EpochSummary>> {
        let n = images.dim(0)?;
        let batches = gan_data::Batches::new(n, self.cfg.batch_size, true).with_context(|| {
            format!("{n} training images for batches of {}", self.cfg.batch_size)
        })?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_dir.join("metrics.jsonl"))
            .context("opening metrics.jsonl")?;
        let mut summaries = Vec::new();
        while self.state.epoch < self.cfg.epochs {
            if self.cfg.max_steps.is_some_and(|m| self.state.step >= m) {
                break;
            }
            let epoch = self.state.epoch;
            let started = Instant::now();
            let order = batches.epoch_indices(self.cfg.seed, epoch as u64);
            let bar = self.progress_bar(order.len() as u64, epoch);
            bar.set_position(self.state.batch as u64);
            let mut means: BTreeMap<String, (f64, usize)> = BTreeMap::new();
            let mut seen = 0usize;
            let mut lines = String::new();
            // The next batches are gathered on another thread while this one trains.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(2);
            let pending = &order[self.state.batch..];
            std::thread::scope(|scope| -> Result<()> {
                scope.spawn(move || {
                    for idx in pending {
                        let batch = gather(images, labels, idx);
                        // A closed channel means training stopped early: nothing to do.
                        if tx.send(batch).is_err() {
                            break;
                        }
                    }
                });
                // By value: leaving the loop early drops the receiver, which ends the
                // producer instead of leaving it blocked on a full channel.
                for batch in rx {
                    if self.cfg.max_steps.is_some_and(|m| self.state.step >= m) {
                        break;
                    }
                    let batch = batch?;
                    let mut record = self.train_step(&batch)?;
                    seen += batch.images.dim(0)?;
                    for (k, v) in &record {
                        let e = means.entry(k.clone()).or_default();
                        e.0 += *v as f64;
                        e.1 += 1;
                    }
                    record.insert("epoch".into(), epoch as f32);
                    let mut line = serde_json::Map::new();
                    line.insert("step".into(), self.state.step.into());
                    for (k, v) in &record {
                        line.insert(k.clone(), serde_json::json!(v));
                    }
                    lines.push_str(&serde_json::Value::Object(line).to_string());
                    lines.push('\n');
                    bar.inc(1);
                    if self.state.step.is_multiple_of(10) {
                        bar.set_message(running(&means));
                    }
                    if self.cfg.checkpoint_every > 0
                        && self.state.step.is_multiple_of(self.cfg.checkpoint_every)
                    {
                        log.write_all(lines.as_bytes())?;
                        lines.clear();
                        self.state.seconds += started.elapsed().as_secs_f64();
                        self.checkpoint()?;
                    }
                }
                Ok(())
            })?;
            log.write_all(lines.as_bytes())?;
            let finished_epoch = self.state.batch == order.len();
            if finished_epoch {
                self.state.epoch += 1;
                self.state.batch = 0;
            }
            self.draw(epoch)?;
            self.checkpoint()?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            let summary = EpochSummary {
                epoch,
                seconds,
                images_per_second: seen as f64 / seconds.max(1e-9),
                means: means
                    .into_iter()
                    .map(|(k, (s, c))| (k, s / c.max(1) as f64))
                    .collect(),
            };
            let mut epochs_log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.run_dir.join("epochs.jsonl"))?;
            writeln!(epochs_log, "{}", serde_json::to_string(&summary)?)?;
            if let Err(e) = crate::plot::plot_run(&self.run_dir) {
                eprintln!("warning: could not redraw the curves: {e:#}");
            }
            eprintln!(
                "{} epoch {}/{}{}: {} ({:.1} s, {:.0} img/s)",
                self.model.kind(),
                epoch + 1,
                self.cfg.epochs,
                if finished_epoch {
                    ""
                } else {
                    " (stopped early)"
                },
                running(
                    &summary
                        .means
                        .iter()
                        .map(|(k, v)| (k.clone(), (*v, 1)))
                        .collect()
                ),
                seconds,
                summary.images_per_second
            );
            summaries.push(summary);
            if !finished_epoch {
                break;
            }
        }
        Ok(summaries)
    }

    /// One discriminator step, and a generator step after every k-th: the unit of work
    /// [`Trainer::fit`] repeats, public for benchmarks and hand-written loops. Returns
    /// the step's losses and metrics by name.
    pub fn train_step(&mut self, batch: &Batch) -> Result<BTreeMap<String, f32>> {
        // The step runs on a thread of rayon's pool, which the matrix products and
        // kernels of `ops` also use: the calling thread would otherwise sit beside the
        // pool's threads on the same cores, and each parallel section would pay a
        // hand-off between them.
        rayon::scope(|_| self.step_in_pool(batch))
    }

    fn step_in_pool(&mut self, batch: &Batch) -> Result<BTreeMap<String, f32>> {
        let mut record = BTreeMap::new();
        let d = self.model.d_step(batch, &mut self.state.rng)?;
        record.insert("d_loss".into(), d.loss.to_scalar::<f32>()?);
        let grads = self.grads.backward(&d.loss)?;
        for net in self.model.d_networks() {
            self.opts
                .get_mut(net)
                .context("d_networks names an unknown network")?
                .step_collected(&grads, &self.grads)?;
        }
        record.extend(d.metrics.iter().map(|(k, v)| (k.to_string(), *v)));
        self.state.step += 1;
        self.state.batch += 1;
        if self.state.step.is_multiple_of(self.cfg.k as u64) {
            let g = self.model.g_step(batch, &mut self.state.rng)?;
            record.insert("g_loss".into(), g.loss.to_scalar::<f32>()?);
            let grads = self.grads.backward(&g.loss)?;
            for net in self.model.g_networks() {
                self.opts
                    .get_mut(net)
                    .context("g_networks names an unknown network")?
                    .step_collected(&grads, &self.grads)?;
            }
            record.extend(g.metrics.iter().map(|(k, v)| (k.to_string(), *v)));
        }
        Ok(record)
    }

    fn draw(&self, epoch: usize) -> Result<()> {
        let dir = self.run_dir.join("samples");
        for fig in self.model.figures(&mut rng(self.cfg.seed, 1))? {
            crate::grid::save_grid(
                &dir.join(format!("{}_epoch{:03}.png", fig.name, epoch + 1)),
                &fig.images,
                fig.cols,
            )?;
            crate::grid::save_grid(
                &dir.join(format!("{}.png", fig.name)),
                &fig.images,
                fig.cols,
            )?;
        }
        Ok(())
    }

    /// Writes `checkpoints/step-N/` completely under a temporary name, renames it into
    /// place, then points `checkpoints/latest.json` at it: a crash at any moment leaves
    /// the previous checkpoint intact and referenced.
    fn checkpoint(&mut self) -> Result<()> {
        let root = self.run_dir.join("checkpoints");
        let name = format!("step-{:09}", self.state.step);
        let tmp = root.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let meta = BTreeMap::from([("model".to_string(), self.model.kind().to_string())]);
        let meta = meta.into_iter().collect();
        for (net, vars) in self.model.networks() {
            save_tensors(
                &tmp.join(format!("{net}.safetensors")),
                &var_tensors(vars),
                &meta,
            )?;
        }
        self.state.adam_steps.clear();
        for (net, opt) in &self.opts {
            save_tensors(
                &tmp.join(format!("{net}.adam.safetensors")),
                &opt.state()?,
                &meta,
            )?;
            self.state.adam_steps.insert(net.clone(), opt.steps());
        }
        atomic_write(
            &tmp.join("state.json"),
            serde_json::to_string_pretty(&self.state)?.as_bytes(),
        )?;
        let dest = root.join(&name);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        atomic_write(
            &root.join("latest.json"),
            serde_json::json!({ "dir": name }).to_string().as_bytes(),
        )?;
        for entry in std::fs::read_dir(&root)?.flatten() {
            let p = entry.path();
            let stem = entry.file_name().to_string_lossy().to_string();
            if p.is_dir() && stem.starts_with("step-") && stem != name {
                let _ = std::fs::remove_dir_all(p);
            }
        }
        Ok(())
    }

    fn progress_bar(&self, len: u64, epoch: usize) -> ProgressBar {
        if !self.cfg.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!(
            "{} epoch {}/{}",
            self.model.kind(),
            epoch + 1,
            self.cfg.epochs
        ));
        bar
    }
}

/// The batch of rows `idx` of the training set.
fn gather(images: &Tensor, labels: &Tensor, idx: &[u32]) -> Result<Batch> {
    let idx = Tensor::new(idx, images.device())?;
    Ok(Batch {
        images: images.index_select(&idx, 0)?,
        labels: labels.index_select(&idx, 0)?,
    })
}

fn running(means: &BTreeMap<String, (f64, usize)>) -> String {
    means
        .iter()
        .map(|(k, (s, c))| format!("{k} {:.3}", s / (*c).max(1) as f64))
        .collect::<Vec<_>>()
        .join(" ")
}

fn make_optimizers(model: &dyn GanModel, cfg: &TrainConfig) -> Result<BTreeMap<String, Adam>> {
    let nets = model.networks();
    for wanted in model.d_networks().into_iter().chain(model.g_networks()) {
        if !nets.iter().any(|(n, _)| *n == wanted) {
            bail!(
                "model {} updates network {wanted:?} that it does not declare",
                model.kind()
            )
        }
    }
    if let Some(unknown) = cfg
        .network_lr
        .keys()
        .find(|k| !nets.iter().any(|(n, _)| n == k))
    {
        bail!(
            "a learning rate is set for network {unknown:?}, which {} does not have",
            model.kind()
        )
    }
    nets.into_iter()
        .map(|(name, vars)| {
            let lr = cfg.network_lr.get(name).copied().unwrap_or(cfg.adam.lr);
            Ok((
                name.to_string(),
                Adam::new(vars, AdamConfig { lr, ..cfg.adam })?,
            ))
        })
        .collect()
}

fn device_of(model: &dyn GanModel) -> candle_core::Device {
    model
        .networks()
        .iter()
        .find_map(|(_, v)| v.all_vars().first().map(|v| v.device().clone()))
        .unwrap_or(candle_core::Device::Cpu)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid gan-rs checkpoint state", path.display()))
}

/// The folder of the newest complete checkpoint of a run.
pub fn latest_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    let pointer = root.join("latest.json");
    let v: serde_json::Value = read_json(&pointer).with_context(|| {
        format!(
            "{} has no checkpoint (expected {})",
            run_dir.display(),
            pointer.display()
        )
    })?;
    let dir = v["dir"]
        .as_str()
        .context("latest.json names no checkpoint folder")?;
    Ok(root.join(dir))
}

fn check_model(
    model: &dyn GanModel,
    kind: &str,
    config: &serde_json::Value,
    ckpt: &Path,
) -> Result<()> {
    if kind != model.kind() {
        bail!(
            "{} is a checkpoint of a {kind} model, not of {}",
            ckpt.display(),
            model.kind()
        )
    }
    if *config != model.config() {
        bail!(
            "{} was written by a {kind} with other settings ({config}); this one has {}",
            ckpt.display(),
            model.config()
        )
    }
    Ok(())
}

fn load_networks(model: &dyn GanModel, ckpt: &Path) -> Result<()> {
    let dev = device_of(model);
    for (net, vars) in model.networks() {
        let path = ckpt.join(format!("{net}.safetensors"));
        load_vars(
            vars,
            &load_tensors(&path, &dev)?,
            &path.display().to_string(),
        )?;
    }
    Ok(())
}

/// Loads the latest weights of the run in `run_dir` into `model`, after checking that
/// the run was made by a model of the same kind and settings.
pub fn load_weights(model: &dyn GanModel, run_dir: &Path) -> Result<()> {
    let ckpt = latest_checkpoint(run_dir)?;
    let state: LoopState = read_json(&ckpt.join("state.json"))?;
    check_model(model, &state.model, &state.model_config, &ckpt)?;
    load_networks(model, &ckpt)
}

/// Drops log lines of steps after the checkpoint being resumed: they will be run again.
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    atomic_write(path, kept.as_bytes())
}
