//! `gan-cli`: train, sample and evaluate the GAN family of gan-rs on MNIST.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use gan_core::loss::GeneratorLoss;
use gan_core::{AdamConfig, GanModel, RunConfig, TrainConfig, Trainer};
use gan_models::{CganConfig, DcganConfig, GanConfig, InfoganConfig};

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
    /// The original GAN of Goodfellow et al. (2014): MLPs on flattened MNIST.
    Gan {
        #[command(flatten)]
        train: TrainArgs,
        /// Generator loss: saturating (the minimax game) or non-saturating.
        #[arg(long, default_value = "non-saturating")]
        g_loss: GeneratorLoss,
        /// Width of the noise vector.
        #[arg(long, default_value_t = 100)]
        z_dim: usize,
        /// Hidden widths of G, comma-separated (D mirrors them).
        #[arg(long, value_delimiter = ',', default_value = "256,512,1024")]
        hidden: Vec<usize>,
    },
    /// DCGAN: strided and transposed convolutions with batch norm.
    Dcgan {
        #[command(flatten)]
        train: TrainArgs,
        /// Generator loss: saturating or non-saturating.
        #[arg(long, default_value = "non-saturating")]
        g_loss: GeneratorLoss,
        /// Width of the noise vector.
        #[arg(long, default_value_t = 100)]
        z_dim: usize,
        /// Channels of G's 14x14 layer (its 7x7 layer has twice as many).
        #[arg(long, default_value_t = 32)]
        g_width: usize,
        /// Channels of D's 14x14 layer (its 7x7 layer has twice as many).
        #[arg(long, default_value_t = 32)]
        d_width: usize,
    },
    /// The conditional GAN: the digit label is given to G and D.
    Cgan {
        #[command(flatten)]
        train: TrainArgs,
        /// Generator loss: saturating or non-saturating.
        #[arg(long, default_value = "non-saturating")]
        g_loss: GeneratorLoss,
        /// Width of the noise vector.
        #[arg(long, default_value_t = 100)]
        z_dim: usize,
        /// Hidden widths of G, comma-separated (D mirrors them).
        #[arg(long, value_delimiter = ',', default_value = "256,512,1024")]
        hidden: Vec<usize>,
    },
    /// InfoGAN: G(z, c) with a categorical and continuous codes, Q(c|x) on D's trunk.
    Infogan {
        #[command(flatten)]
        train: TrainArgs,
        /// Generator loss: saturating or non-saturating.
        #[arg(long, default_value = "non-saturating")]
        g_loss: GeneratorLoss,
        /// Width of the noise vector.
        #[arg(long, default_value_t = 62)]
        z_dim: usize,
        /// Classes of each categorical code, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10")]
        categorical: Vec<usize>,
        /// Number of continuous codes.
        #[arg(long, default_value_t = 2)]
        continuous: usize,
        /// Continuous codes ~ U(-range, range).
        #[arg(long, default_value_t = 1.0)]
        continuous_range: f32,
        /// Weight of the mutual-information term (0: a regular GAN).
        #[arg(long, default_value_t = 1.0)]
        lambda: f64,
        /// Weight of the continuous codes' Gaussian NLL inside it.
        #[arg(long, default_value_t = 0.1)]
        lambda_cont: f64,
        /// Q predicts means only (unit variance) for the continuous codes.
        #[arg(long)]
        fixed_std: bool,
        /// D's step also descends lambda * L_I, so the trunk D shares with Q learns the
        /// codes too (as the paper's code does).
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        info_in_d: bool,
        /// Learning rate of G and Q (D uses --lr).
        #[arg(long, default_value_t = 1e-3)]
        lr_g: f64,
    },
    /// Scores a run with the judge: MNIST-FID (and the train-vs-test floor), class
    /// coverage, the Inception-Score analogue, conditional accuracy for models that take
    /// a label, and InfoGAN's c1 accuracy; writes RUN_DIR/eval.json and prints it.
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
    },
    /// Trains the judge of `eval`: a LeNet-style classifier of the MNIST training set,
    /// scored on the test set, saved as safetensors with its SHA-256.
    TrainJudge {
        /// Where to save it (a card `<out>.json` is written beside it).
        #[arg(long, default_value = gan_models::judge::DEFAULT_JUDGE_PATH)]
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
    /// Passes over the 60,000 training images [default: 5].
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
}

/// See `gan_core::alloc`: large buffers are reused instead of faulted in every step.
#[global_allocator]
static ALLOC: gan_core::alloc::Allocator = gan_core::alloc::Allocator;

