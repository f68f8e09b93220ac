//! How much a representation knows about the labels it never saw: the two classic
//! probes of learned features, with the training set's features as the reference and the
//! test set's as the queries.
//!
//! - [`nearest_neighbour_accuracy`]: the label of the closest training feature (squared
//!   Euclidean distance);
//! - [`linear_probe_accuracy`]: multinomial logistic regression fitted on the training
//!   features (standardised), scored on the test features.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::fast::layers::linear;
use crate::init::{reinit, WeightInit};
use crate::loss::cross_entropy;
use crate::optim::{Adam, AdamConfig};
use crate::prior::{rng, RngStream};

/// Queries per block of the distance matrix: bounds memory (a block is
/// `QUERY_BLOCK x M` floats), not results.
const QUERY_BLOCK: usize = 256;

fn check(features: &Tensor, labels: &[u8], what: &str) -> Result<()> {
    let (n, _) = features.dims2().map_err(|_| {
        anyhow::anyhow!("{what} features must be [N, D], got {:?}", features.dims())
    })?;
    ensure!(
        n == labels.len() && n > 0,
        "{n} {what} features for {} labels",
        labels.len()
    );
    Ok(())
}

/// Accuracy of 1-nearest-neighbour classification of `query` by `reference`.
pub fn nearest_neighbour_accuracy(
    reference: &Tensor,
    reference_labels: &[u8],
    query: &Tensor,
    query_labels: &[u8],
) -> Result<f64> {
    check(reference, reference_labels, "reference")?;
    check(query, query_labels, "query")?;
    let reference = reference.to_dtype(DType::F32)?;
    // |q - r|^2 = |q|^2 - 2 q.r + |r|^2; |q|^2 is the same for every r of a query.
    let r2 = reference.sqr()?.sum(1)?.unsqueeze(0)?;
    let rt = reference.t()?.contiguous()?;
    let mut right = 0usize;
    let n = query_labels.len();
    for start in (0..n).step_by(QUERY_BLOCK) {
        let b = QUERY_BLOCK.min(n - start);
        let q = query.narrow(0, start, b)?.to_dtype(DType::F32)?;
        let d = r2.broadcast_sub(&(q.matmul(&rt)? * 2.0)?)?;
        let nearest = d.argmin(D::Minus1)?.to_vec1::<u32>()?;
        right += nearest
            .iter()
            .zip(&query_labels[start..start + b])
            .filter(|(i, y)| reference_labels[**i as usize] == **y)
            .count();
    }
    Ok(right as f64 / n as f64)
}

/// Accuracy on `test` of a softmax regression fitted on `train` (features standardised
/// with the training mean and spread; Adam at 0.01, `epochs` passes of mini-batches of
/// 256; the starting weights and the order drawn from `seed`, so that one evaluation of
/// a checkpoint gives one number).
pub fn linear_probe_accuracy(
    train: &Tensor,
    train_labels: &[u8],
    test: &Tensor,
    test_labels: &[u8],
    epochs: usize,
    seed: u64,
) -> Result<f64> {
    mlp_probe_accuracy(train, train_labels, test, test_labels, &[], epochs, seed)
}

