//! MNIST-M: MNIST digits blended over patches of colour photographs, the target domain of
//! Ganin & Lempitsky's domain-adaptation experiments ("Unsupervised Domain Adaptation by
//! Backpropagation", 2015).
//!
//! Two ways to get it:
//!
//! - [`ensure_mnistm_style`] builds an MNIST-M-*style* set by the paper's recipe from
//!   MNIST and any folder of photos (the paper used BSDS500; this project's machines keep
//!   four photos in `../shared/data/backgrounds`), writes it once to
//!   `<root>/mnistm-style-seed<S>/` with a JSON card, and reuses it while the card still
//!   matches. The set is the same on every machine for the same seed, MNIST and photos.
//! - [`load_mnist_m_folder`] reads the real MNIST-M as commonly distributed
//!   (`mnist_m/mnist_m_train/*.png` and `mnist_m/mnist_m_train_labels.txt`).
//!
//! Both load as a [`Split`] of `[n, 3, 28, 28]` f32 in [-1, 1].
//!
//! # The recipe
//!
//! Each digit `d` (28x28 u8, 0 = background, 255 = ink) and a 28x28 crop `p` of a photo
//! give `out = |p - d|` per RGB channel (the paper's `I_out = |I1 - I2|`): where the digit
//! has ink the photo's colours are inverted, elsewhere they are kept, and the anti-aliased
//! edges of MNIST's strokes stay smooth because the grey value is used, not a binary mask.
//!
//! Which photo and which crop: image `i` of a split takes ChaCha20 block `i` of stream `s`
//! (`s` = 0 for train, 1 for test) of the generator `ChaCha20Rng::seed_from_u64(seed)`,
//! and reads three u64 words `u` from it, each mapped to `0..n` as `(u * n) >> 64` (in 128
//! bits): the photo (`n` = number of photos, in file-name order), the crop's left column
//! (`n` = width - 27, so every position fits) and its top row (`n` = height - 27). So:
//!
//! - train and test use different streams: no test image reuses a training image's draw;
//! - image `i`'s draw depends on `i` alone, not on the images before it ([`draw_crop`]);
//! - the mapping is ours, not `rand`'s (whose integer sampling may change between its
//!   versions), and ChaCha20's output is fixed by its specification, so the set is the
//!   same whatever versions of the crates built it. The bias of the multiply-shift
//!   mapping is below n / 2^64, far below anything measurable.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::mnist::{content_sha256, locate, read_verified, sha256_hex, Mnist, Split, SplitKind};
use crate::store::{write_atomic, LateBar};
use crate::{idx, Verify};

/// Side of a digit and of a crop, in pixels.
pub const SIDE: usize = 28;
/// Pixels of a digit.
pub const DIGIT_LEN: usize = SIDE * SIDE;
/// Bytes of one MNIST-M image: 28x28 RGB, row-major, channels last (HWC).
pub const RGB_LEN: usize = DIGIT_LEN * 3;

/// The recipe, in words, as the card records it. Part of what a built set must match to be
/// reused: change it whenever the recipe or the stored format changes.
pub const RECIPE: &str = "MNIST-M-style digits after Ganin & Lempitsky (2015): each MNIST \
digit d (28x28 u8, 0 = background, 255 = ink) is blended with a 28x28 crop p of a colour \
photo as out = |p - d| for each RGB channel. Photos: the .png, .jpg and .jpeg files of the \
folder (not hidden), in byte order of their file names, decoded to 8-bit RGB (alpha \
dropped, grey expanded). Draws: image i of a split takes ChaCha20 block i (words 16i..16i+15) \
of stream s (0 = train, 1 = test) of ChaCha20Rng::seed_from_u64(seed) and reads three u64 \
words u, each mapped to 0..n as (u * n) >> 64 in 128 bits: the photo index (n = number of \
photos), the crop's left column x (n = width - 27), its top row y (n = height - 27). Order \
and labels: MNIST's, split by split. Stored as gzip IDX u8: images [N,28,28,3] (channels \
last), labels [N].";

/// The card's `format`: bumped with any change to the card or the files.
pub const CARD_FORMAT: &str = "gan-rs/mnistm-style/1";