fn main() {
    gan_core::alloc::keep_freed_memory();
    gan_core::alloc::one_thread_pool();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Gan {
            train,
            g_loss,
            z_dim,
            hidden,
        } => {
            let cfg = GanConfig {
                z_dim,
                hidden,
                g_loss,
            };
            train_model("gan", serde_json::to_value(cfg)?, &train, &[])
        }
        Command::Dcgan {
            train,
            g_loss,
            z_dim,
            g_width,
            d_width,
        } => {
            let cfg = DcganConfig {
                z_dim,
                g_width,
                d_width,
                g_loss,
            };
            train_model("dcgan", serde_json::to_value(cfg)?, &train, &[])
        }
        Command::Cgan {
            train,
            g_loss,
            z_dim,
            hidden,
        } => {
            let cfg = CganConfig {
                z_dim,
                hidden,
                g_loss,
            };
            train_model("cgan", serde_json::to_value(cfg)?, &train, &[])
        }
        Command::Infogan {
            train,
            g_loss,
            z_dim,
            categorical,
            continuous,
            continuous_range,
            lambda,
            lambda_cont,
            fixed_std,
            info_in_d,
            lr_g,
        } => {
            let cfg = InfoganConfig {
                z_dim,
                categorical,
                continuous,
                continuous_range,
                lambda,
                lambda_cont,
                fixed_std,
                g_loss,
                info_in_d,
            };
            train_model(
                "infogan",
                serde_json::to_value(cfg)?,
                &train,
                &[("g", lr_g), ("q", lr_g)],
            )
        }
        Command::Sample {
            checkpoint,
            n,
            out,
            label,
            digit,
            seed,
            device,
        } => {
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
        } => eval::eval(&eval::EvalArgs {
            run_dir: checkpoint,
            n,
            seed,
            judge,
            data_dir,
            verify: !no_verify,
            device,
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
            training: gan_models::JudgeTraining {
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
    }
}

fn train_model(
    kind: &str,
    model_config: serde_json::Value,
    args: &TrainArgs,
    network_lr: &[(&str, f64)],
) -> Result<()> {
    let device = gan_core::device::parse_device(&args.device)?;
    let fresh = TrainConfig {
        epochs: args.epochs.unwrap_or(5),
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
    };
    fresh.validate()?;
    let data = load_data(&args.data_dir, !args.no_verify, &device)?;
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
                ..saved.train.clone()
            };
            let model = gan_models::build(kind, &saved.model_config, &device, cfg.seed)?;
            let mut trainer = Trainer::resume(model.as_ref(), cfg, run_dir)?;
            eprintln!("resuming {} at step {}", run_dir.display(), trainer.step());
            trainer.fit(&data.images, &data.labels)?;
            eprintln!("run folder: {}", run_dir.display());
        }
        None => {
            let model = gan_models::build(kind, &model_config, &device, fresh.seed)?;
            let run_dir = match &args.out {
                Some(p) => p.clone(),
                None => free_run_dir(kind, fresh.seed),
            };
            eprintln!("training {kind} into {}", run_dir.display());
            Trainer::new(model.as_ref(), fresh, &run_dir)?.fit(&data.images, &data.labels)?;
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

/// The training split, fetching MNIST first when the folder lacks it.
fn load_data(dir: &Path, verify: bool, device: &candle_core::Device) -> Result<gan_data::Split> {
    load_split(dir, gan_data::SplitKind::Train, verify, device)
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
    if run.model != "infogan" {
        bail!("--digit picks a digit through InfoGAN's learned mapping; {} is a {} run (cgan takes --label)", run_dir.display(), run.model)
    }
    let path = run_dir.join(eval::MAPPING_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} has no digit mapping yet: run `gan-cli eval --checkpoint {}` first",
            run_dir.display(),
            run_dir.display()
        )
    })?;
    let eval: gan_models::infogan::CodeEval = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an InfoGAN evaluation", path.display()))?;
    eval.category_of(digit as usize)
        .with_context(|| format!("no category of this run is mapped to digit {digit}"))
}

fn sample(
    run_dir: &Path,
    n: usize,
    out: &Path,
    label: Option<u32>,
    seed: u64,
    device: &str,
) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1")
    }
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "png" | "safetensors") {
        bail!(
            "--out must end in .png (a grid) or .safetensors (a tensor), got {}",
            out.display()
        )
    }
    let device = gan_core::device::parse_device(device)?;
    let run = RunConfig::read(run_dir)?;
    let model: Box<dyn GanModel> =
        gan_models::build(&run.model, &run.model_config, &device, run.train.seed)?;
    gan_core::engine::load_weights(model.as_ref(), run_dir)?;
    let images = model.generate(n, label, &mut gan_core::prior::rng(seed, 3))?;
    if ext == "png" {
        let cols = (n as f64).sqrt().ceil() as usize;
        gan_core::grid::save_grid(out, &images, cols)?;
    } else {
        let unit = gan_core::grid::to_unit(&images)?.to_device(&candle_core::Device::Cpu)?;
        let tensors = HashMap::from([("images".to_string(), unit)]);
        let meta = HashMap::from([("model".to_string(), run.model.clone())]);
        gan_core::checkpoint::save_tensors(out, &tensors, &meta)?;
    }
    eprintln!("wrote {n} {} images to {}", run.model, out.display());
    Ok(())
}
