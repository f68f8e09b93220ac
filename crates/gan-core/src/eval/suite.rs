//! The evaluation suite: every metric that applies to what a model can do, scored by
//! the judge against the MNIST test set, in one report.
//!
//! - a [`Generator`]: MNIST-FID against N test images (beside its floor, N training
//!   images against the same N test images), the Inception-Score analogue and the
//!   judge's class coverage of N samples;
//! - a generator that takes a label ([`Conditioning::Label`]): the judge's accuracy on
//!   N/10 samples per label;
//! - a [`Classifier`] found without labels (InfoGAN's c1): its accuracy on the test set
//!   under the Hungarian matching of categories to digits, and, when the generator takes
//!   the category, the judge's accuracy on each category's samples against its digit;
//! - a classifier trained with labels: its accuracy on the test set (a classifier-only
//!   model gets this, and no FID);
//! - an [`Encoder`]: the per-pixel error of its reconstructions De(En(x)) of test images,
//!   and the judge's accuracy on them against the labels (does the digit survive?); and
//!   1-nearest-neighbour and linear-probe accuracy of its codes and of its layer before
//!   the output, the whole training set the reference.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::judge::{Judge, JudgeOutputs, CLASSES};
use super::metrics::CodeEval;
use super::{
    class_coverage, conditional_accuracy, frechet_distance, inception_score, ClassCoverage,
    ConditionalAccuracy, FeatureStats,
};
use crate::engine::{
    Classifier, Completer, Conditioning, Disentangler, Domain, DomainAdapter, Encoder, Generator,
    Model,
};
use crate::prior::{rng, RngStream};

/// Generated images per call of the model: bounds memory, not results.
const GEN_BATCH: usize = 500;

/// The real images the suite compares with.
pub struct Reference<'a> {
    /// Test images `[M, C, H, W]` in [-1, 1], M at least N.
    pub test_images: &'a Tensor,
    /// Their labels.
    pub test_labels: &'a [u8],
    /// Training images, at least N: the FID floor, and the reference of the feature
    /// probes (all of them).
    pub train_images: &'a Tensor,
    /// Their labels.
    pub train_labels: &'a [u8],
    /// The test splits of both domains, for a [`DomainAdapter`].
    pub domains: Option<DomainTests<'a>>,
}

/// The test images of a domain adapter's two domains, in the channels it reads.
#[derive(Clone, Copy)]
pub struct DomainTests<'a> {
    /// MNIST's test images `[M, C, H, W]` in [-1, 1].
    pub source_images: &'a Tensor,
    /// Their labels.
    pub source_labels: &'a [u8],
    /// The target domain's test images.
    pub target_images: &'a Tensor,
    /// Their labels (for scoring only: the model never saw them unless it is the
    /// target-trained baseline).
    pub target_labels: &'a [u8],
}

/// What the report says it evaluated.
pub struct Header {
    /// The run folder.
    pub run: String,
    /// The model's kind.
    pub model: String,
    /// Steps of the evaluated checkpoint.
    pub step: u64,
    /// Where the judge was loaded from.
    pub judge_path: String,
    /// Whether the generator's running average was scored (a run trained with `--ema-decay`).
    pub averaged: bool,
}

/// A number and how many samples it comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scalar {
    /// The number.
    pub value: f64,
    /// Samples it comes from.
    pub n: usize,
}

/// A metric with what makes it comparable: the seed of the samples and the judge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamped<T> {
    /// The metric.
    #[serde(flatten)]
    pub result: T,
    /// Seed of the samples it was computed on.
    pub seed: u64,
    /// The judge that scored them.
    pub judge_sha256: String,
}

/// A categorical code found without labels (InfoGAN's c1), as a classifier of the test
/// set, and the judge's reading of what each category generates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeScores {
    /// Accuracy of the model's category on the test images under the Hungarian mapping.
    pub c1_accuracy: f64,
    /// Test images scored.
    pub n: usize,
    /// The mapping, category -> digit.
    pub category_to_digit: Vec<Option<usize>>,
    /// Judge accuracy on samples generated for each mapped category, against its digit
    /// (for models whose generator takes the category).
    pub generated_by_category: Option<ConditionalAccuracy>,
    /// What the code says of itself on the test images without their labels (for
    /// classifiers with probabilities). Absent in reports written before it.
    #[serde(default)]
    pub label_free: Option<crate::eval::unsupervised::LabelFree>,
}

/// How well an encoder-decoder reconstructs test images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconstructionScores {
    /// Mean squared error per pixel of De(En(x)), pixels in [-1, 1].
    pub mse_per_pixel: f64,
    /// The judge's accuracy on De(En(x)) against x's label: does the reconstruction keep
    /// the digit?
    pub label_kept: f64,
    /// MNIST-FID of the reconstructions against the same test images: how much they look
    /// like digits (sharpness), whether or not each one keeps its original. Absent in
    /// reports written before it was measured.
    #[serde(default)]
    pub fid: Option<f64>,
    /// Test images reconstructed.
    pub n: usize,
}

