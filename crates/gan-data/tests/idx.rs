//! IDX parsing and MNIST loading on fixtures the tests write, every bad input included.

use std::io::Write;
use std::path::Path;

use candle_core::Device;
use gan_data::idx::{
    encode_images, encode_labels, parse_images, parse_labels, read_idx_images, read_idx_labels,
    IdxImages,
};
use gan_data::{load_mnist, load_split, SplitKind, Verify};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` 28x28 images whose pixel i is 7 i mod 256, so every byte value occurs.
fn images(n: usize) -> IdxImages {
    let pixels = (0..n * 784).map(|i| (i * 7 % 256) as u8).collect();
    IdxImages {
        n,
        rows: 28,
        cols: 28,
        pixels,
    }
}

fn write_split(dir: &Path, prefix: &str, imgs: &IdxImages, labels: &[u8], gzip: bool) {
    let (x, y) = (encode_images(imgs), encode_labels(labels));
    let (x, y, ext) = if gzip {
        (gz(&x), gz(&y), ".gz")
    } else {
        (x, y, "")
    };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), x).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), y).unwrap();
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

/// Asserts that `msg` contains every one of `parts`.
fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{p:?} missing from the error: {msg}");
    }
}

#[test]
fn raw_and_gzip_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let odd = IdxImages {
        n: 2,
        rows: 3,
        cols: 5,
        pixels: (0..30).collect(),
    };
    let raw = dir.path().join("x");
    let zipped = dir.path().join("x.gz");
    std::fs::write(&raw, encode_images(&odd)).unwrap();
    std::fs::write(&zipped, gz(&encode_images(&odd))).unwrap();
    assert_eq!(read_idx_images(&raw).unwrap(), odd);
    assert_eq!(read_idx_images(&zipped).unwrap(), odd);
    assert_eq!(parse_images(&encode_images(&odd), "mem").unwrap(), odd);

    let labels = [3u8, 1, 4, 1, 5, 9, 2, 6];
    let l = dir.path().join("l");
    std::fs::write(&l, encode_labels(&labels)).unwrap();
    assert_eq!(read_idx_labels(&l).unwrap(), labels);
    std::fs::write(&l, gz(&encode_labels(&labels))).unwrap();
    assert_eq!(read_idx_labels(&l).unwrap(), labels);
    assert_eq!(
        parse_labels(&encode_labels(&[]), "mem").unwrap(),
        Vec::<u8>::new()
    );
}

#[test]
fn gzip_is_told_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    // Gzip bytes without .gz, raw bytes with .gz: both read right.
    let a = dir.path().join("labels");
    let b = dir.path().join("labels.gz");
    std::fs::write(&a, gz(&encode_labels(&[7, 8]))).unwrap();
    std::fs::write(&b, encode_labels(&[7, 8])).unwrap();
    assert_eq!(read_idx_labels(&a).unwrap(), vec![7, 8]);
    assert_eq!(read_idx_labels(&b).unwrap(), vec![7, 8]);
}

#[test]
fn loads_tensors_in_minus_one_to_one() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut imgs = images(4);
        imgs.pixels[0] = 0;
        imgs.pixels[1] = 255;
        imgs.pixels[2] = 51;
        write_split(dir.path(), "train", &imgs, &[0, 9, 2, 5], gzip);
        let s = load_split(dir.path(), SplitKind::Train, Verify::Skip, &Device::Cpu).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.images.dims(), &[4, 1, 28, 28]);
        assert_eq!(s.images.dtype(), candle_core::DType::F32);
        assert_eq!(s.labels.dtype(), candle_core::DType::U32);
        assert_eq!(s.labels.to_vec1::<u32>().unwrap(), vec![0, 9, 2, 5]);
        assert_eq!(s.labels_u8, vec![0, 9, 2, 5]);
        let px = s.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((px[0], px[1]), (-1.0, 1.0), "0 -> -1 and 255 -> +1 exactly");
        assert!((px[2] - (51.0 / 127.5 - 1.0)).abs() < 1e-6);
        for (p, v) in imgs.pixels.iter().zip(&px) {
            assert!((v - (*p as f32 / 127.5 - 1.0)).abs() < 1e-6);
        }
        assert!(px.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

#[test]
fn loads_both_splits() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &images(3), &[1, 2, 3], true);
    write_split(dir.path(), "t10k", &images(2), &[4, 5], false);
    let m = load_mnist(dir.path(), Verify::Skip, &Device::Cpu).unwrap();
    assert_eq!((m.train.len(), m.test.len()), (3, 2));
    assert_eq!(m.test.labels_u8, vec![4, 5]);
}

#[test]
fn missing_file_says_how_to_get_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_of(load_split(
        dir.path(),
        SplitKind::Test,
        Verify::Skip,
        &Device::Cpu,
    ));
    assert_mentions(
        &e,
        &[
            "t10k-images-idx3-ubyte",
            "missing",
            "cargo xtask fetch-mnist",
        ],
    );
    let e = err_of(read_idx_labels(&dir.path().join("nope")));
    assert_mentions(&e, &["nope", "fetch-mnist"]);
}

#[test]
fn wrong_magic_number_prints_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("train-images-idx3-ubyte");
    std::fs::write(&f, encode_labels(&[1, 2])).unwrap();
    let e = err_of(read_idx_images(&f));
    assert_mentions(
        &e,
        &[
            "train-images-idx3-ubyte",
            "wrong magic number",
            "0x00000803",
            "0x00000801",
        ],
    );
    let e = err_of(parse_labels(&encode_images(&images(1)), "labels.bin"));
    assert_mentions(
        &e,
        &["labels.bin", "wrong magic number", "expected 0x00000801"],
    );
}

#[test]
fn truncated_header_and_data_give_byte_counts() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("train-images-idx3-ubyte");
    let full = encode_images(&images(2));
    std::fs::write(&f, &full[..10]).unwrap();
    assert_mentions(
        &err_of(read_idx_images(&f)),
        &["train-images-idx3-ubyte", "truncated header", "16", "10"],
    );
    std::fs::write(&f, &full[..full.len() - 100]).unwrap();
    assert_mentions(
        &err_of(read_idx_images(&f)),
        &[
            "train-images-idx3-ubyte",
            "truncated data",
            "expected 1568",
            "found 1468",
        ],
    );
    // Same through gzip: the decompressed length is what counts.
    std::fs::write(&f, gz(&full[..full.len() - 1])).unwrap();
    assert_mentions(&err_of(read_idx_images(&f)), &["truncated data", "1567"]);
    let l = dir.path().join("train-labels-idx1-ubyte");
    std::fs::write(&l, &encode_labels(&[1, 2, 3])[..9]).unwrap();
    assert_mentions(
        &err_of(read_idx_labels(&l)),
        &[
            "train-labels-idx1-ubyte",
            "truncated data",
            "expected 3",
            "found 1",
        ],
    );
    std::fs::write(&l, []).unwrap();
    assert_mentions(&err_of(read_idx_labels(&l)), &["truncated header"]);
}

#[test]
fn trailing_data_is_an_error() {
    let mut bytes = encode_labels(&[1, 2]);
    bytes.push(0);
    assert_mentions(
        &err_of(parse_labels(&bytes, "extra")),
        &["extra", "trailing"],
    );
}

#[test]
fn corrupt_gzip_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("train-images-idx3-ubyte.gz");
    let mut z = gz(&encode_images(&images(2)));
    z.truncate(z.len() / 2);
    std::fs::write(&f, &z).unwrap();
    assert_mentions(
        &err_of(read_idx_images(&f)),
        &["train-images-idx3-ubyte.gz", "corrupt gzip"],
    );
    // Flipped bytes: the CRC or the deflate stream catches them.
    let mut z = gz(&encode_images(&images(2)));
    let mid = z.len() / 2;
    z[mid] ^= 0xff;
    z[mid + 1] ^= 0x55;
    std::fs::write(&f, &z).unwrap();
    assert_mentions(&err_of(read_idx_images(&f)), &["corrupt gzip"]);
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &images(3), &[1, 2], false);
    let e = err_of(load_split(
        dir.path(),
        SplitKind::Train,
        Verify::Skip,
        &Device::Cpu,
    ));
    assert_mentions(
        &e,
        &[
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "3 images but 2 labels",
        ],
    );
}

#[test]
fn labels_must_be_digits() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &images(2), &[1, 12], false);
    let e = err_of(load_split(
        dir.path(),
        SplitKind::Train,
        Verify::Skip,
        &Device::Cpu,
    ));
    assert_mentions(
        &e,
        &["train-labels-idx1-ubyte", "label 12 at index 1", "0-9"],
    );
}

#[test]
fn other_image_sizes_parse_but_do_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let small = IdxImages {
        n: 1,
        rows: 8,
        cols: 9,
        pixels: vec![0; 72],
    };
    write_split(dir.path(), "train", &small, &[1], false);
    let parsed = read_idx_images(&dir.path().join("train-images-idx3-ubyte")).unwrap();
    assert_eq!((parsed.rows, parsed.cols), (8, 9));
    let e = err_of(load_split(
        dir.path(),
        SplitKind::Train,
        Verify::Skip,
        &Device::Cpu,
    ));
    assert_mentions(&e, &["train-images-idx3-ubyte", "8x9", "28x28"]);
}

#[test]
fn non_canonical_files_fail_verification() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &images(2), &[1, 2], true);
    let e = err_of(load_split(
        dir.path(),
        SplitKind::Train,
        Verify::Canonical,
        &Device::Cpu,
    ));
    let found = gan_data::mnist::sha256_hex(&encode_images(&images(2)));
    assert_mentions(
        &e,
        &[
            "train-images-idx3-ubyte.gz",
            "SHA-256 mismatch",
            "expected ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            &format!("found {found}"),
        ],
    );
    // The same data loads when verification is off.
    assert!(load_split(dir.path(), SplitKind::Train, Verify::Skip, &Device::Cpu).is_ok());
}
