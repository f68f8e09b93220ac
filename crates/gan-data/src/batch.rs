//! Seeded shuffling mini-batches.

use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The batches of one data set of `n` examples.
///
/// The order of an epoch is a function of the seed and the epoch number only, not of a
/// generator carried from epoch to epoch, so a run resumed mid-epoch from a checkpoint
/// (which stores the epoch and the batch position) replays exactly the same batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batches {
    n: usize,
    batch_size: usize,
    drop_last: bool,
}

/// ChaCha stream of epoch 0: above the low streams that other seeded generators of a run
/// may use with the same seed, so the data order is independent of the noise.
const STREAM_BASE: u64 = 1 << 32;

impl Batches {
    /// Batches of `batch_size` over `n` examples; with `drop_last` a final partial batch
    /// is left out (batch norm and the GAN losses prefer equal batches).
    pub fn new(n: usize, batch_size: usize, drop_last: bool) -> Result<Self> {
        if batch_size == 0 {
            bail!("batch size must be at least 1")
        }
        if n == 0 {
            bail!("the data set is empty: there is nothing to batch")
        }
        if u32::try_from(n).is_err() {
            bail!("{n} examples: more than the u32 indices of a batch can address")
        }
        if drop_last && n < batch_size {
            bail!("{n} examples make no full batch of {batch_size} (drop_last would leave none)")
        }
        Ok(Self {
            n,
            batch_size,
            drop_last,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: [`Batches::new`] refuses an empty data set.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Examples per batch (the last may hold fewer unless `drop_last`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
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
    /// a ChaCha8 generator keyed by `seed` on a stream given by `epoch`, cut into batches.
    pub fn epoch_indices(&self, seed: u64, epoch: u64) -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch.wrapping_add(STREAM_BASE));
        let mut perm: Vec<u32> = (0..self.n as u32).collect();
        perm.shuffle(&mut rng);
        perm.chunks(self.batch_size)
            .take(self.num_batches())
            .map(<[u32]>::to_vec)
            .collect()
    }

    /// The batches of `epoch` as `(images, labels)` tensors, gathered along dim 0 on the
    /// tensors' own device. Tensors whose first dimension is not `n` give one error.
    pub fn epoch<'a>(
        &self,
        images: &'a Tensor,
        labels: &'a Tensor,
        seed: u64,
        epoch: u64,
    ) -> impl Iterator<Item = candle_core::Result<(Tensor, Tensor)>> + 'a {
        let n = self.n;
        let check = [("images", images), ("labels", labels)]
            .into_iter()
            .find_map(|(what, t)| match t.dims().first() {
                Some(&d) if d == n => None,
                _ => Some(candle_core::Error::Msg(format!(
                    "batches over {n} examples, but the {what} tensor has shape {:?}",
                    t.dims()
                ))),
            });
        let indices = if check.is_some() {
            Vec::new()
        } else {
            self.epoch_indices(seed, epoch)
        };
        check
            .map(Err)
            .into_iter()
            .chain(indices.into_iter().map(move |idx| {
                let idx = Tensor::new(idx.as_slice(), images.device())?;
                Ok((images.index_select(&idx, 0)?, labels.index_select(&idx, 0)?))
            }))
    }
}
