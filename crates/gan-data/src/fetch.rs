//! Getting MNIST (and the UCI digits, [`crate::uci`]) onto the machine: from public
//! mirrors, or from a local copy.
//!
//! Every file goes to a temporary file in the data folder, is checked against the SHA-256
//! of its uncompressed content, synced, and only then renamed to its final name. A rename
//! within a folder is atomic, so an interrupted or corrupt transfer never leaves a file
//! that a later run could take for good data, and a good file already there is only ever
//! replaced by another good one.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::idx::GZIP_MAGIC;
use crate::mnist::{content_sha256, locate, MNIST_FILES};

/// Public MNIST mirrors, tried in order; each serves `<base><name>.gz`. Yann LeCun's
/// original site is left out: it now often refuses automated downloads.
pub const MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// Environment variable naming other mirrors (comma-separated base URLs).
pub const MIRRORS_ENV: &str = "GAN_RS_MNIST_MIRRORS";

/// The mirrors to use: those of `GAN_RS_MNIST_MIRRORS` (comma-separated base URLs) when
/// it is set, for a local or institutional mirror, else [`MIRRORS`].
pub fn mirrors() -> Vec<String> {
    mirrors_from_env(MIRRORS_ENV, MIRRORS)
}

/// The comma-separated base URLs of the environment variable `var` when it is set and
/// not blank, else `defaults`.
pub fn mirrors_from_env(var: &str, defaults: &[&str]) -> Vec<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        _ => defaults.iter().map(|s| s.to_string()).collect(),
    }
}

/// A file to fetch: its canonical name and the SHA-256 of its uncompressed content.
/// A parameter rather than the MNIST table so that tests can serve small fixtures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Uncompressed name; mirrors serve `<name>.gz`.
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
    /// It was there already and verified; left untouched.
    AlreadyPresent,
    /// Downloaded from this URL and verified.
    Downloaded(String),
    /// Copied from this local path and verified.
    Imported(PathBuf),
}

/// What a fetch or import did, file by file, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The data folder.
    pub dir: PathBuf,
    /// `(file name, action)` in the order of the specs.
    pub files: Vec<(String, Action)>,
}

impl FetchReport {
    /// Whether nothing had to be fetched.
    pub fn all_present(&self) -> bool {
        self.files.iter().all(|(_, a)| *a == Action::AlreadyPresent)
    }
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, action) in &self.files {
            match action {
                Action::AlreadyPresent => writeln!(f, "{name}: already present, verified")?,
                Action::Downloaded(url) => writeln!(f, "{name}: downloaded from {url}, verified")?,
                Action::Imported(p) => {
                    writeln!(f, "{name}: imported from {}, verified", p.display())?
                }
            }
        }
        write!(f, "MNIST is in {}", self.dir.display())
    }
}

/// Whether `dir` already holds `spec` with the right content (a corrupt copy is not).
fn present(dir: &Path, spec: &FileSpec) -> bool {
    locate(dir, &spec.name)
        .and_then(|p| content_sha256(&p).ok())
        .is_some_and(|sha| sha == spec.sha256)
}

/// Where a verified file lands.
#[derive(Debug, Clone, Copy)]
enum Landing<'a> {
    /// In this folder, as `<name>` or `<name>.gz` after what the bytes are (MNIST's
    /// layout, which the loader searches).
    Canonical(&'a Path),
    /// At exactly this path, whatever the bytes' compression (the loaders of such files
    /// tell gzip by its magic number).
    Exact(&'a Path),
}

impl Landing<'_> {
    /// The folder the file lands in, where it is staged (a rename is atomic only within
    /// one file system).
    fn dir(&self) -> &Path {
        match self {
            Landing::Canonical(dir) => dir,
            Landing::Exact(path) => match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            },
        }
    }
}

/// A temporary file in the destination folder, removed when dropped unless committed:
/// every early return and `?` cleans up by itself.
struct Staged {
    path: PathBuf,
    file: Option<File>,
}

