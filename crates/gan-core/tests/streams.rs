//! Two data streams through the engine: each shuffled apart from the other, cycling on
//! its own, and a run interrupted mid-epoch resumes bit for bit with both.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder, VarMap};
use gan_core::engine::no_such_phase;
use gan_core::loss::{discriminator_loss, generator_loss, GeneratorLoss};
use gan_core::prior::{Latent, LatentSpec, Rng};
use gan_core::{
    Dataset, Every, Figure, Model, Phase, Step, StepOutput, Stream, Streams, TrainConfig, Trainer,
};

/// A linear GAN on 2-pixel images, and a regressor `t` on a second stream; every phase
/// logs which examples its batches hold (the label sums), so the order can be checked.
struct TwoStreams {
    vars: [VarMap; 3],
    g: Linear,
    d: Linear,
    t: Linear,
    z: LatentSpec,
    /// The target stream drawn in the real stream's order.
    paired: bool,
}

impl TwoStreams {
    fn paired() -> Self {
        Self {
            paired: true,
            ..Self::new()
        }
    }

    fn new() -> Self {
        let vars = [VarMap::new(), VarMap::new(), VarMap::new()];
        let vb = |i: usize| VarBuilder::from_varmap(&vars[i], DType::F32, &Device::Cpu);
        let (g, d, t) = (
            linear(3, 2, vb(0)).unwrap(),
            linear(2, 1, vb(1)).unwrap(),
            linear(2, 1, vb(2)).unwrap(),
        );
        // Seeded weights: a resumed run is rebuilt with the weights of a fresh one.
        let mut r = gan_core::prior::rng(0, gan_core::prior::RngStream::Init);
        for v in &vars {
            gan_core::init::reinit(v, gan_core::init::WeightInit::FanInUniform, &mut r).unwrap();
        }
        Self {
            g,
            d,
            t,
            vars,
            z: LatentSpec(vec![Latent::Gaussian { dim: 3 }]),
            paired: false,
        }
    }

    fn fake(&self, n: usize, rng: &mut Rng) -> anyhow::Result<Tensor> {
        let z = self.z.sample(n, rng, &Device::Cpu)?.z;
        Ok(self.g.forward(&z)?.reshape((n, 1, 1, 2))?)
    }
}

fn label_sum(step: &Step, stream: &str) -> anyhow::Result<f32> {
    Ok(step
        .batch(stream)?
        .labels()?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar()?)
}

impl Model for TwoStreams {
    fn kind(&self) -> &'static str {
        "two-streams"
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![
            ("g", &self.vars[0]),
            ("d", &self.vars[1]),
            ("t", &self.vars[2]),
        ]
    }
    fn streams(&self) -> Vec<Stream> {
        match self.paired {
            true => vec![Stream::real(), Stream::new("target", 1).paired_with("real")],
            false => vec![Stream::real(), Stream::new("target", 1).with_batch_size(6)],
        }
    }
    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("d", &["d"]),
            Phase::new("g", &["g"]).every(Every::K),
            Phase::new("t", &["t"]).every(Every::N(2)),
        ]
    }
    fn run_phase(&self, phase: &str, step: &mut Step) -> anyhow::Result<StepOutput> {
        let real = step.real()?.images.clone();
        let n = real.dim(0)?;
        match phase {
            "d" => {
                let fake = self.fake(n, step.rng)?.detach();
                let flat = |x: &Tensor| -> anyhow::Result<Tensor> {
                    Ok(self.d.forward(&x.flatten_from(1)?)?.squeeze(1)?)
                };
                Ok(
                    StepOutput::new(discriminator_loss(&flat(&real)?, &flat(&fake)?)?)
                        .with("real_labels", label_sum(step, "real")?)
                        .with("target_labels", label_sum(step, "target")?),
                )
            }
            "g" => {
                let fake = self.fake(n, step.rng)?;
                let logit = self.d.forward(&fake.flatten_from(1)?)?.squeeze(1)?;
                Ok(StepOutput::new(generator_loss(
                    &logit,
                    GeneratorLoss::NonSaturating,
                )?))
            }
            "t" => {
                let x = step.batch("target")?.images.flatten_from(1)?;
                let err = (self.t.forward(&x)? - x.mean_keepdim(1)?)?;
                Ok(StepOutput::new(err.sqr()?.mean_all()?))
            }
            other => Err(no_such_phase(self.kind(), other)),
        }
    }
    fn figures(&self, rng: &mut Rng) -> anyhow::Result<Vec<Figure>> {
        Ok(vec![Figure {
            name: "samples".into(),
            images: self.fake(4, rng)?.tanh()?,
            cols: 2,
        }])
    }
}

/// `n` two-pixel images labelled 0..n (index-aligned in both streams).
fn data(n: usize, offset: f32) -> Dataset {
    let images =
        (Tensor::randn(0f32, 0.3, (n, 1, 1, 2), &Device::Cpu).unwrap() + offset as f64).unwrap();
    let labels = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap();
    Dataset::new(images, Some(labels)).unwrap()
}