/// How well a domain adapter carries the source's labels to the target: its label
/// predictor on each domain's test images, and how far its features still tell the
/// domains apart (50% on a balanced set is the aim).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainScores {
    /// The target domain's name.
    pub target: String,
    /// Label predictor's accuracy on the target's test images.
    pub target_accuracy: f64,
    /// Label predictor's accuracy on MNIST's test images.
    pub source_accuracy: f64,
    /// The model's own domain classifier on as many test images of each domain.
    pub domain_classifier_accuracy: f64,
    /// A fresh linear probe of the domain on the features: fitted on the first half of
    /// each domain's images, scored on the second half. A domain classifier that was
    /// merely beaten during training is not proof that the features hide the domain;
    /// this is the stronger test.
    pub domain_probe_accuracy: f64,
    /// Test images scored per domain (the target's test split may be the smaller).
    pub n_source: usize,
    /// Target test images scored.
    pub n_target: usize,
}

/// How well a disentangler splits the digit from the domain, on up to N test images of
/// each domain (as many of each). Every probe is a fresh linear classifier fitted on the
/// first half of each domain's images and scored on the second half; the labels serve
/// the probes only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisentangleScores {
    /// The second domain's name.
    pub target: String,
    /// The model's own adversary on the content codes (50% is the aim).
    pub adversary_accuracy: f64,
    /// A fresh probe of the domain on the content codes (50% is the aim: the adversary
    /// being beaten is not proof that the domain is gone).
    pub domain_probe_on_content: f64,
    /// A digit probe on the content codes, fitted on both domains, scored on MNIST.
    pub digit_probe_on_content_source: f64,
    /// The same probe scored on the target domain (high on both is the aim).
    pub digit_probe_on_content_target: f64,
    /// A digit probe fitted on MNIST's content codes only, scored on the target's: does
    /// the digit sit where it sits in MNIST?
    pub digit_probe_on_content_transfer: f64,
    /// A fresh nonlinear probe of the domain on the content codes (ReLU layers of 256
    /// and 256, as the disentangler's adversary): what any reader, not only the one
    /// trained against, finds (50% is the aim). 0 in reports from before it.
    #[serde(default)]
    pub domain_mlp_probe_on_content: f64,
    /// A probe of the domain on the domain codes (high is the aim).
    pub domain_probe_on_style: f64,
    /// A digit probe on the domain codes, both domains (10%, chance, is the aim).
    pub digit_probe_on_style: f64,
    /// Per-pixel squared error of the images rebuilt from their own codes, MNIST.
    pub mse_source: f64,
    /// The same on the target domain.
    pub mse_target: f64,
    /// Widths of the content and domain codes.
    pub dims: [usize; 2],
    /// Test images per domain.
    pub n: usize,
}

/// Prediction as a structured output: the bottom half of N test digits completed from
/// their top half, read by the judge against the digits' labels, beside the same done by
/// copying the bottom half of the training image whose top half is nearest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionScores {
    /// The judge's accuracy on the model's completions.
    pub accuracy: f64,
    /// The judge's accuracy on the nearest training image's completions.
    pub nearest_training_accuracy: f64,
    /// The judge's accuracy on the test digits themselves (the ceiling).
    pub originals_accuracy: f64,
    /// The judge's accuracy on what the model was shown (the bottom blank): what a
    /// completion that adds nothing would score. Absent in reports written before it.
    #[serde(default)]
    pub blank_accuracy: Option<f64>,
    /// Per-pixel squared error of the completed halves against the true ones.
    pub mse: f64,
    /// The same for the nearest training image's halves.
    pub nearest_training_mse: f64,
    /// Rows given (from the top).
    pub given_rows: usize,
    /// Test digits completed.
    pub n: usize,
}

/// 1-nearest-neighbour and linear-probe accuracy on N test images, the whole training
/// set's features the reference, for the encoder's codes En(x) and for its layer before
/// the output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureScores {
    /// 1-NN accuracy on the codes.
    pub nn_code: f64,
    /// 1-NN accuracy on the layer before the output.
    pub nn_features: Option<f64>,
    /// Linear-probe accuracy on the codes.
    pub probe_code: f64,
    /// Linear-probe accuracy on the layer before the output.
    pub probe_features: Option<f64>,
    /// Widths of the codes and of the features.
    pub dims: [usize; 2],
    /// Training images of the reference.
    pub reference: usize,
    /// Test images classified.
    pub n: usize,
}

/// Test digits completed: a search per digit is costly, and a thousand tell accuracies
/// apart to about a point and a half.
const COMPLETIONS: usize = 1000;

