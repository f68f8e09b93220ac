//! The UCI "Optical Recognition of Handwritten Digits" set (Alpaydin & Kaynak, 1998) as a
//! second digit domain: 8x8 images of 17 grey levels, upsampled to MNIST's 28x28.
//!
//! The file is scikit-learn's `digits.csv.gz` (the UCI test set, 1,797 rows): gzip CSV,
//! no header, one row an image: 64 pixels row by row, each 0..16, then the label 0..9.
//! A pixel counts the "on" pixels of a 4x4 block of the 32x32 bitmap NIST's preprocessing
//! made of the form, so 0 is paper and 16 is ink: mapped to MNIST's convention of a white
//! digit on black (0 -> -1, 16 -> +1), with no inversion.
//!
//! # Upsampling
//!
//! MNIST's digits were scaled to fit a 20x20 box and centred in a 28x28 frame, a 4-pixel
//! black margin all round. Every UCI digit touches the top and bottom rows of its 8x8
//! frame (the NIST preprocessing scaled it to fill it), so the whole 8x8 frame is
//! upsampled to 20x20 and put in the middle of a black 28x28 frame: the digit then has
//! MNIST's size and margins, rather than touching the border as a plain 8 -> 28 scaling
//! would leave it.
//!
//! The upsampling is bilinear, pixel centres aligned (what `align_corners = false` means in
//! PyTorch, and what PIL and OpenCV do): output pixel `o` of the 20 samples the source at
//! `(o + 0.5) * 8 / 20 - 0.5`, clamped to the edge pixels. Each 8x8 value is an ink
//! *coverage*, so interpolating it linearly gives the soft, anti-aliased strokes MNIST
//! has, without the overshoot (and the clipping it would need) of bicubic or the
//! 2.5-pixel blocks of nearest-neighbour.
//!
//! # Split
//!
//! The file has no train/test split of its own. [`uci_split`] holds out [`UCI_TEST_COUNT`]
//! (500) images for test, stratified by class (each class gives its share by the
//! largest-remainder rule, 49 or 50 each on the real file), chosen by a Fisher-Yates shuffle
//! of each class's rows driven by ChaCha20 seeded with [`UCI_SPLIT_SEED`] (stream = the
//! digit), with the same multiply-shift mapping as [`crate::mnistm`]: the same 1,297 / 500
//! split on every machine. Both splits keep the file's row order.
//!
//! # Download
//!
//! [`ensure_uci_digits`] fetches the file when it is missing, with [`crate::fetch`]'s
//! machinery (as MNIST is fetched): from [`UCI_MIRRORS`] in turn (or the base URLs of
//! `GAN_RS_UCI_MIRRORS`), each serving `<base>digits.csv.gz`, staged in a temporary file
//! beside the destination, checked against [`UCI_DIGITS_SHA256`] and only then renamed
//! onto it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::fetch::FileSpec;
use crate::mnist::{sha256_hex, Mnist, Split, SplitKind, Verify};
use crate::mnistm::split_of;

/// SHA-256 of the uncompressed `digits.csv` of scikit-learn (1,797 rows), which
/// [`Verify::Canonical`] and the download check so that results on it are comparable.
///
/// Provenance (checked 2026-11-30): `sklearn/datasets/data/digits.csv.gz` inside the
/// wheel `scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl`
/// from PyPI is byte-identical to the project's shared copy (57,523 bytes; the gzip
/// file's SHA-256 is [`UCI_DIGITS_GZ_SHA256`], as the wheel's RECORD lists it); this is
/// the SHA-256 of its decompressed content.
pub const UCI_DIGITS_SHA256: &str =
    "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8";
/// SHA-256 of scikit-learn's gzip file itself, for reference: the check is on the
/// content ([`UCI_DIGITS_SHA256`]), so a mirror that recompresses it is accepted.
pub const UCI_DIGITS_GZ_SHA256: &str =
    "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22";
/// The name mirrors serve, `<base>` + this + `.gz`.
pub const UCI_DIGITS_NAME: &str = "digits.csv";
/// Public copies of scikit-learn's `digits.csv.gz`, tried in order; each serves
/// `<base>digits.csv.gz`. First the file on scikit-learn's main branch; then the same
/// path at the release tag 1.9.1, whose wheel's copy is the one the checksum was taken
/// from: a tag does not move, so it still serves the file should `main` move or rename
/// it. (Both are on GitHub: the second guards against the file changing, not against
/// the host being down.)
pub const UCI_MIRRORS: &[&str] = &[
    "https://raw.githubusercontent.com/scikit-learn/scikit-learn/main/sklearn/datasets/data/",
    "https://raw.githubusercontent.com/scikit-learn/scikit-learn/1.9.1/sklearn/datasets/data/",
];
/// Where the project keeps the file unless told otherwise (relative to the workspace
/// root, ignored by git): gan-cli's `--uci-digits` default, and `cargo xtask fetch-uci`'s.
pub const DEFAULT_UCI_DIGITS: &str = "assets/data/uci-digits/digits.csv.gz";
/// Environment variable naming other mirrors of the UCI digits (comma-separated base
/// URLs), for a local or institutional copy.
pub const UCI_MIRRORS_ENV: &str = "GAN_RS_UCI_MIRRORS";
/// Images held out for test.
pub const UCI_TEST_COUNT: usize = 500;
/// Seed of the split's shuffle.
pub const UCI_SPLIT_SEED: u64 = 0;
/// Side of a UCI image.
pub const UCI_SIDE: usize = 8;
/// Largest pixel value (16 of 16 pixels of a block on).
pub const UCI_MAX: u8 = 16;

