//! The judge: a LeNet-style MNIST classifier trained by the project, whose predictions
//! and penultimate-layer features are what the evaluation suite measures generated
//! images with (MNIST-FID, class coverage, the Inception-Score analogue, conditional
//! accuracy; see [`crate::eval`]).
//!
//! A metric is only comparable between runs scored by the same judge, so a judge is a
//! file: its weights as safetensors, with its architecture and test accuracy in the
//! file's metadata, identified by the SHA-256 of the file's bytes, which every metric
//! reports.
//!
//! Architecture: conv 5x5 (1 -> c1, padding 2), ReLU, max-pool 2; conv 5x5 (c1 -> c2),
//! ReLU, max-pool 2; linear to `hidden` with ReLU (the feature layer); linear to 10.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
// gan-core's layers: candle-nn's names and shapes, with the fast CPU convolutions.
use crate::fast::layers::{conv2d, linear, Conv2d, ConvSpec, Linear};
use crate::fast::nn::max_pool2d;
use serde::{Deserialize, Serialize};

use crate::engine::checkpoint::{load_vars, save_tensors, sha256_hex, var_tensors};
use crate::init::{reinit, WeightInit};
use crate::optim::{Adam, AdamConfig};
use crate::prior::{rng, Rng};

/// Number of classes the judge tells apart.
pub const CLASSES: usize = 10;

/// Where the CLI keeps its judge unless told otherwise, relative to the workspace root
/// (ignored by git: a judge is trained, never committed).
pub const DEFAULT_JUDGE_PATH: &str = "assets/judge/lenet.safetensors";

/// Value of the `format` metadata entry that marks a safetensors file as a judge.
const FORMAT: &str = "gan-rs judge v1";

/// Images per forward pass when scoring many: bounds memory, not results.
const EVAL_BATCH: usize = 500;

/// The judge's layer widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeConfig {
    /// Channels of the first convolution.
    pub c1: usize,
    /// Channels of the second convolution.
    pub c2: usize,
    /// Width of the feature layer (the metrics' feature space).
    pub hidden: usize,
}

impl Default for JudgeConfig {
    /// 32-64-128: small enough to train in minutes on two CPU cores, large enough for
    /// more than 99% test accuracy.
    fn default() -> Self {
        Self {
            c1: 32,
            c2: 64,
            hidden: 128,
        }
    }
}

/// How to train a judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeTraining {
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam step size of the first epoch; it halves every epoch after.
    pub lr: f64,
    /// Dropout on the feature layer during training.
    pub dropout: f32,
    /// Seeds the weights, the data order and the dropout masks.
    pub seed: u64,
}

impl Default for JudgeTraining {
    fn default() -> Self {
        Self {
            epochs: 4,
            batch_size: 64,
            lr: 1e-3,
            dropout: 0.3,
            seed: 0,
        }
    }
}

/// What the judge says about a set of images.
#[derive(Debug, Clone)]
pub struct JudgeOutputs {
    /// Feature-layer activations, `n * hidden` numbers row after row.
    pub features: Vec<f32>,
    /// Width of a feature row.
    pub feature_dim: usize,
    /// Class probabilities (softmax), `n * 10` numbers row after row.
    pub probs: Vec<f32>,
    /// Most probable class of each image.
    pub predicted: Vec<u32>,
}

/// The LeNet-style classifier.
pub struct Judge {
    cfg: JudgeConfig,
    vars: VarMap,
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    device: Device,
    /// SHA-256 of the file it was loaded from or saved to.
    sha256: Option<String>,
    /// Test accuracy recorded in its file, if any.
    test_accuracy: Option<f64>,
}

