//! Getting MNIST onto the machine: from public mirrors, or from a local copy. Every file
//! is checked against its canonical SHA-256 and lands under its final name by an atomic
//! rename, so an interrupted or corrupt transfer never leaves a file that later passes
//! for good data.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::idx::decompress;
use crate::mnist::{locate, sha256_hex, MNIST_FILES};

/// Public MNIST mirrors, tried in order; each serves `<base><name>.gz`.
pub const MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// A file to fetch: its canonical name and the SHA-256 of its uncompressed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Uncompressed name; mirrors serve `<name>.gz`, and it is stored as that.
    pub name: String,
    /// Lowercase hex SHA-256 of the uncompressed content.
    pub sha256: String,
}

/// The four canonical MNIST files as specs.
pub fn mnist_specs() -> Vec<FileSpec> {
    MNIST_FILES
        .iter()
        .map(|f| FileSpec {
            name: f.name.into(),
            sha256: f.sha256.into(),
        })
        .collect()
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It was there and verified.
    AlreadyPresent,
    /// Downloaded from this URL.
    Downloaded(String),
    /// Copied from this local path.
    Imported(PathBuf),
}

/// What a fetch or import did, file by file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The data folder.
    pub dir: PathBuf,
    /// `(file name, action)` in table order.
    pub files: Vec<(String, Action)>,
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, action) in &self.files {
            match action {
                Action::AlreadyPresent => writeln!(f, "{name}: already present and verified")?,
                Action::Downloaded(url) => writeln!(f, "{name}: downloaded from {url}, verified")?,
                Action::Imported(p) => {
                    writeln!(f, "{name}: imported from {}, verified", p.display())?
                }
            }
        }
        write!(f, "MNIST is in {}", self.dir.display())
    }
}

/// Whether `dir` holds `spec` with the right content.
fn present(dir: &Path, spec: &FileSpec) -> bool {
    locate(dir, &spec.name)
        .and_then(|p| std::fs::read(&p).ok())
        .and_then(|b| decompress(&b, &spec.name).ok())
        .is_some_and(|raw| sha256_hex(&raw) == spec.sha256)
}

/// Writes `bytes` (the file as served, usually gzip) as `dir/<stored>` once their
/// decompressed content matches `spec`: temporary file, fsync, rename.
fn store_verified(
    dir: &Path,
    stored: &str,
    spec: &FileSpec,
    bytes: &[u8],
    origin: &str,
) -> Result<()> {
    let raw = decompress(bytes, origin)?;
    let got = sha256_hex(&raw);
    if got != spec.sha256 {
        bail!(
            "{origin}: SHA-256 mismatch for {}: expected {}, found {got}",
            spec.name,
            spec.sha256
        )
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(stored);
    let tmp = dir.join(format!(".{stored}.{}.part", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", dest.display()))
}

/// Downloads `url` into memory with a progress bar.
fn download(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let len = resp.body().content_length();
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    let mut reader = resp
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .reader();
    let mut out = Vec::with_capacity(len.unwrap_or(0) as usize);
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(n) = len {
        if out.len() as u64 != n {
            bail!("{url}: transfer cut short: {} of {n} bytes", out.len())
        }
    }
    Ok(out)
}

/// Downloads each spec missing from `dir` from the first mirror that serves it intact.
/// Files already present and verified are kept.
pub fn download_files(dir: &Path, mirrors: &[&str], specs: &[FileSpec]) -> Result<FetchReport> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let mut files = Vec::new();
    for spec in specs {
        if present(dir, spec) {
            files.push((spec.name.clone(), Action::AlreadyPresent));
            continue;
        }
        let mut failures = Vec::new();
        let mut done = None;
        for base in mirrors {
            let url = format!("{base}{}.gz", spec.name);
            let attempt = download(&agent, &url).and_then(|bytes| {
                store_verified(dir, &format!("{}.gz", spec.name), spec, &bytes, &url)
            });
            match attempt {
                Ok(()) => {
                    done = Some(url);
                    break;
                }
                Err(e) => failures.push(format!("  {url}: {e:#}")),
            }
        }
        match done {
            Some(url) => files.push((spec.name.clone(), Action::Downloaded(url))),
            None => bail!(
                "could not download {}: every mirror failed:\n{}",
                spec.name,
                failures.join("\n")
            ),
        }
    }
    Ok(FetchReport {
        dir: dir.into(),
        files,
    })
}

/// Downloads the canonical MNIST files missing from `dir`.
pub fn download_mnist(dir: &Path, mirrors: &[&str]) -> Result<FetchReport> {
    download_files(dir, mirrors, &mnist_specs())
}

/// Makes sure `dir` holds verified MNIST: keeps what is there, downloads the rest.
pub fn ensure_mnist(dir: &Path, mirrors: &[&str]) -> Result<FetchReport> {
    download_mnist(dir, mirrors)
}

/// Copies the MNIST files of `from` (raw or .gz) into `dir`, verified; files already in
/// `dir` and verified are kept.
pub fn import_mnist(from: &Path, dir: &Path) -> Result<FetchReport> {
    let mut files = Vec::new();
    for spec in mnist_specs() {
        if present(dir, &spec) {
            files.push((spec.name.clone(), Action::AlreadyPresent));
            continue;
        }
        let Some(src) = locate(from, &spec.name) else {
            bail!(
                "{}: missing (neither {} nor {}.gz)",
                from.display(),
                spec.name,
                spec.name
            )
        };
        let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let stored = src
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .to_string();
        store_verified(dir, &stored, &spec, &bytes, &src.display().to_string())?;
        files.push((spec.name.clone(), Action::Imported(src)));
    }
    Ok(FetchReport {
        dir: dir.into(),
        files,
    })
}