/// The mirrors to use: those of `GAN_RS_UCI_MIRRORS` when it is set, else [`UCI_MIRRORS`].
pub fn uci_mirrors() -> Vec<String> {
    crate::fetch::mirrors_from_env(UCI_MIRRORS_ENV, UCI_MIRRORS)
}

/// The UCI digits file as a download: `digits.csv`, [`UCI_DIGITS_SHA256`].
pub fn uci_spec() -> FileSpec {
    FileSpec {
        name: UCI_DIGITS_NAME.into(),
        sha256: UCI_DIGITS_SHA256.into(),
    }
}

/// Makes sure the UCI digits file is at `path`: when nothing is there, downloads it from
/// the first of `mirrors` that serves it intact (verified, staged and renamed onto
/// `path`; see the module's notes) and returns that URL; returns `None`, touching
/// nothing, when a file is already there (the loader verifies it).
pub fn ensure_uci_digits<S: AsRef<str>>(path: &Path, mirrors: &[S]) -> Result<Option<String>> {
    if path.exists() {
        return Ok(None);
    }
    crate::fetch::download_file_to(path, mirrors, &uci_spec())
        .map(Some)
        .with_context(|| format!("downloading the UCI digits to {}", path.display()))
}

/// Copies a local UCI digits file (raw or gzip) to `dest`, verified against
/// [`UCI_DIGITS_SHA256`], staged and renamed as a download is.
pub fn import_uci_digits(from: &Path, dest: &Path) -> Result<()> {
    crate::fetch::import_file_to(from, dest, &uci_spec())
}

/// The rows of a UCI digits file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciDigits {
    /// One 8x8 image a row, row-major, 0..16 with 0 the background.
    pub pixels: Vec<[u8; 64]>,
    /// The digits 0..9.
    pub labels: Vec<u8>,
}

impl UciDigits {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// An integer field, written `7` or `7.0` (some exports write floats).
fn integer(field: &str) -> Option<i64> {
    let field = field.trim();
    field.parse::<i64>().ok().or_else(|| {
        let f = field.parse::<f64>().ok()?;
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e9).then_some(f as i64)
    })
}

/// Parses the CSV text (`name` is for error messages, which give the 1-based line): every
/// non-blank line must have 65 fields, 64 pixels 0..16 then a label 0..9.
pub fn parse_uci_csv(text: &str, name: &str) -> Result<UciDigits> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            bail!(
                "{name} line {line_no}: {} fields, a UCI digits row has 65 (64 pixels, then \
                 the label)",
                fields.len()
            )
        }
        let mut row = [0u8; 64];
        for (j, (px, field)) in row.iter_mut().zip(&fields).enumerate() {
            match integer(field) {
                Some(v) if (0..=i64::from(UCI_MAX)).contains(&v) => *px = v as u8,
                _ => bail!(
                    "{name} line {line_no}: pixel {} (row {}, column {}) is {:?}, not an \
                     integer 0..16",
                    j + 1,
                    j / 8,
                    j % 8,
                    field.trim()
                ),
            }
        }
        match integer(fields[64]) {
            Some(l) if (0..=9).contains(&l) => labels.push(l as u8),
            _ => bail!(
                "{name} line {line_no}: label {:?} is not a digit 0-9",
                fields[64].trim()
            ),
        }
        pixels.push(row);
    }
    if labels.is_empty() {
        bail!("{name}: no rows in it")
    }
    Ok(UciDigits { pixels, labels })
}

/// Reads a UCI digits CSV, raw or gzip, and checks its content against
/// [`UCI_DIGITS_SHA256`] when `verify` is [`Verify::Canonical`].
pub fn read_uci_digits(path: &Path, verify: Verify) -> Result<UciDigits> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
    let raw = crate::idx::decompress(&bytes, &name)?;
    if verify == Verify::Canonical {
        let got = sha256_hex(&raw);
        if got != UCI_DIGITS_SHA256 {
            bail!(
                "{name}: SHA-256 mismatch: expected {UCI_DIGITS_SHA256} (scikit-learn's \
                 digits.csv), found {got}; pass Verify::Skip for another UCI digits file"
            )
        }
    }
    let text = std::str::from_utf8(&raw).with_context(|| format!("{name}: not a text file"))?;
    parse_uci_csv(text, &name)
}

