//! The engine and the models together, on small generated data sets: the discriminator
//! learns, checkpoints round-trip, and a resumed run continues bit for bit.

use candle_core::{DType, Device, Tensor};
use gan_core::engine::load_weights;
use gan_core::{Dataset, Generator, Model, Streams, TrainConfig, Trainer};
use gan_models::dpredict::{Activation, Arch, DpredictConfig};
use gan_models::{Cgan, CganConfig, Dcgan, DcganConfig, Gan, GanConfig};

/// `n` 28x28 "digits": a bright vertical or horizontal bar on black, with labels 0 or 1,
/// so real data has structure that fresh generator noise lacks.
fn bars(n: usize) -> (Tensor, Tensor) {
    let mut px = vec![-1f32; n * 784];
    let mut labels = vec![0u32; n];
    for i in 0..n {
        let pos = 6 + (i * 7) % 16;
        let vertical = i % 2 == 0;
        labels[i] = vertical as u32;
        for a in 4..24 {
            for w in 0..3 {
                let (y, x) = if vertical { (a, pos + w) } else { (pos + w, a) };
                px[i * 784 + y * 28 + x] = 1.0;
            }
        }
    }
    (
        Tensor::from_vec(px, (n, 1, 28, 28), &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
    )
}

/// The `real` stream of images and labels.
fn real(images: &Tensor, labels: &Tensor) -> Streams {
    Streams::real(Dataset::new(images.clone(), Some(labels.clone())).unwrap())
}

fn quiet(epochs: usize, batch_size: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size,
        seed,
        progress: false,
        ..TrainConfig::default()
    }
}

mod common;
use common::weights;

fn small_gan(seed: u64) -> Gan {
    Gan::new(
        GanConfig {
            z_dim: 16,
            hidden: vec![64, 128],
            ..GanConfig::default()
        },
        &Device::Cpu,
        seed,
    )
    .unwrap()
}

fn small_dcgan(seed: u64) -> Dcgan {
    Dcgan::new(
        DcganConfig {
            z_dim: 8,
            g_width: 4,
            d_width: 4,
            ..DcganConfig::default()
        },
        &Device::Cpu,
        seed,
    )
    .unwrap()
}

#[test]
fn discriminator_learns_to_tell_real_from_fake() {
    let (images, labels) = bars(512);
    let model = small_gan(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        k: 5,
        ..quiet(3, 32, 1)
    };
    let mut trainer = Trainer::new(&model, cfg, dir.path()).unwrap();
    let epochs = trainer.fit(&real(&images, &labels)).unwrap();
    let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3 * 16);
    let acc = |r: &serde_json::Value| {
        (r["d_real_acc"].as_f64().unwrap() + r["d_fake_acc"].as_f64().unwrap()) / 2.0
    };
    let first = acc(&rows[0]);
    let late: f64 = rows[rows.len() - 8..].iter().map(acc).sum::<f64>() / 8.0;
    assert!(
        late > 0.75,
        "discriminator accuracy stayed near chance: first {first:.2}, last {late:.2}"
    );
    assert!(epochs.iter().all(|e| e.means.contains_key("g_loss")));
    for f in [
        "config.json",
        "epochs.jsonl",
        "samples/samples.png",
        "samples/samples_epoch003.png",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
}

#[test]
fn k_discriminator_steps_per_generator_step() {
    let (images, labels) = bars(128);
    let model = small_gan(2);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        k: 3,
        ..quiet(1, 16, 2)
    };
    let g_before = weights(&model)
        .into_iter()
        .filter(|(k, _)| k.starts_with("g."))
        .collect::<Vec<_>>();
    Trainer::new(&model, cfg, dir.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let g_rows = log.lines().filter(|l| l.contains("g_loss")).count();
    assert_eq!(
        (log.lines().count(), g_rows),
        (8, 2),
        "8 D steps, a G step after every third"
    );
    let g_after = weights(&model)
        .into_iter()
        .filter(|(k, _)| k.starts_with("g."))
        .collect::<Vec<_>>();
    assert_ne!(g_before, g_after);
}

