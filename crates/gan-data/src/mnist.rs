//! MNIST: the four canonical files, their checksums, and loading them as tensors.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::idx;

/// Where the project keeps MNIST unless told otherwise, relative to the workspace root
/// (ignored by git: the data is fetched, never committed).
pub const DEFAULT_DATA_DIR: &str = "assets/data/mnist";

/// The real MNIST of `../shared/data/mnist` beside the workspace, where a machine has one
/// (this project's development and CI machines do): tests that need real data read it
/// from here and say they were skipped where it is absent.
#[cfg(feature = "dev-shared-data")]
pub fn shared_mnist_dir() -> Option<&'static Path> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/mnist"
    ));
    dir.is_dir().then_some(dir)
}

/// The folder `../shared/data` beside the workspace, where a machine has one: besides
/// `mnist/`, it keeps `backgrounds/` (colour photos for MNIST-M-style digits) and
/// `uci-digits/digits.csv.gz`. Like [`shared_mnist_dir`], for tests only.
#[cfg(feature = "dev-shared-data")]
pub fn shared_data_dir() -> Option<&'static Path> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"));
    dir.is_dir().then_some(dir)
}

/// What an MNIST file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// IDX images (magic 0x0803).
    Images,
    /// IDX labels (magic 0x0801).
    Labels,
}

/// One of the four MNIST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// Canonical name of the uncompressed file (mirrors serve `<name>.gz`).
    pub name: &'static str,
    /// SHA-256 of the uncompressed content: pinned on the raw bytes so that a file is
    /// accepted whichever way it was compressed.
    pub sha256: &'static str,
    /// Images or labels.
    pub kind: FileKind,
    /// Which split it belongs to.
    pub split: SplitKind,
}

/// The canonical files with their raw-content SHA-256.
pub const MNIST_FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte",
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        kind: FileKind::Images,
        split: SplitKind::Train,
    },
    MnistFile {
        name: "train-labels-idx1-ubyte",
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        kind: FileKind::Labels,
        split: SplitKind::Train,
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte",
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        kind: FileKind::Images,
        split: SplitKind::Test,
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte",
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        kind: FileKind::Labels,
        split: SplitKind::Test,
    },
];

/// Training (60,000 images) or test (10,000) split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// The 60,000 training images.
    Train,
    /// The 10,000 test images: kept for evaluation, never trained on.
    Test,
}

impl SplitKind {
    /// The table entries of this split, images first.
    pub fn files(self) -> (&'static MnistFile, &'static MnistFile) {
        let [train_x, train_y, test_x, test_y] = &MNIST_FILES;
        match self {
            SplitKind::Train => (train_x, train_y),
            SplitKind::Test => (test_x, test_y),
        }
    }
}

/// Whether loading checks the canonical SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The files must be byte-for-byte canonical MNIST: results are comparable.
    Canonical,
    /// Any well-formed IDX files (tests, other digit sets in MNIST format).
    Skip,
}

/// One split as tensors, ready for the models: MNIST's, and the other digit domains'
/// ([`crate::mnistm`], [`crate::uci`]).
#[derive(Debug, Clone)]
pub struct Split {
    /// `[n, c, 28, 28]` f32 with `c` = 1 (grey: MNIST, UCI digits) or 3 (RGB: MNIST-M),
    /// pixel p mapped to p / 127.5 - 1, so 0 is -1 and 255 is +1: the range of the
    /// generators' tanh output.
    pub images: Tensor,
    /// `[n]` u32 digit labels (the dtype `index_select` and one-hot encoding take).
    pub labels: Tensor,
    /// The same labels as bytes, for host-side bookkeeping without a device round trip.
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

    /// Channels of the images: 1 (grey) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.images.dims().get(1).copied().unwrap_or(0)
    }
}

/// Both splits (of MNIST, or of another digit domain).
#[derive(Debug, Clone)]
pub struct Mnist {
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

/// Lowercase hex of a SHA-256 digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of the content of the file at `path`, gunzipped when it is gzip,
/// streamed so that checking a file costs no memory.
pub fn content_sha256(path: &Path) -> Result<String> {
    let name = path.display();
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
    let mut head = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {name}"))?;
    let gz = head == idx::GZIP_MAGIC;
    let head = std::io::Cursor::new(head);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(head.chain(file)))
    } else {
        Box::new(head.chain(file))
    };
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher).with_context(|| {
        if gz {
            format!("{name}: corrupt gzip data")
        } else {
            format!("reading {name}")
        }
    })?;
    Ok(hex(&hasher.finalize()))
}

/// The path of `name` in `dir`, raw or gzipped, whichever exists (raw first).
pub fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads the file `name` of `dir` (raw or .gz), decompressed, and checks its content
/// against `expected_sha256` when one is given.
pub fn read_verified(dir: &Path, name: &str, expected_sha256: Option<&str>) -> Result<Vec<u8>> {
    let Some(path) = locate(dir, name) else {
        bail!(
            "{}: missing (neither {name} nor {name}.gz is there): run `cargo xtask fetch-mnist` \
             to download MNIST, or `cargo xtask fetch-mnist --from DIR` to import a local copy",
            dir.join(name).display()
        )
    };
    let raw = idx::read_raw(&path)?;
    if let Some(want) = expected_sha256 {
        let got = sha256_hex(&raw);
        if got != want {
            bail!(
                "{}: SHA-256 mismatch: expected {want}, found {got}; the file is corrupt or not \
                 canonical MNIST (delete it and fetch again, or pass --no-verify for other data)",
                path.display()
            )
        }
    }
    Ok(raw)
}

/// Loads one split of `dir` onto `device`.
pub fn load_split(dir: &Path, kind: SplitKind, verify: Verify, device: &Device) -> Result<Split> {
    let (fx, fy) = kind.files();
    let sha = |f: &MnistFile| (verify == Verify::Canonical).then_some(f.sha256);
    let (x_name, y_name) = (dir.join(fx.name), dir.join(fy.name));
    let images = idx::parse_images(
        &read_verified(dir, fx.name, sha(fx))?,
        &x_name.display().to_string(),
    )?;
    let labels = idx::parse_labels(
        &read_verified(dir, fy.name, sha(fy))?,
        &y_name.display().to_string(),
    )?;
    if (images.rows, images.cols) != (28, 28) {
        bail!(
            "{}: images are {}x{}, the MNIST models need 28x28",
            x_name.display(),
            images.rows,
            images.cols
        )
    }
    if images.n != labels.len() {
        bail!(
            "{}: {} images but {} labels in {}: the files do not belong together",
            x_name.display(),
            images.n,
            labels.len(),
            y_name.display()
        )
    }
    let n = images.n;
    // Mapped on the host: p / 127.5 is exact in f32 at both ends (0 -> -1, 255 -> +1).
    let pixels: Vec<f32> = images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 127.5 - 1.0)
        .collect();
    let label_u32: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
    Ok(Split {
        images: Tensor::from_vec(pixels, (n, 1, 28, 28), device)?,
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
