//! Runs that cannot be lost, at the engine: a diverging run stops at its first non-finite
//! loss and never checkpoints non-finite weights, one process writes a run folder, and a
//! corrupt checkpoint is caught by its SHA-256 and replaced by the one before it.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder, VarMap};
use gan_core::engine::{load_weights, no_such_phase};
use gan_core::prior::Rng;
use gan_core::{Dataset, Figure, Model, Phase, Step, StepOutput, Streams, TrainConfig, Trainer};

/// A linear regressor whose loss turns NaN (or whose weight turns NaN while the loss
/// stays finite) from phase call `poison_at` on.
struct Poisoned {
    vars: VarMap,
    net: Linear,
    calls: AtomicU64,
    poison_at: u64,
    poison_weights: bool,
}

impl Poisoned {
    fn new(poison_at: u64, poison_weights: bool) -> Self {
        let vars = VarMap::new();
        let net = linear(
            2,
            1,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let mut r = gan_core::prior::rng(0, gan_core::prior::RngStream::Init);
        gan_core::init::reinit(&vars, gan_core::init::WeightInit::FanInUniform, &mut r).unwrap();
        Self {
            vars,
            net,
            calls: AtomicU64::new(0),
            poison_at,
            poison_weights,
        }
    }
}

impl Model for Poisoned {
    fn kind(&self) -> &'static str {
        "poisoned"
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("net", &self.vars)]
    }
    fn phases(&self) -> Vec<Phase> {
        vec![Phase::new("fit", &["net"])]
    }
    fn run_phase(&self, phase: &str, step: &mut Step) -> anyhow::Result<StepOutput> {
        if phase != "fit" {
            return Err(no_such_phase(self.kind(), phase));
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let x = step.real()?.images.flatten_from(1)?;
        let mut loss = (self.net.forward(&x)? - x.mean_keepdim(1)?)?
            .sqr()?
            .mean_all()?;
        if call >= self.poison_at {
            if self.poison_weights {
                let bias = self.vars.data().lock().unwrap()["bias"].clone();
                bias.set(&Tensor::full(f32::NAN, 1, &Device::Cpu)?)?;
                // The loss stays finite: only the weights show it.
                loss = loss.detach();
            } else {
                loss = (loss * f64::NAN)?;
            }
        }
        Ok(StepOutput::new(loss))
    }
    fn figures(&self, _rng: &mut Rng) -> anyhow::Result<Vec<Figure>> {
        Ok(Vec::new())
    }
}

fn data() -> Streams {
    let x = Tensor::randn(0f32, 1.0, (32, 1, 1, 2), &Device::Cpu).unwrap();
    Streams::real(Dataset::new(x, None).unwrap())
}

fn cfg() -> TrainConfig {
    TrainConfig {
        epochs: 10,
        batch_size: 8,
        checkpoint_every: 2,
        progress: false,
        ..TrainConfig::default()
    }
}

fn checkpoint_step(run: &std::path::Path) -> u64 {
    let state = gan_core::engine::latest_checkpoint(run)
        .unwrap()
        .join("state.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    v["step"].as_u64().unwrap()
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let model = Poisoned::new(7, false);
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(&model, cfg(), dir.path())
        .unwrap()
        .fit(&data())
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("step 7") && msg.contains("NaN"), "{msg}");
    assert!(msg.contains("last checkpoint (step 6) is intact"), "{msg}");
    assert_eq!(checkpoint_step(dir.path()), 6);
    // It loads, finite, into a fresh model.
    let fresh = Poisoned::new(u64::MAX, false);
    load_weights(&fresh, dir.path()).unwrap();
}

#[test]
fn non_finite_weights_are_never_checkpointed() {
    // Step 4's loss is computed before its bias turns NaN, and a checkpoint is due.
    let model = Poisoned::new(4, true);
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(&model, cfg(), dir.path())
        .unwrap()
        .fit(&data())
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("net.bias") && msg.contains("NaN"), "{msg}");
    assert!(msg.contains("step 4: not writing a checkpoint"), "{msg}");
    // The checkpoint of step 4 was refused: step 2 is the newest.
    assert_eq!(checkpoint_step(dir.path()), 2);
}

#[test]
fn a_second_writer_of_a_run_folder_is_refused() {
    let model = Poisoned::new(u64::MAX, false);
    let dir = tempfile::tempdir().unwrap();
    let first = Trainer::new(&model, cfg(), dir.path()).unwrap();
    let other = Poisoned::new(u64::MAX, false);
    let err = Trainer::new(&other, cfg(), dir.path()).err().unwrap();
    assert!(
        format!("{err:#}").contains("in use by another training process"),
        "{err:#}"
    );
    let err = Trainer::resume(&other, cfg(), dir.path()).err().unwrap();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
    drop(first);
    // Released with its holder: the run can be resumed now.
    Trainer::resume(&other, cfg(), dir.path()).unwrap();
}

#[test]
fn a_corrupt_checkpoint_falls_back_to_the_one_before() {
    let model = Poisoned::new(u64::MAX, false);
    let dir = tempfile::tempdir().unwrap();
    let short = TrainConfig {
        max_steps: Some(6),
        ..cfg()
    };
    Trainer::new(&model, short, dir.path())
        .unwrap()
        .fit(&data())
        .unwrap();
    let ckpts = dir.path().join("checkpoints");
    let mut kept: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["step-000000004", "step-000000006"],
        "the last two are kept"
    );

    // Flip bytes in the newest weights: caught, and the previous checkpoint is used.
    let weights = ckpts.join("step-000000006/net.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 4..] {
        *b ^= 0xff;
    }
    std::fs::write(&weights, &bytes).unwrap();
    let other = Poisoned::new(u64::MAX, false);
    let t = Trainer::resume(&other, cfg(), dir.path()).unwrap();
    assert_eq!(t.step(), 4, "resumed from the intact checkpoint");
    drop(t);

    // Both corrupt: a clear error, no guess.
    let older = ckpts.join("step-000000004/net.adam.safetensors");
    std::fs::write(&older, b"not a checkpoint").unwrap();
    let err = Trainer::resume(&other, cfg(), dir.path()).err().unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no intact checkpoint") && msg.contains("SHA-256"),
        "{msg}"
    );
    assert!(load_weights(&other, dir.path()).is_err());
}

#[test]
fn a_run_killed_while_writing_its_first_checkpoint_starts_over() {
    let model = Poisoned::new(u64::MAX, false);
    let dir = tempfile::tempdir().unwrap();
    drop(Trainer::new(&model, cfg(), dir.path()).unwrap());
    // What a kill in the middle of the first checkpoint leaves: an unfinished folder.
    std::fs::create_dir_all(dir.path().join("checkpoints/step-000000002.tmp")).unwrap();
    let t = Trainer::resume(&model, cfg(), dir.path()).unwrap();
    assert_eq!(t.step(), 0);
}
