//! The seeded mini-batch order.

use candle_core::{Device, Tensor};
use gan_data::Batches;

#[test]
fn each_index_once_per_epoch_and_reproducible() {
    let b = Batches::new(103, 10, false).unwrap();
    let e0 = b.epoch_indices(7, 0);
    assert_eq!(e0.len(), 11);
    assert_eq!(e0.last().unwrap().len(), 3);
    let mut all: Vec<u32> = e0.concat();
    all.sort();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    assert_eq!(e0, b.epoch_indices(7, 0));
    assert_ne!(e0, b.epoch_indices(7, 1));
    assert_ne!(e0, b.epoch_indices(8, 0));
    assert_ne!(e0.concat(), (0..103).collect::<Vec<_>>(), "not shuffled");
}

#[test]
fn drop_last_and_bad_sizes() {
    let b = Batches::new(103, 10, true).unwrap();
    assert_eq!(b.num_batches(), 10);
    assert!(b.epoch_indices(0, 0).iter().all(|x| x.len() == 10));
    assert!(Batches::new(10, 0, false).is_err());
    assert!(Batches::new(0, 4, false).is_err());
    assert!(Batches::new(3, 4, true).is_err());
    assert!(Batches::new(3, 4, false).is_ok());
}

#[test]
fn batches_gather_matching_images_and_labels() {
    let images = Tensor::arange(0f32, 12.0, &Device::Cpu)
        .unwrap()
        .reshape((6, 1, 1, 2))
        .unwrap();
    let labels = Tensor::new(&[0u32, 1, 2, 3, 4, 5], &Device::Cpu).unwrap();
    let b = Batches::new(6, 4, false).unwrap();
    let mut seen = 0;
    for batch in b.epoch(&images, &labels, 3, 0) {
        let (x, y) = batch.unwrap();
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, l) in y.to_vec1::<u32>().unwrap().into_iter().enumerate() {
            assert_eq!(x[2 * i], 2.0 * l as f32);
            seen += 1;
        }
    }
    assert_eq!(seen, 6);
}
