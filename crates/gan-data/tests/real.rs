//! The real MNIST of `../shared/data/mnist`, where the machine has it.

use candle_core::Device;
use gan_data::{import_mnist, load_mnist, Verify};

#[test]
fn imports_and_loads_real_mnist() {
    // The copy the development and CI machines keep beside the clone.
    let shared = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/mnist"
    ));
    let Some(shared) = shared.is_dir().then_some(shared) else {
        eprintln!("skipped: ../shared/data/mnist not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = import_mnist(shared, dir.path()).unwrap();
    assert_eq!(report.files.len(), 4);
    assert!(report
        .files
        .iter()
        .all(|(_, a)| matches!(a, gan_data::fetch::Action::Imported(_))));
    assert!(import_mnist(shared, dir.path()).unwrap().all_present());

    let m = load_mnist(dir.path(), Verify::Canonical, &Device::Cpu).unwrap();
    assert_eq!(m.train.images.dims(), &[60_000, 1, 28, 28]);
    assert_eq!(m.test.images.dims(), &[10_000, 1, 28, 28]);
    assert_eq!(m.train.labels.dims(), &[60_000]);
    assert_eq!((m.train.len(), m.test.len()), (60_000, 10_000));
    assert_eq!(m.train.labels_u8[0], 5, "the first training digit is a 5");
    for split in [&m.train, &m.test] {
        let mut counts = [0usize; 10];
        for &l in &split.labels_u8 {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > split.len() / 20), "{counts:?}");
        let min = split.images.min_all().unwrap().to_scalar::<f32>().unwrap();
        let max = split.images.max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!((min, max), (-1.0, 1.0));
    }
}
