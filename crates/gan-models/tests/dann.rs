//! Domain-adversarial training: the gradient reversal flips what reaches F from D's loss
//! and nothing else; the schedules follow the paper; the alternating schedule keeps each
//! update to its networks.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use gan_core::{Batch, Model, Step};
use gan_models::dann::{Dann, DannConfig, Method, Schedule};

fn batch(n: usize, channels: usize) -> (Tensor, Tensor) {
    let x = Tensor::rand(-1f32, 1.0, (n, channels, 28, 28), &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect(), n, &Device::Cpu).unwrap();
    (x, y)
}

/// Every variable of `net`, by name, and its gradient in `loss` (zeros when none).
fn grads(model: &Dann, net: &str, loss: &Tensor) -> BTreeMap<String, Vec<f32>> {
    let store = loss.backward().unwrap();
    let (_, vars) = model
        .networks()
        .into_iter()
        .find(|(n, _)| *n == net)
        .unwrap();
    let data = vars.data().lock().unwrap();
    data.iter()
        .map(|(name, var): (&String, &Var)| {
            let g = match store.get(var.as_tensor()) {
                Some(g) => g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                None => vec![0.0; var.elem_count()],
            };
            (name.clone(), g)
        })
        .collect()
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    // Batch norm cancels the convolutions' biases: their gradients are round-off, judged
    // against a floor rather than their own size (1e-3: the round-off of gradients that
    // pass max pooling whole, not the quarter candle's own pooling passed).
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale,
            "{what}[{i}]: {x} vs {y} (scale {scale})"
        );
    }
}

#[test]
fn gradient_reversal_flips_what_reaches_f_and_nothing_else() {
    let model = Dann::new(DannConfig::default(), &Device::Cpu, 0).unwrap();
    let (xs, ys) = batch(8, 3);
    let (xt, _) = batch(8, 3);
    let lambda = 0.37;
    let rev = model.joint_loss(&xs, &ys, &xt, lambda).unwrap().loss;
    let none = model.joint_loss(&xs, &ys, &xt, 0.0).unwrap().loss;
    let plain = model.domain_loss(&xs, &xt).unwrap();
    // F: C's gradient (lambda = 0) minus lambda times D's loss's own gradient.
    let (fr, fp, f0) = (
        grads(&model, "f", &rev),
        grads(&model, "f", &plain),
        grads(&model, "f", &none),
    );
    let mut moved = 0f32;
    for (name, g0) in &f0 {
        let dom = &fp[name];
        let want: Vec<f32> = g0
            .iter()
            .zip(dom)
            .map(|(z, d)| z - lambda as f32 * d)
            .collect();
        assert_close(&format!("f.{name}"), &fr[name], &want);
        moved += dom.iter().map(|d| d.abs()).sum::<f32>();
    }
    assert!(moved > 0.0, "D's loss sent no gradient to F at all");
    // D gets its own loss's gradient whatever lambda is; C gets C's.
    let (dr, dp) = (grads(&model, "d", &rev), grads(&model, "d", &plain));
    for (name, g) in &dr {
        assert_close(&format!("d.{name}"), g, &dp[name]);
    }
    let (cr, c0) = (grads(&model, "c", &rev), grads(&model, "c", &none));
    for (name, g) in &cr {
        assert_close(&format!("c.{name}"), g, &c0[name]);
    }
}

#[test]
fn lambda_and_learning_rate_follow_the_paper() {
    let model = Dann::new(DannConfig::default(), &Device::Cpu, 0).unwrap();
    assert_eq!(model.lambda(0.0), 0.0);
    // 2 / (1 + e^-10 p) - 1 at p = 0.1: 0.4621.
    assert!((model.lambda(0.1) - 0.46211715726000974).abs() < 1e-12);
    assert!(model.lambda(1.0) > 0.9999);
    // mu_0 / (1 + 10 p)^0.75: a quarter of the way, (3.5)^-0.75.
    assert_eq!(model.lr_scale(0.0), 1.0);
    assert!((model.lr_scale(0.25) - 3.5f64.powf(-0.75)).abs() < 1e-12);
}

#[test]
fn each_phase_of_the_alternating_schedule_reaches_only_its_networks() {
    let cfg = DannConfig {
        schedule: Schedule::Alternating,
        ..DannConfig::default()
    };
    let model = Dann::new(cfg, &Device::Cpu, 0).unwrap();
    let (xs, ys) = batch(8, 3);
    let (xt, _) = batch(8, 3);
    let batches = BTreeMap::from([
        (
            "source".to_string(),
            Batch {
                images: xs,
                labels: Some(ys),
            },
        ),
        (
            "target".to_string(),
            Batch {
                images: xt,
                labels: None,
            },
        ),
    ]);
    let mut rng = gan_core::prior::rng(0, gan_core::prior::RngStream::Training);
    let names: Vec<_> = model.phases().iter().map(|p| p.name).collect();
    assert_eq!(names, ["d", "fc"]);
    let plan: [(&str, &[&str], &[&str]); 2] =
        [("d", &["d"], &["f", "c"]), ("fc", &["f", "c"], &["d"])];
    for (phase, reached, untouched) in plan {
        let mut step = Step::new(&batches, &mut rng).at(0.5);
        let loss = model.run_phase(phase, &mut step).unwrap().loss;
        let nonzero = |net: &str| {
            grads(&model, net, &loss)
                .values()
                .flatten()
                .any(|g| *g != 0.0)
        };
        for net in reached {
            assert!(nonzero(net), "{phase} does not reach {net}");
        }
        for net in untouched {
            assert!(!nonzero(net), "{phase} reaches {net}");
        }
    }
    // The target stream carries no labels unless the model is the target-trained bound.
    let streams = model.streams();
    assert!(matches!(
        streams[1].source,
        gan_core::Source::Domain { labels: false, .. }
    ));
    let upper = Dann::new(
        DannConfig {
            method: Method::TargetOnly,
            ..DannConfig::default()
        },
        &Device::Cpu,
        0,
    )
    .unwrap();
    assert!(matches!(
        upper.streams()[1].source,
        gan_core::Source::Domain { labels: true, .. }
    ));
}

/// The settings added for UCI stay out of a run's config at their defaults, so that runs
/// written before them load and compare equal; set, they are recorded.
#[test]
fn uci_settings_are_recorded_only_when_set() {
    let base = DannConfig::default();
    let model = Dann::new(base.clone(), &Device::Cpu, 0).unwrap();
    let json = model.config();
    for key in [
        "domain_weight",
        "target_entropy",
        "target_diversity",
        "entropy_ramp",
        "d_lr_scale",
    ] {
        assert!(json.get(key).is_none(), "{key} in {json}");
    }
    let old: DannConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.domain_weight, 1.0);
    assert_eq!(old.d_lr_scale, 1.0);
    let cfg = DannConfig {
        target_entropy: 1.0,
        target_diversity: 1.0,
        ..base
    };
    let json = Dann::new(cfg, &Device::Cpu, 0).unwrap().config();
    assert_eq!(json["target_entropy"], 1.0);
    assert_eq!(json["target_diversity"], 1.0);
}