impl Staged {
    fn new(dir: &Path, stem: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        // A leading dot and a `.part` suffix: no loader looks for such a name.
        let path = dir.join(format!(".{stem}.{}-{unique}.part", std::process::id()));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path,
            file: Some(file),
        })
    }

    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Verifies the content against `spec`, syncs, and renames it to where `to` says: for
    /// [`Landing::Canonical`] `<name>` or `<name>.gz` (after what the bytes are, not what
    /// they were called), removing a copy under the other name that the loader would
    /// otherwise pick first.
    fn commit(mut self, to: Landing, spec: &FileSpec, origin: &str) -> Result<PathBuf> {
        let file = self.file.take().expect("committed once");
        file.sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        drop(file);
        // What is wrong, named after where the bytes came from (not the staging file):
        // an incomplete gzip stream or an IDX header of the wrong kind or length says so
        // before a checksum mismatch would.
        let raw = std::fs::read(&self.path)
            .with_context(|| format!("reading back the copy of {origin}"))?;
        let content = crate::idx::decompress(&raw, origin).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}: the gzip stream is truncated or damaged (was the copy complete?)"
            )
        })?;
        if spec.name.contains("idx3") {
            crate::idx::parse_images(&content, origin)?;
        } else if spec.name.contains("idx1") {
            crate::idx::parse_labels(&content, origin)?;
        }
        let found = crate::mnist::sha256_hex(&content);
        if found != spec.sha256 {
            bail!(
                "{origin}: SHA-256 mismatch for {}: expected {}, found {found}",
                spec.name,
                spec.sha256
            )
        }
        let dir = to.dir();
        let (dest, other) = match to {
            Landing::Exact(path) => (path.to_path_buf(), None),
            Landing::Canonical(dir) => {
                let mut head = [0u8; 2];
                let gz = File::open(&self.path)
                    .and_then(|mut f| f.read_exact(&mut head))
                    .is_ok()
                    && head == GZIP_MAGIC;
                let (name, other) = if gz {
                    (format!("{}.gz", spec.name), spec.name.clone())
                } else {
                    (spec.name.clone(), format!("{}.gz", spec.name))
                };
                (dir.join(name), Some(dir.join(other)))
            }
        };
        std::fs::rename(&self.path, &dest)
            .with_context(|| format!("renaming {} to {}", self.path.display(), dest.display()))?;
        if let Ok(d) = File::open(dir) {
            // Persist the rename itself; not every platform can sync a folder.
            let _ = d.sync_all();
        }
        if let Some(other) = other.filter(|o| o.is_file()) {
            std::fs::remove_file(&other)
                .with_context(|| format!("removing the stale {}", other.display()))?;
        }
        Ok(dest)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.file.take();
        if self.path.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A progress bar of bytes; indicatif hides it by itself when stderr is no terminal.
fn progress_bar(len: Option<u64>, label: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}

/// The HTTP client: bounded waits so that a dead mirror fails over instead of hanging.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .timeout_global(Some(Duration::from_secs(15 * 60)))
        .build()
        .into()
}

/// The largest file accepted from a mirror: MNIST's biggest is 10 MB gzipped, 47 MB raw
/// (the UCI digits, 57 kB).
const MAX_DOWNLOAD: u64 = 256 * 1024 * 1024;

/// Downloads `url` and stores it in `dir` as `spec`, verified. Errors leave the URL out:
/// the caller lists them after it.
fn download_one(agent: &ureq::Agent, url: &str, to: Landing, spec: &FileSpec) -> Result<()> {
    // `identity`: the file as the mirror holds it, byte for byte, so Content-Length holds.
    let mut resp = agent
        .get(url)
        .header("Accept-Encoding", "identity")
        .call()
        .context("request failed")?;
    let len = resp.body().content_length();
    if let Some(n) = len.filter(|&n| n > MAX_DOWNLOAD) {
        bail!("{n} bytes announced, more than the {MAX_DOWNLOAD} a data file can be")
    }
    let mut reader = resp.body_mut().with_config().limit(MAX_DOWNLOAD).reader();
    let mut staged = Staged::new(to.dir(), &spec.name)?;
    let bar = progress_bar(len, &format!("{}.gz", spec.name));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(e).with_context(|| format!("transfer failed after {total} bytes"));
            }
        };
        staged
            .file()
            .write_all(&buf[..n])
            .with_context(|| format!("writing {}", staged.path.display()))?;
        total += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(n) = len.filter(|&n| n != total) {
        bail!("transfer cut short: {total} of {n} bytes")
    }
    staged.commit(to, spec, "the download")?;
    Ok(())
}

/// Tries each mirror in turn for one file; the error lists every mirror's failure.
fn download_from_mirrors<S: AsRef<str>>(
    agent: &ureq::Agent,
    to: Landing,
    mirrors: &[S],
    spec: &FileSpec,
) -> Result<String> {
    if mirrors.is_empty() {
        bail!("no mirror to download {} from", spec.name)
    }
    let mut failures = Vec::new();
    for base in mirrors {
        let base = base.as_ref();
        let sep = if base.ends_with('/') { "" } else { "/" };
        let url = format!("{base}{sep}{}.gz", spec.name);
        match download_one(agent, &url, to, spec) {
            Ok(()) => return Ok(url),
            Err(e) => failures.push(format!("  {url}: {e:#}")),
        }
    }
    bail!(
        "could not download {}: every mirror failed:\n{}",
        spec.name,
        failures.join("\n")
    )
}