/// The card's file name in a built folder.
pub const CARD_FILE: &str = "card.json";

/// The folder of the MNIST-M-style set of `seed` under `root`.
pub fn mnistm_style_dir(root: &Path, seed: u64) -> PathBuf {
    root.join(format!("mnistm-style-seed{seed}"))
}

/// A colour photo, decoded to 8-bit RGB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    name: String,
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Photo {
    /// A photo from raw RGB bytes (row-major, 3 a pixel), e.g. one a test draws by hand.
    /// `name` is for error messages. At least 28x28, since a crop must fit.
    pub fn from_rgb(name: &str, width: usize, height: usize, rgb: Vec<u8>) -> Result<Self> {
        if width.checked_mul(height).and_then(|n| n.checked_mul(3)) != Some(rgb.len()) {
            bail!(
                "{name}: {} bytes for a {width}x{height} RGB image, which needs {}",
                rgb.len(),
                width.saturating_mul(height).saturating_mul(3)
            )
        }
        if width < SIDE || height < SIDE {
            bail!(
                "{name}: the photo is {width}x{height} pixels, smaller than the {SIDE}x{SIDE} \
                 crop MNIST-M-style digits take from it"
            )
        }
        Ok(Self {
            name: name.into(),
            width,
            height,
            rgb,
        })
    }

    /// Decodes a PNG or JPEG file's bytes (the format is told by the content, not by the
    /// name) to 8-bit RGB: alpha is dropped, grey is expanded, 16-bit is rounded.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self> {
        let image = image::load_from_memory(bytes)
            .with_context(|| format!("{name}: cannot decode the image (not a valid PNG or JPEG)"))?
            .into_rgb8();
        let (w, h) = (image.width() as usize, image.height() as usize);
        Self::from_rgb(name, w, h, image.into_raw())
    }

    /// The name it was made with (the file name, for photos of a folder).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The RGB bytes, row-major.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }
}

/// The photo files of `dir`: `.png`, `.jpg` and `.jpeg` (any case), not hidden, sorted by
/// file name byte by byte so the photo indices are the same on every machine whatever order
/// the file system lists them in. Other files are left alone (a README, a licence).
pub fn photo_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read the photo folder", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list the folder", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ext = Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let photo_ext = matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"));
        if photo_ext && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        bail!(
            "{}: no photos there (no .png, .jpg or .jpeg file): MNIST-M-style digits need at \
             least one colour photo to take their backgrounds from",
            dir.display()
        )
    }
    Ok(files)
}

/// A photo as the card records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoCard {
    /// File name in the photo folder.
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// The file names and SHA-256 of the photos of `dir`, in recipe order (no decoding: this is
/// what decides whether a built set is still current).
fn photo_hashes(dir: &Path) -> Result<Vec<(String, String, Vec<u8>)>> {
    photo_files(dir)?
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            Ok((name, sha256_hex(&bytes), bytes))
        })
        .collect()
}

/// Reads and decodes every photo of `dir`, in recipe order; an undecodable file or one
/// smaller than 28x28 is an error that names it.
pub fn read_photos(dir: &Path) -> Result<Vec<Photo>> {
    photo_hashes(dir)?
        .into_iter()
        .map(|(name, _, bytes)| Photo::decode(&dir.join(&name).display().to_string(), &bytes))
        .collect()
}

/// Where a digit's background comes from: photo `photo`, the 28x28 crop whose top-left
/// pixel is at column `x`, row `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crop {
    /// Index of the photo, in recipe order.
    pub photo: usize,
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
}

/// The ChaCha20 stream of a split: train and test never share draws.
fn stream(kind: SplitKind) -> u64 {
    match kind {
        SplitKind::Train => 0,
        SplitKind::Test => 1,
    }
}

/// Maps a uniform u64 to `0..n` by multiply-shift (Lemire): fixed here rather than left to
/// `rand`, so that the draws cannot change with its version.
fn below(u: u64, n: usize) -> usize {
    ((u128::from(u) * n as u128) >> 64) as usize
}

