//! InfoGAN: Q shares D's trunk, the information term falls as training starts, and the
//! categorical code is scored as a classifier.

use candle_core::{Device, Tensor};
use gan_core::engine::checkpoint::var_tensors;
use gan_core::{Batch, Dataset, Generator, Model, Step, Streams, TrainConfig, Trainer};
use gan_models::{Infogan, InfoganConfig};

fn model(seed: u64) -> Infogan {
    Infogan::new(InfoganConfig::default(), &Device::Cpu, seed).unwrap()
}

fn outputs(m: &Infogan, x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let (logit, q) = m.discriminate(x, false).unwrap();
    let q = Tensor::cat(&[&q.categorical[0], q.mean.as_ref().unwrap()], 1).unwrap();
    (
        logit.to_vec1().unwrap(),
        q.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

fn nudge(vars: &candle_nn::VarMap, name: &str) {
    let data = vars.data().lock().unwrap();
    let var = data
        .get(name)
        .unwrap_or_else(|| panic!("no variable {name}: {:?}", data.keys()));
    var.set(&(var.as_tensor() + 0.05).unwrap()).unwrap();
}

#[test]
fn q_shares_the_discriminator_trunk() {
    let m = model(0);
    let x = Tensor::randn(0f32, 1.0, (4, 1, 28, 28), &Device::Cpu).unwrap();
    let (d0, q0) = outputs(&m, &x);
    let nets = m.networks();
    let d_vars = nets.iter().find(|(n, _)| *n == "d").unwrap().1;
    let q_vars = nets.iter().find(|(n, _)| *n == "q").unwrap().1;
    assert!(
        var_tensors(q_vars).keys().all(|k| !k.starts_with("trunk")),
        "Q owns no trunk copy"
    );

    // Changing a trunk parameter changes both D's and Q's outputs.
    nudge(d_vars, "trunk.c1.weight");
    let (d1, q1) = outputs(&m, &x);
    assert_ne!(d0, d1);
    assert_ne!(q0, q1);

    // Changing Q's head changes Q only.
    nudge(q_vars, "out.weight");
    let (d2, q2) = outputs(&m, &x);
    assert_eq!(d1, d2);
    assert_ne!(q1, q2);
}

#[test]
fn information_term_falls_on_a_short_run() {
    // Real-looking structure is not needed for Q to learn to read c back from G(z, c).
    let images = Tensor::rand(-1f32, 1.0, (16 * 30, 1, 28, 28), &Device::Cpu).unwrap();
    let labels = Tensor::zeros(16 * 30, candle_core::DType::U32, &Device::Cpu).unwrap();
    let m = model(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        seed: 1,
        progress: false,
        network_lr: [("g".to_string(), 1e-3), ("q".to_string(), 1e-3)].into(),
        ..TrainConfig::default()
    };
    Trainer::new(&m, cfg, dir.path())
        .unwrap()
        .fit(&Streams::real(Dataset::new(images, Some(labels)).unwrap()))
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mean = |r: &[serde_json::Value], k: &str| {
        r.iter().map(|v| v[k].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    let (first, last) = (&rows[..5], &rows[rows.len() - 5..]);
    let (li0, li1) = (mean(first, "l_info"), mean(last, "l_info"));
    assert!(li1 < li0 - 0.5, "L_I did not fall: {li0:.3} -> {li1:.3}");
    assert!(mean(last, "mi_lower_bound") > mean(first, "mi_lower_bound"));
    for f in [
        "c1_categories.png",
        "c2_continuous.png",
        "c3_continuous.png",
    ] {
        assert!(dir.path().join("samples").join(f).exists(), "{f}");
    }
}

#[test]
fn categorical_code_scored_as_a_classifier() {
    let m = model(2);
    let images = Tensor::randn(0f32, 1.0, (30, 1, 28, 28), &Device::Cpu).unwrap();
    let labels: Vec<u8> = (0..30).map(|i| (i % 10) as u8).collect();
    let e = m.evaluate_codes(&images, &labels).unwrap();
    assert_eq!(e.n, 30);
    assert_eq!(e.confusion.iter().flatten().sum::<u64>(), 30);
    let mut digits: Vec<usize> = e.category_to_digit.iter().map(|d| d.unwrap()).collect();
    digits.sort();
    assert_eq!(digits, (0..10).collect::<Vec<_>>(), "one-to-one mapping");
    assert!((0.0..=1.0).contains(&e.accuracy));
    assert!(m.evaluate_codes(&images, &labels[..29]).is_err());
    let mut rng = gan_core::prior::rng(0, gan_core::prior::RngStream::Training);
    assert_eq!(
        m.generate(3, Some(4), &mut rng).unwrap().dims(),
        &[3, 1, 28, 28]
    );
    assert!(m.generate(3, Some(10), &mut rng).is_err());
}

#[test]
fn info_in_d_adds_the_information_term_to_the_discriminator_step() {
    let images = Tensor::rand(-1f32, 1.0, (8, 1, 28, 28), &Device::Cpu).unwrap();
    let labels = Tensor::zeros(8, candle_core::DType::U32, &Device::Cpu).unwrap();
    let batches = std::collections::BTreeMap::from([(
        "real".to_string(),
        Batch {
            images,
            labels: Some(labels),
        },
    )]);
    let step = |info_in_d: bool| {
        let cfg = InfoganConfig {
            info_in_d,
            ..InfoganConfig::default()
        };
        // Same seed, same weights; the same rng stream gives the same fakes.
        let m = Infogan::new(cfg, &Device::Cpu, 7).unwrap();
        let mut rng = gan_core::prior::rng(7, gan_core::prior::RngStream::Training);
        let out = m
            .run_phase("d", &mut Step::new(&batches, &mut rng))
            .unwrap();
        let grads = out.loss.backward().unwrap();
        let nets = m.networks();
        let d_vars = nets.iter().find(|(n, _)| *n == "d").unwrap().1;
        let w = var_tensors(d_vars)["trunk.c1.weight"].clone();
        let g = grads.get(&w).unwrap().flatten_all().unwrap();
        (out, g.to_vec1::<f32>().unwrap())
    };
    let (plain, g_plain) = step(false);
    let (info, g_info) = step(true);
    let metric = |o: &gan_core::StepOutput, k: &str| {
        o.metrics.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    };
    assert_eq!(metric(&plain, "d_l_info"), None);
    let l_info = metric(&info, "d_l_info").expect("the D step logs its L_I");
    assert!(
        l_info > 1.0,
        "L_I of an untrained Q is about ln 10: {l_info}"
    );
    let (a, b) = (
        plain.loss.to_scalar::<f32>().unwrap(),
        info.loss.to_scalar::<f32>().unwrap(),
    );
    assert!((b - a - l_info).abs() < 1e-4, "{b} != {a} + {l_info}");
    // The shared trunk gets L_I's gradient on top of the adversarial one.
    assert_ne!(g_plain, g_info);
}

#[test]
fn configs_saved_before_info_in_d_still_load_and_match() {
    let old = r#"{"categorical":[10],"continuous":2,"continuous_range":1.0,"fixed_std":false,"g_loss":"non-saturating","lambda":1.0,"lambda_cont":0.1,"z_dim":62}"#;
    let cfg: InfoganConfig = serde_json::from_str(old).unwrap();
    assert!(!cfg.info_in_d);
    let back = serde_json::to_value(&cfg).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(old).unwrap()
    );
    let on = InfoganConfig {
        info_in_d: true,
        ..cfg
    };
    assert_eq!(serde_json::to_value(&on).unwrap()["info_in_d"], true);
}

#[test]
fn noise_warmup_grows_the_noise_linearly_then_leaves_it() {
    let cfg = InfoganConfig {
        noise_range: 0.5,
        noise_start: 0.1,
        noise_warmup: 100,
        ..InfoganConfig::default()
    };
    let m = Infogan::new(cfg, &Device::Cpu, 0).unwrap();
    let half_width = |t| 0.5 * m.noise_scale(t);
    assert!((half_width(1) - 0.1).abs() < 1e-6, "{}", half_width(1));
    assert!((half_width(51) - 0.3).abs() < 1e-6, "{}", half_width(51));
    assert!((half_width(101) - 0.5).abs() < 1e-6);
    assert_eq!(m.noise_scale(5000), 1.0);
    // Without a warm-up the prior is used as drawn.
    let plain = model(0);
    assert!((1..2000).all(|t| plain.noise_scale(t) == 1.0));
    // A start of 0 would silence the noise: refused.
    let bad = InfoganConfig {
        noise_start: 0.0,
        ..InfoganConfig::default()
    };
    assert!(Infogan::new(bad, &Device::Cpu, 0).is_err());
}

#[test]
fn lambda_is_off_during_the_delay_then_grows_to_its_value() {
    let cfg = InfoganConfig {
        lambda: 2.0,
        lambda_delay: 10,
        lambda_warmup: 4,
        ..InfoganConfig::default()
    };
    let m = Infogan::new(cfg, &Device::Cpu, 0).unwrap();
    let got: Vec<f64> = (1..=16).map(|t| m.lambda_at(t)).collect();
    let want = [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0,
    ];
    assert_eq!(got, want);
    // A delay alone switches lambda on at once; neither leaves it at its value from step 1.
    let delay_only = Infogan::new(
        InfoganConfig {
            lambda_delay: 3,
            ..InfoganConfig::default()
        },
        &Device::Cpu,
        0,
    )
    .unwrap();
    assert_eq!(
        (1..=5).map(|t| delay_only.lambda_at(t)).collect::<Vec<_>>(),
        [0.0, 0.0, 0.0, 1.0, 1.0]
    );
    let plain = model(0);
    assert!((1..2000).all(|t| plain.lambda_at(t) == 1.0));
    // Not written when off, so older runs' configs still match.
    let v = serde_json::to_value(InfoganConfig::default()).unwrap();
    assert!(v.get("lambda_delay").is_none() && v.get("lambda_warmup").is_none());
}
