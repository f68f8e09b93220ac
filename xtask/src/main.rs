//! `cargo xtask`: project chores that are not part of the library or the CLI.
//!
//! - `fetch-mnist [--from DIR] [--dir DIR]`: put verified MNIST in the data folder;
//! - `fetch-uci [--from FILE] [--to FILE]`: the same for the UCI digits file;
//! - `run --device cpu|cuda|metal -- ARGS`: run gan-cli built with that device's feature;
//! - `build --device ...`: only build it;
//! - `bench [--model M] [--vs-pytorch] [--device D] [--batch B] [--rounds N]`: training and
//!   generation throughput of each model, beside the PyTorch twin in `bench/` with
//!   `--vs-pytorch`; N rounds and their medians.
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
    /// Download scikit-learn's copy of the UCI digits (digits.csv.gz) from the public
    /// mirrors unless a verified copy is there, or import a local copy; checked against
    /// its SHA-256.
    FetchUci {
        /// Import this file (raw or .gz) instead of downloading.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Where the file goes [default: assets/data/uci-digits/digits.csv.gz in the
        /// workspace, gan-cli's --uci-digits default].
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
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
    /// Training and generation throughput (images/s) of each model at its default batch
    /// size, with machine, threads, candle version and commit; `--vs-pytorch` runs the
    /// same networks and steps in PyTorch (bench/bench.py, in the virtualenv bench/.venv,
    /// created on first use) and prints the ratio.
    Bench {
        /// A model of the registry (`gan-cli --help` lists them) or all.
        #[arg(long, default_value = "all")]
        model: String,
        /// Also run the PyTorch implementation and compare.
        #[arg(long)]
        vs_pytorch: bool,
        /// Device to train on (cuda/metal build the matching candle backend).
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
        /// Timed steps per model (after warm-up); the median step is reported.
        #[arg(long, default_value_t = 30)]
        steps: usize,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Rounds of the whole table. Each model's Rust and PyTorch runs follow one another
        /// within a round, so that a slow spell of the machine falls on both; with more
        /// than one, a last table gives each figure's median and each ratio's median and
        /// range over the rounds.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
    },
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

/// Where the CUDA compiler may be, in the order `cudarc`'s build looks: `NVCC`, then
/// `CUDA_PATH`, `CUDA_HOME`, `CUDA_ROOT`, `/usr/local/cuda`, then `PATH`.
fn nvcc_candidates(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = var("NVCC").map(PathBuf::from).into_iter().collect();
    for root in ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"] {
        out.extend(var(root).map(|r| PathBuf::from(r).join("bin").join("nvcc")));
    }
    out.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    if let Some(path) = var("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    out
}

/// Refuses, in one line and before minutes of compiling, a device whose toolkit this
/// machine lacks (the CUDA build otherwise ends in a panic of cudarc's build script).
fn check_toolchain(
    device: DeviceKind,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    macos: bool,
) -> Result<()> {
    match device {
        DeviceKind::Cpu => Ok(()),
        DeviceKind::Cuda => {
            if nvcc_candidates(var).iter().any(|p| p.is_file()) {
                Ok(())
            } else {
                anyhow::bail!(
                    "--device cuda needs the CUDA toolkit, and no nvcc was found (NVCC, \
                     CUDA_PATH, CUDA_HOME, /usr/local/cuda, PATH): install the CUDA toolkit \
                     (https://developer.nvidia.com/cuda-downloads) or point CUDA_PATH at it"
                )
            }
        }
        DeviceKind::Metal if !macos => {
            anyhow::bail!("--device metal builds on macOS only (Apple's Metal framework)")
        }
        DeviceKind::Metal => {
            let found = Command::new("xcrun")
                .args(["-f", "metal"])
                .output()
                .is_ok_and(|o| o.status.success());
            if found {
                Ok(())
            } else {
                anyhow::bail!(
                    "--device metal needs Xcode's Metal compiler and `xcrun -f metal` found \
                     none: install Xcode or its command line tools (`xcode-select --install`)"
                )
            }
        }
    }
}

/// [`check_toolchain`] on this machine.
fn toolchain_ok(device: DeviceKind) -> Result<()> {
    check_toolchain(device, |k| std::env::var_os(k), cfg!(target_os = "macos"))
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

fn fetch_uci(from: Option<PathBuf>, to: Option<PathBuf>) -> Result<()> {
    let to = match to {
        Some(p) => p,
        None => workspace_root()?.join(gan_data::DEFAULT_UCI_DIGITS),
    };
    let verified = || gan_data::read_uci_digits(&to, gan_data::Verify::Canonical).is_ok();
    if to.exists() && verified() {
        println!("{}: already present, verified", to.display());
        return Ok(());
    }
    match from {
        Some(src) => {
            gan_data::import_uci_digits(&src, &to).with_context(|| {
                format!(
                    "importing the UCI digits from {} to {}",
                    src.display(),
                    to.display()
                )
            })?;
            println!(
                "{}: imported from {}, verified",
                to.display(),
                src.display()
            );
        }
        None => {
            // A corrupt copy there stays until its replacement is verified.
            let url =
                gan_data::download_file_to(&to, &gan_data::uci_mirrors(), &gan_data::uci_spec())
                    .with_context(|| {
                        format!(
                            "fetching the UCI digits to {}; offline? import a local copy with \
                         `cargo xtask fetch-uci --from FILE`",
                            to.display()
                        )
                    })?;
            println!("{}: downloaded from {url}, verified", to.display());
        }
    }
    Ok(())
}

/// `cargo <verb> --release -p gan-cli [--features F] [-- ARGS]` in the workspace root,
/// with this terminal; returns its exit code.
fn cargo(verb: &str, device: DeviceKind, args: &[String]) -> Result<ExitCode> {
    toolchain_ok(device)?;
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

/// One model's figures as the benchmark scripts print them (one JSON object per line).
fn figures(stdout: &[u8]) -> Result<Vec<serde_json::Value>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad benchmark line {l:?}")))
        .collect()
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn candle_version(root: &Path) -> String {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"candle-core\"" {
            if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = ")) {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "unknown".into()
}

fn git_commit(root: &Path) -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = out(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}+changes")
    } else {
        head
    }
}

/// The virtualenv's python, created and filled from bench/requirements.txt when missing.
fn pytorch_python(root: &Path) -> Result<PathBuf> {
    let venv = root.join("bench/.venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(python);
    }
    let setup = root.join("bench/setup_venv.sh");
    eprintln!(
        "setting up PyTorch in {} ({})",
        venv.display(),
        setup.display()
    );
    let status = Command::new("bash")
        .arg(&setup)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {}", setup.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}): see its output above",
            setup.display()
        )
    }
    Ok(python)
}