/// Downloads every spec into `dir` from the first mirror that serves it intact, replacing
/// what is there (a good copy stays until its replacement is verified).
pub fn download_files<S: AsRef<str>>(
    dir: &Path,
    mirrors: &[S],
    specs: &[FileSpec],
) -> Result<FetchReport> {
    fetch_files(dir, mirrors, specs, false)
}

/// Like [`download_files`], but keeps the specs already present and verified in `dir`:
/// running it twice downloads nothing the second time.
pub fn ensure_files<S: AsRef<str>>(
    dir: &Path,
    mirrors: &[S],
    specs: &[FileSpec],
) -> Result<FetchReport> {
    fetch_files(dir, mirrors, specs, true)
}

fn fetch_files<S: AsRef<str>>(
    dir: &Path,
    mirrors: &[S],
    specs: &[FileSpec],
    keep_present: bool,
) -> Result<FetchReport> {
    let agent = agent();
    let mut files = Vec::new();
    for spec in specs {
        let action = if keep_present && present(dir, spec) {
            Action::AlreadyPresent
        } else {
            Action::Downloaded(download_from_mirrors(
                &agent,
                Landing::Canonical(dir),
                mirrors,
                spec,
            )?)
        };
        files.push((spec.name.clone(), action));
    }
    Ok(FetchReport {
        dir: dir.into(),
        files,
    })
}

/// Downloads the four canonical MNIST files into `dir`, replacing what is there.
pub fn download_mnist<S: AsRef<str>>(dir: &Path, mirrors: &[S]) -> Result<FetchReport> {
    download_files(dir, mirrors, &mnist_specs())
}

/// Makes sure `dir` holds verified MNIST: keeps what is there and good, downloads the rest
/// (a corrupt copy counts as missing).
pub fn ensure_mnist<S: AsRef<str>>(dir: &Path, mirrors: &[S]) -> Result<FetchReport> {
    ensure_files(dir, mirrors, &mnist_specs())
}

/// Copies the specs from the folder `from` (each raw or .gz) into `dir`, verified; those
/// already in `dir` and verified are kept. Compression is kept as found.
pub fn import_files(from: &Path, dir: &Path, specs: &[FileSpec]) -> Result<FetchReport> {
    if !from.is_dir() {
        bail!("{}: no such folder to import MNIST from", from.display())
    }
    let mut files = Vec::new();
    for spec in specs {
        if present(dir, spec) {
            files.push((spec.name.clone(), Action::AlreadyPresent));
            continue;
        }
        let Some(src) = locate(from, &spec.name) else {
            bail!(
                "{}: missing (neither {} nor {}.gz is there)",
                from.join(&spec.name).display(),
                spec.name,
                spec.name
            )
        };
        let origin = src.display().to_string();
        let input = File::open(&src).with_context(|| format!("cannot open {origin}"))?;
        let mut staged = Staged::new(dir, &spec.name)?;
        std::io::copy(&mut BufReader::new(input), staged.file())
            .with_context(|| format!("copying {origin} to {}", dir.display()))?;
        staged.commit(Landing::Canonical(dir), spec, &origin)?;
        files.push((spec.name.clone(), Action::Imported(src)));
    }
    Ok(FetchReport {
        dir: dir.into(),
        files,
    })
}

/// Imports the four canonical MNIST files from a local copy (raw or .gz) into `dir`.
pub fn import_mnist(from: &Path, dir: &Path) -> Result<FetchReport> {
    import_files(from, dir, &mnist_specs())
}

/// Downloads `spec` to exactly `dest` (its folder created if need be) from the first
/// mirror that serves `<base><name>.gz` intact, staged beside `dest` and renamed onto it
/// only once verified; returns the URL. On any failure nothing is left at `dest` that was
/// not there before: a file already there stays until its replacement is verified.
pub fn download_file_to<S: AsRef<str>>(
    dest: &Path,
    mirrors: &[S],
    spec: &FileSpec,
) -> Result<String> {
    download_from_mirrors(&agent(), Landing::Exact(dest), mirrors, spec)
}

/// Copies the local file `from` (raw or .gz) to exactly `dest`, verified against `spec`
/// and staged and renamed as a download is. Compression is kept as found.
pub fn import_file_to(from: &Path, dest: &Path, spec: &FileSpec) -> Result<()> {
    let origin = from.display().to_string();
    let input = File::open(from).with_context(|| format!("cannot open {origin}"))?;
    let to = Landing::Exact(dest);
    let mut staged = Staged::new(to.dir(), &spec.name)?;
    std::io::copy(&mut BufReader::new(input), staged.file())
        .with_context(|| format!("copying {origin} to {}", dest.display()))?;
    staged.commit(to, spec, &origin)?;
    Ok(())
}
