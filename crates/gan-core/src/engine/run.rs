//! A run folder: its settings (`config.json`), the loop state a checkpoint carries, and
//! the checkpoint files themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::checkpoint::{atomic_write, load_tensors, load_vars};
use super::data::Cursor;
use super::model::Model;
use crate::optim::AdamConfig;
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
pub fn load_weights(model: &dyn Model, run_dir: &Path) -> Result<()> {
    let ckpt = latest_checkpoint(run_dir)?;
    let state: LoopState = read_json(&ckpt.join("state.json"))?;
    check_model(model, &state.model, &state.model_config, &ckpt)?;
    load_networks(model, &ckpt)
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
