//! IDX parsing and MNIST loading on fixtures the tests write, every bad input included.

use std::io::Write;
use std::path::Path;

use candle_core::Device;
use gan_data::idx::{encode_images, encode_labels, read_idx_images, read_idx_labels, IdxImages};
use gan_data::{load_split, SplitKind, Verify};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: usize) -> IdxImages {
    let pixels = (0..n * 784).map(|i| (i * 7 % 256) as u8).collect();
    IdxImages {
        n,
        rows: 28,
        cols: 28,
        pixels,
    }
}

fn write_split(dir: &Path, n_images: usize, labels: &[u8], gzip: bool) {
    let (imgs, labs) = (encode_images(&images(n_images)), encode_labels(labels));
    if gzip {
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&imgs)).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gz(&labs)).unwrap();
    } else {
        std::fs::write(dir.join("train-images-idx3-ubyte"), imgs).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), labs).unwrap();
    }
}

fn err_of(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn raw_and_gzip_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("a");
    let zipped = dir.path().join("a.gz");
    std::fs::write(&raw, encode_images(&images(3))).unwrap();
    std::fs::write(&zipped, gz(&encode_images(&images(3)))).unwrap();
    assert_eq!(read_idx_images(&raw).unwrap(), images(3));
    assert_eq!(read_idx_images(&zipped).unwrap(), images(3));
    let l = dir.path().join("l");
    std::fs::write(&l, gz(&encode_labels(&[3, 1, 4]))).unwrap();
    assert_eq!(read_idx_labels(&l).unwrap(), vec![3, 1, 4]);
}

#[test]
fn loads_tensors_in_minus_one_to_one() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 4, &[0, 9, 2, 5], gzip);
        let s = load_split(dir.path(), SplitKind::Train, Verify::Skip, &Device::Cpu).unwrap();
        assert_eq!(s.images.dims(), &[4, 1, 28, 28]);
        assert_eq!(s.labels.to_vec1::<u32>().unwrap(), vec![0, 9, 2, 5]);
        assert_eq!(s.labels_u8, vec![0, 9, 2, 5]);
        let px = s.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Pixel i is (7 i mod 256): 0 maps to -1, 255 (i = 73·... ) to +1, 7 to 7/127.5 - 1.
        assert_eq!(px[0], -1.0);
        assert!((px[1] - (7.0 / 127.5 - 1.0)).abs() < 1e-6);
        let max = px.iter().cloned().fold(f32::MIN, f32::max);
        assert!((max - 1.0).abs() < 1e-6 && px.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

#[test]
fn every_bad_input_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let f = p.join("train-images-idx3-ubyte");
    let load = || load_split(p, SplitKind::Train, Verify::Skip, &Device::Cpu);

    // Missing file.
    let e = err_of(load());
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("missing") && e.contains("fetch-mnist"),
        "{e}"
    );

    // Wrong magic: a labels file where images belong.
    std::fs::write(&f, encode_labels(&[1, 2])).unwrap();
    let e = err_of(read_idx_images(&f));
    assert!(
        e.contains("train-images-idx3-ubyte")
            && e.contains("wrong magic number")
            && e.contains("0x00000803"),
        "{e}"
    );

    // Truncated header and truncated data.
    std::fs::write(&f, &encode_images(&images(2))[..10]).unwrap();
    assert!(err_of(read_idx_images(&f)).contains("truncated header"));
    let full = encode_images(&images(2));
    std::fs::write(&f, &full[..full.len() - 100]).unwrap();
    let e = err_of(read_idx_images(&f));
    assert!(
        e.contains("truncated data") && e.contains("1568") && e.contains("1468"),
        "{e}"
    );

    // Corrupt gzip.
    let mut z = gz(&full);
    let mid = z.len() / 2;
    z[mid] ^= 0xff;
    z.truncate(z.len() - 4);
    std::fs::write(&f, z).unwrap();
    assert!(err_of(read_idx_images(&f)).contains("corrupt gzip"));

    // Count mismatch between images and labels.
    write_split(p, 3, &[1, 2], false);
    let e = err_of(load());
    assert!(e.contains("3 images but 2 labels"), "{e}");

    // A label that is no digit.
    write_split(p, 2, &[1, 12], false);
    assert!(err_of(load()).contains("label 12 at index 1"));

    // Wrong image size for the models.
    std::fs::write(
        &f,
        encode_images(&IdxImages {
            n: 1,
            rows: 8,
            cols: 8,
            pixels: vec![0; 64],
        }),
    )
    .unwrap();
    std::fs::write(p.join("train-labels-idx1-ubyte"), encode_labels(&[1])).unwrap();
    assert!(err_of(load()).contains("8x8"));

    // Checksum mismatch: well-formed, but not canonical MNIST.
    write_split(p, 2, &[1, 2], false);
    let e = err_of(load_split(
        p,
        SplitKind::Train,
        Verify::Canonical,
        &Device::Cpu,
    ));
    assert!(
        e.contains("SHA-256 mismatch") && e.contains("ba891046"),
        "{e}"
    );
}
