//! `gan-cli train-judge` and `gan-cli eval`: the judge, and every metric of the
//! evaluation suite for a run, written into the run as `eval.json` (and a line of
//! `eval.jsonl`, from which the curves plot the scores against the step).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use gan_core::engine::{Classifier, Conditioning, Generator};
use gan_core::eval::{
    class_coverage, conditional_accuracy, frechet_distance, inception_score, ClassCoverage,
    ConditionalAccuracy, FeatureStats,
};
use gan_core::{Model, RunConfig};
use gan_models::judge::{JudgeOutputs, CLASSES, DEFAULT_JUDGE_PATH};
use gan_models::{Judge, JudgeConfig, JudgeTraining};
use serde::{Deserialize, Serialize};

use crate::say;

/// Where `eval` writes its results in a run folder.
pub const EVAL_FILE: &str = "eval.json";
/// One line per `eval`, for the curves.
pub const EVAL_LOG: &str = "eval.jsonl";
/// Where `eval` keeps InfoGAN's category-to-digit mapping in a run folder.
pub const MAPPING_FILE: &str = "eval_infogan.json";

/// Generated images per call of the model: bounds memory, not results.
const GEN_BATCH: usize = 500;

/// Test accuracy below which a judge is reported as unfit to compare models with.
const MIN_JUDGE_ACCURACY: f64 = 0.99;

/// What `gan-cli train-judge` was asked.
pub struct TrainJudgeArgs {
    pub out: PathBuf,
    pub training: JudgeTraining,
    pub data_dir: PathBuf,
    pub verify: bool,
    pub device: String,
}

/// What the sidecar `<judge>.json` records beside the weights.
#[derive(Serialize)]
struct JudgeCard<'a> {
    file: String,
    sha256: &'a str,
    test_accuracy: f64,
    test_images: usize,
    train_images: usize,
    config: JudgeConfig,
    training: &'a JudgeTraining,
    seconds: f64,
}

/// Trains the judge on the MNIST training set, scores it on the test set, saves it and
/// its card (`<out>.json`), and says how it did.
pub fn train_judge(args: &TrainJudgeArgs) -> Result<Judge> {
    let device = gan_core::device::parse_device(&args.device)?;
    let train = crate::load_split(
        &args.data_dir,
        gan_data::SplitKind::Train,
        args.verify,
        &device,
    )?;
    let test = crate::load_split(
        &args.data_dir,
        gan_data::SplitKind::Test,
        args.verify,
        &device,
    )?;
    let started = Instant::now();
    eprintln!(
        "training the judge (LeNet-style, {:?}) on {} images for {} epochs",
        JudgeConfig::default(),
        train.len(),
        args.training.epochs
    );
    let mut judge = Judge::train(
        JudgeConfig::default(),
        &args.training,
        &train.images,
        &train.labels,
        |epoch, loss, secs| {
            eprintln!(
                "judge epoch {}/{}: loss {loss:.4} ({secs:.0} s)",
                epoch + 1,
                args.training.epochs
            )
        },
    )?;
    let accuracy = judge.accuracy(&test.images, &test.labels_u8)?;
    let sha = judge.save(&args.out, Some(accuracy))?;
    let card = JudgeCard {
        file: args.out.display().to_string(),
        sha256: &sha,
        test_accuracy: accuracy,
        test_images: test.len(),
        train_images: train.len(),
        config: judge.config(),
        training: &args.training,
        seconds: started.elapsed().as_secs_f64(),
    };
    gan_core::engine::checkpoint::atomic_write(
        &args.out.with_extension("json"),
        serde_json::to_string_pretty(&card)?.as_bytes(),
    )?;
    say!(
        "judge test accuracy {:.2}% on {} MNIST test images ({:.0} s); saved {} (sha256 {sha})",
        100.0 * accuracy,
        test.len(),
        card.seconds,
        args.out.display()
    );
    if accuracy < MIN_JUDGE_ACCURACY {
        eprintln!(
            "warning: the judge is below {:.0}% test accuracy; its scores are not comparable \
             with the project's: train longer (--epochs)",
            100.0 * MIN_JUDGE_ACCURACY
        );
    }
    Ok(judge)
}

/// What `gan-cli eval` was asked.
pub struct EvalArgs {
    pub run_dir: PathBuf,
    pub n: usize,
    pub seed: u64,
    pub judge: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub verify: bool,
    pub device: String,
}

/// A number and how many samples it comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scalar {
    pub value: f64,
    pub n: usize,
}

