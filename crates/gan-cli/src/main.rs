//! `gan-cli`: train, sample and evaluate the GAN family of gan-rs on MNIST.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gan_core::{AdamConfig, RunConfig, TrainConfig, Trainer};

mod domains;
mod eval;
mod report;

/// Prints a line on stdout; a reader that went away (`| head`) is no reason to panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}
pub(crate) use say;

#[derive(Parser)]
#[command(
    name = "gan-cli",
    version,
    about = "Train, sample and evaluate GANs on MNIST"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scores a run with the evaluation suite, as far as the model's capabilities go:
    /// a generator's MNIST-FID (beside the train-vs-test floor), class coverage and
    /// Inception-Score analogue, a label's conditional accuracy, a categorical code's or
    /// a classifier's accuracy on the test set; writes RUN_DIR/eval.json and prints it.
    Eval {
        /// The run folder.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Generated images to score, and real test (and training) images to compare
        /// them with; at most the 10,000 test images.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Seed of the generated samples.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The judge's weights [default: assets/judge/lenet.safetensors, trained first
        /// when missing].
        #[arg(long)]
        judge: Option<PathBuf>,
        /// Folder with the MNIST IDX files.
        #[arg(long, default_value = gan_data::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Skip the canonical SHA-256 check.
        #[arg(long)]
        no_verify: bool,
        /// cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// For models with an encoder, also probe what its codes and its layer before the
        /// output know of the labels (1-NN and linear probe, the 60,000 training images the
        /// reference). Experimental: slow and memory-hungry on the full MNIST so far.
        #[arg(long)]
        probe_features: bool,
        /// Leave out the completion of 1,000 test digits by search (minutes on a CPU), for
        /// models that complete images: for screening many runs by their FID.
        #[arg(long)]
        no_completion: bool,
        /// Score the weights of the last step, not the running average of the generator
        /// that a run trained with --ema-decay keeps (and that eval otherwise scores).
        #[arg(long)]
        no_ema: bool,
        #[command(flatten)]
        domains: domains::DomainArgs,
    },
    /// How alike runs group the same MNIST training images by their categorical code
    /// (InfoGAN's c1), without labels: the share of images two runs' categories agree
    /// on under the best one-to-one matching, and each run's mean over the others. The
    /// run that agrees most is the restart criterion of docs/INFOGAN.md.
    Agreement {
        /// Run folders (two or more) of models with a categorical code.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Training images to compare on (the first N).
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Folder with the MNIST IDX files.
        #[arg(long, default_value = gan_data::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Skip the canonical SHA-256 check.
        #[arg(long)]
        no_verify: bool,
        /// cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Trains the judge of `eval`: a LeNet-style classifier of the MNIST training set,
    /// scored on the test set, saved as safetensors with its SHA-256.
    TrainJudge {
        /// Where to save it (a card `<out>.json` is written beside it).
        #[arg(long, default_value = gan_core::eval::judge::DEFAULT_JUDGE_PATH)]
        out: PathBuf,
        /// Passes over the 60,000 training images.
        #[arg(long, default_value_t = 4)]
        epochs: usize,
        /// Images per step.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Adam step size of the first epoch (halved every epoch).
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// Seeds weights, data order and dropout.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Folder with the MNIST IDX files (fetched there when missing).
        #[arg(long, default_value = gan_data::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Skip the canonical SHA-256 check.
        #[arg(long)]
        no_verify: bool,
        /// cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// One self-contained HTML page (and the same table in Markdown beside it) that
    /// compares runs side by side: config, metrics, curves, sample grids.
    Report {
        /// Run folders to compare.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The HTML file; the Markdown goes beside it with the extension .md.
        #[arg(long, default_value = "runs/report.html")]
        out: PathBuf,
    },
    /// Writes generated images from a run: a PNG grid or a safetensors tensor `images`.
    Sample {
        /// The run folder.
        #[arg(long)]
        checkpoint: PathBuf,
        /// How many images.
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Output file: .png (a grid) or .safetensors ([N,1,28,28] in [0,1]).
        #[arg(long)]
        out: PathBuf,
        /// The label to generate (cgan), or the raw category of InfoGAN's first code.
        #[arg(long)]
        label: Option<u32>,
        /// The digit to generate from an InfoGAN run, through the mapping `eval` saved.
        #[arg(long, conflicts_with = "label")]
        digit: Option<u32>,
        /// Instead of sampling, take the first N MNIST test images through the run's
        /// encoder and decoder: a grid of originals over reconstructions (or the
        /// reconstructions as a tensor).
        #[arg(long, conflicts_with_all = ["label", "digit"])]
        reconstruct: bool,
        /// Instead of sampling, N rows of latent interpolations through the run's encoder
        /// and decoder: test images 2i and 2i+1 at the ends of row i, De of 8 evenly spaced
        /// codes on the line from En of one to En of the other between them (or those
        /// decoded images as a tensor).
        #[arg(long, conflicts_with_all = ["label", "digit", "reconstruct"])]
        interpolate: bool,
        /// With --reconstruct: more runs whose reconstructions of the same test images
        /// join the grid, a row per run under the originals (PNG only).
        #[arg(long, num_args = 1.., requires = "reconstruct")]
        compare: Vec<PathBuf>,
        /// Folder with the MNIST IDX files, for --reconstruct and --interpolate.
        #[arg(long, default_value = gan_data::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Skip the canonical SHA-256 check of --data-dir.
        #[arg(long)]
        no_verify: bool,
        /// Seed of the noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// Settings every training subcommand shares.
#[derive(Args, Clone)]
struct TrainArgs {
    /// Passes over the 60,000 training images [default: the model's].
    #[arg(long)]
    epochs: Option<usize>,
    /// Real images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam learning rate (beta1 = 0.5, beta2 = 0.999, no weight decay).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Discriminator steps per generator step.
    #[arg(long, default_value_t = 1)]
    k: usize,
    /// Seeds weights, noise and data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder with the MNIST IDX files (fetched there when missing).
    #[arg(long, default_value = gan_data::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Skip the canonical SHA-256 check (for data sets other than canonical MNIST).
    #[arg(long)]
    no_verify: bool,
    /// Run folder [default: runs/<model>-seed<seed>, numbered if taken].
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also checkpoint every this many steps (0: at the end of each epoch only), so that
    /// an interrupted run loses little.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Stop after this many discriminator steps in all.
    #[arg(long)]
    max_steps: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Draw samples from a running average of the generator's weights, with this decay
    /// per step (0.999 is usual; 0: none) [default: the model's].
    #[arg(long)]
    ema_decay: Option<f64>,
    #[command(flatten)]
    domains: domains::DomainArgs,
}

/// See `gan_core::fast::alloc`: large buffers are reused instead of faulted in every step.
#[global_allocator]
static ALLOC: gan_core::fast::alloc::Allocator = gan_core::fast::alloc::Allocator;

fn main() {
    gan_core::fast::alloc::keep_freed_memory();
    gan_core::fast::alloc::one_thread_pool();
    if let Err(e) = dispatch() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The fixed subcommands, then one training subcommand per model of the registry, its
/// arguments the model's config beside the settings every training shares.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for e in gan_models::MODELS {
        // The about last: augment_args would otherwise put TrainArgs' doc there.
        let sub =
            TrainArgs::augment_args((e.args)(clap::Command::new(e.kind))).mut_arg("epochs", |a| {
                a.help(format!(
                    "Passes over the 60,000 training images [default: {}]",
                    e.epochs
                ))
            });
        cmd = cmd.subcommand(sub.about(e.about));
    }
    cmd
}

fn dispatch() -> Result<()> {
    let matches = command().get_matches();
    if let Some((kind, sub)) = matches.subcommand() {
        if let Ok(entry) = gan_models::find(kind) {
            return train_model(entry, sub);
        }
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    run(cli)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sample {
            checkpoint,
            n,
            out,
            label,
            digit,
            reconstruct,
            interpolate,
            compare,
            data_dir,
            no_verify,
            seed,
            device,
        } => {
            let through = match (reconstruct, interpolate) {
                (true, _) => Some(Through::Reconstruct),
                (_, true) => Some(Through::Interpolate),
                _ => None,
            };
            if !compare.is_empty() {
                let runs: Vec<PathBuf> = std::iter::once(checkpoint).chain(compare).collect();
                return compare_reconstructions(&runs, n, &out, &data_dir, !no_verify, &device);
            }
            if let Some(what) = through {
                return through_encoder(what, &checkpoint, n, &out, &data_dir, !no_verify, &device);
            }
            let class = match digit {
                Some(d) => Some(category_of_digit(&checkpoint, d)?),
                None => label,
            };
            sample(&checkpoint, n, &out, class, seed, &device)
        }
        Command::Eval {
            checkpoint,
            n,
            seed,
            judge,
            data_dir,
            no_verify,
            device,
            probe_features,
            no_completion,
            no_ema,
            domains,
        } => eval::eval(&eval::EvalArgs {
            run_dir: checkpoint,
            slow: gan_core::eval::suite::Slow {
                probe_features,
                completion: !no_completion,
            },
            domains,
            n,
            seed,
            judge,
            data_dir,
            verify: !no_verify,
            device,
            averaged: !no_ema,
        })
        .map(|_| ()),
        Command::TrainJudge {
            out,
            epochs,
            batch_size,
            lr,
            seed,
            data_dir,
            no_verify,
            device,
        } => eval::train_judge(&eval::TrainJudgeArgs {
            out,
            training: gan_core::eval::judge::JudgeTraining {
                epochs,
                batch_size,
                lr,
                seed,
                ..Default::default()
            },
            data_dir,
            verify: !no_verify,
            device,
        })
        .map(|_| ()),
        Command::Report { runs, out } => report::report(&runs, &out),
        Command::Agreement {
            runs,
            n,
            data_dir,
            no_verify,
            device,
        } => eval::agreement(&runs, n, &data_dir, !no_verify, &device),
    }
}

/// Settings `--resume` takes from the command line; the others are the run's own.
const RESUME_MAY_SET: &[&str] = &[
    "resume",
    "epochs",
    "max_steps",
    "checkpoint_every",
    "quiet",
    "data_dir",
    "backgrounds",
    "mnist_m",
    "uci_digits",
    "no_verify",
    "device",
];

fn train_model(entry: &gan_models::Entry, matches: &ArgMatches) -> Result<()> {
    let kind = entry.kind;
    let args = &TrainArgs::from_arg_matches(matches)?;
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    if args.resume.is_some() {
        // Arguments only: the derived groups (`TrainArgs`, the config) have ids too.
        let sub = command();
        let sub = sub
            .find_subcommand(kind)
            .expect("a registry model is a subcommand");
        let is_arg = |id: &str| sub.get_arguments().any(|a| a.get_id() == id);
        let refused: Vec<String> = matches
            .ids()
            .map(|id| id.as_str())
            .filter(|id| is_arg(id) && given(id) && !RESUME_MAY_SET.contains(id))
            .map(|id| format!("--{}", id.replace('_', "-")))
            .collect();
        if !refused.is_empty() {
            bail!(
                "--resume continues a run with the settings it was started with; {} would \
                 change them (only --epochs, --max-steps and --checkpoint-every may): drop \
                 them, or start a new run with another --out",
                refused.join(", ")
            )
        }
    }
    let parsed = (entry.from_args)(matches)?;
    let (model_config, network_lr) = (parsed.config, parsed.network_lr);
    let device = gan_core::device::parse_device(&args.device)?;
    let fresh = TrainConfig {
        epochs: args.epochs.unwrap_or(entry.epochs),
        batch_size: args.batch_size,
        k: args.k,
        seed: args.seed,
        adam: AdamConfig {
            lr: args.lr,
            ..AdamConfig::default()
        },
        network_lr: network_lr
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        checkpoint_every: args.checkpoint_every,
        max_steps: args.max_steps,
        progress: !args.quiet,
        ema: match args.ema_decay {
            Some(0.0) => None,
            Some(d) => Some(d),
            None => entry.ema,
        },
    };
    fresh.validate()?;
    // Every stream the model declares, from the data folders given.
    let load = |model: &dyn gan_core::Model| {
        domains::load_streams(
            model,
            &args.data_dir,
            !args.no_verify,
            &args.domains,
            &device,
        )
    };
    match &args.resume {
        Some(run_dir) => {
            let saved = RunConfig::read(run_dir)?;
            if saved.model != kind {
                bail!(
                    "{} is a {} run: resume it with `gan-cli {} --resume ...`",
                    run_dir.display(),
                    saved.model,
                    saved.model
                )
            }
            let cfg = TrainConfig {
                epochs: args.epochs.unwrap_or(saved.train.epochs),
                max_steps: args.max_steps,
                progress: !args.quiet,
                checkpoint_every: if given("checkpoint_every") {
                    args.checkpoint_every
                } else {
                    saved.train.checkpoint_every
                },
                ..saved.train.clone()
            };
            for (what, was, now) in [
                ("--epochs", saved.train.epochs as u64, cfg.epochs as u64),
                (
                    "--checkpoint-every",
                    saved.train.checkpoint_every,
                    cfg.checkpoint_every,
                ),
            ] {
                if was != now {
                    eprintln!("{what}: {was} -> {now}");
                }
            }
            let model = gan_models::build(kind, &saved.model_config, &device, cfg.seed)?;
            let (data, _) = load(model.as_ref())?;
            Trainer::check_data(model.as_ref(), &cfg, &data)?;
            let mut trainer = Trainer::resume(model.as_ref(), cfg, run_dir)?;
            eprintln!("resuming {} at step {}", run_dir.display(), trainer.step());
            trainer.fit(&data)?;
            eprintln!("run folder: {}", run_dir.display());
        }
        None => {
            let model = gan_models::build(kind, &model_config, &device, fresh.seed)?;
            let (data, subsets) = load(model.as_ref())?;
            // Before anything is written: a bad setting leaves no stub folder behind.
            Trainer::check_data(model.as_ref(), &fresh, &data)?;
            let run_dir = match &args.out {
                Some(p) => p.clone(),
                None => free_run_dir(kind, fresh.seed),
            };
            eprintln!("training {kind} into {}", run_dir.display());
            let mut trainer = Trainer::new(model.as_ref(), fresh, &run_dir)?;
            domains::record_subsets(&run_dir, &subsets)?;
            trainer.fit(&data)?;
            eprintln!(
                "run folder: {} (samples/, metrics.jsonl, checkpoints/)",
                run_dir.display()
            );
        }
    }
    Ok(())
}

fn free_run_dir(kind: &str, seed: u64) -> PathBuf {
    let base = PathBuf::from("runs").join(format!("{kind}-seed{seed}"));
    (1..)
        .map(|i| {
            if i == 1 {
                base.clone()
            } else {
                PathBuf::from(format!("{}-{i}", base.display()))
            }
        })
        .find(|p| !p.exists())
        .expect("some folder name is free")
}

pub(crate) fn load_split(
    dir: &Path,
    kind: gan_data::SplitKind,
    verify: bool,
    device: &candle_core::Device,
) -> Result<gan_data::Split> {
    let verify = if verify {
        gan_data::Verify::Canonical
    } else {
        gan_data::Verify::Skip
    };
    let have = |name: &str| dir.join(name).exists() || dir.join(format!("{name}.gz")).exists();
    let prefix = if kind == gan_data::SplitKind::Train {
        "train"
    } else {
        "t10k"
    };
    if !(have(&format!("{prefix}-images-idx3-ubyte"))
        && have(&format!("{prefix}-labels-idx1-ubyte")))
    {
        eprintln!("MNIST is not in {}: downloading it", dir.display());
        let report = gan_data::ensure_mnist(dir, &gan_data::mirrors()).with_context(|| {
            format!(
                "MNIST is missing from {} and could not be downloaded; import a local copy with \
                 `cargo xtask fetch-mnist --from DIR --dir {}` or point --data-dir at one",
                dir.display(),
                dir.display()
            )
        })?;
        eprintln!("{report}");
    }
    gan_data::load_split(dir, kind, verify, device)
}

fn category_of_digit(run_dir: &Path, digit: u32) -> Result<u32> {
    if digit > 9 {
        bail!("--digit must be 0-9, got {digit}")
    }
    let run = RunConfig::read(run_dir)?;
    let model = gan_models::build(
        &run.model,
        &run.model_config,
        &candle_core::Device::Cpu,
        run.train.seed,
    )?;
    let learnt_code = model
        .generator()
        .is_some_and(|g| matches!(g.conditioning(), gan_core::engine::Conditioning::Code(_)));
    if !learnt_code {
        bail!("--digit picks a digit through a categorical code learnt without labels (InfoGAN's); {} is a {} run (cgan takes --label)", run_dir.display(), run.model)
    }
    let path = run_dir.join(eval::MAPPING_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} has no digit mapping yet: run `gan-cli eval --checkpoint {}` first",
            run_dir.display(),
            run_dir.display()
        )
    })?;
    let eval: gan_core::eval::metrics::CodeEval =
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not an evaluation of a categorical code",
                path.display()
            )
        })?;
    eval.category_of(digit as usize)
        .with_context(|| format!("no category of this run is mapped to digit {digit}"))
}

