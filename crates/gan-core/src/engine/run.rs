//! A run folder: its settings (`config.json`), the loop state a checkpoint carries, and
//! the checkpoint files themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use candle_nn::VarMap;

use super::checkpoint::{
    atomic_write, load_tensors, load_vars, save_tensors, sha256_hex, var_tensors,
};
use super::data::Cursor;
use super::model::Model;
use crate::optim::{Adam, AdamConfig};
use crate::prior::Rng;

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
    /// Keep an exponential moving average of the weights of the networks the model
    /// names in [`Model::averaged`], with this decay per step, and draw samples from it
    /// (see [`crate::engine::ema`]). None: no average (and nothing written, so runs from
    /// before the option still match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
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
            ema: None,
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
        if let Some(d) = self.ema.filter(|d| !(*d > 0.0 && *d < 1.0)) {
            bail!("the averaging decay (--ema-decay) must lie strictly between 0 and 1, got {d}")
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
    /// [`Model::kind`].
    pub model: String,
    /// [`Model::config`].
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
pub(crate) struct LoopState {
    pub model: String,
    pub model_config: serde_json::Value,
    /// Epoch in progress of the first stream (or the next one, with `batch` 0).
    pub epoch: usize,
    /// Next batch of that epoch.
    pub batch: usize,
    /// Steps done (one batch of every stream each).
    pub step: u64,
    pub rng: Rng,
    pub adam_steps: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Where each stream after the first stands (absent in runs of one stream).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub streams: BTreeMap<String, Cursor>,
    /// Seconds spent in the epoch in progress, over every session of it.
    #[serde(default)]
    pub epoch_seconds: f64,
    /// The training settings the loop ran with: what the data position means.
    #[serde(default)]
    pub train: Option<TrainConfig>,
    /// SHA-256 of every other file of the checkpoint, checked before it is loaded
    /// (absent in checkpoints written before the check).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
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

pub(crate) fn device_of(model: &dyn Model) -> candle_core::Device {
    model
        .networks()
        .iter()
        .find_map(|(_, v)| v.all_vars().first().map(|v| v.device().clone()))
        .unwrap_or(candle_core::Device::Cpu)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid gan-rs checkpoint state", path.display()))
}

/// The folder `checkpoints/latest.json` names: the newest complete checkpoint of a run.
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

/// Checks every file a checkpoint's state lists against its recorded SHA-256.
fn verify(ckpt: &Path, state: &LoopState) -> Result<()> {
    for (name, want) in &state.files {
        let path = ckpt.join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let got = sha256_hex(&bytes);
        if &got != want {
            bail!(
                "{} is corrupt: its SHA-256 is {got}, the checkpoint recorded {want}",
                path.display()
            )
        }
    }
    Ok(())
}

/// The newest checkpoint of `run_dir` whose files are intact, with its state. A corrupt
/// or unreadable newest checkpoint is reported on stderr and the one before it (the
/// engine keeps two) is used instead.
pub(crate) fn verified_checkpoint(run_dir: &Path) -> Result<(PathBuf, LoopState)> {
    let latest = latest_checkpoint(run_dir)?;
    let mut candidates = vec![latest.clone()];
    let mut older: Vec<PathBuf> = std::fs::read_dir(run_dir.join("checkpoints"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && *p != latest
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        })
        .collect();
    older.sort();
    candidates.extend(older.into_iter().rev());
    let mut errors = Vec::new();
    for ckpt in candidates {
        let attempt = read_json::<LoopState>(&ckpt.join("state.json"))
            .and_then(|state| verify(&ckpt, &state).map(|()| state));
        match attempt {
            Ok(state) => {
                if !errors.is_empty() {
                    eprintln!(
                        "warning: {}; using the previous checkpoint {} (step {})",
                        errors.join("; "),
                        ckpt.display(),
                        state.step
                    );
                }
                return Ok((ckpt, state));
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!(
        "no intact checkpoint in {}: {}",
        run_dir.join("checkpoints").display(),
        errors.join("; ")
    )
}

/// Fails, naming `what`, unless every value of `t` is finite.
pub fn ensure_finite(t: &candle_core::Tensor, what: &str) -> Result<()> {
    // x * 0 is 0 for every finite x and NaN for NaN and the infinities.
    let s = t
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    if s != 0.0 {
        bail!("{what} holds NaN or infinite values")
    }
    Ok(())
}

/// Fails unless every variable of `vars` is finite.
pub(crate) fn check_finite(net: &str, vars: &VarMap) -> Result<()> {
    for (name, t) in var_tensors(vars) {
        ensure_finite(&t, &format!("weight {net}.{name}"))?;
    }
    Ok(())
}

/// Writes `checkpoints/step-N/` completely under a temporary name (weights, Adam
/// moments, then the state with every file's SHA-256), renames it into place, points
/// `checkpoints/latest.json` at it, and keeps the one before it: a crash at any moment
/// leaves an intact checkpoint referenced, and a corrupt newest one has a fallback.
/// Refuses to write non-finite weights, so the last checkpoint is always a finite one.
pub(crate) fn write_checkpoint(
    run_dir: &Path,
    model: &dyn Model,
    opts: &BTreeMap<String, Adam>,
    averages: Option<&super::ema::Averages>,
    state: &mut LoopState,
) -> Result<()> {
    for (net, vars) in saved(model) {
        check_finite(net, vars).with_context(|| {
            format!(
                "step {}: not writing a checkpoint of diverged weights",
                state.step
            )
        })?;
    }
    let root = run_dir.join("checkpoints");
    // A step checkpointed twice (a periodic checkpoint that ends an epoch) gets a fresh
    // folder: replacing the one latest.json names would leave a moment without it.
    let base = format!("step-{:09}", state.step);
    let name = std::iter::once(base.clone())
        .chain((1..).map(|k| format!("{base}-{k}")))
        .find(|n| !root.join(n).exists())
        .expect("some folder name is free");
    let tmp = root.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let meta: std::collections::HashMap<String, String> =
        [("model".to_string(), model.kind().to_string())].into();
    state.files.clear();
    for (net, vars) in saved(model) {
        let file = format!("{net}.safetensors");
        let sha = save_tensors(&tmp.join(&file), &var_tensors(vars), &meta)?;
        state.files.insert(file, sha);
    }
    state.adam_steps.clear();
    for (net, opt) in opts {
        let file = format!("{net}.adam.safetensors");
        let sha = save_tensors(&tmp.join(&file), &opt.state()?, &meta)?;
        state.files.insert(file, sha);
        state.adam_steps.insert(net.clone(), opt.steps());
    }
    for (file, sha) in averages.map_or(Ok(Vec::new()), |a| a.save(&tmp, &meta))? {
        state.files.insert(file, sha);
    }
    atomic_write(
        &tmp.join("state.json"),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    let dest = root.join(&name);
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    atomic_write(
        &root.join("latest.json"),
        serde_json::json!({ "dir": name }).to_string().as_bytes(),
    )?;
    // Keep this checkpoint and the newest one before it.
    let mut steps: Vec<String> = std::fs::read_dir(&root)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("step-") && !n.ends_with(".tmp") && *n <= name)
        .collect();
    steps.sort();
    let keep = steps.len().saturating_sub(2);
    for old in &steps[..keep] {
        let _ = std::fs::remove_dir_all(root.join(old));
    }
    // Checkpoints past this one belong to a future that a resume rewound.
    for entry in std::fs::read_dir(&root)?.flatten() {
        let n = entry.file_name().to_string_lossy().to_string();
        if entry.path().is_dir() && n.starts_with("step-") && n > name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// What a checkpoint holds besides the optimizers: every network, then every buffer.
fn saved(model: &dyn Model) -> Vec<(&'static str, &VarMap)> {
    let mut all = model.networks();
    all.extend(model.buffers());
    all
}

pub(crate) fn check_model(
    model: &dyn Model,
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

pub(crate) fn load_networks(model: &dyn Model, ckpt: &Path) -> Result<()> {
    let dev = device_of(model);
    for (net, vars) in saved(model) {
        let path = ckpt.join(format!("{net}.safetensors"));
        load_vars(
            vars,
            &load_tensors(&path, &dev)?,
            &path.display().to_string(),
        )?;
    }
    Ok(())
}

/// Loads the latest intact weights of the run in `run_dir` into `model`, after checking
/// that the run was made by a model of the same kind and settings. Where the run kept
/// averaged weights ([`TrainConfig::ema`]), those are loaded in their networks' place:
/// they are what samples are drawn from.
pub fn load_weights(model: &dyn Model, run_dir: &Path) -> Result<()> {
    let (ckpt, state) = load_checked(model, run_dir)?;
    super::ema::load_into(model, &ckpt, &state.files)
}

/// [`load_weights`], but the weights of the last step everywhere, averaged or not.
pub fn load_step_weights(model: &dyn Model, run_dir: &Path) -> Result<()> {
    load_checked(model, run_dir).map(|_| ())
}

/// Loads the networks of the latest intact checkpoint, checked to be `model`'s.
fn load_checked(model: &dyn Model, run_dir: &Path) -> Result<(PathBuf, LoopState)> {
    let (ckpt, state) = verified_checkpoint(run_dir)?;
    check_model(model, &state.model, &state.model_config, &ckpt)?;
    load_networks(model, &ckpt)?;
    Ok((ckpt, state))
}

/// Drops log lines of steps after the checkpoint being resumed: they will be run again.
pub(crate) fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
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

/// The summary of `epoch` from every step of it in `metrics.jsonl` (an epoch resumed
/// midway counts the steps before the interruption too), written into `epochs.jsonl` in
/// place of any earlier line of the same epoch: one line per epoch.
pub(crate) fn epoch_summary(
    run_dir: &Path,
    epoch: usize,
    seconds: f64,
    batch_size: usize,
) -> Result<EpochSummary> {
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut steps = 0usize;
    for line in metrics.lines() {
        let Ok(serde_json::Value::Object(row)) = serde_json::from_str(line) else {
            continue;
        };
        if row.get("epoch").and_then(|e| e.as_f64()) != Some(epoch as f64) {
            continue;
        }
        steps += 1;
        for (k, v) in &row {
            if let (false, Some(v)) = (k == "step" || k == "epoch", v.as_f64()) {
                let e = sums.entry(k.clone()).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    let summary = EpochSummary {
        epoch,
        seconds,
        images_per_second: (steps * batch_size) as f64 / seconds.max(1e-9),
        means: sums
            .into_iter()
            .map(|(k, (s, c))| (k, s / c.max(1) as f64))
            .collect(),
    };
    let path = run_dir.join("epochs.jsonl");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| serde_json::from_str::<EpochSummary>(l).map_or(true, |s| s.epoch != epoch))
        .flat_map(|l| [l, "\n"])
        .collect();
    text.push_str(&serde_json::to_string(&summary)?);
    text.push('\n');
    atomic_write(&path, text.as_bytes())?;
    Ok(summary)
}
