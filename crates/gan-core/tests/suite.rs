//! The evaluation suite on an encoder: a faithful reconstruction scores an MSE and a FID
//! of zero and keeps every digit the judge reads; a blurred one is told apart by all three.

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use gan_core::eval::judge::{Judge, JudgeConfig, JudgeTraining};
use gan_core::eval::suite::{evaluate, Header, Reference, Slow};
use gan_core::{Encoder, Model, Phase, Step, StepOutput};

mod common;
use common::toy_set;

/// A model with nothing to train that offers one capability (`$cap` returning itself):
/// what the suite is tested on.
macro_rules! evaluated_as {
    ($ty:ty, $kind:literal, $cap:ident, $tr:path) => {
        impl Model for $ty {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn config(&self) -> serde_json::Value {
                serde_json::json!({})
            }
            fn networks(&self) -> Vec<(&'static str, &VarMap)> {
                vec![("net", &self.vars)]
            }
            fn phases(&self) -> Vec<Phase> {
                vec![]
            }
            fn run_phase(&self, phase: &str, _: &mut Step) -> Result<StepOutput> {
                anyhow::bail!("no phase {phase}")
            }
            fn figures(&self, _: &mut gan_core::Rng) -> Result<Vec<gan_core::Figure>> {
                Ok(vec![])
            }
            fn $cap(&self) -> Option<&dyn $tr> {
                Some(self)
            }
        }
    };
}

/// An "autoencoder" whose reconstruction is the image itself, or the image averaged with
/// its eight neighbours twice over (a blur).
struct Toy {
    blur: bool,
    vars: VarMap,
}

impl Encoder for Toy {
    fn encode(&self, images: &Tensor) -> Result<Tensor> {
        Ok(images.flatten_from(1)?)
    }
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.encode(images)
    }
    /// The codes are the pixels, so decoding is a reshape, or a blur.
    fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let images = codes.reshape((codes.dim(0)?, 1, 28, 28))?;
        if !self.blur {
            return Ok(images);
        }
        let k = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?
            .affine(1.0 / 9.0, 0.0)?;
        let once = images.conv2d(&k, 1, 1, 1, 1)?;
        Ok(once.conv2d(&k, 1, 1, 1, 1)?)
    }
}

evaluated_as!(Toy, "toy", encoder, Encoder);

