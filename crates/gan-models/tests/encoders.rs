//! The encoder family's baselines: the reparameterised sample has the posterior's
//! statistics, and short runs on structured data reconstruct better as they train.

use candle_core::{Device, Tensor};
use gan_core::{Dataset, Encoder, Model, Streams, TrainConfig, Trainer};
use gan_models::vae::reparameterise;
use gan_models::{Ae, AeConfig, Vae, VaeConfig};

#[test]
fn reparameterised_samples_have_the_posterior_mean_and_variance() {
    let n = 20_000;
    let mean = Tensor::new(&[[1.5f32, -2.0]], &Device::Cpu)
        .unwrap()
        .repeat((n, 1))
        .unwrap();
    let log_var = Tensor::new(&[[0.0f32, (0.25f32).ln()]], &Device::Cpu)
        .unwrap()
        .repeat((n, 1))
        .unwrap();
    let mut rng = gan_core::prior::rng(1, gan_core::prior::RngStream::Scratch);
    let z = reparameterise(&mean, &log_var, &mut rng).unwrap();
    let m = z.mean(0).unwrap().to_vec1::<f32>().unwrap();
    let v = z
        .broadcast_sub(&z.mean_keepdim(0).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        (m[0] - 1.5).abs() < 0.03 && (m[1] + 2.0).abs() < 0.02,
        "{m:?}"
    );
    assert!(
        (v[0] - 1.0).abs() < 0.04 && (v[1] - 0.25).abs() < 0.01,
        "{v:?}"
    );
    // The gradient reaches the mean and the log-variance through the sample.
    let mv = candle_core::Var::from_tensor(&mean.narrow(0, 0, 4).unwrap()).unwrap();
    let lv = candle_core::Var::from_tensor(&log_var.narrow(0, 0, 4).unwrap()).unwrap();
    let z = reparameterise(mv.as_tensor(), lv.as_tensor(), &mut rng).unwrap();
    let g = z.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&mv).is_some() && g.get(&lv).is_some());
}

/// 256 bars at 16 places: structure an encoder can learn in a few hundred steps.
fn bars() -> Streams {
    let n = 256;
    let mut px = vec![-1f32; n * 784];
    for i in 0..n {
        let pos = 4 + (i * 5) % 16;
        for a in 4..24 {
            for w in 0..3 {
                let (y, x) = if i % 2 == 0 {
                    (a, pos + w)
                } else {
                    (pos + w, a)
                };
                px[i * 784 + y * 28 + x] = 1.0;
            }
        }
    }
    let images = Tensor::from_vec(px, (n, 1, 28, 28), &Device::Cpu).unwrap();
    Streams::real(Dataset::new(images, None).unwrap())
}

fn recon_error(model: &dyn Encoder, data: &Streams) -> f32 {
    let x = &data.get("real").unwrap().images;
    let x_hat = model.reconstruct(x).unwrap();
    (x_hat - x)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn autoencoders_reconstruct_better_as_they_train() {
    let data = bars();
    let (z_dim, width) = (8, 8);
    let ae = Ae::new(AeConfig { z_dim, width }, &Device::Cpu, 1).unwrap();
    let vae = Vae::new(
        VaeConfig {
            z_dim,
            width,
            beta: 1.0,
        },
        &Device::Cpu,
        1,
    )
    .unwrap();
    for model in [&ae as &dyn Model, &vae] {
        let enc = model.encoder().unwrap();
        let before = recon_error(enc, &data);
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            epochs: 6,
            batch_size: 16,
            progress: false,
            adam: gan_core::AdamConfig {
                lr: 2e-3,
                ..Default::default()
            },
            ..TrainConfig::default()
        };
        Trainer::new(model, cfg, dir.path())
            .unwrap()
            .fit(&data)
            .unwrap();
        let after = recon_error(enc, &data);
        assert!(
            after < 0.6 * before,
            "{}: reconstruction error {before} -> {after}",
            model.kind()
        );
        assert!(dir.path().join("samples/reconstructions.png").exists());
    }
}
