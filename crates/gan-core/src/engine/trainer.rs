//! The training loop every model of gan-rs runs in.
//!
//! A step draws one batch of every stream the model declares, then runs the model's
//! phases in order, each on its schedule: the phase's loss is backpropagated and the
//! optimizers of the networks it names take a step (one Adam per network). Around the
//! steps: a progress bar, a JSONL metrics log, figures every epoch, and checkpoints from
//! which a run resumes exactly where it stopped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoint::{atomic_write, load_tensors};
use super::data::{plan, Cursor, Streams};
use super::ema::Averages;
use super::lock::RunLock;
use super::model::{Batch, Model, Phase, Step};
use super::run::{
    check_model, device_of, epoch_summary, load_networks, truncate_metrics, verified_checkpoint,
    write_checkpoint, EpochSummary, LoopState, RunConfig, TrainConfig,
};
use crate::fast::grads::Collector;
use crate::optim::{Adam, AdamConfig};
use crate::prior::{rng, RngStream};

/// Real images shown to [`Model::figures_of_real`].
const FIGURE_IMAGES: usize = 16;

/// The batches of one step, by stream, and where the later streams stand after them.
type Fetched = (BTreeMap<String, Batch>, BTreeMap<String, Cursor>);

/// Runs a [`Model`] over its data streams, writing everything into one run folder:
/// `config.json`, `metrics.jsonl` (one line per step), `epochs.jsonl`,
/// `samples/<figure>.png` (latest) and `samples/<figure>_epochNNN.png`, and
/// `checkpoints/`.
///
/// ```no_run
/// # use gan_core::engine::{Dataset, Model, Streams, TrainConfig, Trainer};
/// # fn demo(model: &dyn Model, images: candle_core::Tensor, labels: candle_core::Tensor) -> anyhow::Result<()> {
/// let cfg = TrainConfig { epochs: 2, ..TrainConfig::default() };
/// let data = Streams::real(Dataset::new(images, Some(labels))?);
/// let mut trainer = Trainer::new(model, cfg, "runs/demo".as_ref())?;
/// let summaries = trainer.fit(&data)?;
/// println!("last epoch took {:.1} s", summaries.last().unwrap().seconds);
/// # Ok(()) }
/// ```
pub struct Trainer<'m> {
    model: &'m dyn Model,
    phases: Vec<Phase>,
    cfg: TrainConfig,
    run_dir: PathBuf,
    opts: BTreeMap<String, Adam>,
    /// Each optimizer's configured learning rate, which [`Model::lr_scale`] scales.
    base_lr: BTreeMap<String, f64>,
    /// The steps the run is set to take, once [`Trainer::fit`] knows the epoch's length.
    total_steps: Option<u64>,
    /// Weight gradients of the step, written in place (see [`crate::fast::grads`]).
    grads: Collector,
    state: LoopState,
    /// When time was last added to the state's clocks.
    clock: Instant,
    /// Step of the newest checkpoint on disk.
    last_checkpoint: Option<u64>,
    /// The running averages of [`TrainConfig::ema`], if any.
    averages: Option<Averages>,
    /// Whether the model lives on the CPU, whose threads then stay awake through a step.
    on_cpu: bool,
    _lock: RunLock,
}

impl<'m> Trainer<'m> {
    /// A fresh run in `run_dir`, which must not hold a run already (resume it instead).
    pub fn new(model: &'m dyn Model, cfg: TrainConfig, run_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        let phases = model.phases();
        let opts = make_optimizers(model, &phases, &cfg)?;
        // The lock first: of two processes starting on one folder, one gets it and the
        // other is refused before either looks for an existing run.
        let lock = RunLock::acquire(run_dir)?;
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
        let state = fresh_state(model, &cfg);
        let averages = cfg.ema.map(|d| Averages::new(model, d)).transpose()?;
        Ok(Self {
            model,
            phases,
            cfg,
            grads: Collector::new(),
            run_dir: run_dir.into(),
            base_lr: base_lrs(&opts),
            opts,
            total_steps: None,
            state,
            clock: Instant::now(),
            last_checkpoint: None,
            averages,
            on_cpu: device_of(model).is_cpu(),
            _lock: lock,
        })
    }