/// Rows of a 28x28 digit given to a completion: the top half.
pub const GIVEN_ROWS: usize = 14;

/// Passes of the linear probe over the training features.
const PROBE_EPOCHS: usize = 10;
/// Passes of the nonlinear probe over its codes.
const MLP_PROBE_EPOCHS: usize = 20;

/// The scores of a model's samples against the test set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleScores {
    /// Frechet distance of judge features: N generated vs N test images.
    pub fid: Stamped<Scalar>,
    /// The same for N training images vs N test images: as good as a model can get.
    pub fid_floor_train_vs_test: Stamped<Scalar>,
    /// exp E[KL(p(y|x) || p(y))] over the N generated images (at most 10).
    pub inception_score: Stamped<Scalar>,
    /// The same over N real test images, for scale.
    pub inception_score_test: Stamped<Scalar>,
    /// Judge-predicted classes of the N generated images.
    pub coverage: Stamped<ClassCoverage>,
    /// The same for N real test images.
    pub coverage_test: Stamped<ClassCoverage>,
}

/// Everything `eval` measures, as written to `eval.json`: what applies to the model's
/// capabilities (a generator's samples, a label's or a code's classes, a classifier).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// The run folder.
    pub run: String,
    /// The model's kind.
    pub model: String,
    /// Steps of the evaluated checkpoint.
    pub step: u64,
    /// The generator's running average was scored, not the last step's weights.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub averaged: bool,
    /// Generated and real images compared.
    pub n: usize,
    /// Seed of the generated samples.
    pub seed: u64,
    /// Where the judge was loaded from.
    pub judge_path: String,
    /// The judge's file hash: metrics compare only under the same judge.
    pub judge_sha256: String,
    /// The judge's accuracy on the MNIST test set, from its file.
    pub judge_test_accuracy: Option<f64>,
    /// Models with a generator.
    #[serde(flatten)]
    pub samples: Option<SampleScores>,
    /// Generators that take a label: judge accuracy on samples generated for each label.
    pub conditional_accuracy: Option<Stamped<ConditionalAccuracy>>,
    /// Classifiers found without labels (InfoGAN's c1); `infogan` in older files.
    #[serde(alias = "infogan")]
    pub categorical_code: Option<Stamped<CodeScores>>,
    /// Classifiers trained with labels: accuracy on the N test images.
    pub classifier_accuracy: Option<Stamped<Scalar>>,
    /// Models with an encoder: how faithful De(En(x)) is to N test images.
    #[serde(default)]
    pub reconstruction: Option<Stamped<ReconstructionScores>>,
    /// Models with an encoder, when asked for: what its features know of the labels.
    #[serde(default)]
    pub representation: Option<Stamped<FeatureScores>>,
    /// Domain adaptation: accuracy on both domains and how well the features hide them.
    #[serde(default)]
    pub domains: Option<Stamped<DomainScores>>,
    /// Prediction by search: test digits completed from their top half.
    #[serde(default)]
    pub completion: Option<Stamped<CompletionScores>>,
    /// Disentanglement: what each code knows of the digit and of the domain.
    #[serde(default)]
    pub disentanglement: Option<Stamped<DisentangleScores>>,
    /// Wall time of the evaluation.
    pub seconds: f64,
}

/// The slow parts of the suite, which a caller may leave out (a screening of many runs
/// wants the FID in seconds, not the completions in minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slow {
    /// The encoder's feature probes: on the full training set they are slow and
    /// memory-hungry (see docs/ENCODERS.md). Off by default.
    pub probe_features: bool,
    /// A completer's search for each of 1,000 test digits: minutes on a CPU. On by
    /// default.
    pub completion: bool,
}

impl Default for Slow {
    fn default() -> Self {
        Self {
            probe_features: false,
            completion: true,
        }
    }
}