/// The crop of image `index` of split `kind` for photos of the given `(width, height)`,
/// all at least 28x28 (as [`Photo`] guarantees); `None` when there is no photo.
pub fn draw_crop(
    seed: u64,
    kind: SplitKind,
    index: usize,
    sizes: &[(usize, usize)],
) -> Option<Crop> {
    if sizes.is_empty() || sizes.iter().any(|&(w, h)| w < SIDE || h < SIDE) {
        return None;
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream(kind));
    rng.set_word_pos(16 * index as u128);
    let photo = below(rng.next_u64(), sizes.len());
    let (w, h) = sizes[photo];
    let x = below(rng.next_u64(), w - SIDE + 1);
    let y = below(rng.next_u64(), h - SIDE + 1);
    Some(Crop { photo, x, y })
}

/// The crops of the first `n` images of split `kind`.
pub fn draw_crops(seed: u64, kind: SplitKind, n: usize, photos: &[Photo]) -> Result<Vec<Crop>> {
    let sizes: Vec<_> = photos.iter().map(|p| (p.width, p.height)).collect();
    (0..n)
        .map(|i| {
            draw_crop(seed, kind, i, &sizes)
                .context("no photo (or one smaller than 28x28) to draw MNIST-M-style crops from")
        })
        .collect()
}

/// The recipe on one digit: `|crop - digit|` per RGB channel, 28x28x3 bytes, channels last.
/// `digit` is 784 grey bytes, row-major; the crop must lie inside the photo.
pub fn blend(digit: &[u8], photo: &Photo, x: usize, y: usize) -> Result<[u8; RGB_LEN]> {
    if digit.len() != DIGIT_LEN {
        bail!("a digit is {DIGIT_LEN} bytes (28x28), got {}", digit.len())
    }
    if x + SIDE > photo.width || y + SIDE > photo.height {
        bail!(
            "{}: the 28x28 crop at column {x}, row {y} does not fit in the {}x{} photo",
            photo.name,
            photo.width,
            photo.height
        )
    }
    let mut out = [0u8; RGB_LEN];
    for r in 0..SIDE {
        let src = &photo.rgb[((y + r) * photo.width + x) * 3..][..SIDE * 3];
        let dst = &mut out[r * SIDE * 3..][..SIDE * 3];
        for c in 0..SIDE {
            let d = digit[r * SIDE + c];
            for k in 0..3 {
                dst[c * 3 + k] = src[c * 3 + k].abs_diff(d);
            }
        }
    }
    Ok(out)
}

/// The recipe on `n` digits (`digits` is `n * 784` bytes) with one crop each:
/// `n * 28 * 28 * 3` bytes, channels last.
pub fn compose(digits: &[u8], photos: &[Photo], crops: &[Crop]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(crops.len() * RGB_LEN);
    compose_into(&mut out, digits, photos, crops, |_| {})?;
    Ok(out)
}

/// [`compose`], appending to `out` (after a file header, with no copy of the images).
fn compose_into(
    out: &mut Vec<u8>,
    digits: &[u8],
    photos: &[Photo],
    crops: &[Crop],
    mut progress: impl FnMut(u64),
) -> Result<()> {
    if digits.len() != crops.len() * DIGIT_LEN {
        bail!(
            "{} bytes of digits for {} crops: each digit is {DIGIT_LEN} bytes",
            digits.len(),
            crops.len()
        )
    }
    out.reserve(crops.len() * RGB_LEN);
    for (i, (digit, crop)) in digits.chunks_exact(DIGIT_LEN).zip(crops).enumerate() {
        let Some(photo) = photos.get(crop.photo) else {
            bail!("crop {i} names photo {} of {}", crop.photo, photos.len())
        };
        out.extend_from_slice(&blend(digit, photo, crop.x, crop.y)?);
        if i % 1024 == 1023 {
            progress(1024);
        }
    }
    progress(crops.len() as u64 % 1024);
    Ok(())
}

/// A file of a built set as the card records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCard {
    /// File name in the set's folder.
    pub file: String,
    /// SHA-256 of the file as stored (gzip): what is checked before the set is reused.
    pub sha256: String,
    /// SHA-256 of its uncompressed content, to compare sets built by different versions of
    /// the gzip encoder.
    pub content_sha256: String,
}