/// A metric with what makes it comparable: the seed of the samples and the judge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamped<T> {
    #[serde(flatten)]
    pub result: T,
    pub seed: u64,
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
}

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
    pub run: String,
    pub model: String,
    /// Steps of the evaluated checkpoint.
    pub step: u64,
    pub n: usize,
    pub seed: u64,
    pub judge_path: String,
    pub judge_sha256: String,
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
    pub seconds: f64,
}

/// The judge `eval` uses: the one at `--judge`, or the default one, trained first when
/// it does not exist yet.
fn resolve_judge(args: &EvalArgs, device: &Device) -> Result<(Judge, PathBuf)> {
    if let Some(path) = &args.judge {
        return Ok((Judge::load(path, device)?, path.clone()));
    }
    let path = PathBuf::from(DEFAULT_JUDGE_PATH);
    if path.is_file() {
        return Ok((Judge::load(&path, device)?, path));
    }
    eprintln!(
        "no judge at {}: training one first on the MNIST training set (about 4 minutes on a 2-core CPU; \
         `gan-cli train-judge` does this alone)",
        path.display()
    );
    let judge = train_judge(&TrainJudgeArgs {
        out: path.clone(),
        training: JudgeTraining::default(),
        data_dir: args.data_dir.clone(),
        verify: args.verify,
        device: args.device.clone(),
    })?;
    Ok((judge, path))
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
    rng: &mut gan_core::Rng,
) -> Result<JudgeOutputs> {
    let mut parts = Vec::new();
    for start in (0..n).step_by(GEN_BATCH) {
        let b = GEN_BATCH.min(n - start);
        let images = model.generate(b, class, rng)?;
        Judge::check_images(&images).context("the model generated a bad batch")?;
        parts.push(judge.outputs(&images)?);
    }
    merge(parts)
}

fn first(images: &Tensor, n: usize) -> Result<Tensor> {
    Ok(images.narrow(0, 0, n)?)
}

