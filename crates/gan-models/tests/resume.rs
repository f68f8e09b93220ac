//! Every model of the registry resumes bit for bit: a run stopped mid-epoch and resumed
//! into a model built afresh ends where the uninterrupted run does. In a test binary of
//! its own, so that no other test shares the thread pool while it compares bits.

use candle_core::{Device, Tensor};
use gan_core::{Dataset, Streams, TrainConfig, Trainer};
use gan_models::MODELS;

mod common;
use common::weights;

#[test]
fn every_model_resumes_bit_for_bit() {
    let n = 32;
    let images = Tensor::rand(-1f32, 1.0, (n, 1, 28, 28), &Device::Cpu).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
    // 4 steps an epoch: 6 steps cross an epoch's end; the interruption is mid-epoch.
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 8,
        max_steps: Some(6),
        checkpoint_every: 0,
        progress: false,
        ..TrainConfig::default()
    };
    for e in MODELS {
        let config = common::test_config(e);
        let build = |seed| (e.build)(&config, &Device::Cpu, seed).unwrap();
        let straight = build(0);
        let mut streams = Streams::default();
        for (i, s) in straight.streams().iter().enumerate() {
            // A second stream of another size, so its epochs end elsewhere (a pair has
            // its leader's size).
            let m = match s.paired_with {
                Some(_) => n,
                None => n - 8 * i,
            };
            let x = images.narrow(0, 0, m).unwrap();
            let x = x.repeat((1, s.source.channels(), 1, 1)).unwrap();
            let y = labels.narrow(0, 0, m).unwrap();
            streams = streams.with(s.name, Dataset::new(x, Some(y)).unwrap());
        }
        let a = tempfile::tempdir().unwrap();
        Trainer::new(straight.as_ref(), cfg.clone(), a.path())
            .unwrap()
            .fit(&streams)
            .unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = build(0);
        let cut = TrainConfig {
            max_steps: Some(3),
            ..cfg.clone()
        };
        Trainer::new(first.as_ref(), cut, b.path())
            .unwrap()
            .fit(&streams)
            .unwrap();
        // Built afresh from another seed: everything must come from the checkpoint.
        let resumed = build(7);
        let mut t = Trainer::resume(resumed.as_ref(), cfg.clone(), b.path()).unwrap();
        assert_eq!(t.step(), 3, "{}", e.kind);
        t.fit(&streams).unwrap();
        assert!(
            weights(straight.as_ref()) == weights(resumed.as_ref()),
            "{}: the resumed run diverged from the uninterrupted one",
            e.kind
        );
    }
}