/// One split of a built set as the card records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCard {
    /// `train` or `test`.
    pub split: String,
    /// Number of images.
    pub count: usize,
    /// The images, IDX u8 `[count, 28, 28, 3]`, gzip.
    pub images: OutputCard,
    /// The labels (MNIST's), IDX u8 `[count]`, gzip.
    pub labels: OutputCard,
}

/// A source file (MNIST's) as the card records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCard {
    /// Canonical MNIST file name.
    pub file: String,
    /// SHA-256 of its uncompressed content.
    pub sha256: String,
}

/// What `card.json` of a built set says: how it was made, from what, and what it holds.
/// No timestamp, so that two builds of the same set are byte-identical, card included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MnistmCard {
    /// [`CARD_FORMAT`].
    pub format: String,
    /// [`RECIPE`].
    pub recipe: String,
    /// The seed of the draws.
    pub seed: u64,
    /// The MNIST files the digits and labels came from.
    pub mnist: Vec<SourceCard>,
    /// The photos, in recipe order (the order of their indices in the draws).
    pub photos: Vec<PhotoCard>,
    /// Train, then test.
    pub splits: Vec<SplitCard>,
}

impl MnistmCard {
    /// The card of split `kind`.
    pub fn split(&self, kind: SplitKind) -> Option<&SplitCard> {
        self.splits.iter().find(|s| s.split == split_name(kind))
    }
}

fn split_name(kind: SplitKind) -> &'static str {
    match kind {
        SplitKind::Train => "train",
        SplitKind::Test => "test",
    }
}

const SPLITS: [SplitKind; 2] = [SplitKind::Train, SplitKind::Test];

/// What [`ensure_mnistm_style`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistmStyle {
    /// The set's folder, `<root>/mnistm-style-seed<S>`.
    pub dir: PathBuf,
    /// Why the set was (re)built, `None` when the one there was reused.
    pub built: Option<String>,
    /// Its card.
    pub card: MnistmCard,
}

impl MnistmStyle {
    /// Loads split `kind` of the set, without hashing its files again: `ensure` has just
    /// checked (or written) them. `[n, 3, 28, 28]` f32 in [-1, 1] and MNIST's labels.
    pub fn load(&self, kind: SplitKind, device: &Device) -> Result<Split> {
        load_built(&self.dir, &self.card, kind, false, device)
    }
}

/// Reads and parses the card of a built folder.
pub fn read_card(dir: &Path) -> Result<MnistmCard> {
    let path = dir.join(CARD_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid card", path.display()))
}

/// The MNIST files of both splits with their content SHA-256: the pinned ones when MNIST
/// is verified as canonical (loading checks them), else computed from the files.
fn mnist_sources(mnist_dir: &Path, verify: Verify) -> Result<Vec<SourceCard>> {
    let mut out = Vec::new();
    for kind in SPLITS {
        let (fx, fy) = kind.files();
        for f in [fx, fy] {
            let sha256 = match verify {
                Verify::Canonical => f.sha256.to_string(),
                Verify::Skip => {
                    let Some(path) = locate(mnist_dir, f.name) else {
                        bail!(
                            "{}: missing (neither {0} nor {0}.gz is there): MNIST-M-style \
                             digits are built from MNIST",
                            mnist_dir.join(f.name).display()
                        )
                    };
                    content_sha256(&path)?
                }
            };
            out.push(SourceCard {
                file: f.name.to_string(),
                sha256,
            });
        }
    }
    Ok(out)
}

/// Why the set in `dir` cannot be reused for these inputs, `None` when it can.
fn stale(
    dir: &Path,
    seed: u64,
    photos: &[(String, String)],
    mnist: &[SourceCard],
) -> Option<String> {
    let card = match read_card(dir) {
        Ok(card) => card,
        Err(_) if !dir.join(CARD_FILE).exists() => return Some("no set there yet".into()),
        Err(e) => return Some(format!("{e:#}")),
    };
    if card.format != CARD_FORMAT || card.recipe != RECIPE {
        return Some("the card is of another format or recipe".into());
    }
    if card.seed != seed {
        return Some(format!("the card's seed is {}, not {seed}", card.seed));
    }
    let had: Vec<_> = card
        .photos
        .iter()
        .map(|p| (p.file.clone(), p.sha256.clone()))
        .collect();
    if had != photos {
        return Some("the photos changed".into());
    }
    if card.mnist != mnist {
        return Some("the MNIST files changed".into());
    }
    for kind in SPLITS {
        let Some(split) = card.split(kind) else {
            return Some(format!("the card has no {} split", split_name(kind)));
        };
        for out in [&split.images, &split.labels] {
            let path = dir.join(&out.file);
            match std::fs::read(&path) {
                Ok(bytes) if sha256_hex(&bytes) == out.sha256 => {}
                Ok(_) => return Some(format!("{}: SHA-256 differs from the card", path.display())),
                Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
            }
        }
    }
    None
}

/// Gzip at the fastest level: photo textures barely compress, and level 1 is several times
/// faster than the default for nearly the same size. The header has no time stamp, so the
/// bytes depend on the content alone.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 2),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).context("compressing")?;
    enc.finish().context("compressing")
}

