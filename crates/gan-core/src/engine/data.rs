//! Data sets, their seeded shuffled batches, and the named streams a step draws from.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::model::{Batch, Stream};

/// A data set in memory: images and, when it has them, labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `[N, C, H, W]` images in [-1, 1].
    pub images: Tensor,
    /// `[N]` u32 labels.
    pub labels: Option<Tensor>,
}

impl Dataset {
    /// A data set; `labels`, when given, must have one entry per image.
    pub fn new(images: Tensor, labels: Option<Tensor>) -> Result<Self> {
        let dims = images.dims();
        if dims.len() != 4 || !matches!(dims[1], 1 | 3) {
            bail!("images must be [N, C, H, W] with C = 1 or 3, got shape {dims:?}")
        }
        if let Some(l) = &labels {
            if l.dims() != [dims[0]] {
                bail!(
                    "{} images but labels of shape {:?}: one label per image",
                    dims[0],
                    l.dims()
                )
            }
        }
        Ok(Self { images, labels })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.images.dims()[0]
    }

    /// Whether it holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch of rows `idx`.
    pub fn gather(&self, idx: &[u32]) -> Result<Batch> {
        let idx = Tensor::new(idx, self.images.device())?;
        Ok(Batch {
            images: self.images.index_select(&idx, 0)?,
            labels: match &self.labels {
                Some(l) => Some(l.index_select(&idx, 0)?),
                None => None,
            },
        })
    }
}

/// The data sets of a run, by stream name.
#[derive(Debug, Clone, Default)]
pub struct Streams(pub BTreeMap<String, Dataset>);

impl Streams {
    /// One stream, `real`: what an ordinary GAN trains on.
    pub fn real(data: Dataset) -> Self {
        Self::default().with("real", data)
    }

    /// Adds (or replaces) stream `name`.
    pub fn with(mut self, name: &str, data: Dataset) -> Self {
        self.0.insert(name.to_string(), data);
        self
    }

    /// The data set of `name`.
    pub fn get(&self, name: &str) -> Result<&Dataset> {
        self.0.get(name).with_context(|| {
            format!(
                "the model reads stream {name:?}, but the data has only {:?}",
                self.0.keys().collect::<Vec<_>>()
            )
        })
    }
}

/// The batches of one data set of `n` examples.
///
/// The order of an epoch is a function of the seed, the stream's salt and the epoch
/// number only, not of a generator carried from epoch to epoch, so a run resumed
/// mid-epoch from a checkpoint (which stores the epoch and the batch position) replays
/// exactly the same batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batches {
    n: usize,
    batch_size: usize,
    drop_last: bool,
    salt: u64,
}

/// ChaCha stream of epoch 0: above the low streams of [`crate::prior::RngStream`], so
/// the data order is independent of the noise.
const STREAM_BASE: u64 = 1 << 32;
/// A stream's salt moves its epochs this far apart (2^24 epochs each, 2^8 salts).
const SALT_STRIDE: u64 = 1 << 40;

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
            salt: 0,
        })
    }

    /// The same batches shuffled apart from every other salt's (salts below 256).
    pub fn salted(mut self, salt: u64) -> Result<Self> {
        if salt >= 256 {
            bail!("a stream's salt must be below 256, got {salt}")
        }
        self.salt = salt;
        Ok(self)
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
    /// a ChaCha8 generator keyed by `seed` on a stream given by the salt and `epoch`, cut
    /// into batches.
    pub fn epoch_indices(&self, seed: u64, epoch: u64) -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(
            epoch
                .wrapping_add(STREAM_BASE)
                .wrapping_add(self.salt.wrapping_mul(SALT_STRIDE)),
        );
        let mut perm: Vec<u32> = (0..self.n as u32).collect();
        perm.shuffle(&mut rng);
        perm.chunks(self.batch_size)
            .take(self.num_batches())
            .map(<[u32]>::to_vec)
            .collect()
    }
}

/// Where a stream stands: its epoch and the next batch of that epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch of this stream in progress.
    pub epoch: u64,
    /// Next batch of that epoch.
    pub batch: usize,
}

/// A secondary stream's data, batches and the order of its current epoch.
pub(crate) struct Cycle<'d> {
    pub name: String,
    pub data: &'d Dataset,
    pub batches: Batches,
    seed: u64,
    order: Option<(u64, Vec<Vec<u32>>)>,
}

impl<'d> Cycle<'d> {
    pub fn new(name: &str, data: &'d Dataset, batches: Batches, seed: u64) -> Self {
        Self {
            name: name.into(),
            data,
            batches,
            seed,
            order: None,
        }
    }

    /// The batch at `cursor` (starting the next epoch when the current one is used up),
    /// and moves the cursor past it.
    pub fn next(&mut self, cursor: &mut Cursor) -> Result<Batch> {
        if cursor.batch >= self.batches.num_batches() {
            cursor.epoch += 1;
            cursor.batch = 0;
        }
        if self.order.as_ref().map(|o| o.0) != Some(cursor.epoch) {
            self.order = Some((
                cursor.epoch,
                self.batches.epoch_indices(self.seed, cursor.epoch),
            ));
        }
        let idx = &self.order.as_ref().expect("set above").1[cursor.batch];
        cursor.batch += 1;
        self.data.gather(idx)
    }
}

/// Checks a model's streams against the data and the batch size, before any work.
pub(crate) fn plan<'d>(
    streams: &[Stream],
    data: &'d Streams,
    batch_size: usize,
    seed: u64,
) -> Result<Vec<Cycle<'d>>> {
    if streams.is_empty() {
        bail!("the model declares no data stream")
    }
    let mut out: Vec<Cycle<'d>> = Vec::new();
    for s in streams {
        if out.iter().any(|c| c.name == s.name) {
            bail!("stream {:?} is declared twice", s.name)
        }
        let leader = match s.paired_with {
            Some(l) => Some(
                streams
                    .iter()
                    .find(|o| o.name == l && o.name != s.name && o.paired_with.is_none())
                    .with_context(|| {
                        format!(
                            "stream {:?} is paired with {l:?}, which is not another declared stream drawn on its own",
                            s.name
                        )
                    })?,
            ),
            None => None,
        };
        // A pair shares its leader's salt on purpose; any other shared salt is a mistake.
        let salt = leader.map_or(s.salt, |l| l.salt);
        if let Some(other) = streams.iter().find(|o| {
            o.name != s.name
                && o.paired_with.is_none()
                && o.salt == salt
                && leader.is_none_or(|l| l.name != o.name)
        }) {
            bail!(
                "streams {:?} and {:?} share salt {}: they would be shuffled in lock step",
                s.name,
                other.name,
                salt
            )
        }
        let d = data.get(s.name)?;
        let b = s.batch_size.unwrap_or(batch_size);
        if let Some(l) = leader {
            let (ld, lb) = (data.get(l.name)?, l.batch_size.unwrap_or(batch_size));
            if ld.len() != d.len() || lb != b {
                bail!(
                    "stream {:?} is paired with {:?}, so both need as many examples and one batch size: {} and {} examples, batches of {b} and {lb}",
                    s.name,
                    l.name,
                    d.len(),
                    ld.len()
                )
            }
        }
        let batches = Batches::new(d.len(), b, true)
            .and_then(|x| x.salted(salt))
            .with_context(|| {
                format!(
                    "stream {:?}: {} examples for batches of {b}",
                    s.name,
                    d.len()
                )
            })?;
        out.push(Cycle::new(s.name, d, batches, seed));
    }
    Ok(out)
}
