//! Triple-GAN: its losses against hand-computed values, the labelled stream it declares,
//! C's moving average, its schedules, and R_P off until its warm-up ends.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use gan_core::prior::{rng, RngStream};
use gan_core::{Batch, Model, Source, Step};
use gan_models::triplegan::{c_adversarial, c_unlabelled_terms, d_loss};
use gan_models::{Triplegan, TripleganConfig};

mod common;
use common::weights;

fn close(a: f32, b: f64) {
    assert!((a as f64 - b).abs() < 1e-5, "{a} != {b}");
}

fn t(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

#[test]
fn d_loss_by_hand() {
    // softplus(-2) = 0.126928, softplus(1) = 1.313262, softplus(0.5) = 0.974077, and
    // BCE(logit, real) = softplus(-logit), BCE(logit, fake) = softplus(logit):
    // real: (0.126928 + 1.313262) / 2; C's pair x 0.3: 1.313262; G's x 0.7:
    // (0.126928 + 0.974077) / 2.
    let l = d_loss(&t(&[2.0, -1.0]), &t(&[1.0]), &t(&[-2.0, 0.5]), 0.3).unwrap();
    close(
        l.to_scalar::<f32>().unwrap(),
        0.720095 + 0.3 * 1.313262 + 0.7 * 0.5505025,
    );
}

#[test]
fn c_adversarial_by_hand_and_only_through_c() {
    // BCE(D, real) per pair: softplus(-0) = ln 2, softplus(-2) = 0.126928; weighted by
    // C's probabilities 0.9 and 0.5, averaged, times alpha 0.5.
    let p = Var::new(&[0.9f32, 0.5], &Device::Cpu).unwrap();
    let d = Var::new(&[0.0f32, 2.0], &Device::Cpu).unwrap();
    let l = c_adversarial(p.as_tensor(), d.as_tensor(), 0.5).unwrap();
    let want = 0.5 * (0.9 * std::f64::consts::LN_2 + 0.5 * 0.126928) / 2.0;
    close(l.to_scalar::<f32>().unwrap(), want);
    let grads = l.backward().unwrap();
    let gp = grads.get(p.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    close(gp[0], 0.5 * std::f64::consts::LN_2 / 2.0);
    close(gp[1], 0.5 * 0.126928 / 2.0);
    // D's judgement is a constant to C's loss.
    assert!(grads.get(d.as_tensor()).is_none());
}

#[test]
fn entropy_and_balance_by_hand() {
    // Rows [0.5, 0.5] and [0.9, 0.1]: entropies ln 2 and 0.325083; their mean
    // [0.7, 0.3] against the uniform: -(ln 0.7 + ln 0.3) / 2.
    let log_p = t(&[0.5, 0.5, 0.9, 0.1])
        .reshape((2, 2))
        .unwrap()
        .log()
        .unwrap();
    let (ent, bal) = c_unlabelled_terms(&log_p).unwrap();
    close(
        ent.to_scalar::<f32>().unwrap(),
        (std::f64::consts::LN_2 + 0.325083) / 2.0,
    );
    close(
        bal.to_scalar::<f32>().unwrap(),
        -((0.7f64).ln() + (0.3f64).ln()) / 2.0,
    );
}

fn config(json: serde_json::Value) -> TripleganConfig {
    let mut c = serde_json::to_value(TripleganConfig::default()).unwrap();
    for (k, v) in json.as_object().unwrap() {
        c[k] = v.clone();
    }
    serde_json::from_value(c).unwrap()
}

#[test]
fn the_labelled_stream_is_balanced_and_seeded() {
    let m = Triplegan::new(TripleganConfig::default(), &Device::Cpu, 5).unwrap();
    let s = m.streams();
    let lab = s.iter().find(|s| s.name == "labelled").unwrap();
    assert_eq!(
        lab.source,
        Source::MnistLabelled {
            per_class: 10,
            seed: 5
        }
    );
    assert_eq!(lab.batch_size, Some(100));
    // The unlabelled streams carry no labels.
    for name in ["unlabelled", "pseudo"] {
        let u = s.iter().find(|s| s.name == name).unwrap();
        assert!(
            matches!(u.source, Source::Domain { labels: false, .. }),
            "{name}"
        );
    }
    let all = Triplegan::new(config(serde_json::json!({"labels": 0})), &Device::Cpu, 5).unwrap();
    let lab = all
        .streams()
        .into_iter()
        .find(|s| s.name == "labelled")
        .unwrap();
    assert_eq!(lab.source, Source::Mnist { channels: 1 });
    let e = Triplegan::new(config(serde_json::json!({"labels": 15})), &Device::Cpu, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("multiple of 10"), "{e}");
}

#[test]
fn the_supervised_baseline_is_c_alone() {
    let m = Triplegan::new(
        config(serde_json::json!({"supervised_only": true})),
        &Device::Cpu,
        0,
    )
    .unwrap();
    let phases: Vec<_> = m.phases().iter().map(|p| p.name).collect();
    assert_eq!(phases, vec!["c_sup"]);
    assert!(m.streams().iter().all(|s| s.name != "pseudo"));
    assert!(m.generator().is_none() && m.classifier().is_some());
}

#[test]
fn schedules_pretraining_then_annealing() {
    let m = Triplegan::new(TripleganConfig::default(), &Device::Cpu, 0).unwrap();
    // Pre-training at 3e-4 of the game's 1e-3, then 1, then x0.995 an epoch from the
    // 300th epoch's end.
    assert_eq!(m.lr_scale_at(0.0, 3600, 0), 0.3);
    assert_eq!(m.lr_scale_at(0.0, 3601, 6), 1.0);
    assert_eq!(m.lr_scale_at(0.0, 9_000_000, 298), 1.0);
    assert!((m.lr_scale_at(0.0, 9_000_000, 300) - 0.995).abs() < 1e-12);
    assert!((m.lr_scale_at(0.0, 9_000_000, 309) - 0.995f64.powi(10)).abs() < 1e-12);
    let phases = m.phases();
    let at = |s: u64| -> Vec<&str> {
        phases
            .iter()
            .filter(|p| p.runs_at(s, 1))
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(at(3600), vec!["c_pre"]);
    assert_eq!(at(3601), vec!["d", "g", "c"]);
}

fn batches(n: usize) -> BTreeMap<String, Batch> {
    let dev = Device::Cpu;
    // Fixed images: two calls must give the same batches.
    let v: Vec<f32> = (0..n * 784)
        .map(|i| ((i * 37) % 200) as f32 / 100.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(v, (n, 1, 28, 28), &dev).unwrap();
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &dev).unwrap();
    let mut b = BTreeMap::new();
    for name in ["unlabelled", "pseudo"] {
        b.insert(
            name.to_string(),
            Batch {
                images: x.clone(),
                labels: None,
            },
        );
    }
    b.insert(
        "labelled".to_string(),
        Batch {
            images: x,
            labels: Some(y),
        },
    );
    b
}

/// C's loss at `epoch` with G's weights drawn from `g_seed`, and whether G got a gradient.
fn c_loss(epoch: usize, g_seed: u64) -> (f32, bool) {
    let cfg = config(serde_json::json!({"batch_g": 10, "rp_from_epoch": 2}));
    let m = Triplegan::new(cfg, &Device::Cpu, 0).unwrap();
    let other = Triplegan::new(TripleganConfig::default(), &Device::Cpu, g_seed).unwrap();
    let (g, g_other) = (m.networks()[1].1, other.networks()[1].1);
    for (name, v) in g.data().lock().unwrap().iter() {
        v.set(&g_other.data().lock().unwrap()[name].as_tensor().clone())
            .unwrap();
    }
    let b = batches(10);
    let mut r = rng(1, RngStream::Training);
    let mut step = Step::new(&b, &mut r).numbered(10, epoch);
    let out = m.run_phase("c", &mut step).unwrap();
    let grads = out.loss.backward().unwrap();
    let g_grad = g
        .all_vars()
        .iter()
        .any(|v| grads.get(v.as_tensor()).is_some());
    (out.loss.to_scalar::<f32>().unwrap(), g_grad)
}

#[test]
fn rp_reaches_c_only_after_its_warm_up() {
    // Before epoch 2, C's loss does not see G at all: other G weights, same loss.
    let (a, ga) = c_loss(1, 0);
    let (b, _) = c_loss(1, 9);
    assert_eq!(a, b);
    // From epoch 2 on it does (R_P on G's pairs)...
    let (c, gc) = c_loss(2, 0);
    let (d, _) = c_loss(2, 9);
    assert_ne!(c, d);
    assert_ne!(a, c);
    // ...and G's images are constants to it: no gradient reaches G from C's loss.
    assert!(!ga && !gc);
}

#[test]
fn c_phases_move_the_average_towards_c() {
    let m = Triplegan::new(TripleganConfig::default(), &Device::Cpu, 0).unwrap();
    // C moved away from its average (which starts as a copy of it).
    let other = Triplegan::new(TripleganConfig::default(), &Device::Cpu, 3).unwrap();
    for (name, v) in m.networks()[0].1.data().lock().unwrap().iter() {
        v.set(
            &other.networks()[0].1.data().lock().unwrap()[name]
                .as_tensor()
                .clone(),
        )
        .unwrap();
    }
    let before = weights(&m);
    let find =
        |w: &[(String, Vec<f32>)], k: &str| w.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let b = batches(10);
    let mut r = rng(1, RngStream::Training);
    m.run_phase("c_pre", &mut Step::new(&b, &mut r)).unwrap();
    let after = weights(&m);
    for name in ["conv0.weight", "out.weight"] {
        let (c, a0, a1) = (
            find(&before, &format!("c.{name}")),
            find(&before, &format!("c_average.{name}")),
            find(&after, &format!("c_average.{name}")),
        );
        assert_ne!(c, a0, "{name}: C and its average differ before");
        for i in 0..c.len().min(20) {
            let want = a0[i] + 0.01 * (c[i] - a0[i]);
            assert!(
                (a1[i] - want).abs() < 1e-6,
                "{name}[{i}]: {} vs {want}",
                a1[i]
            );
        }
    }
}