#[test]
fn reconstructions_are_scored_by_error_digit_kept_and_fid() {
    let (x, y, _) = toy_set(600, 1);
    let (x_test, _, test_labels) = toy_set(120, 2);
    let training = JudgeTraining {
        epochs: 3,
        batch_size: 16,
        lr: 3e-3,
        dropout: 0.0,
        ..JudgeTraining::default()
    };
    let tiny = JudgeConfig {
        c1: 8,
        c2: 16,
        hidden: 32,
    };
    let mut judge = Judge::train(tiny, &training, &x, &y, |_, _, _| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judge.safetensors");
    judge.save(&path, None).unwrap();
    let judge = Judge::load(&path, &Device::Cpu).unwrap();
    let train_labels: Vec<u8> = y
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .map(|&l| l as u8)
        .collect();
    let reference = Reference {
        test_images: &x_test,
        test_labels: &test_labels,
        train_images: &x,
        train_labels: &train_labels,
        domains: None,
    };
    let score = |blur| {
        let model = Toy {
            blur,
            vars: VarMap::new(),
        };
        let header = Header {
            run: "toy".into(),
            model: "toy".into(),
            step: 0,
            judge_path: path.display().to_string(),
            averaged: false,
        };
        let (report, _) =
            evaluate(&model, &judge, &reference, header, 120, 0, Slow::default()).unwrap();
        report.reconstruction.unwrap().result
    };
    let (exact, blurred) = (score(false), score(true));
    let accuracy = judge.accuracy(&x_test, &test_labels).unwrap();
    assert_eq!(exact.mse_per_pixel, 0.0);
    assert_eq!(exact.label_kept, accuracy);
    let fid = exact.fid.unwrap();
    assert!(
        fid.abs() < 1e-3,
        "the originals against themselves: FID {fid}"
    );
    let blurred_fid = blurred.fid.unwrap();
    assert!(blurred.mse_per_pixel > 0.01, "{blurred:?}");
    assert!(
        blurred_fid > 1.0,
        "a blur should move the judge's features: {blurred:?}"
    );
}

#[test]
fn an_interpolation_runs_from_one_code_to_the_other() {
    let (x, _, _) = toy_set(4, 3);
    let model = Toy {
        blur: false,
        vars: VarMap::new(),
    };
    let (a, b) = (x.narrow(0, 0, 2).unwrap(), x.narrow(0, 2, 2).unwrap());
    let path = model.interpolate(&a, &b, 5).unwrap();
    assert_eq!(path.dims(), &[10, 1, 28, 28]);
    let at = |i: usize| path.get(i).unwrap();
    let diff = |u: &Tensor, v: &Tensor| {
        (u - v)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // Pair 1 is rows 5-9: its ends are the second images of a and b, its middle their mean.
    assert!(diff(&at(0), &a.get(0).unwrap()) < 1e-6);
    assert!(diff(&at(4), &b.get(0).unwrap()) < 1e-6);
    assert!(diff(&at(5), &a.get(1).unwrap()) < 1e-6);
    assert!(diff(&at(9), &b.get(1).unwrap()) < 1e-6);
    let mid = ((a.get(1).unwrap() + b.get(1).unwrap()).unwrap() / 2.0).unwrap();
    assert!(diff(&at(7), &mid) < 1e-6);
    assert!(model.interpolate(&a, &b, 1).is_err());
    assert!(model.interpolate(&a, &x, 3).is_err());
}

/// Images `[1, 1, 12]` that spell their codes out: ten pixels the digit (one-hot), one
/// the domain, one noise. The content code is the digit's ten pixels (plus the domain's
/// with `leak`), the domain code the last two; rendering puts them back.
struct Spelled {
    leak: bool,
    vars: VarMap,
}

impl gan_core::Disentangler for Spelled {
    fn target(&self) -> &'static str {
        "spelled"
    }
    fn channels(&self) -> usize {
        1
    }
    fn content(&self, images: &Tensor, _domain: gan_core::Domain) -> Result<Tensor> {
        let x = images.flatten_from(1)?;
        Ok(x.narrow(1, 0, if self.leak { 11 } else { 10 })?)
    }
    fn style(&self, images: &Tensor) -> Result<Tensor> {
        Ok(images.flatten_from(1)?.narrow(1, 10, 2)?)
    }
    fn render(&self, content: &Tensor, style: &Tensor) -> Result<Tensor> {
        let digit = content.narrow(1, 0, 10)?;
        let x = Tensor::cat(&[&digit, style], 1)?;
        Ok(x.reshape((x.dim(0)?, 1, 1, 12))?)
    }
    fn target_probability(&self, images: &Tensor, _domain: gan_core::Domain) -> Result<Vec<f32>> {
        Ok(vec![0.5; images.dim(0)?])
    }
}

evaluated_as!(Spelled, "spelled", disentangler, gan_core::Disentangler);

/// A tiny judge that was never trained, saved and loaded back (the suite wants its
/// file hash): for scores that do not read it.
fn untrained_judge(dir: &std::path::Path) -> (Judge, std::path::PathBuf) {
    let tiny = JudgeConfig {
        c1: 4,
        c2: 4,
        hidden: 8,
    };
    let mut judge = Judge::new(tiny, &Device::Cpu, 0).unwrap();
    let path = dir.join("judge.safetensors");
    judge.save(&path, None).unwrap();
    (Judge::load(&path, &Device::Cpu).unwrap(), path)
}

/// `n` spelled images of `domain`, digits 0..9 in turn, noise from `seed`.
fn spelled(n: usize, domain: f32, seed: u64) -> (Tensor, Vec<u8>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut px = vec![0f32; n * 12];
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (i, &y) in labels.iter().enumerate() {
        px[i * 12 + y as usize] = 1.0;
        px[i * 12 + 10] = domain;
        px[i * 12 + 11] = rng.random_range(-1.0..1.0);
    }
    (
        Tensor::from_vec(px, (n, 1, 1, 12), &Device::Cpu).unwrap(),
        labels,
    )
}

#[test]
fn disentanglement_probes_read_what_each_code_holds() {
    let (x, _, labels) = toy_set(2000, 4);
    let dir = tempfile::tempdir().unwrap();
    let (judge, path) = untrained_judge(dir.path());
    let (source, source_labels) = spelled(2000, 0.0, 1);
    let (target, target_labels) = spelled(2000, 1.0, 2);
    let reference = Reference {
        test_images: &x,
        test_labels: &labels,
        train_images: &x,
        train_labels: &labels,
        domains: Some(gan_core::eval::suite::DomainTests {
            source_images: &source,
            source_labels: &source_labels,
            target_images: &target,
            target_labels: &target_labels,
        }),
    };
    let score = |leak| {
        let model = Spelled {
            leak,
            vars: VarMap::new(),
        };
        let header = Header {
            run: "spelled".into(),
            model: "spelled".into(),
            step: 0,
            judge_path: path.display().to_string(),
            averaged: false,
        };
        let (report, _) =
            evaluate(&model, &judge, &reference, header, 2000, 0, Slow::default()).unwrap();
        report.disentanglement.unwrap().result
    };
    let clean = score(false);
    assert_eq!(clean.n, 2000);
    assert_eq!(clean.dims, [10, 2]);
    // The content holds the digit and nothing of the domain; the domain code the reverse.
    assert_eq!(clean.adversary_accuracy, 0.5);
    assert_eq!(clean.domain_probe_on_content, 0.5, "{clean:?}");
    assert!(
        (clean.domain_mlp_probe_on_content - 0.5).abs() < 0.02,
        "{clean:?}"
    );
    assert_eq!(clean.digit_probe_on_content_source, 1.0, "{clean:?}");
    assert_eq!(clean.digit_probe_on_content_target, 1.0, "{clean:?}");
    assert_eq!(clean.digit_probe_on_content_transfer, 1.0, "{clean:?}");
    assert_eq!(clean.domain_probe_on_style, 1.0, "{clean:?}");
    assert!(clean.digit_probe_on_style < 0.35, "{clean:?}");
    assert_eq!((clean.mse_source, clean.mse_target), (0.0, 0.0));
    // A content code that carries the domain is caught by the fresh probe.
    let leaky = score(true);
    assert_eq!(leaky.domain_probe_on_content, 1.0, "{leaky:?}");
    assert!(leaky.domain_mlp_probe_on_content > 0.99, "{leaky:?}");
}

/// A "completer" that fills the free pixels with `fill`, and checks that it was shown
/// blank free pixels only.
struct Filler {
    fill: f32,
    vars: VarMap,
}

impl gan_core::Completer for Filler {
    fn complete(&self, images: &Tensor, free: &Tensor, _: &mut gan_core::Rng) -> Result<Tensor> {
        let shown = images.broadcast_mul(free)?;
        let blank = free.broadcast_mul(&images.ones_like()?)?.neg()?;
        let diff = (shown - blank)?.abs()?.max_all()?.to_scalar::<f32>()?;
        anyhow::ensure!(diff == 0.0, "the free pixels were shown to the model");
        let given = free.affine(-1.0, 1.0)?;
        Ok((images.broadcast_mul(&given)?
            + (free * self.fill as f64)?.broadcast_as(images.shape())?)?)
    }
}

evaluated_as!(Filler, "filler", completer, gan_core::Completer);

#[test]
fn completions_are_scored_beside_the_nearest_training_image() {
    let (x, _, labels) = toy_set(300, 5);
    let dir = tempfile::tempdir().unwrap();
    let (judge, path) = untrained_judge(dir.path());
    // The test set is the training set: each digit's nearest top half is its own.
    let reference = Reference {
        test_images: &x,
        test_labels: &labels,
        train_images: &x,
        train_labels: &labels,
        domains: None,
    };
    let header = || Header {
        run: "filler".into(),
        model: "filler".into(),
        step: 0,
        judge_path: path.display().to_string(),
        averaged: false,
    };
    let model = Filler {
        fill: -1.0,
        vars: VarMap::new(),
    };
    let (report, _) = evaluate(
        &model,
        &judge,
        &reference,
        header(),
        300,
        0,
        Slow::default(),
    )
    .unwrap();
    let c = report.completion.unwrap().result;
    assert_eq!(c.n, 300);
    assert_eq!(c.nearest_training_mse, 0.0, "{c:?}");
    assert_eq!(c.nearest_training_accuracy, c.originals_accuracy, "{c:?}");
    // Filling the bottom with blank adds nothing: the judge reads what it was shown.
    assert_eq!(c.blank_accuracy, Some(c.accuracy), "{c:?}");
    // Blank bottoms against the toy digits' bottoms: a known error.
    let bottoms = x.narrow(2, 14, 14).unwrap();
    let want = (bottoms + 1.0)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!((c.mse - want).abs() < 1e-5, "{} against {want}", c.mse);
    let white = Filler {
        fill: 1.0,
        vars: VarMap::new(),
    };
    let (report, _) = evaluate(
        &white,
        &judge,
        &reference,
        header(),
        300,
        0,
        Slow::default(),
    )
    .unwrap();
    assert!(report.completion.unwrap().result.mse > c.mse);
    // Screening leaves the slow completions out.
    let fast = Slow {
        completion: false,
        ..Slow::default()
    };
    let (report, _) = evaluate(&white, &judge, &reference, header(), 300, 0, fast).unwrap();
    assert!(report.completion.is_none());
}