fn bench(
    model: &str,
    vs_pytorch: bool,
    device: DeviceKind,
    steps: usize,
    batch: usize,
    rounds: usize,
) -> Result<()> {
    let root = workspace_root()?;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let device_name = match device {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Cuda => "cuda",
        DeviceKind::Metal => "metal",
    };
    println!(
        "machine: {} ({} logical CPUs), threads {threads}, device {device_name}, candle {}, commit {}",
        cpu_name(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        candle_version(&root),
        git_commit(&root)
    );
    toolchain_ok(device)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rust = |args: &[&str]| -> Result<Vec<u8>> {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args(["bench", "-q", "-p", "gan-models", "--bench", "throughput"]);
        if let Some(f) = device.feature() {
            cmd.args(["--features", f]);
        }
        cmd.arg("--").args(args);
        cmd.stderr(std::process::Stdio::inherit());
        let out = cmd.output().context("cannot run cargo bench")?;
        if !out.status.success() {
            bail!("the Rust benchmark failed ({})", out.status)
        }
        Ok(out.stdout)
    };
    let models: Vec<String> = if model == "all" {
        String::from_utf8_lossy(&rust(&["--list"])?)
            .lines()
            .map(str::to_owned)
            .collect()
    } else {
        vec![model.to_string()]
    };
    let python = if vs_pytorch {
        Some(pytorch_python(&root)?)
    } else {
        None
    };
    let (steps, batch) = (steps.to_string(), batch.to_string());
    let mut all = Vec::new();
    for round in 1..=rounds {
        let mut figures_of = Figures::default();
        for model in &models {
            let args = ["--model", model, "--steps", &steps, "--batch", &batch];
            let out = rust(&[&args[..], &["--device", device_name, "--json"]].concat())?;
            figures_of.ours.extend(figures(&out)?);
            // Two PyTorch steps: the idiomatic one (D's weight gradients computed in the
            // G step and thrown away) and the lean one (D frozen there, as gan-rs does);
            // the ratio is taken against the faster of the two.
            if let Some(python) = &python {
                let torch_device = if device_name == "cuda" { "cuda" } else { "cpu" };
                let run = |extra: &[&str]| -> Result<Vec<serde_json::Value>> {
                    let out = Command::new(python)
                        .current_dir(&root)
                        .arg("bench/bench.py")
                        .args(args)
                        .args(["--threads", &threads.to_string(), "--json"])
                        // The same device as the Rust side (metal has no PyTorch twin: cpu).
                        .args(["--device", torch_device])
                        .args(extra)
                        .stderr(std::process::Stdio::inherit())
                        .output()
                        .context("cannot run bench/bench.py")?;
                    if !out.status.success() {
                        bail!("bench/bench.py failed ({})", out.status)
                    }
                    figures(&out.stdout)
                };
                figures_of.idiomatic.extend(run(&[])?);
                figures_of.lean.extend(run(&["--freeze-d"])?);
            }
        }
        if rounds > 1 {
            println!("\nround {round} of {rounds}:");
        }
        println!("{}", table(&figures_of, vs_pytorch));
        all.push(figures_of);
    }
    if rounds > 1 {
        println!(
            "\nmedian of the {rounds} rounds (each ratio: median, lowest-highest, of the \
             rounds' own ratios):"
        );
        println!("{}", summary(&all, vs_pytorch));
    }
    let mut peaks: Vec<String> = all
        .iter()
        .flat_map(|f| &f.ours)
        .filter_map(|o| o.get("peak_gflops").and_then(|p| p.as_f64()))
        .map(|p| format!("{p:.1}"))
        .collect();
    peaks.dedup();
    if !peaks.is_empty() {
        println!(
            "FMA peak measured as the Rust benchmark started (GFLOP/s, {threads} threads): {}; the \
             ceiling is the ratio gan-rs would reach with its matrix products at that rate \
             and nothing else taking time",
            peaks.join(", ")
        );
    }
    Ok(())
}

/// One round of the table: the Rust figures and PyTorch's idiomatic and lean steps, a
/// JSON object a model each.
#[derive(Default)]
struct Figures {
    ours: Vec<serde_json::Value>,
    idiomatic: Vec<serde_json::Value>,
    lean: Vec<serde_json::Value>,
}

fn num(v: &serde_json::Value, k: &str) -> Option<f64> {
    v.get(k).and_then(|x| x.as_f64())
}

fn model_of(v: &serde_json::Value) -> Option<String> {
    v.get("model").and_then(|m| m.as_str()).map(str::to_owned)
}

/// A model's row of one round: (our train, our generate, PyTorch's faster train,
/// PyTorch's generate), images per second; PyTorch's NaN where it has no figure.
fn row_of(f: &Figures, model: &str) -> Option<[f64; 4]> {
    let find = |set: &[serde_json::Value]| {
        set.iter()
            .find(|t| model_of(t).as_deref() == Some(model))
            .cloned()
    };
    let o = find(&f.ours)?;
    let get = |v: &Option<serde_json::Value>, k: &str| {
        v.as_ref().and_then(|v| num(v, k)).unwrap_or(f64::NAN)
    };
    let (i, l) = (find(&f.idiomatic), find(&f.lean));
    Some([
        get(&Some(o.clone()), "train_img_per_s"),
        get(&Some(o), "gen_img_per_s"),
        get(&i, "train_img_per_s").max(get(&l, "train_img_per_s")),
        get(&i, "gen_img_per_s").max(get(&l, "gen_img_per_s")),
    ])
}

/// A figure to one decimal, "-" where there is none (a model that does not generate).
fn fig(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

/// A ratio, "-" where there is none.
fn times(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "-".into()
    }
}

/// The median of `v` (NaN for none).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The table over rounds: each figure's median, each ratio's median and range.
fn summary(rounds: &[Figures], vs_pytorch: bool) -> String {
    let Some(first) = rounds.first() else {
        return String::new();
    };
    let mut lines = vec![
        format!(
            "| model | batch | gan-rs train img/s | gan-rs generate img/s |{}",
            if vs_pytorch {
                " PyTorch train img/s (faster step) | PyTorch generate img/s | train ratio | \
                 generate ratio |"
            } else {
                ""
            }
        ),
        format!(
            "|---|---|---|---|{}",
            if vs_pytorch { "---|---|---|---|" } else { "" }
        ),
    ];
    let ratio = |v: &mut Vec<f64>| {
        if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
            return "-".to_string();
        }
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        format!("{:.2}x ({lo:.2}-{hi:.2})", median(v))
    };
    for o in &first.ours {
        let Some(model) = model_of(o) else { continue };
        let rows: Vec<[f64; 4]> = rounds.iter().filter_map(|f| row_of(f, &model)).collect();
        let col = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<f64>>();
        let mut row = format!(
            "| {model} | {} | {} | {} |",
            o.get("batch").and_then(|b| b.as_u64()).unwrap_or(0),
            fig(median(&mut col(0))),
            fig(median(&mut col(1))),
        );
        if vs_pytorch {
            let mut train: Vec<f64> = rows.iter().map(|r| r[0] / r[2]).collect();
            let mut generate: Vec<f64> = rows.iter().map(|r| r[1] / r[3]).collect();
            row += &format!(
                " {} | {} | {} | {} |",
                fig(median(&mut col(2))),
                fig(median(&mut col(3))),
                ratio(&mut train),
                ratio(&mut generate),
            );
        }
        lines.push(row);
    }
    lines.join("\n")
}

