//! MNIST: the four canonical files, their checksums, and loading them as tensors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::idx;

/// Where the project keeps MNIST unless told otherwise (ignored by git).
pub const DEFAULT_DATA_DIR: &str = "assets/data/mnist";

/// One of the four MNIST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// Canonical name of the uncompressed file (mirrors serve `<name>.gz`).
    pub name: &'static str,
    /// SHA-256 of the uncompressed file, as public loaders pin it.
    pub sha256: &'static str,
    /// Which split it belongs to.
    pub split: SplitKind,
    /// Images (true) or labels (false).
    pub images: bool,
}

/// The canonical files with their raw-content SHA-256.
pub const MNIST_FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte",
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        split: SplitKind::Train,
        images: true,
    },
    MnistFile {
        name: "train-labels-idx1-ubyte",
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        split: SplitKind::Train,
        images: false,
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte",
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        split: SplitKind::Test,
        images: true,
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte",
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        split: SplitKind::Test,
        images: false,
    },
];

/// Training (60,000 images) or test (10,000) split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// The 60,000 training images.
    Train,
    /// The 10,000 test images: evaluation only.
    Test,
}

/// Whether loading checks the canonical SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The files must be byte-for-byte canonical MNIST.
    Canonical,
    /// Any well-formed IDX files (tests, other digit sets in MNIST format).
    Skip,
}

/// One split as tensors.
#[derive(Debug, Clone)]
pub struct Split {
    /// `[n, 1, 28, 28]` f32, pixel p mapped to p / 127.5 - 1 in [-1, 1] (tanh's range).
    pub images: Tensor,
    /// `[n]` u32 digit labels.
    pub labels: Tensor,
    /// The same labels as bytes, for host-side bookkeeping.
    pub labels_u8: Vec<u8>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels_u8.len()
    }

    /// Whether the split has no example.
    pub fn is_empty(&self) -> bool {
        self.labels_u8.is_empty()
    }
}

/// Both splits.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The path of `file` in `dir`, raw or gzipped, whichever exists (raw first).
pub fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads a file of `dir` (raw or .gz) and checks its content against `expected_sha256`.
pub fn read_verified(dir: &Path, name: &str, expected_sha256: Option<&str>) -> Result<Vec<u8>> {
    let Some(path) = locate(dir, name) else {
        bail!(
            "{}: missing (neither {name} nor {name}.gz): run `cargo xtask fetch-mnist` \
             (or `--from DIR` to import a local copy)",
            dir.join(name).display()
        )
    };
    let raw = idx::read_raw(&path)?;
    if let Some(want) = expected_sha256 {
        let got = sha256_hex(&raw);
        if got != want {
            bail!(
                "{}: SHA-256 mismatch: expected {want}, found {got}; the file is corrupt or not canonical \
                 MNIST (delete it and fetch again, or pass --no-verify for other data)",
                path.display()
            )
        }
    }
    Ok(raw)
}

/// Loads one split of `dir` onto `device`.
pub fn load_split(dir: &Path, kind: SplitKind, verify: Verify, device: &Device) -> Result<Split> {
    let file = |images: bool| {
        MNIST_FILES
            .iter()
            .find(|f| f.split == kind && f.images == images)
            .expect("in table")
    };
    let (fi, fl) = (file(true), file(false));
    let sha = |f: &MnistFile| (verify == Verify::Canonical).then_some(f.sha256);
    let images = idx::parse_images(
        &read_verified(dir, fi.name, sha(fi))?,
        &dir.join(fi.name).display().to_string(),
    )?;
    let labels = idx::parse_labels(
        &read_verified(dir, fl.name, sha(fl))?,
        &dir.join(fl.name).display().to_string(),
    )?;
    if (images.rows, images.cols) != (28, 28) {
        bail!(
            "{}: images are {}x{}, MNIST models need 28x28",
            dir.join(fi.name).display(),
            images.rows,
            images.cols
        )
    }
    if images.n != labels.len() {
        bail!(
            "{}: {} images but {} labels in {}",
            dir.join(fi.name).display(),
            images.n,
            labels.len(),
            fl.name
        )
    }
    let n = images.n;
    let pixels = Tensor::from_vec(images.pixels, (n, 1, 28, 28), &Device::Cpu)?;
    let images = pixels
        .to_dtype(candle_core::DType::F32)?
        .affine(1.0 / 127.5, -1.0)?
        .to_device(device)?;
    let label_u32: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    Ok(Split {
        images,
        labels: Tensor::from_vec(label_u32, n, device)?,
        labels_u8: labels,
    })
}

/// Loads both splits.
pub fn load_mnist(dir: &Path, verify: Verify, device: &Device) -> Result<Mnist> {
    Ok(Mnist {
        train: load_split(dir, SplitKind::Train, verify, device)?,
        test: load_split(dir, SplitKind::Test, verify, device)?,
    })
}
