//! The registry is all the rest of gan-rs knows of a model: every line builds, declares
//! consistent phases and streams, has one set of defaults (its CLI's), round-trips its
//! config, and trains through the engine.

use candle_core::{Device, Tensor};
use clap::{Command, FromArgMatches};
use gan_core::{Dataset, Streams, TrainConfig, Trainer};
use gan_models::MODELS;

mod common;

#[test]
fn kinds_are_unique_and_findable() {
    let mut kinds: Vec<_> = MODELS.iter().map(|e| e.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), MODELS.len(), "a kind is listed twice");
    for e in MODELS {
        assert_eq!(gan_models::find(e.kind).unwrap().kind, e.kind);
    }
    let err = gan_models::find("nope").err().unwrap().to_string();
    assert!(err.contains("gan") && err.contains("infogan"), "{err}");
}

#[test]
fn the_cli_defaults_are_the_config_defaults() {
    for e in MODELS {
        let cmd = (e.args)(Command::new(e.kind));
        let m = cmd.try_get_matches_from([e.kind]).unwrap();
        let parsed = (e.from_args)(&m).unwrap();
        assert_eq!(parsed.config, (e.default_config)(), "{}", e.kind);
    }
    // And an argument given on the command line lands in the config.
    let e = gan_models::find("gan").unwrap();
    let m = (e.args)(Command::new("gan"))
        .try_get_matches_from(["gan", "--z-dim", "7", "--hidden", "5,6"])
        .unwrap();
    let cfg = gan_models::GanConfig::from_arg_matches(&m).unwrap();
    assert_eq!((cfg.z_dim, cfg.hidden), (7, vec![5, 6]));
}

#[test]
fn every_model_builds_round_trips_and_trains_two_steps() {
    let n = 32;
    let images = Tensor::rand(-1f32, 1.0, (n, 1, 28, 28), &Device::Cpu).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
    for e in MODELS {
        let config = common::test_config(e);
        let model = (e.build)(&config, &Device::Cpu, 0).unwrap();
        assert_eq!(model.kind(), e.kind);
        assert_eq!(model.config(), config, "{}: config round trip", e.kind);
        let nets: Vec<_> = model.networks().iter().map(|(n, _)| *n).collect();
        for phase in model.phases() {
            assert!(
                phase.networks.iter().all(|p| nets.contains(p)),
                "{}: phase {} names a network it lacks",
                e.kind,
                phase.name
            );
        }
        let mut streams = Streams::default();
        for s in model.streams() {
            let x = images.repeat((1, s.source.channels(), 1, 1)).unwrap();
            streams = streams.with(s.name, Dataset::new(x, Some(labels.clone())).unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            batch_size: 8,
            max_steps: Some(2),
            progress: false,
            ..TrainConfig::default()
        };
        Trainer::new(model.as_ref(), cfg, dir.path())
            .unwrap()
            .fit(&streams)
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 2, "{}", e.kind);
        for phase in model.phases() {
            assert!(
                log.contains(&format!("\"{}_loss\"", phase.name)),
                "{}: phase {} logged no loss",
                e.kind,
                phase.name
            );
        }
    }
}