fn cfg() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 8,
        progress: false,
        ..TrainConfig::default()
    }
}

fn lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn weights(model: &TwoStreams) -> Vec<Vec<f32>> {
    model
        .networks()
        .iter()
        .flat_map(|(_, v)| {
            let mut vs: Vec<_> = gan_core::engine::checkpoint::var_tensors(v)
                .into_iter()
                .collect();
            vs.sort_by(|a, b| a.0.cmp(&b.0));
            vs.into_iter()
                .map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
        .collect()
}

#[test]
fn a_run_with_two_streams_resumes_bit_for_bit() {
    // 40 real examples (5 batches of 8 an epoch), 21 target ones (3 batches of 6): the
    // target stream wraps around at other steps than the real one.
    let streams = Streams::real(data(40, 0.5)).with("target", data(21, -0.5));

    let straight = TwoStreams::new();
    let a = tempfile::tempdir().unwrap();
    Trainer::new(&straight, cfg(), a.path())
        .unwrap()
        .fit(&streams)
        .unwrap();

    // The same run stopped at step 7 (mid-epoch for both streams), then resumed by a
    // fresh model, as a new process would.
    let first = TwoStreams::new();
    let b = tempfile::tempdir().unwrap();
    let stop = TrainConfig {
        max_steps: Some(7),
        ..cfg()
    };
    Trainer::new(&first, stop, b.path())
        .unwrap()
        .fit(&streams)
        .unwrap();
    let state = std::fs::read_to_string(
        gan_core::engine::latest_checkpoint(b.path())
            .unwrap()
            .join("state.json"),
    )
    .unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["step"], 7);
    assert_eq!(
        state["batch"], 2,
        "the real stream's place: epoch 1, batch 2"
    );
    assert_eq!(
        state["streams"]["target"],
        serde_json::json!({"epoch": 2, "batch": 1}),
        "the target stream's own place: 7 batches at 3 an epoch"
    );
    let second = TwoStreams::new();
    Trainer::resume(&second, cfg(), b.path())
        .unwrap()
        .fit(&streams)
        .unwrap();

    let (la, lb) = (lines(a.path()), lines(b.path()));
    assert_eq!(la.len(), 15);
    assert_eq!(la, lb, "the resumed run logs what the straight one did");
    assert_eq!(weights(&straight), weights(&second));
    // `t` runs every second step only.
    assert!(la.iter().any(|l| l.get("t_loss").is_some()) && la[0].get("t_loss").is_none());
}

#[test]
fn index_aligned_streams_are_not_drawn_in_lock_step() {
    // The same data set twice: with one shuffle for both, every step would see the same
    // examples in both streams.
    let same = data(48, 0.0);
    let streams = Streams::real(same.clone()).with("target", same);
    let model = TwoStreams::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 6,
        ..cfg()
    };
    Trainer::new(&model, cfg, dir.path())
        .unwrap()
        .fit(&streams)
        .unwrap();
    let l = lines(dir.path());
    let equal = l
        .iter()
        .filter(|r| r["real_labels"] == r["target_labels"])
        .count();
    assert!(
        equal < l.len() / 2,
        "{equal} of {} steps drew the same examples",
        l.len()
    );
}

#[test]
fn a_paired_stream_holds_the_same_examples_as_its_leader() {
    let streams = Streams::real(data(48, 0.0)).with("target", data(48, 1.0));
    let model = TwoStreams::paired();
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(&model, cfg(), dir.path())
        .unwrap()
        .fit(&streams)
        .unwrap();
    let l = lines(dir.path());
    assert_eq!(l.len(), 18, "3 epochs of 6 batches");
    for r in &l {
        assert_eq!(r["real_labels"], r["target_labels"], "{r}");
    }
    // Still shuffled, and anew each epoch: the first batches of epochs 1 and 2 differ,
    // and neither is examples 0..8 in order (label sum 28).
    assert_ne!(l[0]["real_labels"], l[6]["real_labels"]);
    assert!(l[0]["real_labels"] != 28.0 || l[6]["real_labels"] != 28.0);
}

#[test]
fn a_pair_of_unequal_data_sets_is_refused() {
    let model = TwoStreams::paired();
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(&model, cfg(), dir.path())
        .unwrap()
        .fit(&Streams::real(data(48, 0.0)).with("target", data(40, 1.0)))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("paired") && msg.contains("48") && msg.contains("40"),
        "{msg}"
    );
}

#[test]
fn a_missing_stream_is_a_clear_error() {
    let model = TwoStreams::new();
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(&model, cfg(), dir.path())
        .unwrap()
        .fit(&Streams::real(data(40, 0.0)))
        .unwrap_err();
    assert!(format!("{err:#}").contains("\"target\""), "{err:#}");
}