/// Every metric of the suite that applies to `model`, on `n` samples drawn from `seed`
/// and `n` real images of `reference`, the slow ones as `slow` asks. Returns the report
/// and, for a classifier found without labels, its full evaluation (confusion matrix
/// and mapping).
pub fn evaluate(
    model: &dyn Model,
    judge: &Judge,
    reference: &Reference,
    header: Header,
    n: usize,
    seed: u64,
    slow: Slow,
) -> Result<(EvalReport, Option<CodeEval>)> {
    let started = std::time::Instant::now();
    if n < 2 {
        bail!("N must be at least 2 (FID needs a covariance), got {n}")
    }
    for (what, t) in [
        ("test", reference.test_images),
        ("training", reference.train_images),
    ] {
        if t.dim(0)? < n {
            bail!("N = {n} is more than the {} {what} images given", t.dim(0)?)
        }
    }
    let sha = judge
        .sha256()
        .context("the judge has no file hash")?
        .to_string();
    let stamp = |result| Stamped {
        result,
        seed,
        judge_sha256: sha.clone(),
    };
    let dim = judge.config().hidden;
    let test = reference;
    let real = judge.outputs(&first(test.test_images, n)?)?;
    let generator = model.generator();
    let classifier = model.classifier();
    if generator.is_none()
        && classifier.is_none()
        && model.encoder().is_none()
        && model.domain_adapter().is_none()
        && model.disentangler().is_none()
        && model.completer().is_none()
    {
        bail!(
            "{} can neither generate, classify, encode, adapt, disentangle nor complete: nothing to evaluate",
            header.model
        )
    }
    let samples = match generator {
        Some(g) => {
            let floor = judge.outputs(&first(reference.train_images, n)?)?;
            let mut rng = rng(seed, RngStream::Eval);
            let fake = score_generated(g, judge, n, None, &mut rng)?;
            let real_stats = FeatureStats::from_rows(&real.features, dim)?;
            let fid =
                frechet_distance(&FeatureStats::from_rows(&fake.features, dim)?, &real_stats)?;
            let fid_floor =
                frechet_distance(&FeatureStats::from_rows(&floor.features, dim)?, &real_stats)?;
            Some(SampleScores {
                fid: stamp(Scalar { value: fid, n }),
                fid_floor_train_vs_test: stamp(Scalar {
                    value: fid_floor,
                    n,
                }),
                inception_score: stamp(Scalar {
                    value: inception_score(&fake.probs, CLASSES)?,
                    n,
                }),
                inception_score_test: stamp(Scalar {
                    value: inception_score(&real.probs, CLASSES)?,
                    n,
                }),
                coverage: Stamped {
                    result: class_coverage(&fake.predicted, CLASSES)?,
                    seed,
                    judge_sha256: sha.clone(),
                },
                coverage_test: Stamped {
                    result: class_coverage(&real.predicted, CLASSES)?,
                    seed,
                    judge_sha256: sha.clone(),
                },
            })
        }
        None => None,
    };

    // Generators that take a label: N/10 samples per label. A learnt categorical code is
    // not a label: it is scored through its matched mapping below.
    let per_label = n / CLASSES;
    let conditional = match generator.map(|g| (g, g.conditioning())) {
        Some((g, Conditioning::Label(_))) => {
            if per_label == 0 {
                bail!("--n must be at least {CLASSES} to score a conditional model, got {n}")
            }
            let (requested, predicted) = by_class(
                g,
                judge,
                per_label,
                (0..CLASSES as u32).map(|d| (d, d)),
                seed,
            )?;
            Some(stamp_cond(
                conditional_accuracy(&requested, &predicted, CLASSES)?,
                seed,
                &sha,
            ))
        }
        _ => None,
    };
    let (categorical_code, classifier_accuracy) = match classifier {
        Some(c) if !c.supervised() => (
            Some(code_scores(model, c, test, judge, per_label, seed)?),
            None,
        ),
        Some(c) => {
            let predicted = c.classify(&first(test.test_images, n)?)?;
            let right = predicted
                .iter()
                .zip(&test.test_labels[..n])
                .filter(|(p, y)| **p == **y as u32)
                .count();
            (
                None,
                Some(stamp(Scalar {
                    value: right as f64 / n as f64,
                    n,
                })),
            )
        }
        None => (None, None),
    };

    let (reconstruction, representation) = match model.encoder() {
        Some(e) => (
            Some(stamp_any(
                reconstruction_scores(e, judge, reference, &real, n)?,
                seed,
                &sha,
            )),
            match slow.probe_features {
                true => Some(stamp_any(
                    feature_scores(e, reference, n, seed)?,
                    seed,
                    &sha,
                )),
                false => None,
            },
        ),
        None => (None, None),
    };
    let domains = match model.domain_adapter() {
        Some(a) => {
            let tests = reference.domains.with_context(|| {
                format!(
                    "{} adapts to a domain: the evaluation needs its test split",
                    header.model
                )
            })?;
            Some(stamp_any(domain_scores(a, &tests, n, seed)?, seed, &sha))
        }
        None => None,
    };
    let completion = match model.completer().filter(|_| slow.completion) {
        Some(c) => Some(stamp_any(
            completion_scores(c, judge, reference, n.min(COMPLETIONS), seed)?,
            seed,
            &sha,
        )),
        None => None,
    };
    let disentanglement = match model.disentangler() {
        Some(d) => {
            let tests = reference.domains.with_context(|| {
                format!(
                    "{} disentangles two domains: the evaluation needs their test splits",
                    header.model
                )
            })?;
            Some(stamp_any(
                disentangle_scores(d, &tests, n, seed)?,
                seed,
                &sha,
            ))
        }
        None => None,
    };
    let (categorical_code, codes) = match categorical_code {
        Some((scores, codes)) => (Some(stamp_any(scores, seed, &sha)), Some(codes)),
        None => (None, None),
    };
    let report = EvalReport {
        run: header.run,
        model: header.model,
        step: header.step,
        averaged: header.averaged,
        n,
        seed,
        judge_path: header.judge_path,
        judge_sha256: sha.clone(),
        judge_test_accuracy: judge.test_accuracy(),
        samples,
        conditional_accuracy: conditional,
        categorical_code,
        classifier_accuracy,
        reconstruction,
        representation,
        domains,
        completion,
        disentanglement,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((report, codes))
}

fn stamp_any<T>(result: T, seed: u64, sha: &str) -> Stamped<T> {
    Stamped {
        result,
        seed,
        judge_sha256: sha.to_string(),
    }
}

/// A categorical code found without labels: the classifier on the test set, then the
/// judge on each category's samples where the generator takes the category.
fn code_scores(
    model: &dyn Model,
    classifier: &dyn Classifier,
    reference: &Reference,
    judge: &Judge,
    per_label: usize,
    seed: u64,
) -> Result<(CodeScores, CodeEval)> {
    let categories = classifier.classify(reference.test_images)?;
    let codes = CodeEval::new(
        &categories,
        reference.test_labels,
        classifier.classes(),
        CLASSES,
    )?;
    let pairs: Vec<(u32, u32)> = codes
        .category_to_digit
        .iter()
        .enumerate()
        .filter_map(|(c, d)| d.map(|d| (c as u32, d as u32)))
        .collect();
    let generated_by_category = match model.generator() {
        Some(g) if matches!(g.conditioning(), Conditioning::Code(_)) => {
            if per_label == 0 || pairs.is_empty() {
                bail!(
                    "N must be at least {CLASSES} to score the categories of {}",
                    model.kind()
                )
            }
            let (requested, predicted) = by_class(g, judge, per_label, pairs.into_iter(), seed)?;
            Some(conditional_accuracy(&requested, &predicted, CLASSES)?)
        }
        _ => None,
    };
    let label_free =
        crate::eval::unsupervised::label_free(classifier, reference.test_images, &categories)?;
    let scores = CodeScores {
        c1_accuracy: codes.accuracy,
        n: codes.n,
        category_to_digit: codes.category_to_digit.clone(),
        generated_by_category,
        label_free,
    };
    Ok((scores, codes))
}

fn stamp_cond(result: ConditionalAccuracy, seed: u64, sha: &str) -> Stamped<ConditionalAccuracy> {
    stamp_any(result, seed, sha)
}

/// Judge outputs of many batches, concatenated.
fn merge(parts: Vec<JudgeOutputs>) -> Result<JudgeOutputs> {
    let mut it = parts.into_iter();
    let mut all = it.next().context("no images were scored")?;
    for p in it {
        all.features.extend(p.features);
        all.probs.extend(p.probs);
        all.predicted.extend(p.predicted);
    }
    Ok(all)
}

/// `n` samples of the model (for `class`, when given), scored by the judge batch by
/// batch so that the images never all sit in memory.
fn score_generated(
    model: &dyn Generator,
    judge: &Judge,
    n: usize,
    class: Option<u32>,
    rng: &mut crate::prior::Rng,
) -> Result<JudgeOutputs> {
    // One inference section for all batches: no gradient is wanted, so no graph is
    // recorded, evaluation-mode batch norm runs as one fused pass, and the layers prepare
    // their weights once rather than for every batch. On a rayon worker, whose parallel
    // ops start on their own thread.
    crate::fast::on_worker(|| {
        crate::fast::layers::inference(|| {
            let mut parts = Vec::new();
            for start in (0..n).step_by(GEN_BATCH) {
                let b = GEN_BATCH.min(n - start);
                let images = model.generate(b, class, rng)?;
                Judge::check_images(&images).context("the model generated a bad batch")?;
                parts.push(judge.outputs(&images)?);
            }
            merge(parts)
        })
    })
}

fn first(images: &Tensor, n: usize) -> Result<Tensor> {
    Ok(images.narrow(0, 0, n)?)
}

/// Generates `per_class` samples for each (class asked of the model, digit expected)
/// pair and returns the expected digits beside the judge's predictions.
fn by_class(
    model: &dyn Generator,
    judge: &Judge,
    per_class: usize,
    pairs: impl Iterator<Item = (u32, u32)>,
    seed: u64,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut rng = rng(seed, RngStream::EvalByClass);
    let (mut requested, mut predicted) = (Vec::new(), Vec::new());
    for (class, digit) in pairs {
        let out = score_generated(model, judge, per_class, Some(class), &mut rng)?;
        requested.extend(std::iter::repeat_n(digit, per_class));
        predicted.extend(out.predicted);
    }
    Ok((requested, predicted))
}

/// De(En(x)) of the first `n` test images (whose judge outputs are `real`): per-pixel
/// error, the judge's reading and the FID against the originals.
fn reconstruction_scores(
    encoder: &dyn Encoder,
    judge: &Judge,
    reference: &Reference,
    real: &JudgeOutputs,
    n: usize,
) -> Result<ReconstructionScores> {
    let (mut sq, mut kept) = (0f64, 0usize);
    let mut outputs = Vec::new();
    for start in (0..n).step_by(GEN_BATCH) {
        let b = GEN_BATCH.min(n - start);
        let x = reference.test_images.narrow(0, start, b)?;
        let x_hat = encoder.reconstruct(&x)?;
        Judge::check_images(&x_hat).context("the model reconstructed a bad batch")?;
        sq += (&x_hat - &x)?
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let out = judge.outputs(&x_hat)?;
        kept += out
            .predicted
            .iter()
            .zip(&reference.test_labels[start..start + b])
            .filter(|(p, y)| **p == **y as u32)
            .count();
        outputs.push(out);
    }
    let dim = judge.config().hidden;
    let fid = frechet_distance(
        &FeatureStats::from_rows(&merge(outputs)?.features, dim)?,
        &FeatureStats::from_rows(&real.features, dim)?,
    )?;
    let pixels = reference.test_images.elem_count() / reference.test_images.dim(0)?;
    Ok(ReconstructionScores {
        mse_per_pixel: sq / (n * pixels) as f64,
        label_kept: kept as f64 / n as f64,
        fid: Some(fid),
        n,
    })
}

/// `f` over `images` in blocks, concatenated.
fn in_blocks(images: &Tensor, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let n = images.dim(0)?;
    let mut parts = Vec::new();
    for start in (0..n).step_by(GEN_BATCH) {
        let b = GEN_BATCH.min(n - start);
        // Detached: the graph of each block (a convolution keeps its column matrix for a
        // weight gradient) would otherwise live as long as the features, gigabytes of it.
        parts.push(f(&images.narrow(0, start, b)?)?.flatten_from(1)?.detach());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The probes of the encoder's codes and of its layer before the output (see
/// [`FeatureScores`]).
fn feature_scores(
    encoder: &dyn Encoder,
    reference: &Reference,
    n: usize,
    seed: u64,
) -> Result<FeatureScores> {
    use super::features::{linear_probe_accuracy, nearest_neighbour_accuracy};
    let test = reference.test_images.narrow(0, 0, n)?;
    let test_labels = &reference.test_labels[..n];
    let train_labels = reference.train_labels;
    let probe = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<(f64, f64, usize)> {
        let train = in_blocks(reference.train_images, f)?;
        let query = in_blocks(&test, f)?;
        Ok((
            nearest_neighbour_accuracy(&train, train_labels, &query, test_labels)?,
            linear_probe_accuracy(
                &train,
                train_labels,
                &query,
                test_labels,
                PROBE_EPOCHS,
                seed,
            )?,
            train.dim(1)?,
        ))
    };
    let (nn_code, probe_code, code_dim) = probe(&|x| encoder.encode(x))?;
    let (nn_layer, probe_layer, layer_dim) = probe(&|x| encoder.features(x))?;
    Ok(FeatureScores {
        nn_code,
        nn_features: Some(nn_layer),
        probe_code,
        probe_features: Some(probe_layer),
        dims: [code_dim, layer_dim],
        reference: train_labels.len(),
        n,
    })
}

/// See [`DomainScores`]: up to `n` test images of each domain, as many of each.
fn domain_scores(
    adapter: &dyn DomainAdapter,
    tests: &DomainTests,
    n: usize,
    seed: u64,
) -> Result<DomainScores> {
    use super::features::linear_probe_accuracy;
    let n_source = n.min(tests.source_images.dim(0)?);
    let n_target = n.min(tests.target_images.dim(0)?);
    let balanced = n_source.min(n_target);
    if balanced < 4 {
        bail!("the domain scores need at least 4 test images of each domain, got {balanced}")
    }
    let accuracy = |images: &Tensor, labels: &[u8], n: usize| -> Result<f64> {
        let mut right = 0usize;
        for start in (0..n).step_by(GEN_BATCH) {
            let b = GEN_BATCH.min(n - start);
            let predicted = adapter.classify(&images.narrow(0, start, b)?)?;
            right += predicted
                .iter()
                .zip(&labels[start..start + b])
                .filter(|(p, y)| **p == **y as u32)
                .count();
        }
        Ok(right as f64 / n as f64)
    };
    let source = tests.source_images.narrow(0, 0, balanced)?;
    let target = tests.target_images.narrow(0, 0, balanced)?;
    // The model's own domain classifier, on as many images of each domain.
    let mut right = 0usize;
    for (images, is_target) in [(&source, false), (&target, true)] {
        for start in (0..balanced).step_by(GEN_BATCH) {
            let b = GEN_BATCH.min(balanced - start);
            let p = adapter.target_probability(&images.narrow(0, start, b)?)?;
            right += p.iter().filter(|&&p| (p >= 0.5) == is_target).count();
        }
    }
    // A fresh probe of the domain: first halves to fit, second halves to score.
    let half = balanced / 2;
    let (fs, ft) = (
        in_blocks(&source, &|x| adapter.features(x))?,
        in_blocks(&target, &|x| adapter.features(x))?,
    );
    let part = |from: usize, len: usize| -> Result<(Tensor, Vec<u8>)> {
        let x = Tensor::cat(&[fs.narrow(0, from, len)?, ft.narrow(0, from, len)?], 0)?;
        let y = [0u8, 1]
            .iter()
            .flat_map(|&d| std::iter::repeat_n(d, len))
            .collect();
        Ok((x, y))
    };
    let (fit, fit_y) = part(0, half)?;
    let (score, score_y) = part(half, balanced - half)?;
    let probe = linear_probe_accuracy(&fit, &fit_y, &score, &score_y, PROBE_EPOCHS, seed)?;
    Ok(DomainScores {
        target: adapter.target().to_string(),
        target_accuracy: accuracy(tests.target_images, tests.target_labels, n_target)?,
        source_accuracy: accuracy(tests.source_images, tests.source_labels, n_source)?,
        domain_classifier_accuracy: right as f64 / (2 * balanced) as f64,
        domain_probe_accuracy: probe,
        n_source,
        n_target,
    })
}

/// See [`DisentangleScores`].
fn disentangle_scores(
    model: &dyn Disentangler,
    tests: &DomainTests,
    n: usize,
    seed: u64,
) -> Result<DisentangleScores> {
    use super::features::linear_probe_accuracy;
    let each = n
        .min(tests.source_images.dim(0)?)
        .min(tests.target_images.dim(0)?);
    if each < 4 {
        bail!("the disentanglement scores need at least 4 test images of each domain, got {each}")
    }
    let half = each / 2;
    let source = tests.source_images.narrow(0, 0, each)?;
    let target = tests.target_images.narrow(0, 0, each)?;
    let (ys, yt) = (&tests.source_labels[..each], &tests.target_labels[..each]);
    let (cs, ct) = (
        in_blocks(&source, &|x| model.content(x, Domain::Source))?,
        in_blocks(&target, &|x| model.content(x, Domain::Target))?,
    );
    let (ss, st) = (
        in_blocks(&source, &|x| model.style(x))?,
        in_blocks(&target, &|x| model.style(x))?,
    );
    // Rows [from, from + len) of the source, then of the target.
    let rows = |a: &Tensor, b: &Tensor, from: usize, len: usize| -> Result<Tensor> {
        Ok(Tensor::cat(
            &[a.narrow(0, from, len)?, b.narrow(0, from, len)?],
            0,
        )?)
    };
    let (rest, fit) = (each - half, half);
    let domain_labels = |len: usize| -> Vec<u8> {
        [0u8, 1]
            .iter()
            .flat_map(|&d| std::iter::repeat_n(d, len))
            .collect()
    };
    let digits = |from: usize, len: usize| -> Vec<u8> {
        [&ys[from..from + len], &yt[from..from + len]].concat()
    };
    let probe = |x: &Tensor, y: &[u8], qx: &Tensor, qy: &[u8]| -> Result<f64> {
        linear_probe_accuracy(x, y, qx, qy, PROBE_EPOCHS, seed)
    };
    let domain_probe = |a: &Tensor, b: &Tensor| -> Result<f64> {
        probe(
            &rows(a, b, 0, fit)?,
            &domain_labels(fit),
            &rows(a, b, half, rest)?,
            &domain_labels(rest),
        )
    };
    let domain_mlp_probe_on_content = super::features::mlp_probe_accuracy(
        &rows(&cs, &ct, 0, fit)?,
        &domain_labels(fit),
        &rows(&cs, &ct, half, rest)?,
        &domain_labels(rest),
        &[256, 256],
        MLP_PROBE_EPOCHS,
        seed,
    )?;
    let content_fit = rows(&cs, &ct, 0, fit)?;
    let digit_on_content = |q: &Tensor, qy: &[u8]| -> Result<f64> {
        probe(
            &content_fit,
            &digits(0, fit),
            &q.narrow(0, half, rest)?,
            &qy[half..],
        )
    };
    let mut right = 0usize;
    for (images, domain) in [(&source, Domain::Source), (&target, Domain::Target)] {
        for start in (0..each).step_by(GEN_BATCH) {
            let b = GEN_BATCH.min(each - start);
            let p = model.target_probability(&images.narrow(0, start, b)?, domain)?;
            let is_target = domain == Domain::Target;
            right += p.iter().filter(|&&p| (p >= 0.5) == is_target).count();
        }
    }
    let mse = |images: &Tensor, domain: Domain| -> Result<f64> {
        let mut sq = 0f64;
        for start in (0..each).step_by(GEN_BATCH) {
            let b = GEN_BATCH.min(each - start);
            let x = images.narrow(0, start, b)?;
            sq += (model.reconstruct(&x, domain)? - &x)?
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(sq / images.elem_count() as f64)
    };
    Ok(DisentangleScores {
        target: model.target().to_string(),
        adversary_accuracy: right as f64 / (2 * each) as f64,
        domain_probe_on_content: domain_probe(&cs, &ct)?,
        domain_mlp_probe_on_content,
        digit_probe_on_content_source: digit_on_content(&cs, ys)?,
        digit_probe_on_content_target: digit_on_content(&ct, yt)?,
        digit_probe_on_content_transfer: probe(
            &cs.narrow(0, 0, fit)?,
            &ys[..fit],
            &ct.narrow(0, half, rest)?,
            &yt[half..],
        )?,
        domain_probe_on_style: domain_probe(&ss, &st)?,
        digit_probe_on_style: probe(
            &rows(&ss, &st, 0, fit)?,
            &digits(0, fit),
            &rows(&ss, &st, half, rest)?,
            &digits(half, rest),
        )?,
        mse_source: mse(&source, Domain::Source)?,
        mse_target: mse(&target, Domain::Target)?,
        dims: [cs.dim(1)?, ss.dim(1)?],
        n: each,
    })
}

/// `[1, 1, H, W]`: 0 on the first `given` rows, 1 below.
pub fn bottom_free(
    given: usize,
    h: usize,
    w: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let v: Vec<f32> = (0..h * w).map(|i| f32::from(i >= given * w)).collect();
    Ok(Tensor::from_vec(v, (1, 1, h, w), device)?)
}

/// What a completer is shown: the given pixels, and blank (-1) where `free` is 1.
pub fn hide_free(images: &Tensor, free: &Tensor) -> Result<Tensor> {
    Ok(images
        .broadcast_mul(&free.affine(-1.0, 1.0)?)?
        .broadcast_sub(free)?)
}

/// See [`CompletionScores`].
fn completion_scores(
    completer: &dyn Completer,
    judge: &Judge,
    reference: &Reference,
    n: usize,
    seed: u64,
) -> Result<CompletionScores> {
    let test = reference.test_images.narrow(0, 0, n)?;
    let labels = &reference.test_labels[..n];
    let (_, _, h, w) = test.dims4()?;
    let free = bottom_free(GIVEN_ROWS, h, w, test.device())?;
    let given = free.affine(-1.0, 1.0)?;
    let shown = hide_free(&test, &free)?;
    let mut rng = rng(seed, RngStream::Eval);
    let mut done = Vec::new();
    for start in (0..n).step_by(GEN_BATCH) {
        let b = GEN_BATCH.min(n - start);
        let out = completer.complete(&shown.narrow(0, start, b)?, &free, &mut rng)?;
        Judge::check_images(&out).context("the model completed a bad batch")?;
        done.push(out);
    }
    let done = Tensor::cat(&done, 0)?;
    // The nearest training image by its top half, its bottom half copied.
    let top = |x: &Tensor| -> Result<Tensor> { Ok(x.narrow(2, 0, GIVEN_ROWS)?.flatten_from(1)?) };
    let train_top = top(reference.train_images)?;
    let r2 = train_top.sqr()?.sum(1)?.unsqueeze(0)?;
    let tt = train_top.t()?.contiguous()?;
    let mut nearest = Vec::new();
    for start in (0..n).step_by(GEN_BATCH) {
        let b = GEN_BATCH.min(n - start);
        let q = top(&test.narrow(0, start, b)?)?;
        let d = r2.broadcast_sub(&(q.matmul(&tt)? * 2.0)?)?;
        nearest.push(d.argmin(candle_core::D::Minus1)?);
    }
    let idx = Tensor::cat(&nearest, 0)?;
    let copied = reference.train_images.index_select(&idx, 0)?;
    let copied = (test.broadcast_mul(&given)? + copied.broadcast_mul(&free)?)?;
    let accuracy = |x: &Tensor| judge.accuracy(x, labels);
    let mse = |x: &Tensor| -> Result<f64> {
        let sq = (x - &test)?
            .broadcast_mul(&free)?
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        Ok(sq / (n * (h - GIVEN_ROWS) * w) as f64)
    };
    Ok(CompletionScores {
        accuracy: accuracy(&done)?,
        nearest_training_accuracy: accuracy(&copied)?,
        originals_accuracy: accuracy(&test)?,
        blank_accuracy: Some(accuracy(&shown)?),
        mse: mse(&done)?,
        nearest_training_mse: mse(&copied)?,
        given_rows: GIVEN_ROWS,
        n,
    })
}
