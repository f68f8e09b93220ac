//! `gan-cli train-judge` and `gan-cli eval`: the judge, and every metric of the
//! evaluation suite for a run, written into the run as `eval.json` (and a line of
//! `eval.jsonl`, from which the curves plot the scores against the step).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use gan_core::eval::judge::{Judge, JudgeConfig, JudgeTraining, CLASSES, DEFAULT_JUDGE_PATH};
use gan_core::eval::metrics::CodeEval;
use gan_core::eval::suite::{evaluate, DomainTests, EvalReport, Header, Reference, Slow};
use gan_core::eval::{ClassCoverage, ConditionalAccuracy};
use gan_core::{Domain, RunConfig};
use serde::Serialize;

use crate::say;

/// Where `eval` writes its results in a run folder.
pub const EVAL_FILE: &str = "eval.json";
/// One line per `eval`, for the curves.
pub const EVAL_LOG: &str = "eval.jsonl";
/// Where `eval` keeps InfoGAN's category-to-digit mapping in a run folder.
pub const MAPPING_FILE: &str = "eval_infogan.json";

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
    /// Which slow parts of the suite to run.
    pub slow: Slow,
    pub n: usize,
    pub seed: u64,
    pub judge: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub verify: bool,
    pub device: String,
    /// Load the generator's running average where the run kept one (`--ema-decay`).
    pub averaged: bool,
    /// Where a domain adapter's target domain comes from.
    pub domains: crate::domains::DomainArgs,
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

/// `gan-cli agreement`: each pair of runs' agreement on the first `n` training images
/// and each run's mean over the others, printed; no label is read.
pub fn agreement(
    runs: &[PathBuf],
    n: usize,
    data_dir: &Path,
    verify: bool,
    device: &str,
) -> Result<()> {
    let device = gan_core::device::parse_device(device)?;
    let train = crate::load_split(data_dir, gan_data::SplitKind::Train, verify, &device)?;
    if n == 0 || n > train.len() {
        bail!(
            "--n must be between 1 and the {} training images, got {n}",
            train.len()
        )
    }
    let mut codes = Vec::with_capacity(runs.len());
    let mut classes = None;
    for run_dir in runs {
        let run = RunConfig::read(run_dir)?;
        let model = gan_models::build(&run.model, &run.model_config, &device, run.train.seed)?;
        gan_core::engine::load_weights(model.as_ref(), run_dir)?;
        let classifier = match model.classifier() {
            Some(c) if !c.supervised() => c,
            _ => bail!(
                "{} ({}) has no categorical code found without labels to compare",
                run_dir.display(),
                run.model
            ),
        };
        match classes {
            None => classes = Some(classifier.classes()),
            Some(k) if k != classifier.classes() => bail!(
                "{} has {} categories, the runs before it {k}",
                run_dir.display(),
                classifier.classes()
            ),
            Some(_) => {}
        }
        let mut categories = Vec::with_capacity(n);
        for start in (0..n).step_by(1000) {
            let images = train.images.narrow(0, start, 1000.min(n - start))?;
            categories.extend(classifier.classify(&images)?);
        }
        codes.push(categories);
    }
    let k = classes.context("no runs")?;
    let matrix = gan_core::eval::unsupervised::agreements(&codes, k)?;
    let mean = gan_core::eval::unsupervised::consensus(&matrix)?;
    say!("agreement on the first {n} MNIST training images (no labels read):");
    for (i, run_dir) in runs.iter().enumerate() {
        let row: Vec<String> = (0..runs.len())
            .map(|j| match i == j {
                true => "     -".to_string(),
                false => format!("{:6.2}", 100.0 * matrix[i][j]),
            })
            .collect();
        say!(
            "  {} | mean {:6.2}% | {}",
            row.join(" "),
            100.0 * mean[i],
            run_dir.display()
        );
    }
    let best = (0..runs.len())
        .max_by(|&a, &b| mean[a].total_cmp(&mean[b]))
        .unwrap_or(0);
    say!("agrees most with the others: {}", runs[best].display());
    Ok(())
}