/// `--out`'s kind: a PNG grid or a safetensors tensor, refused otherwise.
fn output_kind(out: &Path) -> Result<&'static str> {
    match out.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "png" => Ok("png"),
        "safetensors" => Ok("safetensors"),
        _ => bail!(
            "--out must end in .png (a grid) or .safetensors (a tensor), got {}",
            out.display()
        ),
    }
}

/// Writes `images` (in [-1, 1]) as a grid of `cols` or as the tensor `images` in [0, 1].
fn write_images(out: &Path, images: &Tensor, cols: usize, model: &str) -> Result<()> {
    if output_kind(out)? == "png" {
        gan_core::engine::grid::save_grid(out, images, cols)
    } else {
        let unit = gan_core::engine::grid::to_unit(images)?.to_device(&candle_core::Device::Cpu)?;
        let tensors = HashMap::from([("images".to_string(), unit)]);
        let meta = HashMap::from([("model".to_string(), model.to_string())]);
        gan_core::engine::checkpoint::save_tensors(out, &tensors, &meta).map(|_| ())
    }
}

/// What `sample` does first either way: checks `--n` and `--out`, and rebuilds the run's
/// model (its weights are loaded once its capability is known to be there).
fn open_run_for_output(
    run_dir: &Path,
    n: usize,
    out: &Path,
    device: &str,
) -> Result<(candle_core::Device, RunConfig, Box<dyn gan_core::Model>)> {
    if n == 0 {
        bail!("--n must be at least 1")
    }
    output_kind(out)?;
    refuse_inside_checkpoints(run_dir, out)?;
    let device = gan_core::device::parse_device(device)?;
    let run = RunConfig::read(run_dir)?;
    let model = gan_models::build(&run.model, &run.model_config, &device, run.train.seed)?;
    Ok((device, run, model))
}

