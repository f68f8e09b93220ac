//! BiGAN: Dis judges (x, z) pairs, and each phase moves only its own networks.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use gan_core::{Batch, Model, Step};
use gan_models::{Bigan, BiganConfig};

fn model() -> Bigan {
    let cfg = BiganConfig {
        z_dim: 4,
        width: 4,
        joint: 8,
    };
    Bigan::new(cfg, &Device::Cpu, 5).unwrap()
}

fn vars(m: &Bigan, net: &str) -> Vec<Var> {
    let nets = m.networks();
    nets.iter().find(|(n, _)| *n == net).unwrap().1.all_vars()
}

#[test]
fn dis_scores_the_pair_not_the_image_alone() {
    let m = model();
    let x = Tensor::rand(-1f32, 1.0, (3, 1, 28, 28), &Device::Cpu).unwrap();
    let z = Tensor::rand(-1f32, 1.0, (3, 4), &Device::Cpu).unwrap();
    let nudged = (&z + 0.5).unwrap();
    let a = m.score(&x, &z).unwrap().to_vec1::<f32>().unwrap();
    let b = m.score(&x, &nudged).unwrap().to_vec1::<f32>().unwrap();
    assert!(a.iter().zip(&b).all(|(p, q)| p != q), "{a:?} vs {b:?}");
    let other_x = Tensor::rand(-1f32, 1.0, (3, 1, 28, 28), &Device::Cpu).unwrap();
    let c = m.score(&other_x, &z).unwrap().to_vec1::<f32>().unwrap();
    assert!(a.iter().zip(&c).all(|(p, q)| p != q), "{a:?} vs {c:?}");
}

#[test]
fn dis_and_the_autoencoder_pair_learn_apart() {
    let m = model();
    let images = Tensor::rand(-1f32, 1.0, (6, 1, 28, 28), &Device::Cpu).unwrap();
    let batches = BTreeMap::from([(
        "real".to_string(),
        Batch {
            images,
            labels: None,
        },
    )]);
    let mut rng = gan_core::prior::rng(0, gan_core::prior::RngStream::Scratch);
    let mut step = Step::new(&batches, &mut rng);
    let d = m.run_phase("dis", &mut step).unwrap();
    let g = d.loss.backward().unwrap();
    assert!(vars(&m, "dis").iter().any(|v| g.get(v).is_some()));
    for net in ["en", "de"] {
        assert!(
            vars(&m, net).iter().all(|v| g.get(v).is_none()),
            "dis phase reached {net}"
        );
    }
    let e = m.run_phase("ende", &mut step).unwrap();
    let g = e.loss.backward().unwrap();
    for net in ["en", "de"] {
        assert!(
            vars(&m, net).iter().any(|v| g.get(v).is_some()),
            "{net} learns"
        );
    }
    assert!(
        vars(&m, "dis").iter().all(|v| g.get(v).is_none()),
        "ende phase reached dis"
    );
}
