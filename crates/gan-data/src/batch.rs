//! Seeded shuffling mini-batches.

use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The batches of one data set of `n` examples. The order of an epoch depends only on
/// the seed and the epoch number, so a run resumed mid-epoch replays the same batches.
#[derive(Debug, Clone)]
pub struct Batches {
    n: usize,
    batch_size: usize,
    drop_last: bool,
}

impl Batches {
    /// Batches of `batch_size` over `n` examples; with `drop_last` a final partial batch
    /// is left out (batch norm and the GAN losses prefer equal batches).
    pub fn new(n: usize, batch_size: usize, drop_last: bool) -> Result<Self> {
        if batch_size == 0 {
            bail!("batch size must be at least 1")
        }
        if n == 0 {
            bail!("the data set is empty")
        }
        if drop_last && n < batch_size {
            bail!("{n} examples make no full batch of {batch_size}")
        }
        Ok(Self {
            n,
            batch_size,
            drop_last,
        })
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.n / self.batch_size
        } else {
            self.n.div_ceil(self.batch_size)
        }
    }

    /// The example indices of every batch of `epoch`: a permutation of `0..n` drawn from
    /// `(seed, epoch)`, cut into batches.
    pub fn epoch_indices(&self, seed: u64, epoch: u64) -> Vec<Vec<u32>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch.wrapping_add(1 << 32));
        let mut perm: Vec<u32> = (0..self.n as u32).collect();
        perm.shuffle(&mut rng);
        perm.chunks(self.batch_size)
            .take(self.num_batches())
            .map(<[u32]>::to_vec)
            .collect()
    }

    /// The batches of `epoch` as `(images, labels)` tensors, gathered along dim 0.
    pub fn epoch<'a>(
        &self,
        images: &'a Tensor,
        labels: &'a Tensor,
        seed: u64,
        epoch: u64,
    ) -> impl Iterator<Item = candle_core::Result<(Tensor, Tensor)>> + 'a {
        self.epoch_indices(seed, epoch).into_iter().map(move |idx| {
            let idx = Tensor::new(idx.as_slice(), images.device())?;
            Ok((images.index_select(&idx, 0)?, labels.index_select(&idx, 0)?))
        })
    }
}