/// Builds the set into `dir`, card last.
fn build(
    mnist_dir: &Path,
    photos_dir: &Path,
    dir: &Path,
    seed: u64,
    verify: Verify,
    mnist: Vec<SourceCard>,
) -> Result<MnistmCard> {
    // Any old card goes first: from here until the new one is written, the folder is no set.
    let card_path = dir.join(CARD_FILE);
    if card_path.exists() {
        std::fs::remove_file(&card_path)
            .with_context(|| format!("removing the stale {}", card_path.display()))?;
    }
    let hashed = photo_hashes(photos_dir)?;
    let mut photos = Vec::with_capacity(hashed.len());
    let mut photo_cards = Vec::with_capacity(hashed.len());
    for (name, sha256, bytes) in hashed {
        let photo = Photo::decode(&photos_dir.join(&name).display().to_string(), &bytes)?;
        photo_cards.push(PhotoCard {
            file: name,
            sha256,
            width: photo.width,
            height: photo.height,
        });
        photos.push(photo);
    }
    let mut splits = Vec::new();
    let mut bar = LateBar::new(0, "MNIST-M-style");
    for kind in SPLITS {
        let (fx, fy) = kind.files();
        let sha = |f: &crate::mnist::MnistFile| (verify == Verify::Canonical).then_some(f.sha256);
        let x_name = mnist_dir.join(fx.name).display().to_string();
        let images = idx::parse_images(&read_verified(mnist_dir, fx.name, sha(fx))?, &x_name)?;
        let labels_raw = read_verified(mnist_dir, fy.name, sha(fy))?;
        let labels =
            idx::parse_labels(&labels_raw, &mnist_dir.join(fy.name).display().to_string())?;
        if (images.rows, images.cols) != (SIDE, SIDE) {
            bail!(
                "{x_name}: images are {}x{}, not 28x28",
                images.rows,
                images.cols
            )
        }
        if images.n != labels.len() {
            bail!(
                "{x_name}: {} images but {} labels: the files do not belong together",
                images.n,
                labels.len()
            )
        }
        let n = images.n;
        bar.set_message(&format!("MNIST-M-style {}", split_name(kind)));
        bar.inc_length(n as u64);
        let crops = draw_crops(seed, kind, n, &photos)?;
        let mut raw = idx::ubyte_header(&[n, SIDE, SIDE, 3]).context("encoding the images")?;
        compose_into(&mut raw, &images.pixels, &photos, &crops, |k| bar.inc(k))?;
        drop(images);
        bar.set_message(&format!("MNIST-M-style {}: writing", split_name(kind)));
        let labels_idx = idx::encode_labels(&labels);
        let name = split_name(kind);
        let store = |file: String, content: &[u8]| -> Result<OutputCard> {
            let gz = gzip(content)?;
            write_atomic(dir, &file, &gz)?;
            Ok(OutputCard {
                file,
                sha256: sha256_hex(&gz),
                content_sha256: sha256_hex(content),
            })
        };
        splits.push(SplitCard {
            split: name.into(),
            count: n,
            images: store(format!("{name}-images-idx4-ubyte.gz"), &raw)?,
            labels: store(format!("{name}-labels-idx1-ubyte.gz"), &labels_idx)?,
        });
    }
    let card = MnistmCard {
        format: CARD_FORMAT.into(),
        recipe: RECIPE.into(),
        seed,
        mnist,
        photos: photo_cards,
        splits,
    };
    let mut json = serde_json::to_string_pretty(&card).context("writing the card")?;
    json.push('\n');
    write_atomic(dir, CARD_FILE, json.as_bytes())?;
    Ok(card)
}