/// [`linear_probe_accuracy`] with ReLU layers of widths `hidden` before the softmax and
/// Adam at 0.001 (none: the linear probe, at 0.01): a nonlinear reader, for what a
/// linear one cannot see.
pub fn mlp_probe_accuracy(
    train: &Tensor,
    train_labels: &[u8],
    test: &Tensor,
    test_labels: &[u8],
    hidden: &[usize],
    epochs: usize,
    seed: u64,
) -> Result<f64> {
    check(train, train_labels, "training")?;
    check(test, test_labels, "test")?;
    let classes = train_labels.iter().copied().max().unwrap_or(0) as usize + 1;
    let dev = Device::Cpu;
    let train = train.to_dtype(DType::F32)?.to_device(&dev)?;
    let mean = train.mean_keepdim(0)?;
    let std = (train.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    let standard = |x: &Tensor| -> Result<Tensor> {
        Ok(x.to_dtype(DType::F32)?
            .to_device(&dev)?
            .broadcast_sub(&mean)?
            .broadcast_div(&std)?)
    };
    let x = standard(&train)?;
    let y = Tensor::from_iter(train_labels.iter().map(|&l| l as u32), &dev)?;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let widths: Vec<usize> = [x.dim(1)?]
        .into_iter()
        .chain(hidden.iter().copied())
        .chain([classes])
        .collect();
    let layers = widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| linear(w[0], w[1], vb.pp(i)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let forward = |x: &Tensor| -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in layers.iter().enumerate() {
            h = candle_core::Module::forward(layer, &h)?;
            if i + 1 < layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    };
    // candle draws a new layer's weights from an unseeded generator.
    reinit(
        &vars,
        WeightInit::FanInUniform,
        &mut rng(seed, RngStream::Probe),
    )?;
    let mut adam = Adam::new(
        &vars,
        AdamConfig {
            lr: if hidden.is_empty() { 1e-2 } else { 1e-3 },
            beta1: 0.9,
            ..AdamConfig::default()
        },
    )?;
    let mut order: Vec<u32> = (0..train_labels.len() as u32).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(256) {
            let idx = Tensor::new(idx, &dev)?;
            let logits = forward(&x.index_select(&idx, 0)?)?;
            let loss = cross_entropy(&logits, &y.index_select(&idx, 0)?)?;
            adam.step(&loss.backward()?)?;
        }
    }
    let logits = forward(&standard(test)?)?;
    let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let right = predicted
        .iter()
        .zip(test_labels)
        .filter(|(p, y)| **p == **y as u32)
        .count();
    Ok(right as f64 / test_labels.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters per class in 3-d: the nearest neighbour and a linear probe both read them.
    fn clusters(n: usize, shift: f32) -> (Tensor, Vec<u8>) {
        let mut v = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = (i % 3) as u8;
            let jitter = ((i * 37 % 11) as f32 / 11.0 - 0.5) * 0.2 + shift;
            v.extend([c as f32 * 2.0 + jitter, -(c as f32) + jitter, jitter]);
            labels.push(c);
        }
        (Tensor::from_vec(v, (n, 3), &Device::Cpu).unwrap(), labels)
    }

    #[test]
    fn both_probes_read_separable_features() {
        let (train, ty) = clusters(300, 0.0);
        let (test, sy) = clusters(90, 0.03);
        assert_eq!(
            nearest_neighbour_accuracy(&train, &ty, &test, &sy).unwrap(),
            1.0
        );
        assert!(linear_probe_accuracy(&train, &ty, &test, &sy, 100, 0).unwrap() > 0.95);
        // Labels that say nothing about the features: about chance.
        let shuffled: Vec<u8> = ty
            .iter()
            .enumerate()
            .map(|(i, _)| (i * 7 % 3) as u8)
            .collect();
        let scrambled: Vec<u8> = (0..sy.len()).map(|i| ((i / 3) % 3) as u8).collect();
        let nn = nearest_neighbour_accuracy(&train, &shuffled, &test, &scrambled).unwrap();
        assert!(nn < 0.6, "{nn}");
    }

    /// The probe starts from weights drawn from `seed`, so one evaluation of a checkpoint
    /// gives one number: on overlapping classes, where the start shows in the result.
    #[test]
    fn the_probe_is_the_same_for_the_same_seed() {
        let noisy = |n: usize, salt: usize| -> (Tensor, Vec<u8>) {
            let v: Vec<f32> = (0..n * 8)
                .map(|i| ((i * 2654435761 + salt) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let labels = (0..n).map(|i| ((i * 40503 + salt) % 2) as u8).collect();
            (Tensor::from_vec(v, (n, 8), &Device::Cpu).unwrap(), labels)
        };
        let (train, ty) = noisy(600, 1);
        let (test, sy) = noisy(600, 2);
        let acc = |seed| linear_probe_accuracy(&train, &ty, &test, &sy, 2, seed).unwrap();
        let first = acc(3);
        for _ in 0..4 {
            assert_eq!(acc(3), first);
        }
    }

    #[test]
    fn nearest_neighbour_is_the_closest_reference() {
        let reference =
            Tensor::new(&[[0f32, 0.0], [10.0, 0.0], [0.0, 10.0]], &Device::Cpu).unwrap();
        let query = Tensor::new(&[[9f32, 1.0], [1.0, 8.0], [0.5, 0.5]], &Device::Cpu).unwrap();
        let acc = nearest_neighbour_accuracy(&reference, &[0, 1, 2], &query, &[1, 2, 0]).unwrap();
        assert_eq!(acc, 1.0);
        let acc = nearest_neighbour_accuracy(&reference, &[0, 1, 2], &query, &[0, 0, 0]).unwrap();
        assert!((acc - 1.0 / 3.0).abs() < 1e-9);
        assert!(nearest_neighbour_accuracy(&reference, &[0, 1], &query, &[0, 0, 0]).is_err());
    }

    /// Two classes with the same mean, one on a circle of radius 1 and one of radius 3:
    /// no line splits them, two ReLU layers do.
    #[test]
    fn the_mlp_probe_reads_what_no_line_does() {
        let rings = |n: usize, phase: f32| -> (Tensor, Vec<u8>) {
            let mut v = Vec::new();
            let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
            for (i, &y) in labels.iter().enumerate() {
                let a = i as f32 * 2.399 + phase;
                let r = 1.0 + 2.0 * y as f32;
                v.extend([r * a.cos(), r * a.sin()]);
            }
            (Tensor::from_vec(v, (n, 2), &Device::Cpu).unwrap(), labels)
        };
        let (train, ty) = rings(1000, 0.0);
        let (test, sy) = rings(400, 0.5);
        let linear = linear_probe_accuracy(&train, &ty, &test, &sy, 20, 0).unwrap();
        let mlp = mlp_probe_accuracy(&train, &ty, &test, &sy, &[32, 32], 100, 0).unwrap();
        // A line can at best cut off a cap of the outer circle (about 63%).
        assert!(linear < 0.7, "linear {linear}");
        assert!(mlp > 0.95, "mlp {mlp}");
    }
}