impl Judge {
    /// A judge with fresh weights drawn from `seed` (PyTorch's fan-in uniform scheme).
    pub fn new(cfg: JudgeConfig, device: &Device, seed: u64) -> Result<Self> {
        ensure!(
            cfg.c1 > 0 && cfg.c2 > 0 && cfg.hidden > 0,
            "the judge's widths must be positive, got {cfg:?}"
        );
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let pad2 = ConvSpec {
            padding: 2,
            ..Default::default()
        };
        let conv1 = conv2d(1, cfg.c1, 5, pad2, vb.pp("conv1"))?;
        let conv2 = conv2d(cfg.c1, cfg.c2, 5, ConvSpec::default(), vb.pp("conv2"))?;
        let fc1 = linear(cfg.c2 * 5 * 5, cfg.hidden, vb.pp("fc1"))?;
        let fc2 = linear(cfg.hidden, CLASSES, vb.pp("fc2"))?;
        reinit(
            &vars,
            WeightInit::FanInUniform,
            &mut rng(seed, crate::prior::RngStream::JudgeInit),
        )?;
        Ok(Self {
            cfg,
            vars,
            conv1,
            conv2,
            fc1,
            fc2,
            device: device.clone(),
            sha256: None,
            test_accuracy: None,
        })
    }

    /// The layer widths.
    pub fn config(&self) -> JudgeConfig {
        self.cfg
    }

    /// Lowercase hex SHA-256 of the judge's file, once it has been saved or loaded: the
    /// name under which metrics report which judge scored them.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// MNIST test accuracy recorded when the judge was saved.
    pub fn test_accuracy(&self) -> Option<f64> {
        self.test_accuracy
    }

    /// Refuses anything but a batch of finite 28x28 grey images, saying what it got: a
    /// NaN pixel would turn into a 0 feature after the ReLUs and score as if it were ink.
    pub fn check_images(images: &Tensor) -> Result<()> {
        match images.dims() {
            [n, 1, 28, 28] if *n > 0 => crate::engine::ensure_finite(images, "the images"),
            dims => bail!(
                "the judge scores MNIST-shaped images [N, 1, 28, 28] with N > 0, got {dims:?}"
            ),
        }
    }