/// [`open_run_for_output`] for a run whose model has an encoder, its weights loaded.
fn open_encoder_run(
    run_dir: &Path,
    n: usize,
    out: &Path,
    device: &str,
) -> Result<(candle_core::Device, RunConfig, Box<dyn gan_core::Model>)> {
    let (device, run, model) = open_run_for_output(run_dir, n, out, device)?;
    if model.encoder().is_none() {
        bail!(
            "{} is a {} run, which has no encoder and decoder to take images through (ae, \
             vae and the encoder family have)",
            run_dir.display(),
            run.model
        )
    }
    gan_core::engine::load_weights(model.as_ref(), run_dir)?;
    Ok((device, run, model))
}

/// `sample --reconstruct --compare`: the first `n` test images in the top row, each run's
/// reconstructions of them in a row below, in the order given.
fn compare_reconstructions(
    runs: &[PathBuf],
    n: usize,
    out: &Path,
    data_dir: &Path,
    verify: bool,
    device: &str,
) -> Result<()> {
    if output_kind(out)? != "png" {
        bail!("--compare draws a grid: --out must end in .png")
    }
    let mut rows = Vec::new();
    for run_dir in runs {
        let (device, _, model) = open_encoder_run(run_dir, n, out, device)?;
        let encoder = model.encoder().context("checked by open_encoder_run")?;
        if rows.is_empty() {
            let test = load_split(data_dir, gan_data::SplitKind::Test, verify, &device)?;
            if n > test.len() {
                bail!("--n {n} is more than the {} test images", test.len())
            }
            rows.push(test.images.narrow(0, 0, n)?);
        }
        let x_hat = encoder.reconstruct(&rows[0])?;
        gan_core::engine::ensure_finite(&x_hat, "the reconstructions")?;
        rows.push(x_hat.to_device(&candle_core::Device::Cpu)?);
    }
    let rows: Vec<Tensor> = rows
        .iter()
        .map(|r| r.to_device(&candle_core::Device::Cpu))
        .collect::<candle_core::Result<_>>()?;
    gan_core::engine::grid::save_grid(out, &Tensor::cat(&rows, 0)?, n)?;
    eprintln!(
        "wrote {n} test images over their reconstructions by {} runs to {}",
        runs.len(),
        out.display()
    );
    Ok(())
}