/// Side of the box the 8x8 frame is upsampled to, as MNIST's digits fit a 20x20 box.
pub const UCI_BOX: usize = 20;
/// The black margin round the box in the 28x28 frame.
pub const UCI_MARGIN: usize = (28 - UCI_BOX) / 2;

/// One 8x8 image upsampled bilinearly to 20x20 in the middle of a black 28x28 frame (see
/// the module's notes), scaled to [-1, 1]: 0 -> -1, 16 -> +1.
pub fn upsample_uci(pixels: &[u8; 64]) -> [f32; 784] {
    const OUT: usize = 28;
    let last = (UCI_SIDE - 1) as f32;
    // Source coordinate of each row or column of the box, with its two neighbours and the
    // weight of the second.
    let taps: [(usize, usize, f32); UCI_BOX] = std::array::from_fn(|o| {
        let s = ((o as f32 + 0.5) * UCI_SIDE as f32 / UCI_BOX as f32 - 0.5).clamp(0.0, last);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(UCI_SIDE - 1), s - i0 as f32)
    });
    let v = |r: usize, c: usize| f32::from(pixels[r * UCI_SIDE + c]) / f32::from(UCI_MAX);
    let mut out = [-1f32; OUT * OUT];
    for (r, &(r0, r1, tr)) in taps.iter().enumerate() {
        for (c, &(c0, c1, tc)) in taps.iter().enumerate() {
            let top = v(r0, c0) * (1.0 - tc) + v(r0, c1) * tc;
            let bottom = v(r1, c0) * (1.0 - tc) + v(r1, c1) * tc;
            let ink = (top * (1.0 - tr) + bottom * tr).clamp(0.0, 1.0);
            out[(r + UCI_MARGIN) * OUT + c + UCI_MARGIN] = ink * 2.0 - 1.0;
        }
    }
    out
}

/// The fixed split of a file with these labels: `(train, test)` row indices, each in file
/// order; `test_count` rows are held out, stratified by class (see the module's notes).
pub fn uci_split(labels: &[u8], test_count: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = labels.len();
    if test_count >= n {
        bail!("{n} UCI digits cannot give {test_count} test images and still leave training ones")
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); 10];
    for (i, &l) in labels.iter().enumerate() {
        match by_class.get_mut(usize::from(l)) {
            Some(rows) => rows.push(i),
            None => bail!("row {i}: label {l} is not a digit 0-9"),
        }
    }
    // Largest remainder: each class's exact share test * n_c / n, rounded down, then the
    // rows left over to the largest fractional parts (ties to the smaller digit).
    let mut quota: Vec<usize> = by_class.iter().map(|r| test_count * r.len() / n).collect();
    let mut order: Vec<usize> = (0..10).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(test_count * by_class[c].len() % n));
    let left = test_count - quota.iter().sum::<usize>();
    for &c in order.iter().take(left) {
        quota[c] += 1;
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (c, rows) in by_class.iter_mut().enumerate() {
        let mut rng = ChaCha20Rng::seed_from_u64(UCI_SPLIT_SEED);
        rng.set_stream(c as u64);
        for i in (1..rows.len()).rev() {
            let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
            rows.swap(i, j);
        }
        test.extend_from_slice(&rows[..quota[c]]);
        train.extend_from_slice(&rows[quota[c]..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}

/// The digits of the rows `rows`, upsampled, as a [`Split`]: `[n, 1, 28, 28]` in [-1, 1].
pub fn uci_to_split(digits: &UciDigits, rows: &[usize], device: &Device) -> Result<Split> {
    let mut images = Vec::with_capacity(rows.len() * 784);
    let mut labels = Vec::with_capacity(rows.len());
    for &i in rows {
        let (Some(px), Some(&l)) = (digits.pixels.get(i), digits.labels.get(i)) else {
            bail!("row {i} is past the {} UCI digits", digits.len())
        };
        images.extend_from_slice(&upsample_uci(px));
        labels.push(l);
    }
    let images = Tensor::from_vec(images, (rows.len(), 1, 28, 28), device)?;
    split_of(images, labels, device)
}

/// Loads both splits of the UCI digits file at `path` (see the module's notes).
pub fn load_uci(path: &Path, verify: Verify, device: &Device) -> Result<Mnist> {
    let digits = read_uci_digits(path, verify)?;
    let (train, test) = uci_split(&digits.labels, UCI_TEST_COUNT)
        .with_context(|| format!("splitting {}", path.display()))?;
    Ok(Mnist {
        train: uci_to_split(&digits, &train, device)?,
        test: uci_to_split(&digits, &test, device)?,
    })
}

/// Loads one split of the UCI digits file at `path`.
pub fn load_uci_split(
    path: &Path,
    kind: SplitKind,
    verify: Verify,
    device: &Device,
) -> Result<Split> {
    let digits = read_uci_digits(path, verify)?;
    let (train, test) = uci_split(&digits.labels, UCI_TEST_COUNT)
        .with_context(|| format!("splitting {}", path.display()))?;
    let rows = match kind {
        SplitKind::Train => train,
        SplitKind::Test => test,
    };
    uci_to_split(&digits, &rows, device)
}