/// Every metric of the suite for the run in `args.run_dir`: scored by
/// [`gan_core::eval::suite`], written into the run and printed.
pub fn eval(args: &EvalArgs) -> Result<EvalReport> {
    let n = args.n;
    if n < 2 {
        bail!("--n must be at least 2 (FID needs a covariance), got {n}")
    }
    let device = gan_core::device::parse_device(&args.device)?;
    let run = RunConfig::read(&args.run_dir)?;
    let model = gan_models::build(&run.model, &run.model_config, &device, run.train.seed)?;
    let averaged = args.averaged && run.train.ema.is_some();
    if averaged {
        gan_core::engine::load_weights(model.as_ref(), &args.run_dir)?;
    } else {
        gan_core::engine::load_step_weights(model.as_ref(), &args.run_dir)?;
    }
    let step = checkpoint_step(&args.run_dir)?;
    let test = split_of_at_least(args, gan_data::SplitKind::Test, n, &device)?;
    let train = split_of_at_least(args, gan_data::SplitKind::Train, n, &device)?;
    let (judge, judge_path) = resolve_judge(args, &device)?;
    let dim = judge.config().hidden;
    if n <= dim {
        eprintln!(
            "warning: N = {n} is not more than the {dim} judge features: the covariances are \
             singular and FID is biased; use N in the thousands to compare models"
        );
    }
    // A domain adapter is scored on both domains' test splits, in the channels it reads.
    let two_domains = match (model.domain_adapter(), model.disentangler()) {
        (Some(a), _) => Some((a.target(), a.channels())),
        (None, Some(d)) => Some((d.target(), d.channels())),
        (None, None) => None,
    };
    let domain_tests = match two_domains {
        Some((name, channels)) => {
            let source = crate::domains::in_channels(test.clone(), channels, "MNIST")?;
            let target = crate::domains::load_domain(
                name,
                gan_data::SplitKind::Test,
                &args.data_dir,
                args.verify,
                &args.domains,
                &device,
            )?;
            let target = crate::domains::in_channels(target, channels, name)?;
            Some((source, target))
        }
        None => None,
    };
    let reference = Reference {
        test_images: &test.images,
        test_labels: &test.labels_u8,
        train_images: &train.images,
        train_labels: &train.labels_u8,
        domains: domain_tests.as_ref().map(|(s, t)| DomainTests {
            source_images: &s.images,
            source_labels: &s.labels_u8,
            target_images: &t.images,
            target_labels: &t.labels_u8,
        }),
    };
    let header = Header {
        run: args.run_dir.display().to_string(),
        model: run.model.clone(),
        step,
        judge_path: judge_path.display().to_string(),
        averaged,
    };
    let (report, codes) = evaluate(
        model.as_ref(),
        &judge,
        &reference,
        header,
        n,
        args.seed,
        args.slow,
    )?;
    if let Some(codes) = &codes {
        print_codes(&run.model, codes);
        gan_core::engine::checkpoint::atomic_write(
            &args.run_dir.join(MAPPING_FILE),
            serde_json::to_string_pretty(codes)?.as_bytes(),
        )?;
        // The figures with rows ordered by digit 0-9, as the paper shows them.
        let order: Vec<u32> = (0..10).filter_map(|d| codes.category_of(d)).collect();
        let mut fig_rng = gan_core::prior::rng(run.train.seed, gan_core::prior::RngStream::Figures);
        for fig in model.figures_in_order(&order, &mut fig_rng)? {
            let path = args
                .run_dir
                .join("samples")
                .join(format!("{}_by_digit.png", fig.name));
            gan_core::engine::grid::save_grid(&path, &fig.images, fig.cols)?;
        }
    }
    if let (Some(a), Some((source, target))) = (model.domain_adapter(), &domain_tests) {
        let path = args.run_dir.join("samples").join("features_by_domain.png");
        draw_domains(a, &source.images, &target.images, &path)?;
        eprintln!("drew the features of both domains in {}", path.display());
    }
    if let Some(c) = model.completer().filter(|_| args.slow.completion) {
        let path = args.run_dir.join("samples").join("completions.png");
        draw_completions(c, &test.images, &path, args.seed)?;
        eprintln!(
            "drew test digits, their top halves and the completions in {}",
            path.display()
        );
    }
    if let (Some(d), Some((source, target))) = (model.disentangler(), &domain_tests) {
        let path = args.run_dir.join("samples").join("swap.png");
        draw_swap(d, &source.images, &target.images, &path)?;
        eprintln!(
            "drew the swap grid (the content of each row in the domain of each column) in {}",
            path.display()
        );
    }
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

/// A categorical code's accuracy, mapping and confusion matrix.
fn print_codes(model: &str, codes: &CodeEval) {
    say!(
        "{model} c1 as a classifier of the {} MNIST test images: accuracy {:.2}% (error {:.2}%)",
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
}

fn append_log(run_dir: &Path, r: &EvalReport) -> Result<()> {
    use std::io::Write;
    let mut line = serde_json::json!({
        "step": r.step,
        "averaged": r.averaged,
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
    if let Some(x) = &r.reconstruction {
        line["reconstruction_mse"] = x.result.mse_per_pixel.into();
        line["label_kept"] = x.result.label_kept.into();
        if let Some(fid) = x.result.fid {
            line["reconstruction_fid"] = fid.into();
        }
    }
    if let Some(d) = &r.domains {
        line["target_accuracy"] = d.result.target_accuracy.into();
        line["source_accuracy"] = d.result.source_accuracy.into();
        line["domain_probe_accuracy"] = d.result.domain_probe_accuracy.into();
    }
    if let Some(c) = &r.completion {
        line["completion_accuracy"] = c.result.accuracy.into();
        line["completion_nearest_training_accuracy"] = c.result.nearest_training_accuracy.into();
    }
    if let Some(d) = &r.disentanglement {
        let x = &d.result;
        line["adversary_accuracy"] = x.adversary_accuracy.into();
        line["domain_probe_on_content"] = x.domain_probe_on_content.into();
        line["domain_mlp_probe_on_content"] = x.domain_mlp_probe_on_content.into();
        line["digit_probe_on_content_target"] = x.digit_probe_on_content_target.into();
        line["domain_probe_on_style"] = x.domain_probe_on_style.into();
        line["digit_probe_on_style"] = x.digit_probe_on_style.into();
    }
    if let Some(f) = &r.representation {
        line["nn_code"] = f.result.nn_code.into();
        if let Some(v) = f.result.nn_features {
            line["nn_features"] = v.into();
        }
        line["probe_code"] = f.result.probe_code.into();
        if let Some(v) = f.result.probe_features {
            line["probe_features"] = v.into();
        }
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
        "eval of {} ({} at step {}{}): N = {}, seed {}, judge {} (sha256 {}, test accuracy {})",
        r.run,
        r.model,
        r.step,
        if r.averaged { ", averaged G" } else { "" },
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
        if let Some(f) = &i.result.label_free {
            say!(
                "  without labels, on the test images:    Q's confidence {:.4}, mutual information {:.4} nats (max ln K), class kept under {}-pixel shifts {}",
                f.confidence,
                f.mutual_information,
                gan_core::eval::unsupervised::SHIFT,
                pct(f.shift_agreement)
            );
        }
    }
    if let Some(x) = &r.reconstruction {
        let fid = x
            .result
            .fid
            .map(|f| format!(", MNIST-FID {f:.1}"))
            .unwrap_or_default();
        say!(
            "  reconstructions of {} test images:     MSE per pixel {:.4}, digit kept (judge) {}{fid}",
            x.result.n,
            x.result.mse_per_pixel,
            pct(x.result.label_kept)
        );
    }
    if let Some(d) = &r.domains {
        let x = &d.result;
        say!(
            "  label predictor on {} {} test images: {} (on {} MNIST test images: {})",
            x.n_target,
            x.target,
            pct(x.target_accuracy),
            x.n_source,
            pct(x.source_accuracy)
        );
        say!(
            "  domain told from the features: by its own domain classifier {}, by a fresh linear probe {} (50% hides it)",
            pct(x.domain_classifier_accuracy),
            pct(x.domain_probe_accuracy)
        );
    }
    if let Some(c) = &r.completion {
        let x = &c.result;
        say!(
            "  {} test digits completed from their top {} rows: judge accuracy {} (copying the nearest training image's bottom: {}; the top half alone: {}; the originals: {}), error per pixel {:.4} (nearest: {:.4})",
            x.n,
            x.given_rows,
            pct(x.accuracy),
            pct(x.nearest_training_accuracy),
            x.blank_accuracy.map_or("-".to_string(), pct),
            pct(x.originals_accuracy),
            x.mse,
            x.nearest_training_mse
        );
    }
    if let Some(d) = &r.disentanglement {
        let x = &d.result;
        say!(
            "  content code ({}-d) on {} test images of MNIST and of {}: domain told by the adversary {}, by a fresh linear probe {}, by a fresh MLP probe {} (50% hides it); digit probe {} on MNIST, {} on {}; fitted on MNIST alone, {} on {}",
            x.dims[0],
            x.n,
            x.target,
            pct(x.adversary_accuracy),
            pct(x.domain_probe_on_content),
            pct(x.domain_mlp_probe_on_content),
            pct(x.digit_probe_on_content_source),
            pct(x.digit_probe_on_content_target),
            x.target,
            pct(x.digit_probe_on_content_transfer),
            x.target
        );
        say!(
            "  domain code ({}-d): domain probe {} (high is the aim), digit probe {} (10% is chance); reconstruction MSE per pixel {:.4} on MNIST, {:.4} on {}",
            x.dims[1],
            pct(x.domain_probe_on_style),
            pct(x.digit_probe_on_style),
            x.mse_source,
            x.mse_target,
            x.target
        );
    }
    if let Some(f) = &r.representation {
        let x = &f.result;
        let layer = match (x.nn_features, x.probe_features) {
            (Some(nn), Some(lp)) => format!(
                "; the layer before ({}-d): 1-NN {}, linear probe {}",
                x.dims[1],
                pct(nn),
                pct(lp)
            ),
            _ => String::new(),
        };
        say!(
            "  features ({} test vs {} training images): En(x) ({}-d) 1-NN {}, linear probe {}{layer}",
            x.n,
            x.reference,
            x.dims[0],
            pct(x.nn_code),
            pct(x.probe_code)
        );
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

/// Test images of each domain in the plane of their features' first two principal
/// components, a colour per domain: mixed when the features hide the domain.
fn draw_domains(
    adapter: &dyn gan_core::DomainAdapter,
    source: &Tensor,
    target: &Tensor,
    path: &Path,
) -> Result<()> {
    const EACH: usize = 500;
    let each = EACH.min(source.dim(0)?).min(target.dim(0)?);
    let features = Tensor::cat(
        &[
            adapter.features(&source.narrow(0, 0, each)?)?,
            adapter.features(&target.narrow(0, 0, each)?)?,
        ],
        0,
    )?;
    let dim = features.dim(1)?;
    let rows = features.flatten_all()?.to_vec1::<f32>()?;
    let plane = gan_core::eval::principal_plane(&rows, dim)?;
    let (s, t) = plane.split_at(each);
    gan_core::engine::plot::save_scatter(
        path,
        "features of test images, first two principal components",
        &[
            ("MNIST".to_string(), s.to_vec()),
            (adapter.target().to_string(), t.to_vec()),
        ],
    )
}

/// The swap grid: the first row is the style images, the first column the content
/// images (four test images of each domain for both), and cell (i, j) the content of row
/// i rendered in the domain code of column j.
fn draw_swap(
    model: &dyn gan_core::Disentangler,
    source: &Tensor,
    target: &Tensor,
    path: &Path,
) -> Result<()> {
    const EACH: usize = 4;
    let pick = Tensor::cat(&[source.narrow(0, 0, EACH)?, target.narrow(0, 0, EACH)?], 0)?;
    let k = 2 * EACH;
    let domains: Vec<Domain> = [Domain::Source, Domain::Target]
        .into_iter()
        .flat_map(|d| std::iter::repeat_n(d, EACH))
        .collect();
    let grid = model.swap(&pick, &domains, &pick)?;
    let blank = pick.narrow(0, 0, 1)?.ones_like()?.neg()?;
    let mut cells = vec![blank];
    cells.extend(
        (0..k)
            .map(|j| pick.narrow(0, j, 1))
            .collect::<candle_core::Result<Vec<_>>>()?,
    );
    for i in 0..k {
        cells.push(pick.narrow(0, i, 1)?);
        cells.push(grid.narrow(0, i * k, k)?);
    }
    gan_core::engine::grid::save_grid(path, &Tensor::cat(&cells, 0)?, k + 1)
}

/// Rows of 16: test digits, what the model is shown (the top half), its completions.
fn draw_completions(
    model: &dyn gan_core::Completer,
    test: &Tensor,
    path: &Path,
    seed: u64,
) -> Result<()> {
    use gan_core::eval::suite::{bottom_free, hide_free, GIVEN_ROWS};
    const N: usize = 16;
    let x = test.narrow(0, 0, N.min(test.dim(0)?))?;
    let (_, _, h, w) = x.dims4()?;
    let free = bottom_free(GIVEN_ROWS, h, w, x.device())?;
    let shown = hide_free(&x, &free)?;
    let mut rng = gan_core::prior::rng(seed, gan_core::prior::RngStream::Sample);
    let done = model.complete(&shown, &free, &mut rng)?;
    let n = x.dim(0)?;
    gan_core::engine::grid::save_grid(path, &Tensor::cat(&[&x, &shown, &done], 0)?, n)
}
