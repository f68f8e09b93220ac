//! The discriminator as a predictor: its search climbs D's score, keeps the pixels it is
//! told to keep, and its replay buffer comes back from a checkpoint.

use candle_core::{Device, Tensor};
use gan_core::{Dataset, Model, Streams, TrainConfig, Trainer};
use gan_models::dpredict::{Activation, Arch, Dpredict, DpredictConfig};

/// The first network (3x3 at full size, leaky ReLU), shrunk.
fn tiny() -> DpredictConfig {
    DpredictConfig {
        arch: Arch::Conv3,
        activation: Activation::Leaky,
        grad_clamp: 0.0,
        data_noise: 0.0,
        width: 2,
        langevin_steps: 2,
        buffer: 24,
        sample_steps: 2,
        ..DpredictConfig::default()
    }
}

fn images(n: usize) -> Tensor {
    Tensor::rand(-1f32, 1.0, (n, 1, 28, 28), &Device::Cpu).unwrap()
}

fn scores(model: &Dpredict, x: &Tensor) -> Vec<f32> {
    model.score(x).unwrap().to_vec1::<f32>().unwrap()
}

/// `tiny()` with the strided D and swish.
fn strided() -> DpredictConfig {
    DpredictConfig {
        arch: Arch::Strided,
        activation: Activation::Swish,
        ..tiny()
    }
}

#[test]
fn small_noiseless_steps_raise_every_score() {
    for net in [tiny(), strided()] {
        raise_every_score(net);
    }
}

fn raise_every_score(net: DpredictConfig) {
    let cfg = DpredictConfig {
        step_size: 1e-3,
        noise: 0.0,
        ..net
    };
    let model = Dpredict::new(cfg, &Device::Cpu, 0).unwrap();
    // Away from the clamp at -1 and 1, so that every pixel may move.
    let x = (images(6) * 0.5).unwrap();
    let mut rng = gan_core::prior::rng(0, gan_core::RngStream::Sample);
    let mut last = scores(&model, &x);
    model
        .search(&x, 5, None, &mut rng, |_, y| {
            let now = scores(&model, y);
            for (a, b) in last.iter().zip(&now) {
                assert!(b > a, "a step lowered a score: {a} -> {b}");
            }
            last = now;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_search_keeps_the_pixels_it_is_given() {
    let model = Dpredict::new(tiny(), &Device::Cpu, 0).unwrap();
    let x = images(3);
    // The top 14 rows given, the bottom 14 free.
    let mask: Vec<f32> = (0..784).map(|i| f32::from(i >= 14 * 28)).collect();
    let free = Tensor::from_vec(mask, (1, 1, 28, 28), &Device::Cpu).unwrap();
    let mut rng = gan_core::prior::rng(0, gan_core::RngStream::Sample);
    let y = model
        .search(&x, 10, Some(&free), &mut rng, |_, _| Ok(()))
        .unwrap();
    let top = |t: &Tensor| {
        t.narrow(2, 0, 14)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(top(&x), top(&y), "the given half moved");
    let bottom = |t: &Tensor| t.narrow(2, 14, 14).unwrap();
    let moved = (bottom(&x) - bottom(&y))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(
        moved.to_scalar::<f32>().unwrap() > 0.0,
        "the free half never moved"
    );
}

#[test]
fn a_clamped_gradient_moves_no_pixel_further_than_eta_c() {
    let (eta, c) = (10.0, 1e-6);
    let cfg = DpredictConfig {
        step_size: eta,
        grad_clamp: c,
        noise: 0.0,
        ..strided()
    };
    let model = Dpredict::new(cfg, &Device::Cpu, 0).unwrap();
    let x = (images(4) * 0.5).unwrap();
    let mut rng = gan_core::prior::rng(0, gan_core::RngStream::Sample);
    let y = model.search(&x, 1, None, &mut rng, |_, _| Ok(())).unwrap();
    let moved = (&y - &x).unwrap().abs().unwrap().max_all().unwrap();
    let moved = moved.to_scalar::<f32>().unwrap() as f64;
    // Some gradient exceeds 1e-6, so the largest move is exactly eta c.
    assert!(
        (moved - eta * c).abs() < 1e-7,
        "largest move {moved}, clamp allows {}",
        eta * c
    );
}

fn buffer_of(model: &Dpredict) -> Vec<f32> {
    let (_, vars) = model.buffers()[0];
    vars.all_vars()[0]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// The first network, then the strided one with noisy training images. (These resumes
/// once differed when many tests of this binary ran at once: another test's trainer,
/// waiting inside a frozen search, ran this one's step with D frozen; the engine now
/// isolates each step: `gan_core::fast::isolated`.)
#[test]
fn the_replay_buffer_and_d_resume_with_the_run() {
    resume_bit_for_bit(tiny());
    resume_bit_for_bit(DpredictConfig {
        data_noise: 0.05,
        grad_clamp: 0.03,
        ..strided()
    });
}

fn resume_bit_for_bit(net: DpredictConfig) {
    let data = Streams::real(Dataset::new(images(32), None).unwrap());
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 8,
        checkpoint_every: 0,
        progress: false,
        ..TrainConfig::default()
    };
    let straight = Dpredict::new(net.clone(), &Device::Cpu, 0).unwrap();
    let a = tempfile::tempdir().unwrap();
    Trainer::new(&straight, cfg.clone(), a.path())
        .unwrap()
        .fit(&data)
        .unwrap();
    let first = Dpredict::new(net.clone(), &Device::Cpu, 0).unwrap();
    let b = tempfile::tempdir().unwrap();
    let cut = TrainConfig {
        max_steps: Some(5),
        ..cfg.clone()
    };
    Trainer::new(&first, cut, b.path())
        .unwrap()
        .fit(&data)
        .unwrap();
    // Another seed: a buffer of other noise, unless the checkpoint restores it.
    let resumed = Dpredict::new(net, &Device::Cpu, 7).unwrap();
    assert_ne!(buffer_of(&resumed), buffer_of(&first));
    Trainer::resume(&resumed, cfg, b.path())
        .unwrap()
        .fit(&data)
        .unwrap();
    assert_eq!(buffer_of(&resumed), buffer_of(&straight));
    let weights = |m: &Dpredict| {
        let (_, vars) = m.networks()[0];
        let mut all: Vec<_> = vars.data().lock().unwrap().clone().into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.iter()
            .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<f32>>()
    };
    assert_eq!(weights(&resumed), weights(&straight), "D's weights differ");
}
