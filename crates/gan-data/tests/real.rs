//! The real MNIST of `../shared/data/mnist`, where the machine has it.

use std::path::Path;

use candle_core::Device;
use gan_data::{import_mnist, load_mnist, Verify};

#[test]
fn imports_and_loads_real_mnist() {
    let shared = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/mnist"
    ));
    if !shared.is_dir() {
        eprintln!("skipped: ../shared/data/mnist not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = import_mnist(shared, dir.path()).unwrap();
    assert_eq!(report.files.len(), 4);
    let m = load_mnist(dir.path(), Verify::Canonical, &Device::Cpu).unwrap();
    assert_eq!(m.train.images.dims(), &[60_000, 1, 28, 28]);
    assert_eq!(m.test.images.dims(), &[10_000, 1, 28, 28]);
    assert_eq!(m.train.labels_u8[0], 5, "the first training digit is a 5");
    let mut counts = [0usize; 10];
    for &l in &m.test.labels_u8 {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    let min = m
        .train
        .images
        .min_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let max = m
        .train
        .images
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!((min, max), (-1.0, 1.0));
}
