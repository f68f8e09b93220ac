//! `cargo xtask`: project chores that are not part of the library or the CLI.
//!
//! - `fetch-mnist [--from DIR] [--dir DIR]`: put verified MNIST in the data folder;
//! - `run --device cpu|cuda|metal -- ARGS`: run gan-cli built with that device's feature;
//! - `build --device ...`: only build it.
//!
//! The device subcommands exist because candle's GPU backends are cargo features: the
//! feature has to be chosen at build time, and remembering which one is xtask's job.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "gan-rs project chores"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Download MNIST from the public mirrors (only what is missing or corrupt), or import
    /// a local copy, into the data folder; every file is checked against its SHA-256.
    FetchMnist {
        /// Import the four IDX files (raw or .gz) from this folder instead of downloading.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// The data folder [default: assets/data/mnist in the workspace].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run gan-cli (release) with a device's candle feature:
    /// `cargo xtask run --device cuda -- dcgan --device cuda`.
    Run {
        /// The device whose backend gan-cli is built with.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
        /// Arguments for gan-cli, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build gan-cli (release) with a device's candle feature.
    Build {
        /// The device whose backend gan-cli is built with.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
    },
    // A `bench` subcommand (timings of the training step per device) goes here later.
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
}

impl DeviceKind {
    /// The gan-cli feature that turns on candle's backend for this device; the CPU
    /// backend is always there.
    fn feature(self) -> Option<&'static str> {
        match self {
            DeviceKind::Cpu => None,
            DeviceKind::Cuda => Some("cuda"),
            DeviceKind::Metal => Some("metal"),
        }
    }
}

/// The workspace root: xtask's own folder's parent, wherever cargo is run from.
fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest folder has no parent: it must live in the workspace")
}

fn fetch_mnist(from: Option<PathBuf>, dir: Option<PathBuf>) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => workspace_root()?.join(gan_data::DEFAULT_DATA_DIR),
    };
    let report = match from {
        Some(src) => gan_data::import_mnist(&src, &dir)
            .with_context(|| format!("importing MNIST from {}", src.display()))?,
        None => gan_data::ensure_mnist(&dir, &gan_data::mirrors()).with_context(|| {
            format!(
                "fetching MNIST into {}; offline? import a local copy with \
                 `cargo xtask fetch-mnist --from DIR`",
                dir.display()
            )
        })?,
    };
    println!("{report}");
    Ok(())
}

/// `cargo <verb> --release -p gan-cli [--features F] [-- ARGS]` in the workspace root,
/// with this terminal; returns its exit code.
fn cargo(verb: &str, device: DeviceKind, args: &[String]) -> Result<ExitCode> {
    // The cargo that runs xtask, so toolchain overrides carry over.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root()?)
        .args([verb, "--release", "-p", "gan-cli"]);
    if let Some(f) = device.feature() {
        cmd.args(["--features", f]);
    }
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", cargo.to_string_lossy()))?;
    match status.code() {
        Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        None => bail!("cargo {verb} was killed by a signal ({status})"),
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::FetchMnist { from, dir } => fetch_mnist(from, dir).map(|()| ExitCode::SUCCESS),
        Task::Run { device, args } => cargo("run", device, &args),
        Task::Build { device } => cargo("build", device, &[]),
    };
    // The whole chain of causes, without the backtrace `RUST_BACKTRACE` would add: the
    // messages already say which file and what is wrong.
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