#[test]
fn resume_continues_bit_for_bit() {
    let (images, labels) = bars(96);
    // Straight through: two epochs.
    let straight = small_dcgan(3);
    let a = tempfile::tempdir().unwrap();
    Trainer::new(&straight, quiet(2, 16, 3), a.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();

    // Interrupted mid-epoch (checkpoint every 4 steps, stopped after 8), then resumed by a
    // model built afresh, whose weights start out different.
    let b = tempfile::tempdir().unwrap();
    let first = small_dcgan(3);
    let cfg = TrainConfig {
        checkpoint_every: 4,
        max_steps: Some(8),
        ..quiet(2, 16, 3)
    };
    Trainer::new(&first, cfg.clone(), b.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    let resumed = small_dcgan(99);
    let cfg = TrainConfig {
        max_steps: None,
        ..cfg
    };
    let mut t = Trainer::resume(&resumed, cfg, b.path()).unwrap();
    assert_eq!(t.step(), 8);
    t.fit(&real(&images, &labels)).unwrap();

    assert_eq!(
        weights(&straight),
        weights(&resumed),
        "resumed run diverged from the uninterrupted one"
    );
    let log_a = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap();
    let log_b = std::fs::read_to_string(b.path().join("metrics.jsonl")).unwrap();
    assert_eq!(log_a, log_b);

    // The checkpoint loads into a fresh model and gives the same weights.
    let loaded = small_dcgan(7);
    load_weights(&loaded, b.path()).unwrap();
    assert_eq!(weights(&loaded), weights(&resumed));
}

#[test]
fn wrong_checkpoints_and_settings_are_refused() {
    let (images, labels) = bars(32);
    let dir = tempfile::tempdir().unwrap();
    let gan = small_gan(4);
    Trainer::new(&gan, quiet(1, 16, 4), dir.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();

    let dcgan = small_dcgan(4);
    let err = load_weights(&dcgan, dir.path()).unwrap_err().to_string();
    assert!(err.contains("gan model, not of dcgan"), "{err}");
    let wider = Gan::new(
        GanConfig {
            z_dim: 16,
            hidden: vec![64, 256],
            ..GanConfig::default()
        },
        &Device::Cpu,
        4,
    )
    .unwrap();
    let err = load_weights(&wider, dir.path()).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
    let err = Trainer::new(&gan, quiet(1, 16, 4), dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(Trainer::resume(&gan, quiet(1, 16, 4), empty.path()).is_err());

    for bad in [
        TrainConfig {
            batch_size: 0,
            ..quiet(1, 16, 4)
        },
        TrainConfig {
            k: 0,
            ..quiet(1, 16, 4)
        },
        TrainConfig {
            epochs: 0,
            ..quiet(1, 16, 4)
        },
    ] {
        let d = tempfile::tempdir().unwrap();
        assert!(Trainer::new(&gan, bad, d.path()).is_err());
    }
    let d = tempfile::tempdir().unwrap();
    let err = Trainer::new(&gan, quiet(1, 64, 4), d.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("32 examples for batches of 64"),
        "{err:#}"
    );
}

#[test]
fn generators_make_images_of_the_right_shape_and_range() {
    let mut rng = gan_core::prior::rng(0, gan_core::prior::RngStream::Training);
    let cgan = gan_models::Cgan::new(
        gan_models::CganConfig {
            z_dim: 8,
            hidden: vec![32],
            ..Default::default()
        },
        &Device::Cpu,
        0,
    )
    .unwrap();
    for model in [&small_gan(5) as &dyn Model, &small_dcgan(5), &cgan] {
        let x = model
            .generator()
            .unwrap()
            .generate(5, None, &mut rng)
            .unwrap();
        assert_eq!(x.dims(), &[5, 1, 28, 28]);
        let v = x
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)));
    }
    assert!(cgan.generate(2, Some(7), &mut rng).is_ok());
    assert!(cgan
        .generate(2, Some(10), &mut rng)
        .unwrap_err()
        .to_string()
        .contains("0-9"));
    assert!(small_gan(5).generate(2, Some(3), &mut rng).is_err());
}

/// The per-step logs of two steps of the model `build(reuse_fakes)` makes.
fn two_steps(build: impl Fn(bool) -> Box<dyn Model>) -> [Vec<serde_json::Value>; 2] {
    let (images, labels) = bars(64);
    [false, true].map(|reuse_fakes| {
        let model = build(reuse_fakes);
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            max_steps: Some(2),
            ..quiet(1, 16, 3)
        };
        Trainer::new(model.as_ref(), cfg, dir.path())
            .unwrap()
            .fit(&real(&images, &labels))
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        log.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    })
}