/// The markdown table of the Rust figures, beside PyTorch's idiomatic and lean steps.
fn table(f: &Figures, vs_pytorch: bool) -> String {
    let (ours, idiomatic, lean) = (&f.ours, &f.idiomatic, &f.lean);
    let model = model_of;
    let mut lines = vec![format!(
        "| model | batch | gan-rs train img/s | gan-rs ms/step | gan-rs generate img/s |{}",
        if vs_pytorch {
            " PyTorch train img/s (idiomatic / lean) | PyTorch generate img/s | train ratio | \
             generate ratio | ceiling train / generate |"
        } else {
            ""
        }
    )];
    lines.push(format!(
        "|---|---|---|---|---|{}",
        if vs_pytorch {
            "---|---|---|---|---|"
        } else {
            ""
        }
    ));
    for o in ours {
        let name = model(o);
        let train = num(o, "train_img_per_s").unwrap_or(f64::NAN);
        let generate = num(o, "gen_img_per_s").unwrap_or(f64::NAN);
        let mut row = format!(
            "| {} | {} | {} | {} | {} |",
            name.as_deref().unwrap_or("?"),
            o.get("batch").and_then(|b| b.as_u64()).unwrap_or(0),
            fig(train),
            fig(num(o, "train_ms_per_step").unwrap_or(f64::NAN)),
            fig(generate),
        );
        if vs_pytorch {
            let find = |set: &[serde_json::Value]| set.iter().find(|t| model(t) == name).cloned();
            match (find(idiomatic), find(lean)) {
                (Some(i), Some(l)) => {
                    let (ti, tl) = (
                        num(&i, "train_img_per_s").unwrap_or(f64::NAN),
                        num(&l, "train_img_per_s").unwrap_or(f64::NAN),
                    );
                    // Generation is the same code in both runs: the faster figure.
                    let g = num(&i, "gen_img_per_s")
                        .unwrap_or(f64::NAN)
                        .max(num(&l, "gen_img_per_s").unwrap_or(f64::NAN));
                    // The best ratio any implementation could reach here: its products
                    // (the same arithmetic) at the machine's FMA peak and nothing else
                    // taking time, against PyTorch's measured time.
                    let peak = num(o, "peak_gflops").unwrap_or(f64::NAN);
                    let images = train * num(o, "train_ms_per_step").unwrap_or(f64::NAN) / 1e3;
                    let batch = o.get("batch").and_then(|b| b.as_f64()).unwrap_or(f64::NAN);
                    let ceiling = |gflop: Option<f64>, images: f64, theirs: f64| {
                        let c = peak * images / (gflop.unwrap_or(f64::NAN) * theirs);
                        if c.is_finite() {
                            format!("{c:.1}x")
                        } else {
                            "-".into()
                        }
                    };
                    row += &format!(
                        " {} / {} | {} | {} | {} | {} / {} |",
                        fig(ti),
                        fig(tl),
                        fig(g),
                        times(train / ti.max(tl)),
                        times(generate / g),
                        ceiling(num(o, "train_gflop_per_step"), images, ti.max(tl)),
                        ceiling(num(o, "gen_gflop_per_batch"), batch, g),
                    );
                }
                _ => row += " - | - | - | - | - |",
            }
        }
        lines.push(row);
    }
    lines.join("\n")
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::FetchMnist { from, dir } => fetch_mnist(from, dir).map(|()| ExitCode::SUCCESS),
        Task::FetchUci { from, to } => fetch_uci(from, to).map(|()| ExitCode::SUCCESS),
        Task::Run { device, args } => cargo("run", device, &args),
        Task::Build { device } => cargo("build", device, &[]),
        Task::Bench {
            model,
            vs_pytorch,
            device,
            steps,
            batch,
            rounds,
        } => bench(&model, vs_pytorch, device, steps, batch, rounds as usize)
            .map(|()| ExitCode::SUCCESS),
    };
    // The whole chain of causes, without the backtrace `RUST_BACKTRACE` would add: the
    // messages already say which file and what is wrong.
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The train ratio is against the faster PyTorch step, whichever it is.
    #[test]
    fn the_table_compares_with_the_faster_pytorch_step() {
        let v = |model: &str, train: f64, generate: f64| {
            serde_json::json!({"model": model, "batch": 64, "train_img_per_s": train,
                "train_ms_per_step": 64e3 / train, "gen_img_per_s": generate})
        };
        let ours = [v("dcgan", 1000.0, 9000.0), v("gan", 600.0, 100.0)];
        let idiomatic = [v("dcgan", 700.0, 7500.0), v("gan", 500.0, 200.0)];
        let lean = [v("dcgan", 800.0, 7400.0), v("gan", 400.0, 190.0)];
        let of = |ours: &[serde_json::Value], idiomatic: &[_], lean: &[_]| Figures {
            ours: ours.to_vec(),
            idiomatic: idiomatic.to_vec(),
            lean: lean.to_vec(),
        };
        let t = table(&of(&ours, &idiomatic, &lean), true);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 4, "{t}");
        assert!(
            rows[2].contains("700.0 / 800.0") && rows[2].contains("| 1.25x | 1.20x |"),
            "{t}"
        );
        assert!(rows[3].contains("| 1.20x | 0.50x |"), "{t}");
        // The ceiling: 1 GFLOP a step of 64 images at a 100 GFLOP/s peak is 6,400 img/s
        // at best, 8x PyTorch's faster 800; 0.1 GFLOP a generated batch, 64,000 against
        // 7,500. Without the counts, none.
        assert!(rows[3].ends_with("| - / - |"), "{t}");
        let mut counted = ours.clone();
        counted[0]["peak_gflops"] = 100.0.into();
        counted[0]["train_gflop_per_step"] = 1.0.into();
        counted[0]["gen_gflop_per_batch"] = 0.1.into();
        let t = table(&of(&counted, &idiomatic, &lean), true);
        assert!(
            t.lines().nth(2).unwrap().ends_with("| 8.0x / 8.5x |"),
            "{t}"
        );
        // Without PyTorch, the Rust columns alone.
        assert!(!table(&of(&ours, &[], &[]), false).contains("ratio"));
    }

    /// Over rounds: each figure's median, and each ratio's median and range taken from
    /// the rounds' own ratios (not the ratio of the medians).
    #[test]
    fn the_summary_gives_medians_and_the_range_of_the_rounds_ratios() {
        let v = |train: f64, generate: f64| {
            serde_json::json!({"model": "gan", "batch": 256, "train_img_per_s": train,
                "gen_img_per_s": generate})
        };
        let round = |ours: f64, idiomatic: f64, lean: f64| Figures {
            ours: vec![v(ours, 300.0)],
            idiomatic: vec![v(idiomatic, 100.0)],
            lean: vec![v(lean, 150.0)],
        };
        // Train ratios 1.5 (600 / 400), 2.0 (500 / 250) and 1.0 (300 / 300).
        let rounds = [
            round(600.0, 400.0, 200.0),
            round(500.0, 200.0, 250.0),
            round(300.0, 100.0, 300.0),
        ];
        let t = summary(&rounds, true);
        let row = t.lines().nth(2).unwrap();
        assert_eq!(
            row,
            "| gan | 256 | 500.0 | 300.0 | 300.0 | 150.0 | 1.50x (1.00-2.00) | 2.00x (2.00-2.00) |",
            "{t}"
        );
        // An even count: the mean of the middle two.
        let t = summary(&rounds[..2], true);
        assert!(
            t.lines().nth(2).unwrap().contains("| 1.75x (1.50-2.00) |"),
            "{t}"
        );
        assert!(!summary(&rounds, false).contains("ratio"));
        // A model that does not generate: dashes, not NaN.
        let train_only = |ours: f64, theirs: f64| {
            let v = |t: f64| serde_json::json!({"model": "ae", "batch": 64, "train_img_per_s": t});
            Figures {
                ours: vec![v(ours)],
                idiomatic: vec![v(theirs)],
                lean: vec![v(theirs)],
            }
        };
        let rounds = [train_only(300.0, 200.0), train_only(400.0, 200.0)];
        let t = summary(&rounds, true);
        assert_eq!(
            t.lines().nth(2).unwrap(),
            "| ae | 64 | 350.0 | - | 200.0 | - | 1.75x (1.50-2.00) | - |",
            "{t}"
        );
        let t = table(&rounds[0], true);
        assert!(
            t.lines()
                .nth(2)
                .unwrap()
                .contains("| - | 200.0 / 200.0 | - | 1.50x | - |"),
            "{t}"
        );
    }

    #[test]
    fn a_missing_toolkit_is_one_line_before_any_build() {
        let none = |_: &str| None;
        let e = check_toolchain(DeviceKind::Cuda, none, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nvcc") && e.contains("CUDA toolkit"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = check_toolchain(DeviceKind::Metal, none, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("macOS"), "{e}");
        assert!(check_toolchain(DeviceKind::Cpu, none, false).is_ok());
    }

    #[test]
    fn nvcc_is_found_where_cuda_path_says() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/nvcc"), "").unwrap();
        let root = dir.path().as_os_str().to_owned();
        let var = move |k: &str| (k == "CUDA_PATH").then(|| root.clone());
        assert!(check_toolchain(DeviceKind::Cuda, var, false).is_ok());
    }
}
