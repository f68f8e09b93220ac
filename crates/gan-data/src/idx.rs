//! The IDX format of the MNIST files: a big-endian magic number (0x0803 for images,
//! 0x0801 for labels), the big-endian u32 dimensions, then unsigned bytes.
//!
//! Files may be gzip-compressed; that is told by their first two bytes, not by their name,
//! because mirrors and local copies do not agree on names (some gunzip and keep `.gz`).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Magic number of an IDX file of u8 images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The first two bytes of every gzip stream.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images as stored: `n` row-major `rows x cols` grey images, one byte a pixel.
///
/// The size is kept rather than assumed so that only the code that needs 28x28 (the
/// models' loader) rejects other sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Height in pixels.
    pub rows: usize,
    /// Width in pixels.
    pub cols: usize,
    /// `n * rows * cols` pixels, 0 (black) to 255 (white).
    pub pixels: Vec<u8>,
}

/// Reads a file and gunzips it when it is gzip. A missing file says how to get MNIST,
/// since that is by far the most common reason.
pub fn read_raw(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read {}: is MNIST there? `cargo xtask fetch-mnist` puts it in place",
            path.display()
        )
    })?;
    decompress(&bytes, &path.display().to_string())
}

/// Gunzips `bytes` if they start with the gzip magic, returns them as they are otherwise
/// (`name` is for error messages).
pub fn decompress(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .with_context(|| format!("{name}: corrupt gzip data"))?;
    Ok(out)
}

/// The dimensions after checking magic and header length.
fn header(bytes: &[u8], name: &str, magic: u32, ndims: usize) -> Result<Vec<usize>> {
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(4 * i..4 * i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let need = 4 + 4 * ndims;
    match word(0) {
        Some(found) if found != magic => bail!(
            "{name}: wrong magic number: expected {magic:#010x}, found {found:#010x} \
             (not an IDX {} file)",
            match magic {
                IMAGES_MAGIC => "images".to_string(),
                LABELS_MAGIC => "labels".to_string(),
                _ => format!("{ndims}-dimensional u8"),
            }
        ),
        _ if bytes.len() < need => bail!(
            "{name}: truncated header: an IDX header needs {need} bytes, the file has {}",
            bytes.len()
        ),
        _ => Ok((1..=ndims).filter_map(word).map(|d| d as usize).collect()),
    }
}

/// The payload after a header of `offset` bytes, which must be exactly `expected` bytes.
fn body<'a>(bytes: &'a [u8], name: &str, offset: usize, expected: usize) -> Result<&'a [u8]> {
    let got = bytes.len() - offset;
    if got < expected {
        bail!("{name}: truncated data: expected {expected} bytes after the header, found {got}")
    }
    if got > expected {
        bail!(
            "{name}: {} bytes of trailing data after the {expected} the header announces",
            got - expected
        )
    }
    Ok(&bytes[offset..])
}

/// Parses an images file held in memory (`name` is used in error messages).
pub fn parse_images(bytes: &[u8], name: &str) -> Result<IdxImages> {
    let dims = header(bytes, name, IMAGES_MAGIC, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    let Some(len) = n.checked_mul(rows).and_then(|x| x.checked_mul(cols)) else {
        bail!("{name}: impossible dimensions {n} x {rows} x {cols}")
    };
    let pixels = body(bytes, name, 16, len)?.to_vec();
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels,
    })
}

/// Parses a labels file held in memory; every label must be a digit 0-9, because the
/// conditional models one-hot encode them into 10 classes.
pub fn parse_labels(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let n = header(bytes, name, LABELS_MAGIC, 1)?[0];
    let labels = body(bytes, name, 8, n)?.to_vec();
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l > 9) {
        bail!("{name}: label {l} at index {i} is not a digit 0-9")
    }
    Ok(labels)
}

/// The magic number of an IDX file of u8 values in `ndims` dimensions: 0x08 is the type
/// byte of unsigned bytes, the last byte the number of dimensions.
pub fn ubyte_magic(ndims: usize) -> u32 {
    0x0800 | (ndims as u32 & 0xff)
}

/// Parses an IDX file of u8 values in `ndims` dimensions (colour images are 4: `n`, rows,
/// columns, channels): the dimensions and the values, row-major.
pub fn parse_ubyte(bytes: &[u8], name: &str, ndims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let dims = header(bytes, name, ubyte_magic(ndims), ndims)?;
    let Some(len) = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) else {
        bail!("{name}: impossible dimensions {dims:?}")
    };
    let values = body(bytes, name, 4 + 4 * ndims, len)?.to_vec();
    Ok((dims, values))
}

/// The header of an IDX file of u8 values of the given dimensions (the values follow it);
/// `None` when a dimension does not fit the format's u32 or there are over 255.
pub fn ubyte_header(dims: &[usize]) -> Option<Vec<u8>> {
    if dims.len() > 255 {
        return None;
    }
    let mut out = ubyte_magic(dims.len()).to_be_bytes().to_vec();
    for &d in dims {
        out.extend(u32::try_from(d).ok()?.to_be_bytes());
    }
    Some(out)
}

/// Encodes u8 values of the given dimensions as an IDX file; `None` when the values do
/// not fill the dimensions exactly or the dimensions do not fit the format.
pub fn encode_ubyte(dims: &[usize], values: &[u8]) -> Option<Vec<u8>> {
    let len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    if len != values.len() {
        return None;
    }
    let mut out = ubyte_header(dims)?;
    out.extend(values);
    Some(out)
}

/// Reads an IDX images file, raw or gzip.
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    parse_images(&read_raw(path)?, &path.display().to_string())
}

/// Reads an IDX labels file, raw or gzip.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&read_raw(path)?, &path.display().to_string())
}

/// Encodes images as an IDX file, so tests and tools can write MNIST-format data.
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    let mut out = IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [images.n, images.rows, images.cols] {
        out.extend((d as u32).to_be_bytes());
    }
    out.extend(&images.pixels);
    out
}

/// Encodes labels as an IDX file.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = LABELS_MAGIC.to_be_bytes().to_vec();
    out.extend((labels.len() as u32).to_be_bytes());
    out.extend(labels);
    out
}