/// What `sample` draws through a run's encoder and decoder.
#[derive(Clone, Copy)]
enum Through {
    /// The first `n` test images over their reconstructions.
    Reconstruct,
    /// `n` rows of latent interpolations between test images 2i and 2i+1.
    Interpolate,
}

/// Points of each latent interpolation, the two decoded ends included.
const INTERPOLATION_STEPS: usize = 8;

/// `sample --reconstruct` and `sample --interpolate`: test images through the run's En
/// and De.
fn through_encoder(
    what: Through,
    run_dir: &Path,
    n: usize,
    out: &Path,
    data_dir: &Path,
    verify: bool,
    device: &str,
) -> Result<()> {
    let (device, run, model) = open_encoder_run(run_dir, n, out, device)?;
    let encoder = model.encoder().context("checked by open_encoder_run")?;
    let test = load_split(data_dir, gan_data::SplitKind::Test, verify, &device)?;
    let needed = match what {
        Through::Reconstruct => n,
        Through::Interpolate => 2 * n,
    };
    if needed > test.len() {
        bail!(
            "--n {n} needs {needed} test images, more than the {} there are",
            test.len()
        )
    }
    let x = test.images.narrow(0, 0, needed)?;
    let (decoded, grid, cols, said) =
        match what {
            Through::Reconstruct => {
                let x_hat = encoder.reconstruct(&x)?;
                let grid = gan_core::engine::grid::interleave_rows(&x, &x_hat, 8)?;
                (
                    x_hat,
                    grid,
                    8.min(n),
                    "reconstructions of as many test images",
                )
            }
            Through::Interpolate => {
                let (_, c, h, w) = x.dims4()?;
                let pairs = x.reshape((n, 2, c, h, w))?;
                let (a, b) = (pairs.get_on_dim(1, 0)?, pairs.get_on_dim(1, 1)?);
                let path = encoder.interpolate(&a, &b, INTERPOLATION_STEPS)?;
                let rows = path.reshape((n, INTERPOLATION_STEPS, c, h, w))?;
                let grid = Tensor::cat(&[&a.unsqueeze(1)?, &rows, &b.unsqueeze(1)?], 1)?
                    .reshape((n * (INTERPOLATION_STEPS + 2), c, h, w))?;
                (
                    path,
                    grid,
                    INTERPOLATION_STEPS + 2,
                    "latent interpolations between pairs of test images",
                )
            }
        };
    gan_core::engine::ensure_finite(&decoded, "the decoded images")?;
    match output_kind(out)? {
        "png" => write_images(out, &grid, cols, &run.model)?,
        _ => write_images(out, &decoded, 8, &run.model)?,
    }
    eprintln!("wrote {n} {} {said} to {}", run.model, out.display());
    Ok(())
}

