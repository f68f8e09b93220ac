//! The judge of the evaluation suite: it learns, survives a save and load bit for bit,
//! refuses bad input with clear errors, and (with real MNIST) recognises known digits.

use candle_core::{Device, Tensor};
use gan_core::eval::judge::{Judge, JudgeConfig, JudgeTraining};

mod common;
use common::toy_set;

const TINY: JudgeConfig = JudgeConfig {
    c1: 8,
    c2: 16,
    hidden: 32,
};

#[test]
fn learns_a_toy_set_and_round_trips_through_its_file() {
    let (x, y, _) = toy_set(600, 1);
    let (x_test, _, labels_test) = toy_set(90, 2);
    let untrained = Judge::new(TINY, &Device::Cpu, 0).unwrap();
    let before = untrained.accuracy(&x_test, &labels_test).unwrap();
    let training = JudgeTraining {
        epochs: 3,
        batch_size: 16,
        lr: 3e-3,
        dropout: 0.0,
        ..JudgeTraining::default()
    };
    let mut losses = vec![];
    let mut judge = Judge::train(TINY, &training, &x, &y, |_, l, _| losses.push(l)).unwrap();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < losses[0], "loss did not fall: {losses:?}");
    let after = judge.accuracy(&x_test, &labels_test).unwrap();
    assert!(
        after >= 0.95,
        "held-out toy accuracy {after} (untrained {before}), losses {losses:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.safetensors");
    let sha = judge.save(&path, Some(after)).unwrap();
    assert_eq!(sha.len(), 64);
    assert_eq!(judge.sha256(), Some(sha.as_str()));
    let loaded = Judge::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.sha256(), Some(sha.as_str()));
    assert_eq!(loaded.config(), TINY);
    assert_eq!(loaded.test_accuracy(), Some(after));
    let (a, b) = (
        judge.outputs(&x_test).unwrap(),
        loaded.outputs(&x_test).unwrap(),
    );
    assert_eq!(a.predicted, b.predicted);
    assert_eq!(a.features, b.features);
    assert_eq!(a.feature_dim, 32);
    assert_eq!(a.probs.len(), 90 * 10);
    // Two trainings from one seed give the same judge, hence the same hash.
    let mut again = Judge::train(TINY, &training, &x, &y, |_, _, _| {}).unwrap();
    let path2 = dir.path().join("again.safetensors");
    assert_eq!(again.save(&path2, Some(after)).unwrap(), sha);
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let err = Judge::load(&missing, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no judge at") && err.contains("train-judge"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let err = Judge::load(&garbage, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a safetensors file"), "{err}");

    // A valid safetensors file that is not a judge (a GAN checkpoint, say).
    let other = dir.path().join("other.safetensors");
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    gan_core::engine::checkpoint::save_tensors(
        &other,
        &[("w".to_string(), t)].into_iter().collect(),
        &Default::default(),
    )
    .unwrap();
    let err = Judge::load(&other, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("not a gan-rs judge"), "{err}");

    let judge = Judge::new(TINY, &Device::Cpu, 0).unwrap();
    for dims in [
        vec![4, 784],
        vec![4, 3, 28, 28],
        vec![4, 1, 32, 32],
        vec![0, 1, 28, 28],
    ] {
        let x = Tensor::zeros(dims.as_slice(), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = judge.outputs(&x).err().unwrap().to_string();
        assert!(err.contains("[N, 1, 28, 28]"), "{dims:?}: {err}");
    }
    assert!(Judge::new(JudgeConfig { c1: 0, ..TINY }, &Device::Cpu, 0).is_err());
}

#[test]
fn a_judge_trained_on_real_mnist_reads_known_digits() {
    let Some(shared) = gan_data::mnist::shared_mnist_dir() else {
        eprintln!("skipped: ../shared/data/mnist not found");
        return;
    };
    let m = gan_data::load_mnist(shared, gan_data::Verify::Canonical, &Device::Cpu).unwrap();
    // A small judge on 6,000 images for two epochs: seconds, and well above chance.
    let x = m.train.images.narrow(0, 0, 6000).unwrap();
    let y = m.train.labels.narrow(0, 0, 6000).unwrap();
    let cfg = JudgeConfig {
        c1: 8,
        c2: 16,
        hidden: 32,
    };
    let training = JudgeTraining {
        epochs: 2,
        batch_size: 32,
        lr: 2e-3,
        ..JudgeTraining::default()
    };
    let mut judge = Judge::train(cfg, &training, &x, &y, |_, _, _| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.safetensors");
    judge.save(&path, None).unwrap();
    let judge = Judge::load(&path, &Device::Cpu).unwrap();
    // The first test images are 7, 2, 1, 0, 4, 1, 4, 9: clear, well-known examples.
    let first = m.test.images.narrow(0, 0, 8).unwrap();
    assert_eq!(judge.predict(&first).unwrap(), vec![7, 2, 1, 0, 4, 1, 4, 9]);
    let acc = judge
        .accuracy(
            &m.test.images.narrow(0, 0, 2000).unwrap(),
            &m.test.labels_u8[..2000],
        )
        .unwrap();
    assert!(acc > 0.9, "test accuracy {acc}");
}

#[test]
fn the_judge_refuses_non_finite_images() {
    // After its ReLUs a NaN image would score as a blank one: no metric of such a run.
    let nan = Tensor::full(f32::NAN, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let e = Judge::check_images(&nan).unwrap_err().to_string();
    assert!(e.contains("NaN"), "{e}");
    let fine = Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(Judge::check_images(&fine).is_ok());
}
