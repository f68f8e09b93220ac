//! Schedules over a run: each step knows how far through its run it is, and a model's
//! learning-rate scale reaches every optimizer (DANN anneals both with training); a
//! phase bounded by steps runs in its window only, and each step knows its number and
//! epoch (Triple-GAN pre-trains, then plays, and warms up by epochs).

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder, VarMap};
use gan_core::engine::no_such_phase;
use gan_core::prior::Rng;
use gan_core::{Dataset, Figure, Model, Phase, Step, StepOutput, Streams, TrainConfig, Trainer};

/// A linear regressor that records each step's progress and its weights after the step
/// before, with a learning rate that drops to zero half way through the run.
struct Annealed {
    vars: VarMap,
    net: Linear,
    seen: Mutex<Vec<(f64, Vec<f32>)>>,
    other: VarMap,
    late: Mutex<Vec<(u64, u64, usize)>>,
}

impl Model for Annealed {
    fn kind(&self) -> &'static str {
        "annealed"
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("net", &self.vars), ("other", &self.other)]
    }
    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("fit", &["net"]),
            Phase::new("late", &["other"]).from_step(3).until_step(5),
        ]
    }
    fn lr_scale(&self, progress: f64) -> f64 {
        if progress < 0.5 {
            1.0
        } else {
            0.0
        }
    }
    fn run_phase(&self, phase: &str, step: &mut Step) -> anyhow::Result<StepOutput> {
        if phase == "late" {
            let n = self.seen.lock().unwrap().len() as u64;
            self.late
                .lock()
                .unwrap()
                .push((n, step.number(), step.epoch()));
            let w = self
                .other
                .get(1, "w", Default::default(), DType::F32, &Device::Cpu)?;
            return Ok(StepOutput::new(w.sqr()?.sum_all()?));
        }
        if phase != "fit" {
            return Err(no_such_phase(self.kind(), phase));
        }
        let w = self.vars.data().lock().unwrap()["weight"]
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.seen.lock().unwrap().push((step.progress(), w));
        let x = step.real()?.images.flatten_from(1)?;
        let loss = (self.net.forward(&x)? - 1.0)?.sqr()?.mean_all()?;
        Ok(StepOutput::new(loss))
    }
    fn figures(&self, _rng: &mut Rng) -> anyhow::Result<Vec<Figure>> {
        Ok(Vec::new())
    }
}

#[test]
fn progress_runs_over_the_planned_steps_and_the_lr_scale_is_applied() {
    let vars = VarMap::new();
    let net = linear(
        2,
        1,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let other = VarMap::new();
    other
        .get(
            1,
            "w",
            candle_nn::Init::Const(1.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    let model = Annealed {
        vars,
        net,
        seen: Mutex::new(Vec::new()),
        other,
        late: Mutex::new(Vec::new()),
    };
    let x = Tensor::randn(0f32, 1.0, (32, 1, 1, 2), &Device::Cpu).unwrap();
    let data = Streams::real(Dataset::new(x, None).unwrap());
    // 2 epochs of 4 batches, stopped after 6 steps: progress in eighths.
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 8,
        max_steps: Some(6),
        checkpoint_every: 0,
        progress: false,
        ..TrainConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(&model, cfg, dir.path())
        .unwrap()
        .fit(&data)
        .unwrap();
    let seen = model.seen.lock().unwrap();
    let progress: Vec<f64> = seen.iter().map(|(p, _)| *p).collect();
    let eighths: Vec<f64> = (0..6).map(|i| i as f64 / 8.0).collect();
    assert_eq!(progress, eighths);
    // Steps 1-4 (progress < 0.5) move the weights; steps 5-6 have a zero step size.
    let w: Vec<&Vec<f32>> = seen.iter().map(|(_, w)| w).collect();
    assert_ne!(w[0], w[1]);
    assert_ne!(w[3], w[4]);
    assert_eq!(w[4], w[5]);
    // The bounded phase: after 3 steps, within the first 5 (steps 4 and 5, the second
    // of them in epoch 1 of 4-batch epochs), each after its step's first phase.
    assert_eq!(*model.late.lock().unwrap(), vec![(4, 4, 0), (5, 5, 1)]);
}

#[test]
fn a_bounded_phase_runs_in_its_window() {
    let p = Phase::new("pre", &["c"]).until_step(3);
    let q = Phase::new("game", &["d"]).from_step(3);
    let runs = |ph: &Phase| (1..=6).filter(|&s| ph.runs_at(s, 1)).collect::<Vec<u64>>();
    assert_eq!(runs(&p), vec![1, 2, 3]);
    assert_eq!(runs(&q), vec![4, 5, 6]);
    let k = Phase::new("g", &["g"])
        .from_step(3)
        .every(gan_core::Every::K);
    assert_eq!(
        (1..=8).filter(|&s| k.runs_at(s, 2)).collect::<Vec<u64>>(),
        vec![4, 6, 8]
    );
}
