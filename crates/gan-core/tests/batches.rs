//! The seeded mini-batch order.

use candle_core::{Device, Tensor};
use gan_core::engine::{Batches, Dataset};

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

#[test]
fn each_index_once_per_epoch() {
    let b = Batches::new(103, 10, false).unwrap();
    assert_eq!(b.num_batches(), 11);
    for epoch in 0..5 {
        let e = b.epoch_indices(7, epoch);
        assert_eq!(e.len(), 11);
        assert!(e[..10].iter().all(|x| x.len() == 10));
        assert_eq!(e[10].len(), 3, "the last batch keeps the remainder");
        assert_eq!(sorted(e.concat()), (0..103).collect::<Vec<_>>());
    }
}

#[test]
fn order_depends_on_seed_and_epoch_only() {
    let b = Batches::new(103, 10, false).unwrap();
    let e0 = b.epoch_indices(7, 0);
    assert_eq!(e0, b.epoch_indices(7, 0), "same seed and epoch, same order");
    assert_eq!(
        e0,
        Batches::new(103, 10, false).unwrap().epoch_indices(7, 0)
    );
    assert_ne!(e0, b.epoch_indices(7, 1), "a new epoch reshuffles");
    assert_ne!(e0, b.epoch_indices(8, 0), "another seed, another order");
    assert_ne!(e0.concat(), (0..103).collect::<Vec<_>>(), "not shuffled");
    // Epochs are independent: epoch 3 does not depend on having drawn 0-2 first.
    let late = b.epoch_indices(7, 3);
    for e in 0..3 {
        b.epoch_indices(7, e);
    }
    assert_eq!(late, b.epoch_indices(7, 3));
}

#[test]
fn drop_last_leaves_out_the_partial_batch() {
    let b = Batches::new(103, 10, true).unwrap();
    assert_eq!(b.num_batches(), 10);
    let e = b.epoch_indices(0, 0);
    assert_eq!(e.len(), 10);
    assert!(e.iter().all(|x| x.len() == 10));
    let all = sorted(e.concat());
    all.windows(2)
        .for_each(|w| assert!(w[0] < w[1], "an index twice"));
    assert!(all.iter().all(|&i| i < 103));
    // Exact multiples lose nothing either way.
    assert_eq!(Batches::new(100, 10, true).unwrap().num_batches(), 10);
    assert_eq!(Batches::new(100, 10, false).unwrap().num_batches(), 10);
}

#[test]
fn bad_sizes_are_errors() {
    let e = Batches::new(10, 0, false).unwrap_err().to_string();
    assert!(e.contains("batch size"), "{e}");
    assert!(Batches::new(0, 4, false).is_err());
    let e = Batches::new(3, 4, true).unwrap_err().to_string();
    assert!(e.contains("no full batch"), "{e}");
    let b = Batches::new(3, 4, false).unwrap();
    assert_eq!(b.epoch_indices(1, 0).len(), 1);
    assert_eq!(b.epoch_indices(1, 0)[0].len(), 3);
}

#[test]
fn salts_shuffle_streams_apart() {
    let b = Batches::new(103, 10, true).unwrap();
    let salted = b.clone().salted(1).unwrap();
    assert_eq!(
        b.epoch_indices(7, 0),
        b.clone().salted(0).unwrap().epoch_indices(7, 0)
    );
    for epoch in 0..3 {
        assert_ne!(
            b.epoch_indices(7, epoch),
            salted.epoch_indices(7, epoch),
            "two index-aligned streams must not be drawn in lock step"
        );
    }
    assert!(b.salted(256).is_err());
}

#[test]
fn gather_keeps_images_and_labels_paired() {
    let images = Tensor::arange(0f32, 12.0, &Device::Cpu)
        .unwrap()
        .reshape((6, 1, 1, 2))
        .unwrap();
    let labels = Tensor::new(&[0u32, 1, 2, 3, 4, 5], &Device::Cpu).unwrap();
    let data = Dataset::new(images, Some(labels)).unwrap();
    let b = Batches::new(6, 4, false).unwrap();
    let mut seen = Vec::new();
    for idx in b.epoch_indices(3, 0) {
        let batch = data.gather(&idx).unwrap();
        assert_eq!(batch.images.dims(), &[idx.len(), 1, 1, 2]);
        let y = batch.labels.unwrap().to_vec1::<u32>().unwrap();
        assert_eq!(y, idx, "the batch follows epoch_indices");
        let x = batch
            .images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, l) in y.iter().enumerate() {
            assert_eq!(x[2 * i], 2.0 * *l as f32, "image and label stay paired");
        }
        seen.extend(y);
    }
    assert_eq!(sorted(seen), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn bad_data_sets_are_errors() {
    let images = Tensor::zeros((5, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let labels = Tensor::zeros(6, candle_core::DType::U32, &Device::Cpu).unwrap();
    let e = Dataset::new(images.clone(), Some(labels))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("5 images") && e.contains("one label per image"),
        "{e}"
    );
    let two = Tensor::zeros((5, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = Dataset::new(two, None).unwrap_err().to_string();
    assert!(e.contains("C = 1 or 3"), "{e}");
    let flat = Tensor::zeros((5, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(Dataset::new(flat, None).is_err());
    assert!(Dataset::new(images, None).is_ok());
}
