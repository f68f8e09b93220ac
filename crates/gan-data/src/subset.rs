//! The few labelled examples of semi-supervised learning: `per_class` of each class,
//! drawn by a seed, the rest of the split left unlabelled.

use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::Split;

/// Indices of `per_class` examples of each class 0..`classes` of `labels`, in class
/// order: a seeded shuffle of the whole split, then the first `per_class` of each class
/// in it (the selection of Li et al.'s Triple-GAN code, so 10 per class of MNIST is their
/// "100 labels"). The same seed picks the same examples; a class with too few examples is
/// an error.
pub fn balanced_subset(
    labels: &[u8],
    per_class: usize,
    classes: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    if per_class == 0 || classes == 0 {
        bail!("a labelled subset needs at least one example of at least one class")
    }
    let mut order: Vec<usize> = (0..labels.len()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    // Fisher-Yates, from the top.
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut picked: Vec<Vec<usize>> = vec![Vec::with_capacity(per_class); classes];
    for &i in &order {
        let c = labels[i] as usize;
        if c < classes && picked[c].len() < per_class {
            picked[c].push(i);
        }
    }
    if let Some((c, got)) = picked.iter().enumerate().find(|(_, p)| p.len() < per_class) {
        bail!(
            "asked for {per_class} labelled examples of each class, but class {c} has only {} \
             in this split",
            got.len()
        )
    }
    Ok(picked.concat())
}

/// The examples `indices` of `split`, in that order.
pub fn select(split: &Split, indices: &[usize]) -> Result<Split> {
    let dev = split.images.device();
    if let Some(&bad) = indices.iter().find(|&&i| i >= split.len()) {
        bail!("index {bad} is past the split's {} examples", split.len())
    }
    let idx = Tensor::new(indices.iter().map(|&i| i as u32).collect::<Vec<_>>(), dev)?;
    Ok(Split {
        images: split.images.index_select(&idx, 0)?,
        labels: split.labels.index_select(&idx, 0)?,
        labels_u8: indices.iter().map(|&i| split.labels_u8[i]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + i / 3) % 10) as u8).collect()
    }

    #[test]
    fn balanced_and_in_class_order() {
        let l = labels(1000);
        let s = balanced_subset(&l, 10, 10, 3).unwrap();
        assert_eq!(s.len(), 100);
        for (k, chunk) in s.chunks(10).enumerate() {
            assert!(
                chunk.iter().all(|&i| l[i] as usize == k),
                "class {k}: {chunk:?}"
            );
        }
        let mut uniq = s.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 100, "no example twice");
    }

    #[test]
    fn the_seed_decides() {
        let l = labels(1000);
        let a = balanced_subset(&l, 10, 10, 1).unwrap();
        assert_eq!(a, balanced_subset(&l, 10, 10, 1).unwrap());
        let b = balanced_subset(&l, 10, 10, 2).unwrap();
        assert_ne!(a, b);
        // Not simply the first examples of each class.
        let l = &l;
        let first: Vec<usize> = (0..10)
            .flat_map(|c| (0..1000).filter(move |&i| l[i] as usize == c).take(10))
            .collect();
        assert_ne!(a, first);
    }

    #[test]
    fn too_few_is_an_error() {
        let l = labels(50);
        let e = balanced_subset(&l, 10, 10, 0).unwrap_err().to_string();
        assert!(e.contains("has only"), "{e}");
        assert!(balanced_subset(&l, 0, 10, 0).is_err());
    }
}
