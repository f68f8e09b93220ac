//! `cargo xtask`: project chores that are not part of the library or the CLI.
//!
//! - `fetch-mnist [--from DIR] [--dir DIR]`: put verified MNIST in the data folder;
//! - `run --device cpu|cuda|metal -- ARGS`: run gan-cli built with that device's feature;
//! - `build --device ...`: only build it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "gan-rs project chores")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Download MNIST from the public mirrors, or import a local copy, into the data folder.
    FetchMnist {
        /// Import the four IDX files (raw or .gz) from this folder instead of downloading.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The data folder [default: assets/data/mnist in the workspace].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run gan-cli (release) with a device's candle feature: `cargo xtask run --device cuda -- infogan --device cuda`.
    Run {
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
        /// Arguments for gan-cli.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build gan-cli (release) with a device's candle feature.
    Build {
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
}

impl DeviceKind {
    /// The gan-cli feature that turns on candle's backend for this device.
    fn feature(self) -> Option<&'static str> {
        match self {
            DeviceKind::Cpu => None,
            DeviceKind::Cuda => Some("cuda"),
            DeviceKind::Metal => Some("metal"),
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(verb: &str, device: DeviceKind, args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args([verb, "--release", "-p", "gan-cli"]);
    if let Some(f) = device.feature() {
        cmd.args(["--features", f]);
    }
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::FetchMnist { from, dir } => {
            let dir = dir.unwrap_or_else(|| workspace_root().join(gan_data::DEFAULT_DATA_DIR));
            let report = match from {
                Some(src) => {
                    if !src.is_dir() {
                        bail!("--from {}: no such folder", src.display())
                    }
                    gan_data::import_mnist(&src, &dir)?
                }
                None => gan_data::ensure_mnist(&dir, gan_data::MIRRORS)?,
            };
            println!("{report}");
        }
        Task::Run { device, args } => cargo("run", device, &args)?,
        Task::Build { device } => cargo("build", device, &[])?,
    }
    Ok(())
}
