//! Exponential moving averages of a model's weights, the ones its samples are drawn with.
//!
//! A GAN's generator does not settle: each step answers the discriminator of that step,
//! so the weights circle around a good point instead of resting on it. Their running
//! average sits nearer that point, and its samples are better at no cost to training
//! (Yazıcı et al. 2019, "The unusual effectiveness of averaging in GAN training"; the
//! "EMA generator" of ProGAN, StyleGAN and BigGAN). The trainer keeps one average per
//! network the model names in [`Model::averaged`], when [`TrainConfig::ema`] is set:
//! updated after every step, checkpointed beside the weights as `<net>.ema.safetensors`,
//! swapped in for the epoch's figures, and loaded by [`crate::engine::load_weights`]
//! in place of the last step's weights.
//!
//! [`TrainConfig::ema`]: crate::engine::TrainConfig::ema

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::checkpoint::{load_tensors, load_vars, save_tensors, var_tensors};
use super::model::Model;

/// The file of `net`'s average in a checkpoint.
pub(crate) fn file_name(net: &str) -> String {
    format!("{net}.ema.safetensors")
}

/// The decay of step `step` (1-based): `decay`, or less early on, `(1 + t) / (10 + t)`,
/// so that the average forgets the random initial weights within the first steps
/// instead of over the first thousands.
pub fn decay_at(decay: f64, step: u64) -> f64 {
    let t = step as f64;
    decay.min((1.0 + t) / (10.0 + t))
}

/// The averages of the named networks' weights, by network and variable name.
pub(crate) struct Averages {
    decay: f64,
    nets: BTreeMap<&'static str, HashMap<String, Tensor>>,
}

/// The variables of network `net` of `model`.
fn vars_of<'a>(model: &'a dyn Model, net: &str) -> Result<&'a VarMap> {
    model
        .networks()
        .into_iter()
        .find(|(n, _)| *n == net)
        .map(|(_, v)| v)
        .with_context(|| {
            format!(
                "{} averages a network {net:?} it does not have",
                model.kind()
            )
        })
}

/// Deep copies of every variable of `vars`: the variables change in place.
fn snapshot(vars: &VarMap) -> Result<HashMap<String, Tensor>> {
    var_tensors(vars)
        .into_iter()
        .map(|(k, t)| Ok((k, t.detach().copy()?)))
        .collect()
}

/// `avg <- avg + (w - avg)(1 - d)` for every variable `w` of `vars`, by name.
fn blend(avg: &mut HashMap<String, Tensor>, vars: &VarMap, d: f64) -> Result<()> {
    let data = vars.data().lock().unwrap();
    for (name, var) in data.iter() {
        let a = avg
            .get_mut(name)
            .with_context(|| format!("no average of {name}"))?;
        // Detached: ops on a variable record a graph, and each average would hold the
        // one before it, and so on back to the first step.
        let w = var.as_tensor().detach();
        *a = ((w - &*a)?.affine(1.0 - d, 0.0)? + &*a)?.detach();
    }
    Ok(())
}

impl Averages {
    /// Averages starting at the networks' current weights, or an error when the model
    /// averages no network (then there is nothing for `--ema-decay` to do).
    pub fn new(model: &dyn Model, decay: f64) -> Result<Self> {
        let names = model.averaged();
        if names.is_empty() {
            bail!(
                "{} names no network whose weights to average: --ema-decay does not apply to it",
                model.kind()
            )
        }
        let nets = names
            .into_iter()
            .map(|n| Ok((n, snapshot(vars_of(model, n)?)?)))
            .collect::<Result<_>>()?;
        Ok(Self { decay, nets })
    }

    /// Moves every average towards the current weights, after step `step` (1-based).
    pub fn update(&mut self, model: &dyn Model, step: u64) -> Result<()> {
        let d = decay_at(self.decay, step);
        for (net, avg) in self.nets.iter_mut() {
            blend(avg, vars_of(model, net)?, d).with_context(|| format!("averaging {net}"))?;
        }
        Ok(())
    }

    /// Writes one `<net>.ema.safetensors` per network into `dir`, returning each file's
    /// name and SHA-256.
    pub fn save(
        &self,
        dir: &Path,
        meta: &HashMap<String, String>,
    ) -> Result<Vec<(String, String)>> {
        self.nets
            .iter()
            .map(|(net, avg)| {
                let file = file_name(net);
                let sha = save_tensors(&dir.join(&file), avg, meta)?;
                Ok((file, sha))
            })
            .collect()
    }

    /// Reads the averages back from checkpoint `ckpt`.
    pub fn load(&mut self, ckpt: &Path, dev: &Device) -> Result<()> {
        for (net, avg) in self.nets.iter_mut() {
            let path = ckpt.join(file_name(net));
            let saved = load_tensors(&path, dev).with_context(|| {
                format!(
                    "the run keeps averaged weights (--ema-decay) but {} has none of {net}",
                    ckpt.display()
                )
            })?;
            for (name, a) in avg.iter_mut() {
                let t = saved
                    .get(name)
                    .with_context(|| format!("{}: no tensor {name:?}", path.display()))?;
                if t.shape() != a.shape() {
                    bail!("{}: tensor {name:?} has another shape", path.display())
                }
                *a = t.clone();
            }
        }
        Ok(())
    }

    /// Runs `f` with the averages in the networks' place, then puts the weights back.
    pub fn swapped<R>(&self, model: &dyn Model, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let mut kept = Vec::new();
        for (net, avg) in &self.nets {
            let vars = vars_of(model, net)?;
            kept.push((vars, snapshot(vars)?));
            load_vars(vars, avg, &format!("the average of {net}"))?;
        }
        let out = f();
        for (vars, weights) in kept {
            load_vars(vars, &weights, "weights put back after the figures")?;
        }
        out
    }
}

/// Loads the averages a checkpoint holds (listed in its `files`) into the networks.
pub(crate) fn load_into(
    model: &dyn Model,
    ckpt: &Path,
    files: &BTreeMap<String, String>,
) -> Result<()> {
    let dev = super::run::device_of(model);
    for net in model.averaged() {
        if !files.contains_key(&file_name(net)) {
            continue;
        }
        let path = ckpt.join(file_name(net));
        load_vars(
            vars_of(model, net)?,
            &load_tensors(&path, &dev)?,
            &path.display().to_string(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn a_blend_moves_towards_the_weights_and_keeps_no_graph() {
        let vars = VarMap::new();
        let w = vars
            .get(
                (2,),
                "w",
                candle_nn::Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let mut avg = HashMap::from([(
            "w".to_string(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )]);
        blend(&mut avg, &vars, 0.75).unwrap();
        assert_eq!(avg["w"].to_vec1::<f32>().unwrap(), [0.25, 0.25]);
        assert!(
            !avg["w"].track_op(),
            "the average records a graph through the weights"
        );
        assert!(w.track_op());
    }
}
