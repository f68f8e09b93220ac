//! Feature disentanglement: the speaker-code constraint on hand-computed codes, the
//! paired stream it asks for, and the lines of its objective that its flags switch.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use gan_core::{Batch, Model, Step};
use gan_models::dann::Target;
use gan_models::disentangle::{Disentangle, DisentangleConfig};

fn t(rows: &[[f32; 2]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
}

#[test]
fn the_style_constraint_pulls_codes_to_their_domain_and_the_domains_apart() {
    // Source codes (0,0) and (2,0): mean (1,0), each 1 away. Target codes both (1,1):
    // no spread. The means are 1 apart.
    let (s, tt) = (t(&[[0.0, 0.0], [2.0, 0.0]]), t(&[[1.0, 1.0], [1.0, 1.0]]));
    let value = |margin| {
        Disentangle::style_constraint(&s, &tt, margin)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // Spread (1 + 1) / 2 + 0, and (5 - 1)^2 short of a margin of 5; nothing short of 0.5.
    assert!((value(5.0) - 17.0).abs() < 1e-4, "{}", value(5.0));
    assert!((value(0.5) - 1.0).abs() < 1e-4, "{}", value(0.5));
}

#[test]
fn pairs_disagree_by_their_distance_over_the_codes_variance() {
    let value = |s: &Tensor, tt: &Tensor| {
        Disentangle::pair_disagreement(s, tt)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let s = t(&[[1.0, 0.0], [0.0, 1.0]]);
    assert!(value(&s, &s).abs() < 1e-6, "{}", value(&s, &s));
    // Codes (1,0), (0,0) against (0,0), (0,0): mean distance (1 + 0) / 2; the four codes'
    // mean (0.25, 0), variance (0.75^2 + 3 * 0.25^2) / 4 = 0.1875.
    let (s, tt) = (t(&[[1.0, 0.0], [0.0, 0.0]]), t(&[[0.0, 0.0], [0.0, 0.0]]));
    assert!(
        (value(&s, &tt) - 0.5 / 0.1875).abs() < 1e-4,
        "{}",
        value(&s, &tt)
    );
    // Whatever the scale: shrinking the codes does not bring the pairs together.
    let (s10, t10) = ((&s * 0.1).unwrap(), (&tt * 0.1).unwrap());
    assert!((value(&s10, &t10) - value(&s, &tt)).abs() < 1e-3);
}

#[test]
fn the_moment_gap_reads_means_and_covariances_at_any_scale() {
    let value = |s: &Tensor, tt: &Tensor| {
        Disentangle::moment_gap(s, tt)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // The same codes in another order: no gap.
    let (s, tt) = (t(&[[1.0, 2.0], [3.0, -1.0]]), t(&[[3.0, -1.0], [1.0, 2.0]]));
    assert!(value(&s, &tt).abs() < 1e-6, "{}", value(&s, &tt));
    // Means +-1 on the first axis, no spread in a domain: the codes scaled by
    // sqrt(1/2) are +-sqrt(2); (2 sqrt(2))^2 = 8 on one of two axes: 4.
    let (s, tt) = (t(&[[1.0, 0.0], [1.0, 0.0]]), t(&[[-1.0, 0.0], [-1.0, 0.0]]));
    assert!((value(&s, &tt) - 4.0).abs() < 1e-4, "{}", value(&s, &tt));
    // Equal means, the spread on crossed axes: covariances diag(2, 0) and diag(0, 2)
    // after scaling; (4 + 4) / 4 entries = 2.
    let (s, tt) = (t(&[[1.0, 0.0], [-1.0, 0.0]]), t(&[[0.0, 1.0], [0.0, -1.0]]));
    assert!((value(&s, &tt) - 2.0).abs() < 1e-4, "{}", value(&s, &tt));
    // Shrinking the codes does not close the gap.
    let (s10, t10) = ((&s * 0.1).unwrap(), (&tt * 0.1).unwrap());
    assert!(
        (value(&s10, &t10) - 2.0).abs() < 1e-3,
        "{}",
        value(&s10, &t10)
    );
}

#[test]
fn the_target_follows_mnist_when_paired_and_uci_has_no_pairs() {
    let paired = Disentangle::new(DisentangleConfig::default(), &Device::Cpu, 0).unwrap();
    let streams = paired.streams();
    assert_eq!(streams[0].name, "source");
    assert_eq!(streams[1].paired_with, Some("source"));
    let apart = DisentangleConfig {
        paired: false,
        ..DisentangleConfig::default()
    };
    let model = Disentangle::new(apart.clone(), &Device::Cpu, 0).unwrap();
    assert_eq!(model.streams()[1].paired_with, None);
    let uci = DisentangleConfig {
        target: Target::Uci,
        ..DisentangleConfig::default()
    };
    let err = Disentangle::new(uci.clone(), &Device::Cpu, 0)
        .err()
        .expect("UCI digits cannot be paired with MNIST's");
    assert!(format!("{err:#}").contains("no pairs"), "{err:#}");
    let unpaired_uci = DisentangleConfig {
        paired: false,
        ..uci
    };
    let model = Disentangle::new(unpaired_uci, &Device::Cpu, 0).unwrap();
    assert_eq!(model.streams()[1].source.channels(), 1);
}

/// The metrics of one `codes` phase on random images.
fn codes_metrics(cfg: DisentangleConfig) -> Vec<&'static str> {
    let model = Disentangle::new(cfg, &Device::Cpu, 0).unwrap();
    let x = || Tensor::rand(-1f32, 1.0, (4, 3, 28, 28), &Device::Cpu).unwrap();
    let batches: BTreeMap<String, Batch> = [("source", x()), ("target", x())]
        .into_iter()
        .map(|(n, images)| {
            (
                n.to_string(),
                Batch {
                    images,
                    labels: None,
                },
            )
        })
        .collect();
    let mut rng = gan_core::prior::rng(0, gan_core::RngStream::Training);
    let mut step = Step::new(&batches, &mut rng);
    let out = model.run_phase("codes", &mut step).unwrap();
    assert!(out.loss.to_scalar::<f32>().unwrap().is_finite());
    out.metrics.iter().map(|(n, _)| *n).collect()
}

#[test]
fn each_line_of_the_objective_is_switched_by_its_flag() {
    assert_eq!(
        codes_metrics(DisentangleConfig::default()),
        ["recon", "cross", "shared", "style"]
    );
    let bare = DisentangleConfig {
        paired: false,
        shared_style_weight: 0.0,
        style_weight: 0.0,
        ..DisentangleConfig::default()
    };
    assert_eq!(codes_metrics(bare), ["recon"]);
    let agree = DisentangleConfig {
        pair_weight: 1.0,
        ..DisentangleConfig::default()
    };
    assert_eq!(
        codes_metrics(agree),
        ["recon", "cross", "apart", "shared", "style"]
    );
    let moments = DisentangleConfig {
        moment_weight: 1.0,
        ..DisentangleConfig::default()
    };
    assert_eq!(
        codes_metrics(moments),
        ["recon", "cross", "shared", "moments", "style"]
    );
    let unpaired = DisentangleConfig {
        paired: false,
        pair_weight: 1.0,
        ..DisentangleConfig::default()
    };
    let err = Disentangle::new(unpaired, &Device::Cpu, 0).err().unwrap();
    assert!(format!("{err:#}").contains("needs pairs"), "{err:#}");
}

#[test]
fn domain_norm_is_settled_on_the_training_images_before_each_checkpoint() {
    use gan_core::{Dataset, Disentangler, Domain, Streams, TrainConfig, Trainer};
    let cfg = DisentangleConfig {
        domain_norm: true,
        ..DisentangleConfig::default()
    };
    let images = |offset: f64| {
        let x = Tensor::rand(-1f32, 1.0, (8, 3, 28, 28), &Device::Cpu).unwrap();
        Dataset::new(((x * 0.5).unwrap() + offset).unwrap(), None).unwrap()
    };
    let (source, target) = (images(-0.3), images(0.3));
    let streams = Streams(BTreeMap::from([
        ("source".to_string(), source.clone()),
        ("target".to_string(), target.clone()),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let model = Disentangle::new(cfg.clone(), &Device::Cpu, 0).unwrap();
    let train = TrainConfig {
        batch_size: 4,
        max_steps: Some(1),
        progress: false,
        ..TrainConfig::default()
    };
    Trainer::new(&model, train, dir.path())
        .unwrap()
        .fit(&streams)
        .unwrap();
    // A fresh model from the checkpoint: each domain's codes of those images have mean 0
    // and unbiased variance var / (var + eps) in every number, var the variance the
    // checkpoint settled for that domain: the codes' own, had it been settled on them.
    // (Not simply 1: an untrained encoder's number can hardly vary over 8 random images,
    // its variance near eps; with candle's unseeded images about one run in thirty
    // drew such a set when the test asked for more than 0.5.)
    let loaded = Disentangle::new(cfg, &Device::Cpu, 1).unwrap();
    gan_core::engine::load_step_weights(&loaded, dir.path()).unwrap();
    let ckpt = gan_core::engine::latest_checkpoint(dir.path()).unwrap();
    let saved =
        candle_core::safetensors::load(ckpt.join("content.safetensors"), &Device::Cpu).unwrap();
    for (data, domain, key) in [
        (&source, Domain::Source, "domain_norm.running_var_s"),
        (&target, Domain::Target, "domain_norm.running_var_t"),
    ] {
        let c = loaded.content(&data.images, domain).unwrap();
        let mean = c.mean(0).unwrap();
        let var = (c
            .broadcast_sub(&mean)
            .unwrap()
            .sqr()
            .unwrap()
            .sum(0)
            .unwrap()
            / 7.0)
            .unwrap();
        let settled = saved[key].to_vec1::<f32>().unwrap();
        for ((m, v), s) in mean
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(var.to_vec1::<f32>().unwrap())
            .zip(settled)
        {
            let want = s / (s + 1e-5);
            assert!(
                m.abs() < 1e-3 * v.sqrt() && (v - want).abs() < 1e-3 * want.max(1e-3),
                "{domain:?}: mean {m}, var {v}, settled {s} (want {want})"
            );
        }
    }
}

#[test]
fn the_kernel_distance_reads_what_the_moments_miss() {
    let mmd =
        |s: &Tensor, tt: &Tensor| Disentangle::mmd(s, tt).unwrap().to_scalar::<f32>().unwrap();
    // Two codes at the origin against two at (1, 0): within each domain k = 1, across
    // exp(-1 / (w d)) for w d = 1, 4 and 16 (d = 2).
    let (s, tt) = (t(&[[0.0, 0.0], [0.0, 0.0]]), t(&[[1.0, 0.0], [1.0, 0.0]]));
    let want: f32 = [1.0f32, 4.0, 16.0]
        .iter()
        .map(|wd| 2.0 - 2.0 * (-1.0 / wd).exp())
        .sum();
    assert!(
        (mmd(&s, &tt) - want).abs() < 1e-5,
        "{} vs {want}",
        mmd(&s, &tt)
    );
    // Unit steps along the axes against half the codes at the origin and half sqrt(2)
    // along the axes: both with mean 0 and covariance I/2, so the moment gap is blind to
    // them; the kernel distance is not (128 codes a domain: 0.086, where the same
    // codes in another order give -0.018).
    let r = std::f32::consts::SQRT_2;
    let repeat = |rows: &[[f32; 2]], k: usize| t(&rows.repeat(k));
    let cross = repeat(&[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], 32);
    let rings = repeat(
        &[
            [0.0, 0.0],
            [0.0, 0.0],
            [0.0, 0.0],
            [0.0, 0.0],
            [r, 0.0],
            [-r, 0.0],
            [0.0, r],
            [0.0, -r],
        ],
        16,
    );
    let gap = Disentangle::moment_gap(&cross, &rings)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(gap.abs() < 1e-6, "{gap}");
    assert!(mmd(&cross, &rings) > 0.08, "{}", mmd(&cross, &rings));
    let reordered = cross.flip(&[0]).unwrap();
    assert!(
        mmd(&cross, &reordered).abs() < 0.025,
        "{}",
        mmd(&cross, &reordered)
    );
    // A code a domain is no sample of it.
    assert!(Disentangle::mmd(&t(&[[0.0, 0.0]]), &tt).is_err());
}