    /// Checks `data` against the model's streams and the batch size, without training:
    /// what [`Trainer::fit`] would refuse, before anything is written.
    pub fn check_data(model: &dyn Model, cfg: &TrainConfig, data: &Streams) -> Result<()> {
        plan(&model.streams(), data, cfg.batch_size, cfg.seed).map(|_| ())
    }

    /// Continues the run in `run_dir` from its latest checkpoint: weights, optimizer
    /// moments, random state and every stream's position are restored, so the run goes
    /// on as if it had not stopped. `cfg` may raise `epochs`; the rest must be the run's.
    pub fn resume(model: &'m dyn Model, cfg: TrainConfig, run_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        let lock = RunLock::acquire(run_dir)?;
        let saved = RunConfig::read(run_dir)?;
        let same = TrainConfig {
            epochs: cfg.epochs,
            max_steps: cfg.max_steps,
            progress: cfg.progress,
            checkpoint_every: cfg.checkpoint_every,
            ..saved.train.clone()
        };
        if same != cfg {
            bail!(
                "--resume keeps the run's settings; only --epochs, --max-steps and \
                 --checkpoint-every may change (run has {:?})",
                saved.train
            )
        }
        // A run killed before its first checkpoint starts over: nothing was lost.
        let has_checkpoint = std::fs::read_dir(run_dir.join("checkpoints"))
            .map(|d| {
                d.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    // A `.tmp` folder is a checkpoint that was never finished.
                    n.starts_with("step-") && !n.ends_with(".tmp")
                })
            })
            .unwrap_or(false);
        let found = if has_checkpoint {
            Some(verified_checkpoint(run_dir)?)
        } else {
            eprintln!(
                "{} has no checkpoint yet: starting it over from step 0",
                run_dir.display()
            );
            None
        };
        let state = match &found {
            Some((ckpt, state)) => {
                check_model(model, &state.model, &state.model_config, ckpt)?;
                state.clone()
            }
            None => fresh_state(model, &cfg),
        };
        if let Some(ran) = &state.train {
            let ran = TrainConfig {
                epochs: cfg.epochs,
                max_steps: cfg.max_steps,
                progress: cfg.progress,
                checkpoint_every: cfg.checkpoint_every,
                ..ran.clone()
            };
            if ran != cfg {
                bail!(
                    "{}/config.json does not match the settings its checkpoint was trained \
                     with ({:?}): was it edited? The checkpoint's place in the data means \
                     nothing under other settings",
                    run_dir.display(),
                    state.train
                )
            }
        }
        if let Some(m) = cfg.max_steps.filter(|m| state.step >= *m) {
            bail!(
                "{} is at step {} already, at or past --max-steps {m}: nothing to train",
                run_dir.display(),
                state.step
            )
        }
        if state.epoch >= cfg.epochs {
            bail!(
                "{} has finished its {} epochs (step {}): pass a larger --epochs to train on",
                run_dir.display(),
                state.epoch,
                state.step
            )
        }
        let phases = model.phases();
        let mut opts = make_optimizers(model, &phases, &cfg)?;
        let mut averages = cfg.ema.map(|d| Averages::new(model, d)).transpose()?;
        if let Some((ckpt, _)) = &found {
            load_networks(model, ckpt)?;
            if let Some(a) = averages.as_mut() {
                a.load(ckpt, &device_of(model))?;
            }
            for (name, opt) in opts.iter_mut() {
                let moments = load_tensors(
                    &ckpt.join(format!("{name}.adam.safetensors")),
                    &device_of(model),
                )?;
                let steps = state.adam_steps.get(name).copied().unwrap_or(0);
                opt.load_state(&moments, steps)
                    .with_context(|| format!("optimizer of {name} in {}", ckpt.display()))?;
            }
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
        let last_checkpoint = found.map(|_| state.step);
        let mut state = state;
        state.train = Some(cfg.clone());
        Ok(Self {
            model,
            phases,
            cfg,
            grads: Collector::new(),
            run_dir: run_dir.into(),
            base_lr: base_lrs(&opts),
            opts,
            total_steps: None,
            state,
            clock: Instant::now(),
            last_checkpoint,
            averages,
            on_cpu: device_of(model).is_cpu(),
            _lock: lock,
        })
    }

    /// Steps done so far.
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Trains on `data` (a data set per stream the model declares) until the configured
    /// epoch count of its first stream (or `max_steps`), returning one summary per epoch
    /// run by this call.
    pub fn fit(&mut self, data: &Streams) -> Result<Vec<EpochSummary>> {
        let streams = self.model.streams();
        let mut cycles = plan(&streams, data, self.cfg.batch_size, self.cfg.seed)?;
        let first = cycles.remove(0);
        // The same real images for every epoch's figures that need some.
        let shown = first.data.len().min(FIGURE_IMAGES);
        let figure_images = first.data.images.narrow(0, 0, shown)?;
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
            self.clock = Instant::now();
            let order = first.batches.epoch_indices(self.cfg.seed, epoch as u64);
            // The plan is the epochs': --max-steps stops a run early without bending
            // its schedule, so a run stopped and resumed follows the same one.
            self.total_steps = Some((self.cfg.epochs * order.len()) as u64);
            let bar = self.progress_bar(order.len() as u64, epoch);
            bar.set_position(self.state.batch as u64);
            let mut means: BTreeMap<String, (f64, usize)> = BTreeMap::new();
            let mut lines = String::new();
            // The next batches are gathered on another thread while this one trains.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Fetched>>(2);
            let pending = &order[self.state.batch..];
            let mut cursors = self.state.streams.clone();
            let (first, cycles) = (&first, &mut cycles);
            std::thread::scope(|scope| -> Result<()> {
                scope.spawn(move || {
                    for idx in pending {
                        let fetched =
                            fetch(first.name.as_str(), first.data, idx, cycles, &mut cursors);
                        // A closed channel means training stopped early: nothing to do.
                        if tx.send(fetched).is_err() {
                            break;
                        }
                    }
                });
                // By value: leaving the loop early drops the receiver, which ends the
                // producer instead of leaving it blocked on a full channel.
                for fetched in rx {
                    if self.cfg.max_steps.is_some_and(|m| self.state.step >= m) {
                        break;
                    }
                    let (batches, cursors) = fetched?;
                    let mut record = self.train_step(&batches)?;
                    self.state.streams = cursors;
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
                    // Not at the end of the epoch or of max_steps: the loop's own
                    // checkpoint follows there.
                    let ends = self.state.batch == order.len()
                        || self.cfg.max_steps.is_some_and(|m| self.state.step >= m);
                    if self.cfg.checkpoint_every > 0
                        && self.state.step.is_multiple_of(self.cfg.checkpoint_every)
                        && !ends
                    {
                        log.write_all(lines.as_bytes())?;
                        lines.clear();
                        self.model.calibrate(data)?;
                        self.checkpoint()?;
                    }
                }
                Ok(())
            })?;
            log.write_all(lines.as_bytes())?;
            let finished_epoch = self.state.batch == order.len();
            self.model.calibrate(data)?;
            self.draw(epoch, &figure_images)?;
            // The epoch's line before the checkpoint that closes it: a run killed between
            // the two redoes the epoch's end from the checkpoint before, line included.
            self.tick();
            let summary = epoch_summary(
                &self.run_dir,
                epoch,
                self.state.epoch_seconds,
                first.batches.batch_size(),
            )?;
            if finished_epoch {
                self.state.epoch += 1;
                self.state.batch = 0;
                self.state.epoch_seconds = 0.0;
            }
            self.checkpoint()?;
            bar.finish_and_clear();
            if let Err(e) = crate::engine::plot::plot_run(&self.run_dir) {
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
                summary.seconds,
                summary.images_per_second
            );
            summaries.push(summary);
            if !finished_epoch {
                break;
            }
        }
        Ok(summaries)
    }

    /// One step: the model's phases that are due, in order, on one batch of every
    /// stream. The unit of work [`Trainer::fit`] repeats, public for benchmarks and
    /// hand-written loops. Returns the step's losses and metrics by name.
    pub fn train_step(
        &mut self,
        batches: &BTreeMap<String, Batch>,
    ) -> Result<BTreeMap<String, f32>> {
        // The step runs on a thread of rayon's pool, which the matrix products and
        // kernels of `ops` also use: the calling thread would otherwise sit beside the
        // pool's threads on the same cores, and each parallel section would pay a
        // hand-off between them.
        // Isolated: the layers' frozen flag and the gradient collector are per thread,
        // and the worker may be one that waits inside another trainer's step.
        // On the CPU the pool's other threads stay awake for the parallel ops.
        let on_cpu = self.on_cpu;
        let step = move || crate::fast::isolated(|| self.step_in_pool(batches));
        if on_cpu {
            crate::fast::with_workers_awake(step)
        } else {
            crate::fast::on_worker(step)
        }
    }

    fn step_in_pool(&mut self, batches: &BTreeMap<String, Batch>) -> Result<BTreeMap<String, f32>> {
        let mut record = BTreeMap::new();
        let number = self.state.step + 1;
        let progress = match self.total_steps {
            Some(total) if total > 0 => (number - 1) as f64 / total as f64,
            _ => 0.0,
        };
        let scale = self.model.lr_scale_at(progress, number, self.state.epoch);
        for (name, opt) in self.opts.iter_mut() {
            opt.set_lr(self.base_lr[name] * scale);
        }
        let mut step = Step::new(batches, &mut self.state.rng)
            .at(progress)
            .numbered(number, self.state.epoch);
        for phase in &self.phases {
            if !phase.runs_at(number, self.cfg.k) {
                continue;
            }
            let out = self.model.run_phase(phase.name, &mut step)?;
            let loss = out.loss.to_scalar::<f32>()?;
            if !loss.is_finite() {
                bail!(
                    "step {number}: the {} loss is {loss}: training diverged (a lower --lr may \
                     help); stopped without saving, {}",
                    phase.name,
                    match self.last_checkpoint {
                        Some(s) => format!("the last checkpoint (step {s}) is intact"),
                        None => "and no checkpoint was written yet".to_string(),
                    }
                )
            }
            record.insert(format!("{}_loss", phase.name), loss);
            // Gradients for the phase's own networks alone: its graph may also reach
            // another network's weights (VAE-GAN's De phase reaches En through x~).
            let own = self
                .model
                .networks()
                .into_iter()
                .filter(|(name, _)| phase.networks.contains(name))
                .flat_map(|(_, vars)| vars.all_vars())
                .map(|v| v.id());
            let grads = self.grads.backward_for(&out.loss, own)?;
            for net in &phase.networks {
                self.opts
                    .get_mut(*net)
                    .context("a phase names an unknown network")?
                    .step_collected(&grads, &self.grads)?;
            }
            record.extend(out.metrics.iter().map(|(k, v)| (k.to_string(), *v)));
        }
        if let Some(a) = self.averages.as_mut() {
            a.update(self.model, number)?;
        }
        self.state.step = number;
        self.state.batch += 1;
        Ok(record)
    }

    /// Saves every figure of the model as `samples/<name>_epochNNN.png` and, the latest,
    /// `samples/<name>.png`; `real` is what [`Model::figures_of_real`] is shown.
    fn draw(&self, epoch: usize, real: &Tensor) -> Result<()> {
        let dir = self.run_dir.join("samples");
        let all = || -> Result<Vec<_>> {
            let mut figures = self
                .model
                .figures(&mut rng(self.cfg.seed, RngStream::Figures))?;
            figures.extend(
                self.model
                    .figures_of_real(real, &mut rng(self.cfg.seed, RngStream::Figures))?,
            );
            Ok(figures)
        };
        // Samples come from the averaged weights, when the run keeps them.
        let figures = match &self.averages {
            Some(a) => a.swapped(self.model, all)?,
            None => all()?,
        };
        for fig in figures {
            crate::engine::grid::save_grid(
                &dir.join(format!("{}_epoch{:03}.png", fig.name, epoch + 1)),
                &fig.images,
                fig.cols,
            )?;
            crate::engine::grid::save_grid(
                &dir.join(format!("{}.png", fig.name)),
                &fig.images,
                fig.cols,
            )?;
        }
        Ok(())
    }

    /// Adds the time since the last call to the run's and the epoch's clocks.
    fn tick(&mut self) {
        let now = Instant::now();
        let d = now.duration_since(self.clock).as_secs_f64();
        self.clock = now;
        self.state.seconds += d;
        self.state.epoch_seconds += d;
    }

    /// A checkpoint of where the loop stands (see [`write_checkpoint`]).
    fn checkpoint(&mut self) -> Result<()> {
        self.tick();
        write_checkpoint(
            &self.run_dir,
            self.model,
            &self.opts,
            self.averages.as_ref(),
            &mut self.state,
        )?;
        self.last_checkpoint = Some(self.state.step);
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

/// The loop state of a run that has not taken a step.
fn fresh_state(model: &dyn Model, cfg: &TrainConfig) -> LoopState {
    LoopState {
        model: model.kind().into(),
        model_config: model.config(),
        epoch: 0,
        batch: 0,
        step: 0,
        rng: rng(cfg.seed, RngStream::Training),
        adam_steps: BTreeMap::new(),
        seconds: 0.0,
        streams: BTreeMap::new(),
        epoch_seconds: 0.0,
        train: Some(cfg.clone()),
        files: BTreeMap::new(),
    }
}

/// One step's batches: `idx` of the first stream, the next batch of every other.
fn fetch(
    first: &str,
    data: &super::data::Dataset,
    idx: &[u32],
    cycles: &mut [super::data::Cycle],
    cursors: &mut BTreeMap<String, Cursor>,
) -> Result<Fetched> {
    let mut batches = BTreeMap::from([(first.to_string(), data.gather(idx)?)]);
    for c in cycles.iter_mut() {
        let cursor = cursors.entry(c.name.clone()).or_default();
        batches.insert(c.name.clone(), c.next(cursor)?);
    }
    Ok((batches, cursors.clone()))
}

fn running(means: &BTreeMap<String, (f64, usize)>) -> String {
    means
        .iter()
        .map(|(k, (s, c))| format!("{k} {:.3}", s / (*c).max(1) as f64))
        .collect::<Vec<_>>()
        .join(" ")
}

fn make_optimizers(
    model: &dyn Model,
    phases: &[Phase],
    cfg: &TrainConfig,
) -> Result<BTreeMap<String, Adam>> {
    let nets = model.networks();
    if phases.is_empty() {
        bail!(
            "model {} declares no phase: nothing would train",
            model.kind()
        )
    }
    for phase in phases {
        for wanted in &phase.networks {
            if !nets.iter().any(|(n, _)| n == wanted) {
                bail!(
                    "phase {:?} of {} updates network {wanted:?} that the model does not declare",
                    phase.name,
                    model.kind()
                )
            }
        }
    }
    if let Some((b, _)) = model
        .buffers()
        .into_iter()
        .find(|(b, _)| nets.iter().any(|(n, _)| n == b))
    {
        bail!(
            "{} names a buffer {b:?} like one of its networks: their checkpoint files would collide",
            model.kind()
        )
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

/// Each optimizer's configured learning rate, by network.
fn base_lrs(opts: &BTreeMap<String, Adam>) -> BTreeMap<String, f64> {
    opts.iter()
        .map(|(name, opt)| (name.clone(), opt.config().lr))
        .collect()
}