/// Discriminator steps of the run's latest checkpoint.
fn checkpoint_step(run_dir: &Path) -> Result<u64> {
    let ckpt = gan_core::engine::latest_checkpoint(run_dir)?;
    let text = std::fs::read_to_string(ckpt.join("state.json"))
        .with_context(|| format!("reading {}", ckpt.join("state.json").display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a checkpoint state", ckpt.display()))?;
    v["step"]
        .as_u64()
        .with_context(|| format!("{} records no step", ckpt.display()))
}

/// A split of MNIST with at least `n` images: FID compares N generated images with N
/// real test images, and its floor N training images with the same N test images.
fn split_of_at_least(
    args: &EvalArgs,
    kind: gan_data::SplitKind,
    n: usize,
    device: &Device,
) -> Result<gan_data::Split> {
    let split = crate::load_split(&args.data_dir, kind, args.verify, device)?;
    let name = match kind {
        gan_data::SplitKind::Test => "test",
        gan_data::SplitKind::Train => "training",
    };
    if n > split.len() {
        bail!(
            "--n {n} is more than the {} MNIST {name} images available: FID compares N \
             generated images with N real test images (and N training images for its \
             floor), so N can be at most {}",
            split.len(),
            split.len()
        )
    }
    Ok(split)
}

/// Every metric of the suite for the run in `args.run_dir`.
pub fn eval(args: &EvalArgs) -> Result<EvalReport> {
    let started = Instant::now();
    let (n, seed) = (args.n, args.seed);
    if n < 2 {
        bail!("--n must be at least 2 (FID needs a covariance), got {n}")
    }
    let device = gan_core::device::parse_device(&args.device)?;
    let run = RunConfig::read(&args.run_dir)?;
    let model = gan_models::build(&run.model, &run.model_config, &device, run.train.seed)?;
    gan_core::engine::load_weights(model.as_ref(), &args.run_dir)?;
    let step = checkpoint_step(&args.run_dir)?;
    let test = split_of_at_least(args, gan_data::SplitKind::Test, n, &device)?;
    let train = split_of_at_least(args, gan_data::SplitKind::Train, n, &device)?;
    let (judge, judge_path) = resolve_judge(args, &device)?;
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
    if n <= dim {
        eprintln!(
            "warning: N = {n} is not more than the {dim} judge features: the covariances are \
             singular and FID is biased; use N in the thousands to compare models"
        );
    }

    let real = judge.outputs(&first(&test.images, n)?)?;
    let generator = model.generator();
    let classifier = model.classifier();
    if generator.is_none() && classifier.is_none() {
        bail!(
            "{} can neither generate nor classify: nothing to evaluate",
            run.model
        )
    }
    let samples = match generator {
        Some(g) => {
            let floor = judge.outputs(&first(&train.images, n)?)?;
            let mut rng = gan_core::prior::rng(seed, gan_core::prior::RngStream::Eval);
            let fake = score_generated(g, &judge, n, None, &mut rng)?;
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
                &judge,
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
            Some(Stamped {
                result: code_scores(
                    &args.run_dir,
                    &run,
                    model.as_ref(),
                    c,
                    &test,
                    &judge,
                    per_label,
                    seed,
                )?,
                seed,
                judge_sha256: sha.clone(),
            }),
            None,
        ),
        Some(c) => {
            let predicted = c.classify(&first(&test.images, n)?)?;
            let right = predicted
                .iter()
                .zip(&test.labels_u8[..n])
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

    let report = EvalReport {
        run: args.run_dir.display().to_string(),
        model: run.model.clone(),
        step,
        n,
        seed,
        judge_path: judge_path.display().to_string(),
        judge_sha256: sha.clone(),
        judge_test_accuracy: judge.test_accuracy(),
        samples,
        conditional_accuracy: conditional,
        categorical_code,
        classifier_accuracy,
        seconds: started.elapsed().as_secs_f64(),
    };
    gan_core::engine::checkpoint::atomic_write(
        &args.run_dir.join(EVAL_FILE),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    append_log(&args.run_dir, &report)?;
    if let Err(e) = gan_core::engine::plot::plot_run(&args.run_dir) {
        eprintln!("warning: could not redraw the curves: {e:#}");
    }
    print_report(&report);
    Ok(report)
}

fn stamp_cond(result: ConditionalAccuracy, seed: u64, sha: &str) -> Stamped<ConditionalAccuracy> {
    Stamped {
        result,
        seed,
        judge_sha256: sha.to_string(),
    }
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
    let mut rng = gan_core::prior::rng(seed, gan_core::prior::RngStream::EvalByClass);
    let (mut requested, mut predicted) = (Vec::new(), Vec::new());
    for (class, digit) in pairs {
        let out = score_generated(model, judge, per_class, Some(class), &mut rng)?;
        requested.extend(std::iter::repeat_n(digit, per_class));
        predicted.extend(out.predicted);
    }
    Ok((requested, predicted))
}

/// A categorical code found without labels: the classifier on the test set (saving the
/// mapping, and the model's figures ordered by digit where it draws them), then the
/// judge on each category's samples where the generator takes the category.
#[allow(clippy::too_many_arguments)]
fn code_scores(
    run_dir: &Path,
    run: &RunConfig,
    model: &dyn Model,
    classifier: &dyn Classifier,
    test: &gan_data::Split,
    judge: &Judge,
    per_label: usize,
    seed: u64,
) -> Result<CodeScores> {
    let categories = classifier.classify(&test.images)?;
    let codes = gan_core::eval::metrics::CodeEval::new(
        &categories,
        &test.labels_u8,
        classifier.classes(),
        CLASSES,
    )?;
    say!(
        "{} c1 as a classifier of the {} MNIST test images: accuracy {:.2}% (error {:.2}%)",
        run.model,
        codes.n,
        100.0 * codes.accuracy,
        100.0 * (1.0 - codes.accuracy)
    );
    say!(
        "category -> digit: {}",
        codes
            .category_to_digit
            .iter()
            .enumerate()
            .map(|(c, d)| format!("{c}->{}", d.map_or("-".into(), |d| d.to_string())))
            .collect::<Vec<_>>()
            .join(" ")
    );
    say!("confusion (rows: category, columns: digit 0-9):");
    for (c, row) in codes.confusion.iter().enumerate() {
        say!(
            "  {c:>2} | {}",
            row.iter()
                .map(|v| format!("{v:>5}"))
                .collect::<Vec<_>>()
                .join("")
        );
    }
    gan_core::engine::checkpoint::atomic_write(
        &run_dir.join(MAPPING_FILE),
        serde_json::to_string_pretty(&codes)?.as_bytes(),
    )?;
    // The figures with rows ordered by digit 0-9, as the paper shows them.
    let order: Vec<u32> = (0..10).filter_map(|d| codes.category_of(d)).collect();
    let mut fig_rng = gan_core::prior::rng(run.train.seed, gan_core::prior::RngStream::Figures);
    for fig in model.figures_in_order(&order, &mut fig_rng)? {
        let path = run_dir
            .join("samples")
            .join(format!("{}_by_digit.png", fig.name));
        gan_core::engine::grid::save_grid(&path, &fig.images, fig.cols)?;
    }
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
                    "--n must be at least {CLASSES} to score the categories of {}",
                    run.model
                )
            }
            let (requested, predicted) = by_class(g, judge, per_label, pairs.into_iter(), seed)?;
            Some(conditional_accuracy(&requested, &predicted, CLASSES)?)
        }
        _ => None,
    };
    Ok(CodeScores {
        c1_accuracy: codes.accuracy,
        n: codes.n,
        category_to_digit: codes.category_to_digit,
        generated_by_category,
    })
}

fn append_log(run_dir: &Path, r: &EvalReport) -> Result<()> {
    use std::io::Write;
    let mut line = serde_json::json!({
        "step": r.step,
        "n": r.n,
        "seed": r.seed,
        "judge_sha256": r.judge_sha256,
    });
    if let Some(x) = &r.samples {
        line["fid"] = x.fid.result.value.into();
        line["fid_floor"] = x.fid_floor_train_vs_test.result.value.into();
        line["inception_score"] = x.inception_score.result.value.into();
        line["classes_covered"] = x.coverage.result.classes_covered.into();
        line["kl_from_uniform"] = x.coverage.result.kl_from_uniform.into();
    }
    if let Some(c) = &r.conditional_accuracy {
        line["conditional_accuracy"] = c.result.accuracy.into();
    }
    if let Some(i) = &r.categorical_code {
        line["c1_accuracy"] = i.result.c1_accuracy.into();
    }
    if let Some(a) = &r.classifier_accuracy {
        line["classifier_accuracy"] = a.result.value.into();
    }
    let path = run_dir.join(EVAL_LOG);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn histogram(c: &ClassCoverage) -> String {
    c.histogram
        .iter()
        .enumerate()
        .map(|(d, k)| format!("{d}:{k}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_report(r: &EvalReport) {
    say!(
        "eval of {} ({} at step {}): N = {}, seed {}, judge {} (sha256 {}, test accuracy {})",
        r.run,
        r.model,
        r.step,
        r.n,
        r.seed,
        r.judge_path,
        r.judge_sha256,
        r.judge_test_accuracy.map_or("unknown".into(), pct)
    );
    if let Some(x) = &r.samples {
        say!(
            "  MNIST-FID, N generated vs N test images:  {:.3}",
            x.fid.result.value
        );
        say!(
            "  FID floor, N train vs N test images:      {:.3}",
            x.fid_floor_train_vs_test.result.value
        );
        say!(
            "  Inception-Score analogue (max 10):        {:.3} (test images: {:.3})",
            x.inception_score.result.value,
            x.inception_score_test.result.value
        );
        say!(
            "  classes covered:                          {} of 10, KL from uniform {:.4} nats (test images: {}, {:.4})",
            x.coverage.result.classes_covered,
            x.coverage.result.kl_from_uniform,
            x.coverage_test.result.classes_covered,
            x.coverage_test.result.kl_from_uniform
        );
        say!(
            "  judge's classes of the samples:           {}",
            histogram(&x.coverage.result)
        );
    }
    if let Some(c) = &r.conditional_accuracy {
        say!(
            "  conditional accuracy ({} per label):      {} (per label: {})",
            c.result.n / CLASSES,
            pct(c.result.accuracy),
            per_class(&c.result)
        );
    }
    if let Some(i) = &r.categorical_code {
        say!(
            "  c1 accuracy on {} test images (no labels): {}",
            i.result.n,
            pct(i.result.c1_accuracy)
        );
        if let Some(g) = &i.result.generated_by_category {
            say!(
                "  judge accuracy on each category's samples vs its digit: {} ({})",
                pct(g.accuracy),
                per_class(g)
            );
        }
    }
    if let Some(a) = &r.classifier_accuracy {
        say!(
            "  classifier accuracy on {} test images:   {}",
            a.result.n,
            pct(a.result.value)
        );
    }
    say!("wrote {}/{EVAL_FILE} ({:.0} s)", r.run, r.seconds);
}

fn per_class(c: &ConditionalAccuracy) -> String {
    c.per_class
        .iter()
        .enumerate()
        .filter_map(|(d, a)| a.map(|a| format!("{d}:{:.0}%", 100.0 * a)))
        .collect::<Vec<_>>()
        .join(" ")
}
