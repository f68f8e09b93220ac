//! VAE-GAN's three phases: each network takes only its own line's gradient.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use gan_core::{Batch, Model, Step};
use gan_models::vaegan::{three_class_loss, DisKind, ReconKind};
use gan_models::{Vaegan, VaeganConfig};

fn model(dis: DisKind, recon: ReconKind) -> Vaegan {
    let cfg = VaeganConfig {
        z_dim: 4,
        width: 4,
        dis,
        recon,
        ..VaeganConfig::default()
    };
    Vaegan::new(cfg, &Device::Cpu, 3).unwrap()
}

fn batch() -> BTreeMap<String, Batch> {
    let images = Tensor::rand(-1f32, 1.0, (6, 1, 28, 28), &Device::Cpu).unwrap();
    BTreeMap::from([(
        "real".to_string(),
        Batch {
            images,
            labels: None,
        },
    )])
}

/// The variables of one network, in name order.
fn vars(m: &Vaegan, net: &str) -> Vec<Var> {
    let nets = m.networks();
    let (_, v) = nets.iter().find(|(n, _)| *n == net).unwrap();
    let data = v.data().lock().unwrap();
    let mut named: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, v)| v).collect()
}

#[test]
fn the_three_class_loss_matches_hand_computed_values() {
    // logits (0, ln 2, ln 3): softmax (1/6, 2/6, 3/6).
    let l = Tensor::new(&[[0f32, 2f32.ln(), 3f32.ln()]; 2], &Device::Cpu).unwrap();
    for (class, p) in [(0u32, 1.0 / 6.0), (1, 2.0 / 6.0), (2, 3.0 / 6.0)] {
        let got = three_class_loss(&l, class)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = -(p as f32).ln();
        assert!((got - want).abs() < 1e-5, "class {class}: {got} vs {want}");
    }
}

#[test]
fn each_phase_moves_only_its_own_network() {
    for (dis, recon) in [
        (DisKind::Binary, ReconKind::Pixel),
        (DisKind::ThreeClass, ReconKind::Feature),
    ] {
        let m = model(dis, recon);
        let batches = batch();
        let mut rng = gan_core::prior::rng(0, gan_core::prior::RngStream::Scratch);
        let mut step = Step::new(&batches, &mut rng);
        let en = m.run_phase("en", &mut step).unwrap();
        let g = en.loss.backward().unwrap();
        assert!(
            vars(&m, "en").iter().any(|v| g.get(v).is_some()),
            "En learns"
        );
        assert!(
            vars(&m, "dis").iter().all(|v| g.get(v).is_none()),
            "{dis:?}/{recon:?}: Dis's weights took a gradient in En's phase"
        );
        let de = m.run_phase("de", &mut step).unwrap();
        let g = de.loss.backward().unwrap();
        assert!(
            vars(&m, "de").iter().any(|v| g.get(v).is_some()),
            "De learns"
        );
        assert!(
            vars(&m, "dis").iter().all(|v| g.get(v).is_none()),
            "{dis:?}/{recon:?}: Dis's weights took a gradient in De's phase"
        );
        let d = m.run_phase("dis", &mut step).unwrap();
        let g = d.loss.backward().unwrap();
        assert!(
            vars(&m, "dis").iter().any(|v| g.get(v).is_some()),
            "Dis learns"
        );
        assert!(
            vars(&m, "en")
                .iter()
                .chain(&vars(&m, "de"))
                .all(|v| g.get(v).is_none()),
            "{dis:?}/{recon:?}: Dis's phase reached En or De"
        );
    }
}

#[test]
fn en_takes_no_adversarial_gradient() {
    // With the pixel loss, En's phase does not involve Dis at all: another Dis gives En
    // exactly the same loss and gradient.
    let a = model(DisKind::Binary, ReconKind::Pixel);
    let b = model(DisKind::Binary, ReconKind::Pixel);
    for v in vars(&b, "dis") {
        v.set(&(v.as_tensor() * 3.0).unwrap()).unwrap();
    }
    let batches = batch();
    let grads_of = |m: &Vaegan| {
        let mut rng = gan_core::prior::rng(0, gan_core::prior::RngStream::Scratch);
        let mut step = Step::new(&batches, &mut rng);
        let out = m.run_phase("en", &mut step).unwrap();
        let g = out.loss.backward().unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap();
        // (Batch norm's running statistics are variables without a gradient.)
        let grads: Vec<Option<Vec<f32>>> = vars(m, "en")
            .iter()
            .map(|v| {
                g.get(v)
                    .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            })
            .collect();
        (loss, grads)
    };
    assert_eq!(grads_of(&a), grads_of(&b));
}