#[test]
fn dcgan_and_cgan_can_hand_the_fakes_of_d_step_to_g_step() {
    let dcgan = two_steps(|reuse_fakes| {
        let cfg = DcganConfig {
            z_dim: 8,
            g_width: 4,
            d_width: 4,
            reuse_fakes,
            ..DcganConfig::default()
        };
        Box::new(Dcgan::new(cfg, &Device::Cpu, 3).unwrap())
    });
    let cgan = two_steps(|reuse_fakes| {
        let cfg = CganConfig {
            z_dim: 8,
            hidden: vec![16, 32],
            reuse_fakes,
            ..CganConfig::default()
        };
        Box::new(Cgan::new(cfg, &Device::Cpu, 3).unwrap())
    });
    for [fresh, reused] in [dcgan, cgan] {
        // D's first step draws the same noise either way; G's step then trains on those
        // fakes instead of drawing its own, and the runs part.
        assert_eq!(fresh[0]["d_loss"], reused[0]["d_loss"]);
        assert_ne!(fresh[0]["g_loss"], reused[0]["g_loss"]);
        assert_ne!(fresh[1]["d_loss"], reused[1]["d_loss"]);
    }
    // The option is not written when off, so older runs keep matching their config.
    assert!(!serde_json::to_string(&DcganConfig::default())
        .unwrap()
        .contains("reuse_fakes"));
    assert!(!serde_json::to_string(&CganConfig::default())
        .unwrap()
        .contains("reuse_fakes"));
}