/// Makes sure `<root>/mnistm-style-seed<seed>/` holds the MNIST-M-style set of the MNIST in
/// `mnist_dir` (checked against the canonical SHA-256 unless `verify` is `Skip`) and the
/// photos of `photos_dir`: reuses the set there when its card names the same seed, recipe,
/// MNIST and photos (by SHA-256) and its files still have the card's SHA-256; builds it
/// otherwise. Files are written atomically, the card last, so a build cut short is rebuilt.
pub fn ensure_mnistm_style(
    mnist_dir: &Path,
    photos_dir: &Path,
    root: &Path,
    seed: u64,
    verify: Verify,
) -> Result<MnistmStyle> {
    let dir = mnistm_style_dir(root, seed);
    let photos: Vec<_> = photo_hashes(photos_dir)?
        .into_iter()
        .map(|(name, sha, _)| (name, sha))
        .collect();
    let mnist = mnist_sources(mnist_dir, verify)?;
    match stale(&dir, seed, &photos, &mnist) {
        None => Ok(MnistmStyle {
            card: read_card(&dir)?,
            dir,
            built: None,
        }),
        Some(why) => {
            let card = build(mnist_dir, photos_dir, &dir, seed, verify, mnist)
                .with_context(|| format!("building the MNIST-M-style set in {}", dir.display()))?;
            Ok(MnistmStyle {
                dir,
                built: Some(why),
                card,
            })
        }
    }
}

