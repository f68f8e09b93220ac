//! Adam, as the GAN papers use it (Kingma and Ba 2015, with beta1 = 0.5 and no weight
//! decay), with its moments exposed so that a checkpoint can carry them.
//!
//! candle-nn's `AdamW` keeps its state private and defaults to weight decay 0.01 and
//! beta1 = 0.9: a resumed run would restart its moments from zero.

use std::collections::HashMap;

use std::sync::Mutex;

use candle_core::{
    backprop::GradStore, CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor, Var,
};
use candle_nn::VarMap;
use rayon::prelude::*;

use crate::fast::grads::Collector;

/// Adam's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// Step size.
    pub lr: f64,
    /// Decay of the first moment; 0.5 (Radford et al. 2016) keeps the adversarial game
    /// from oscillating as it does with the usual 0.9.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam over one network's variables.
///
/// On the CPU the update is one fused in-place pass per variable (moments kept as plain
/// vectors, the weights updated where they lie); elsewhere it runs as tensor ops.
pub struct Adam {
    params: Vec<Param>,
    step: u64,
    config: AdamConfig,
}

struct Param {
    name: String,
    var: Var,
    moments: Moments,
}

enum Moments {
    /// CPU `f32` variables: updated in place by [`FusedAdam`].
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Anything else: candle ops, one new tensor per moment and step.
    Tensors { m: Tensor, v: Tensor },
}

impl Moments {
    fn zeros(var: &Var, fused: bool) -> Result<Self> {
        let t = var.as_tensor();
        Ok(if fused && t.device().is_cpu() && t.dtype() == DType::F32 {
            let n = t.elem_count();
            Moments::Host {
                m: vec![0.0; n],
                v: vec![0.0; n],
            }
        } else {
            Moments::Tensors {
                m: t.zeros_like()?,
                v: t.zeros_like()?,
            }
        })
    }
}

/// One Adam update of a weight in place, reading its gradient and updating its moments.
struct FusedAdam<'a> {
    m: Mutex<&'a mut [f32]>,
    v: Mutex<&'a mut [f32]>,
    /// The gradient when it does not come as a tensor (from a [`Collector`]).
    grad: Option<&'a [f32]>,
    k: Constants,
}

/// The numbers of one Adam step: step size, decays, epsilon, bias corrections.
#[derive(Clone, Copy)]
struct Constants {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
}

impl<'a> FusedAdam<'a> {
    fn new(m: &'a mut [f32], v: &'a mut [f32], grad: Option<&'a [f32]>, k: Constants) -> Self {
        Self {
            m: Mutex::new(m),
            v: Mutex::new(v),
            grad,
            k,
        }
    }

    fn update(&self, w: &mut [f32], g: &[f32]) -> Result<()> {
        let (mut m, mut v) = (self.m.lock().unwrap(), self.v.lock().unwrap());
        if w.len() != g.len() || m.len() != w.len() || v.len() != w.len() {
            candle_core::bail!("fused Adam: weight, gradient and moments differ in size")
        }
        let (b1, b2, eps) = (self.k.beta1, self.k.beta2, self.k.eps);
        let (step, c2) = (self.k.lr * self.k.c1, self.k.c2);
        const CHUNK: usize = 1 << 14;
        w.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((w, g), m), v)| {
                // As wide as the CPU's vectors go: the square root and the division
                // are most of the arithmetic, and the same bits at any width.
                crate::fast::kernels::wide(|| {
                    for i in 0..w.len() {
                        let gi = g[i];
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        w[i] -= step * m[i] / ((v[i] * c2).sqrt() + eps);
                    }
                })
            });
        Ok(())
    }
}

/// The contiguous `f32` weights of a storage.
fn weights<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("fused Adam needs contiguous weights and gradients")
    };
    let CpuStorage::F32(w) = s else {
        candle_core::bail!("fused Adam needs f32 weights")
    };
    Ok(&mut w[a..b])
}

impl InplaceOp2 for FusedAdam<'_> {
    fn name(&self) -> &'static str {
        "gan-fused-adam"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let Some((c, d)) = l2.contiguous_offsets() else {
            candle_core::bail!("fused Adam needs contiguous weights and gradients")
        };
        let g = &s2.as_slice::<f32>()?[c..d];
        self.update(weights(s1, l1)?, g)
    }
}

impl InplaceOp1 for FusedAdam<'_> {
    fn name(&self) -> &'static str {
        "gan-fused-adam-collected"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let g = self.grad.expect("a collected gradient");
        self.update(weights(s, l)?, g)
    }
}

impl Adam {
    /// An optimizer over every floating-point variable of `vars`, in name order so that
    /// its state has stable names.
    pub fn new(vars: &VarMap, config: AdamConfig) -> Result<Self> {
        Self::build(vars, config, true)
    }