fn sample(
    run_dir: &Path,
    n: usize,
    out: &Path,
    label: Option<u32>,
    seed: u64,
    device: &str,
) -> Result<()> {
    let (_, run, model) = open_run_for_output(run_dir, n, out, device)?;
    let generator = model.generator().with_context(|| {
        format!(
            "{} is a {} run, which has no generator to sample from",
            run_dir.display(),
            run.model
        )
    })?;
    gan_core::engine::load_weights(model.as_ref(), run_dir)?;
    let mut rng = gan_core::prior::rng(seed, gan_core::prior::RngStream::Sample);
    let images = gan_core::fast::on_worker(|| {
        gan_core::fast::layers::inference(|| generator.generate(n, label, &mut rng))
    })?;
    gan_core::engine::ensure_finite(&images, "the generated images").with_context(|| {
        format!(
            "the weights of {} give no usable images: the run diverged",
            run_dir.display()
        )
    })?;
    write_images(out, &images, (n as f64).sqrt().ceil() as usize, &run.model)?;
    eprintln!("wrote {n} {} images to {}", run.model, out.display());
    Ok(())
}

/// Refuses an output file inside a run's checkpoints folder (any run's): writing there
/// would overwrite the weights the run is loaded from.
fn refuse_inside_checkpoints(run_dir: &Path, out: &Path) -> Result<()> {
    let parent = match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(parent) = parent.canonicalize() else {
        return Ok(()); // a folder that does not exist yet holds no checkpoint
    };
    let own = run_dir.join("checkpoints").canonicalize().ok();
    let inside_own = own.as_ref().is_some_and(|c| parent.starts_with(c));
    let inside_any = parent.ancestors().any(|a| {
        a.file_name().is_some_and(|n| n == "checkpoints") && a.join("latest.json").exists()
    });
    if inside_own || inside_any {
        bail!(
            "--out {} is inside a run's checkpoints folder: writing there could overwrite the \
             weights the run is loaded from; choose another path",
            out.display()
        )
    }
    Ok(())
}

#[cfg(test)]
mod command_line {
    /// No subcommand has two arguments of one name or one `--long`. clap checks that only
    /// in debug builds: in release ones a model option named like a training setting
    /// (triplegan's `--ema` beside the engine's average, first spelt `--ema` too)
    /// silently merged the two.
    #[test]
    fn no_two_arguments_share_a_name() {
        for sub in super::command().get_subcommands() {
            let mut ids = std::collections::HashSet::new();
            let mut longs = std::collections::HashSet::new();
            for arg in sub.get_arguments() {
                let id = arg.get_id().to_string();
                assert!(
                    ids.insert(id.clone()),
                    "{}: two arguments {id}",
                    sub.get_name()
                );
                if let Some(long) = arg.get_long() {
                    assert!(longs.insert(long), "{}: two --{long}", sub.get_name());
                }
            }
        }
    }
}