/// Channels-last u8 images `[n, h, w, c]` to a channels-first f32 tensor `[n, c, h, w]`
/// in [-1, 1] (p / 127.5 - 1, as MNIST).
pub(crate) fn hwc_to_tensor(
    hwc: &[u8],
    n: usize,
    side: usize,
    channels: usize,
    device: &Device,
) -> Result<Tensor> {
    let plane = side * side;
    let mut chw = vec![0f32; hwc.len()];
    for (img_in, img_out) in hwc
        .chunks_exact(plane * channels)
        .zip(chw.chunks_exact_mut(plane * channels))
    {
        for (p, px) in img_in.chunks_exact(channels).enumerate() {
            for (k, &v) in px.iter().enumerate() {
                img_out[k * plane + p] = f32::from(v) / 127.5 - 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(chw, (n, channels, side, side), device)?)
}

/// Labels as the [`Split`] wants them.
pub(crate) fn split_of(images: Tensor, labels: Vec<u8>, device: &Device) -> Result<Split> {
    let n = labels.len();
    let label_u32: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
    Ok(Split {
        images,
        labels: Tensor::from_vec(label_u32, n, device)?,
        labels_u8: labels,
    })
}

fn load_built(
    dir: &Path,
    card: &MnistmCard,
    kind: SplitKind,
    check: bool,
    device: &Device,
) -> Result<Split> {
    let Some(split) = card.split(kind) else {
        bail!(
            "{}: the card has no {} split",
            dir.join(CARD_FILE).display(),
            split_name(kind)
        )
    };
    let read = |out: &OutputCard| -> Result<Vec<u8>> {
        let path = dir.join(&out.file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if check && sha256_hex(&bytes) != out.sha256 {
            bail!(
                "{}: SHA-256 differs from the card's: the file is damaged; build the set again",
                path.display()
            )
        }
        idx::decompress(&bytes, &path.display().to_string())
    };
    let x_name = dir.join(&split.images.file).display().to_string();
    let (dims, rgb) = idx::parse_ubyte(&read(&split.images)?, &x_name, 4)?;
    let labels = idx::parse_labels(
        &read(&split.labels)?,
        &dir.join(&split.labels.file).display().to_string(),
    )?;
    if dims != [split.count, SIDE, SIDE, 3] || labels.len() != split.count {
        bail!(
            "{x_name}: holds {dims:?} images and {} labels, the card says {} of [28, 28, 3]",
            labels.len(),
            split.count
        )
    }
    let images = hwc_to_tensor(&rgb, split.count, SIDE, 3, device)?;
    split_of(images, labels, device)
}

/// Loads split `kind` of a built MNIST-M-style folder (as [`ensure_mnistm_style`] leaves
/// it), checking its files against the card: `[n, 3, 28, 28]` f32 in [-1, 1] and MNIST's
/// labels.
pub fn load_mnistm_style_split(dir: &Path, kind: SplitKind, device: &Device) -> Result<Split> {
    load_built(dir, &read_card(dir)?, kind, true, device)
}

/// [`ensure_mnistm_style`], then both splits loaded.
pub fn load_mnistm_style(
    mnist_dir: &Path,
    photos_dir: &Path,
    root: &Path,
    seed: u64,
    verify: Verify,
    device: &Device,
) -> Result<(Mnist, MnistmStyle)> {
    let set = ensure_mnistm_style(mnist_dir, photos_dir, root, seed, verify)?;
    let data = Mnist {
        train: set.load(SplitKind::Train, device)?,
        test: set.load(SplitKind::Test, device)?,
    };
    Ok((data, set))
}

/// The label file of a real MNIST-M split and its image folder, under `root` (`mnist_m/`).
pub fn mnist_m_paths(root: &Path, kind: SplitKind) -> (PathBuf, PathBuf) {
    let name = format!("mnist_m_{}", split_name(kind));
    (root.join(format!("{name}_labels.txt")), root.join(name))
}

/// Loads split `kind` of the real MNIST-M in `root`, as commonly distributed: the label
/// file `mnist_m_<split>_labels.txt` with lines `00000000.png 5`, and the 28x28 RGB PNGs
/// in `mnist_m_<split>/`, in the label file's order. A missing label file or image, a bad
/// line or label, or an image that is not 28x28 8-bit RGB is an error that names it.
pub fn load_mnist_m_folder(root: &Path, kind: SplitKind, device: &Device) -> Result<Split> {
    let (label_path, image_dir) = mnist_m_paths(root, kind);
    let lname = label_path.display();
    let text = std::fs::read_to_string(&label_path).with_context(|| {
        format!(
            "cannot read the MNIST-M label file {lname} (is {} the mnist_m folder?)",
            root.display()
        )
    })?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [] => continue,
            [file, label] => {
                let label = match label.parse::<u8>() {
                    Ok(l) if l <= 9 => l,
                    _ => bail!("{lname} line {line_no}: label {label:?} is not a digit 0-9"),
                };
                if Path::new(file).file_name().and_then(|f| f.to_str()) != Some(file) {
                    bail!("{lname} line {line_no}: {file:?} is not a plain file name")
                }
                entries.push((line_no, file, label));
            }
            _ => bail!("{lname} line {line_no}: expected `<file>.png <label>`, found {line:?}"),
        }
    }
    if entries.is_empty() {
        bail!("{lname}: no labels in it")
    }
    let n = entries.len();
    let mut rgb = Vec::with_capacity(n * RGB_LEN);
    let mut labels = Vec::with_capacity(n);
    let mut bar = LateBar::new(n as u64, &format!("MNIST-M {}", split_name(kind)));
    for (line_no, file, label) in entries {
        let path = image_dir.join(file);
        let pname = path.display();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{lname} line {line_no} names {file}, but {pname} does not exist")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {pname}")),
        };
        let image = image::load_from_memory(&bytes)
            .with_context(|| format!("{pname}: cannot decode the image"))?;
        let (w, h) = (image.width(), image.height());
        let color = image.color();
        let Some(image) = image.as_rgb8() else {
            bail!("{pname}: the image is {color:?}, MNIST-M images are 8-bit RGB (Rgb8)")
        };
        if (w, h) != (SIDE as u32, SIDE as u32) {
            bail!("{pname}: the image is {w}x{h}, MNIST-M images are 28x28")
        }
        rgb.extend_from_slice(image.as_raw());
        labels.push(label);
        bar.inc(1);
    }
    drop(bar);
    let images = hwc_to_tensor(&rgb, n, SIDE, 3, device)?;
    split_of(images, labels, device)
}