#[test]
fn gan_with_batch_norm_in_g_and_dropout_in_d_resumes_bit_for_bit() {
    let (images, labels) = bars(96);
    let build = |seed| {
        Gan::new(
            GanConfig {
                z_dim: 16,
                hidden: vec![64, 128],
                d_dropout: 0.3,
                g_batch_norm: true,
                ..GanConfig::default()
            },
            &Device::Cpu,
            seed,
        )
        .unwrap()
    };
    // G gains a batch norm per hidden layer, D none.
    let names: Vec<String> = build(0).networks()[0]
        .1
        .data()
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(names.iter().any(|n| n == "bn1.running_mean"), "{names:?}");
    let d_names: Vec<String> = build(0).networks()[1]
        .1
        .data()
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(d_names.iter().all(|n| !n.starts_with("bn")), "{d_names:?}");

    let straight = build(3);
    let a = tempfile::tempdir().unwrap();
    Trainer::new(&straight, quiet(2, 16, 3), a.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    let b = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        checkpoint_every: 4,
        max_steps: Some(8),
        ..quiet(2, 16, 3)
    };
    Trainer::new(&build(3), cfg.clone(), b.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    let resumed = build(99);
    let cfg = TrainConfig {
        max_steps: None,
        ..cfg
    };
    Trainer::resume(&resumed, cfg, b.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    // Weights and batch-norm statistics alike.
    assert_eq!(weights(&straight), weights(&resumed));
    // Dropout draws from the run's stream: without it the run is another run.
    let plain = Gan::new(
        GanConfig {
            z_dim: 16,
            hidden: vec![64, 128],
            g_batch_norm: true,
            ..GanConfig::default()
        },
        &Device::Cpu,
        3,
    )
    .unwrap();
    let c = tempfile::tempdir().unwrap();
    Trainer::new(&plain, quiet(2, 16, 3), c.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    assert_ne!(weights(&plain), weights(&straight));
}

#[test]
fn dcgan_extra_layers_deepen_both_networks_and_train() {
    let (images, labels) = bars(32);
    let deep = Dcgan::new(
        DcganConfig {
            z_dim: 8,
            g_width: 4,
            d_width: 4,
            extra_layers: 2,
            ..DcganConfig::default()
        },
        &Device::Cpu,
        0,
    )
    .unwrap();
    for (net, vars) in deep.networks() {
        let names: Vec<String> = vars.data().lock().unwrap().keys().cloned().collect();
        for want in ["extra0.weight", "extra1.weight", "extra1_bn.running_var"] {
            assert!(
                names.iter().any(|n| n == want),
                "{net}: {want} in {names:?}"
            );
        }
    }
    // At 0, nothing is added (older checkpoints, all without extra layers, still load).
    let plain = Dcgan::new(
        DcganConfig {
            z_dim: 8,
            g_width: 4,
            d_width: 4,
            extra_layers: 0,
            ..DcganConfig::default()
        },
        &Device::Cpu,
        0,
    )
    .unwrap();
    for (_, vars) in plain.networks() {
        assert!(vars
            .data()
            .lock()
            .unwrap()
            .keys()
            .all(|n| !n.starts_with("extra")));
    }
    let before = weights(&deep);
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(&deep, quiet(1, 16, 0), dir.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    assert_ne!(before, weights(&deep));
    let x = deep
        .generate(
            5,
            None,
            &mut gan_core::prior::rng(1, gan_core::prior::RngStream::Figures),
        )
        .unwrap();
    assert_eq!(x.dims(), &[5, 1, 28, 28]);
}

#[test]
fn runs_recorded_before_the_new_defaults_keep_their_networks() {
    // model_config as runs of 2026-11-23..30 recorded it: no key for the options that
    // were off then and are defaults now.
    let cgan: CganConfig = serde_json::from_str(
        r#"{"g_loss": "non-saturating", "hidden": [256, 512, 1024], "z_dim": 100}"#,
    )
    .unwrap();
    assert!(!cgan.g_batch_norm && !cgan.reuse_fakes);
    assert!(CganConfig::default().g_batch_norm);
    let dcgan: DcganConfig = serde_json::from_str(
        r#"{"d_width": 32, "g_loss": "non-saturating", "g_width": 32, "z_dim": 100}"#,
    )
    .unwrap();
    assert_eq!(dcgan.extra_layers, 0);
    assert_eq!(DcganConfig::default().extra_layers, 1);
    // And the new defaults are written, so their runs read back as trained.
    let written = serde_json::to_value(CganConfig::default()).unwrap();
    assert_eq!(written["g_batch_norm"], true);
    let written = serde_json::to_value(DcganConfig::default()).unwrap();
    assert_eq!(written["extra_layers"], 1);
    // dpredict as recorded before --arch (2026-11-30): the first network, unclamped.
    let old: DpredictConfig = serde_json::from_str(
        r#"{"alpha": 0.1, "buffer": 10000, "langevin_steps": 20, "noise": 0.01,
            "reinit": 0.05, "sample_steps": 200, "step_size": 10.0, "width": 16}"#,
    )
    .unwrap();
    assert_eq!((old.arch, old.activation), (Arch::Conv3, Activation::Leaky));
    assert_eq!((old.grad_clamp, old.data_noise), (0.0, 0.0));
    let written = serde_json::to_value(DpredictConfig::default()).unwrap();
    assert_eq!(written["arch"], "strided");
    assert_eq!(written["activation"], "swish");
    assert_eq!(written["grad_clamp"], 0.03);
}

/// A run started from inside a rayon job that has frozen the layers (another trainer's
/// generator step, whose waiting worker picked up this run's step) trains as if alone:
/// the engine's steps run on rayon's threads, and the frozen flag is per thread.
#[test]
fn a_step_run_inside_another_frozen_section_still_trains_every_weight() {
    let (images, labels) = bars(32);
    let run = |inside_frozen: bool| {
        let model = small_dcgan(4);
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            max_steps: Some(2),
            ..quiet(1, 16, 4)
        };
        let fit = || {
            Trainer::new(&model, cfg, dir.path())
                .unwrap()
                .fit(&real(&images, &labels))
                .unwrap()
        };
        if inside_frozen {
            // On a worker, so the engine's own rayon::scope runs on this very thread.
            rayon::scope(|_| gan_core::fast::layers::frozen(fit));
        } else {
            fit();
        }
        weights(&model)
    };
    let (alone, nested) = (run(false), run(true));
    let before = weights(&small_dcgan(4));
    assert_ne!(alone, before, "two steps should move the weights");
    assert_eq!(nested, alone);
}

/// G's weights of `model`, by name.
fn g_of(model: &dyn Model) -> Vec<(String, Vec<f32>)> {
    weights(model)
        .into_iter()
        .filter(|(k, _)| k.starts_with("g."))
        .collect()
}

/// With `--ema-decay`, a checkpoint carries G's running average beside G's weights: after one
/// step it is the initial weights moved by (1 - d) towards the step's, with the
/// warm-up's decay d = 2/11; `load_weights` gives it, `load_step_weights` the step's;
/// D is not averaged; and the figures, drawn from the average, leave G as trained.
#[test]
fn the_averaged_generator_is_the_running_blend_of_its_steps() {
    use gan_core::engine::{ema::decay_at, load_step_weights};
    let (images, labels) = bars(32);
    let gan = small_gan(5);
    let w0 = g_of(&gan);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        ema: Some(0.5),
        max_steps: Some(1),
        ..quiet(1, 16, 5)
    };
    Trainer::new(&gan, cfg, dir.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    let w1 = g_of(&gan);
    let d = decay_at(0.5, 1);
    assert!((d - 2.0 / 11.0).abs() < 1e-12 && decay_at(0.5, 100) == 0.5);

    let (averaged, stepped) = (small_gan(6), small_gan(6));
    load_weights(&averaged, dir.path()).unwrap();
    load_step_weights(&stepped, dir.path()).unwrap();
    assert_eq!(
        g_of(&stepped),
        w1,
        "the step's weights are checkpointed as G"
    );
    assert_ne!(w0, w1);
    for ((name, avg), ((_, a), (_, b))) in g_of(&averaged).iter().zip(w0.iter().zip(&w1)) {
        for ((got, a), b) in avg.iter().zip(a).zip(b) {
            let want = a + (b - a) * (1.0 - d as f32);
            assert!((got - want).abs() < 1e-6, "{name}: {got} != {want}");
        }
    }
    let d_of = |m: &dyn Model| {
        weights(m)
            .into_iter()
            .filter(|(k, _)| k.starts_with("d."))
            .collect::<Vec<_>>()
    };
    assert_eq!(d_of(&averaged), d_of(&stepped));
}

/// An interrupted run with `--ema-decay` resumes its average too, bit for bit.
#[test]
fn the_average_resumes_with_the_run() {
    use gan_core::engine::load_step_weights;
    let (images, labels) = bars(64);
    let cfg = TrainConfig {
        ema: Some(0.9),
        ..quiet(2, 16, 8)
    };
    let a = tempfile::tempdir().unwrap();
    Trainer::new(&small_gan(8), cfg.clone(), a.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    let b = tempfile::tempdir().unwrap();
    let cut = TrainConfig {
        max_steps: Some(5),
        ..cfg.clone()
    };
    Trainer::new(&small_gan(8), cut, b.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    Trainer::resume(&small_gan(9), cfg, b.path())
        .unwrap()
        .fit(&real(&images, &labels))
        .unwrap();
    for load in [load_weights, load_step_weights] {
        let (x, y) = (small_gan(1), small_gan(2));
        load(&x, a.path()).unwrap();
        load(&y, b.path()).unwrap();
        assert_eq!(weights(&x), weights(&y));
    }
}

/// `--ema-decay` on a model that names no network to average is refused before training.
#[test]
fn an_average_of_nothing_is_refused() {
    let entry = gan_models::MODELS.iter().find(|e| e.kind == "ae").unwrap();
    let ae = (entry.build)(&(entry.default_config)(), &Device::Cpu, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        ema: Some(0.999),
        ..quiet(1, 16, 0)
    };
    let err = Trainer::new(ae.as_ref(), cfg, dir.path()).err().unwrap();
    assert!(
        err.to_string().contains("--ema-decay does not apply"),
        "{err}"
    );
    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        let cfg = TrainConfig {
            ema: Some(bad),
            ..quiet(1, 16, 0)
        };
        assert!(cfg.validate().is_err(), "decay {bad} accepted");
    }
}