    /// Feature-layer activations `[B, hidden]` and logits `[B, 10]` of images in
    /// [-1, 1]; `dropout` (training only) zeroes features with this probability, using
    /// masks drawn from `rng`.
    fn forward(&self, x: &Tensor, dropout: Option<(f32, &mut Rng)>) -> Result<(Tensor, Tensor)> {
        let x = max_pool2d(&self.conv1.forward(x)?.relu()?, 2)?;
        let x = max_pool2d(&self.conv2.forward(&x)?.relu()?, 2)?;
        let features = self.fc1.forward(&x.flatten_from(1)?)?.relu()?;
        let dropped = match dropout {
            Some((p, rng)) if p > 0.0 => {
                use rand::Rng as _;
                let keep = 1.0 - p;
                let mask: Vec<f32> = (0..features.elem_count())
                    .map(|_| {
                        if rng.random::<f32>() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, features.dims(), &self.device)?;
                (&features * mask)?
            }
            _ => features.clone(),
        };
        let logits = self.fc2.forward(&dropped)?;
        Ok((features, logits))
    }

    /// Features, class probabilities and predictions for `images` `[N, 1, 28, 28]` in
    /// [-1, 1] (the range of the data and of the generators' tanh), in batches.
    pub fn outputs(&self, images: &Tensor) -> Result<JudgeOutputs> {
        Self::check_images(images)?;
        let n = images.dim(0)?;
        let mut out = JudgeOutputs {
            features: Vec::with_capacity(n * self.cfg.hidden),
            feature_dim: self.cfg.hidden,
            probs: Vec::with_capacity(n * CLASSES),
            predicted: Vec::with_capacity(n),
        };
        for start in (0..n).step_by(EVAL_BATCH) {
            let x = images
                .narrow(0, start, EVAL_BATCH.min(n - start))?
                .to_device(&self.device)?;
            let (f, logits) = self.forward(&x, None)?;
            let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
            out.predicted
                .extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
            out.features.extend(f.flatten_all()?.to_vec1::<f32>()?);
            out.probs.extend(probs.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The most probable digit of each image.
    pub fn predict(&self, images: &Tensor) -> Result<Vec<u32>> {
        Ok(self.outputs(images)?.predicted)
    }

    /// Fraction of `images` classified as their `labels`.
    pub fn accuracy(&self, images: &Tensor, labels: &[u8]) -> Result<f64> {
        ensure!(
            images.dim(0)? == labels.len(),
            "{} images but {} labels",
            images.dim(0)?,
            labels.len()
        );
        let predicted = self.predict(images)?;
        let hits = predicted
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p == u32::from(**l))
            .count();
        Ok(hits as f64 / labels.len().max(1) as f64)
    }

    /// Trains a fresh judge on `images` `[N, 1, 28, 28]` in [-1, 1] with `labels` `[N]`
    /// (u32): Adam (beta1 0.9) on the cross-entropy, the step size halving each epoch.
    /// `report` is called after every epoch with (epoch, mean loss, seconds).
    pub fn train(
        cfg: JudgeConfig,
        training: &JudgeTraining,
        images: &Tensor,
        labels: &Tensor,
        mut report: impl FnMut(usize, f64, f64),
    ) -> Result<Self> {
        Self::check_images(images)?;
        ensure!(training.epochs > 0, "the judge needs at least one epoch");
        ensure!(
            (0.0..1.0).contains(&training.dropout),
            "dropout must be in [0, 1), got {}",
            training.dropout
        );
        let n = images.dim(0)?;
        ensure!(
            labels.dims() == [n],
            "{n} images but labels shaped {:?}",
            labels.dims()
        );
        let device = images.device().clone();
        let judge = Self::new(cfg, &device, training.seed)?;
        let batches = crate::engine::Batches::new(n, training.batch_size.min(n), false)?;
        let mut noise = rng(training.seed, crate::prior::RngStream::JudgeTraining);
        for epoch in 0..training.epochs {
            let started = Instant::now();
            let lr = training.lr * 0.5f64.powi(epoch as i32);
            // A fresh optimizer per epoch carries the new step size; its moments rebuild
            // within a few dozen steps.
            let mut opt = Adam::new(
                &judge.vars,
                AdamConfig {
                    lr,
                    beta1: 0.9,
                    ..AdamConfig::default()
                },
            )?;
            let (mut sum, mut count) = (0f64, 0usize);
            for idx in batches.epoch_indices(training.seed, epoch as u64) {
                let idx = Tensor::new(idx.as_slice(), &device)?;
                let x = images.index_select(&idx, 0)?;
                let y = labels.index_select(&idx, 0)?;
                let (_, logits) = judge.forward(&x, Some((training.dropout, &mut noise)))?;
                let loss = crate::loss::cross_entropy(&logits, &y)?;
                opt.step(&loss.backward()?)?;
                sum += loss.to_scalar::<f32>()? as f64;
                count += 1;
            }
            report(
                epoch,
                sum / count.max(1) as f64,
                started.elapsed().as_secs_f64(),
            );
        }
        Ok(judge)
    }

    /// Saves the weights with the architecture and `test_accuracy` in the metadata,
    /// atomically, and returns the file's SHA-256 (also kept as [`Judge::sha256`]).
    pub fn save(&mut self, path: &Path, test_accuracy: Option<f64>) -> Result<String> {
        let mut meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("config".to_string(), serde_json::to_string(&self.cfg)?),
        ]);
        if let Some(a) = test_accuracy {
            meta.insert("test_accuracy".into(), format!("{a}"));
        }
        let sha = save_tensors(path, &var_tensors(&self.vars), &meta)?;
        self.sha256 = Some(sha.clone());
        self.test_accuracy = test_accuracy;
        Ok(sha)
    }

    /// Loads a judge saved by [`Judge::save`]. A missing file, a file that is not a
    /// judge, or weights that do not fit its recorded architecture are errors that say
    /// so.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            bail!(
                "no judge at {}: train one with `gan-cli train-judge --out {}`",
                path.display(),
                path.display()
            )
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e}", path.display()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            bail!(
                "{} is a safetensors file but not a gan-rs judge (no format = {FORMAT:?})",
                path.display()
            )
        }
        let cfg: JudgeConfig = serde_json::from_str(meta.get("config").map_or("", |s| s))
            .with_context(|| format!("{}: unreadable judge config", path.display()))?;
        let mut judge = Self::new(cfg, device, 0)?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
        load_vars(&judge.vars, &tensors, &path.display().to_string())?;
        judge.sha256 = Some(sha256_hex(&bytes));
        judge.test_accuracy = meta.get("test_accuracy").and_then(|s| s.parse().ok());
        Ok(judge)
    }
}