    fn build(vars: &VarMap, config: AdamConfig, fused: bool) -> Result<Self> {
        if config.lr.is_nan()
            || config.lr <= 0.0
            || !(0.0..1.0).contains(&config.beta1)
            || !(0.0..1.0).contains(&config.beta2)
        {
            candle_core::bail!("bad Adam settings {config:?}: need lr > 0 and betas in [0, 1)")
        }
        let data = vars.data().lock().unwrap();
        let mut named: Vec<_> = data.iter().filter(|(_, v)| v.dtype().is_float()).collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let params = named
            .into_iter()
            .map(|(name, var)| {
                Ok(Param {
                    name: name.clone(),
                    var: var.clone(),
                    moments: Moments::zeros(var, fused)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            params,
            step: 0,
            config,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> AdamConfig {
        self.config
    }

    /// Sets the step size of the next updates (a schedule's; see [`crate::Model::lr_scale`]).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// How many updates have been applied (the `t` of the bias correction).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update from `grads`. Variables without a gradient (batch-norm running
    /// statistics, a network that took no part in the loss) are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.update(grads, None)
    }

    /// [`Adam::step`] for a backward pass run by [`Collector::backward`]: each
    /// variable's gradient is its entry in `grads` plus what `collected` holds for it.
    pub fn step_collected(&mut self, grads: &GradStore, collected: &Collector) -> Result<()> {
        self.update(grads, Some(collected))
    }

    fn update(&mut self, grads: &GradStore, collected: Option<&Collector>) -> Result<()> {
        self.step += 1;
        let AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
        } = self.config;
        let t = self.step as i32;
        let c1 = 1.0 / (1.0 - beta1.powi(t));
        let c2 = 1.0 / (1.0 - beta2.powi(t));
        for p in &mut self.params {
            let w = p.var.as_tensor();
            // A variable's gradient can still carry the graph it was computed from (conv
            // and batch-norm backward passes build it from tracked activations). Without
            // detaching it, each new moment would hold the previous one and its graph, and
            // memory would grow by the size of the network every step.
            let stored = grads.get(w).map(|g| g.detach());
            let k = Constants {
                lr: lr as f32,
                beta1: beta1 as f32,
                beta2: beta2 as f32,
                eps: eps as f32,
                c1: c1 as f32,
                c2: c2 as f32,
            };
            // The common case on the CPU: only a collected gradient, read where it lies.
            if let (None, Some(c), Moments::Host { m, v }) = (&stored, collected, &mut p.moments) {
                if let Some(r) =
                    c.with_gradient(w, |g| w.inplace_op1(&FusedAdam::new(m, v, Some(g), k)))
                {
                    r?;
                }
                continue;
            }
            let g = match (
                stored,
                collected.map(|c| c.gradient(w)).transpose()?.flatten(),
            ) {
                (Some(a), Some(b)) => (a + b.to_device(w.device())?)?,
                (Some(g), None) | (None, Some(g)) => g,
                (None, None) => continue,
            };
            match &mut p.moments {
                Moments::Host { m, v } => {
                    w.inplace_op2(&g.contiguous()?, &FusedAdam::new(m, v, None, k))?;
                }
                Moments::Tensors { m, v } => {
                    let g = &g;
                    *m = ((&*m * beta1)? + (g * (1.0 - beta1))?)?;
                    *v = ((&*v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                    let denom = ((&*v * c2)?.sqrt()? + eps)?;
                    let update = ((&*m * (lr * c1))? / denom)?;
                    p.var.set(&w.sub(&update)?)?;
                }
            }
        }
        Ok(())
    }

    /// The moments, named `m.<var>` and `v.<var>`, for a checkpoint.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            let (m, v) = match &p.moments {
                Moments::Host { m, v } => {
                    let t = p.var.as_tensor();
                    (
                        Tensor::from_slice(m, t.shape(), t.device())?,
                        Tensor::from_slice(v, t.shape(), t.device())?,
                    )
                }
                Moments::Tensors { m, v } => (m.clone(), v.clone()),
            };
            out.insert(format!("m.{}", p.name), m);
            out.insert(format!("v.{}", p.name), v);
        }
        Ok(out)
    }

    /// Restores moments and step count written by [`Adam::state`] and [`Adam::steps`].
    /// Every variable must be present with its shape: a state of another network is an
    /// error, not a silent restart.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for p in &mut self.params {
            let mut loaded = Vec::with_capacity(2);
            for key in ["m", "v"] {
                let name = format!("{key}.{}", p.name);
                let Some(t) = state.get(&name) else {
                    candle_core::bail!("optimizer state has no {name}")
                };
                if t.shape() != p.var.shape() {
                    candle_core::bail!(
                        "optimizer state {name} has shape {:?}, the network needs {:?}",
                        t.dims(),
                        p.var.dims()
                    )
                }
                loaded.push(t.to_device(p.var.device())?.to_dtype(p.var.dtype())?);
            }
            let (tm, tv) = (&loaded[0], &loaded[1]);
            match &mut p.moments {
                Moments::Host { m, v } => {
                    *m = tm.flatten_all()?.to_vec1::<f32>()?;
                    *v = tv.flatten_all()?.to_vec1::<f32>()?;
                }
                Moments::Tensors { m, v } => {
                    *m = tm.clone();
                    *v = tv.clone();
                }
            }
        }
        self.step = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Three Adam steps on f(w) = sum(c * w^2) against the update rule computed by hand.
    #[test]
    fn matches_update_rule_by_hand() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let w = vars
            .get(2, "w", candle_nn::Init::Const(1.0), DType::F32, &dev)
            .unwrap();
        let cfg = AdamConfig {
            lr: 0.1,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
        };
        let mut opt = Adam::new(&vars, cfg).unwrap();
        let c = [1.0f64, -3.0];
        let (mut wr, mut m, mut v) = ([1.0f64, 1.0], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=3 {
            let cvec = Tensor::new(&[c[0] as f32, c[1] as f32], &dev).unwrap();
            let loss = (w.sqr().unwrap() * cvec).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            for i in 0..2 {
                let g = 2.0 * c[i] * wr[i];
                m[i] = 0.5 * m[i] + 0.5 * g;
                v[i] = 0.9 * v[i] + 0.1 * g * g;
                let mh = m[i] / (1.0 - 0.5f64.powi(t));
                let vh = v[i] / (1.0 - 0.9f64.powi(t));
                wr[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
            let got = w.to_vec1::<f32>().unwrap();
            for i in 0..2 {
                assert!(
                    (got[i] as f64 - wr[i]).abs() < 1e-5,
                    "step {t}: {got:?} vs {wr:?}"
                );
            }
        }
        assert_eq!(opt.steps(), 3);
    }

    /// The moments hold values, not graphs: after a step on a loss whose gradient is built
    /// from tracked tensors, the moment tensors have no backprop history.
    #[test]
    fn moments_do_not_keep_the_graph() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let w = vars
            .get((3, 3), "w", candle_nn::Init::Const(0.3), DType::F32, &dev)
            .unwrap();
        let x = vars
            .get((3, 3), "x", candle_nn::Init::Const(0.7), DType::F32, &dev)
            .unwrap();
        let mut opt = Adam::build(&vars, AdamConfig::default(), false).unwrap();
        for _ in 0..3 {
            let loss = w
                .matmul(&x.exp().unwrap())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        for p in &opt.params {
            let Moments::Tensors { m, v } = &p.moments else {
                panic!("the reference path keeps tensor moments")
            };
            assert!(
                !m.track_op() && !v.track_op(),
                "moment of {} tracks its history",
                p.name
            );
        }
    }

    #[test]
    fn state_round_trip_and_mismatch() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let w = vars
            .get((2, 3), "w", candle_nn::Init::Const(0.5), DType::F32, &dev)
            .unwrap();
        let mut opt = Adam::new(&vars, AdamConfig::default()).unwrap();
        opt.step(&w.sqr().unwrap().sum_all().unwrap().backward().unwrap())
            .unwrap();
        let state = opt.state().unwrap();
        let mut other = Adam::new(&vars, AdamConfig::default()).unwrap();
        other.load_state(&state, opt.steps()).unwrap();
        assert_eq!(
            other.state().unwrap()["m.w"].to_vec2::<f32>().unwrap(),
            state["m.w"].to_vec2::<f32>().unwrap()
        );
        let small = VarMap::new();
        small
            .get(3, "w", candle_nn::Init::Const(0.0), DType::F32, &dev)
            .unwrap();
        let mut wrong = Adam::new(&small, AdamConfig::default()).unwrap();
        let err = wrong.load_state(&state, 1).unwrap_err().to_string();
        assert!(err.contains("shape"), "{err}");
    }

    /// The fused in-place update and the tensor-op update agree over several steps.
    #[test]
    fn fused_matches_tensor_ops() {
        let dev = Device::Cpu;
        let run = |fused: bool| {
            let vars = VarMap::new();
            let w = vars
                .get(
                    (7, 5),
                    "w",
                    candle_nn::Init::Randn {
                        mean: 0.,
                        stdev: 1.,
                    },
                    DType::F32,
                    &dev,
                )
                .unwrap();
            let start: Vec<f32> = (0..35)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let init = Tensor::from_vec(start, (7, 5), &dev).unwrap();
            vars.data().lock().unwrap()["w"].set(&init).unwrap();
            let mut opt = Adam::build(
                &vars,
                AdamConfig {
                    lr: 0.05,
                    ..Default::default()
                },
                fused,
            )
            .unwrap();
            for _ in 0..4 {
                let loss = (w.sqr().unwrap().sin().unwrap()).sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
            let state = opt.state().unwrap();
            (
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                state["v.w"]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        };
        let (a, va) = run(true);
        let (b, vb) = run(false);
        for (x, y) in a.iter().zip(&b).chain(va.iter().zip(&vb)) {
            assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
        assert!(a.iter().zip(&b).any(|(x, _)| x.abs() > 0.0));
    }
}
