//! Priors: the noise `z` and the latent codes `c` a generator is fed.
//!
//! Sampling happens on the host from one seeded [`Rng`], so that a run is reproducible and
//! its random state can be written into a checkpoint and resumed exactly.

use candle_core::{Device, Result, Tensor};
use rand::{Rng as _, SeedableRng};

mod normal;

pub use normal::fill_standard_normal;

/// The random number generator of the whole project: small, fast, and serialisable (its
/// seed, stream and word position are its entire state).
pub type Rng = rand_chacha::ChaCha8Rng;

/// The independent random streams of a run, all drawn from its one seed: each use of the
/// seed has its own, so that (say) the fixed grid noise never repeats the training noise.
/// The numbers are part of every saved run's arithmetic: never renumber one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RngStream {
    /// The training loop's noise (checkpointed with the loop).
    Training = 0,
    /// The fixed noise of the figures drawn every epoch.
    Figures = 1,
    /// Weight initialisation of the models' networks.
    Init = 2,
    /// `gan-cli sample`.
    Sample = 3,
    /// Evaluation: the unconditional samples it scores.
    Eval = 4,
    /// The judge's weight initialisation.
    JudgeInit = 5,
    /// The judge's dropout during its training.
    JudgeTraining = 6,
    /// Evaluation: the samples drawn per class or category.
    EvalByClass = 7,
    /// Benchmarks and tests that want noise of their own.
    Scratch = 9,
    /// Evaluation: the starting weights of the probes fitted on features.
    Probe = 10,
}

/// A generator seeded from `seed`, on `stream`.
pub fn rng(seed: u64, stream: RngStream) -> Rng {
    let mut r = Rng::seed_from_u64(seed);
    r.set_stream(stream as u64);
    r
}

/// One block of the latent vector.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Latent {
    /// `dim` independent N(0, 1) variables.
    Gaussian {
        /// Number of variables.
        dim: usize,
    },
    /// `dim` independent U(low, high) variables: GAN noise, or InfoGAN's continuous codes.
    Uniform {
        /// Number of variables.
        dim: usize,
        /// Lower bound.
        low: f32,
        /// Upper bound (exclusive).
        high: f32,
    },
    /// A uniform categorical variable over `k` classes, fed to the network one-hot.
    Categorical {
        /// Number of classes.
        k: usize,
    },
}

impl Latent {
    /// Width of this block in the concatenated vector.
    pub fn width(&self) -> usize {
        match *self {
            Latent::Gaussian { dim } | Latent::Uniform { dim, .. } => dim,
            Latent::Categorical { k } => k,
        }
    }
}

/// A latent layout: blocks concatenated along the feature axis, in order.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LatentSpec(pub Vec<Latent>);

/// A batch drawn from a [`LatentSpec`].
#[derive(Debug, Clone)]
pub struct LatentSample {
    /// `[n, spec.width()]` f32: every block side by side, categoricals one-hot.
    pub z: Tensor,
    /// The class drawn for each categorical block, in block order; `[n]` each.
    pub categories: Vec<Vec<u32>>,
}

impl LatentSpec {
    /// Total width of the concatenated vector.
    pub fn width(&self) -> usize {
        self.0.iter().map(Latent::width).sum()
    }

    /// Draws `n` latent vectors.
    pub fn sample(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<LatentSample> {
        let width = self.width();
        let mut data = vec![0f32; n * width];
        let mut categories = Vec::new();
        let mut offset = 0;
        for block in &self.0 {
            let w = block.width();
            match *block {
                Latent::Gaussian { .. } => {
                    // Row after row, as `fill` draws, in one call.
                    let mut draws = vec![0f32; n * w];
                    fill_standard_normal(rng, &mut draws);
                    for (row, d) in draws.chunks_exact(w.max(1)).enumerate() {
                        data[row * width + offset..][..w].copy_from_slice(d);
                    }
                }
                Latent::Uniform { low, high, .. } => {
                    if low.is_nan() || high.is_nan() || low >= high {
                        candle_core::bail!("uniform prior needs low < high, got [{low}, {high}]")
                    }
                    fill(&mut data, n, width, offset, w, || {
                        rng.random_range(low..high)
                    })
                }
                Latent::Categorical { k } => {
                    if k == 0 {
                        candle_core::bail!("a categorical code needs at least one class")
                    }
                    let classes: Vec<u32> = (0..n).map(|_| rng.random_range(0..k as u32)).collect();
                    for (row, &c) in classes.iter().enumerate() {
                        data[row * width + offset + c as usize] = 1.0;
                    }
                    categories.push(classes);
                }
            }
            offset += w;
        }
        let z = Tensor::from_vec(data, (n, width), device)?;
        Ok(LatentSample { z, categories })
    }
}

fn fill(
    data: &mut [f32],
    n: usize,
    width: usize,
    offset: usize,
    w: usize,
    mut f: impl FnMut() -> f32,
) {
    for row in 0..n {
        for v in &mut data[row * width + offset..row * width + offset + w] {
            *v = f();
        }
    }
}

/// `[n, k]` one-hot rows for class indices: how a label or a chosen category is fed to a
/// network.
pub fn one_hot(classes: &[u32], k: usize, device: &Device) -> Result<Tensor> {
    let mut data = vec![0f32; classes.len() * k];
    for (row, &c) in classes.iter().enumerate() {
        if c as usize >= k {
            candle_core::bail!("class {c} out of range for a {k}-way code")
        }
        data[row * k + c as usize] = 1.0;
    }
    Tensor::from_vec(data, (classes.len(), k), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: &[f32]) -> (f32, f32) {
        let n = v.len() as f32;
        let m = v.iter().sum::<f32>() / n;
        (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n)
    }

    #[test]
    fn gaussian_and_uniform_moments() {
        let spec = LatentSpec(vec![
            Latent::Gaussian { dim: 4 },
            Latent::Uniform {
                dim: 3,
                low: -1.0,
                high: 3.0,
            },
        ]);
        let s = spec
            .sample(20_000, &mut rng(7, RngStream::Training), &Device::Cpu)
            .unwrap();
        assert_eq!(s.z.dims(), &[20_000, 7]);
        let z = s.z.to_vec2::<f32>().unwrap();
        let col = |j: usize| z.iter().map(|r| r[j]).collect::<Vec<_>>();
        let (m, v) = stats(&col(0));
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "N(0,1): {m} {v}");
        let u = col(5);
        let (m, v) = stats(&u);
        // U(-1, 3): mean 1, variance 16/12.
        assert!(
            (m - 1.0).abs() < 0.04 && (v - 16.0 / 12.0).abs() < 0.05,
            "U: {m} {v}"
        );
        assert!(u.iter().all(|&x| (-1.0..3.0).contains(&x)));
    }

    #[test]
    fn categorical_is_one_hot_and_uniform() {
        let spec = LatentSpec(vec![
            Latent::Uniform {
                dim: 2,
                low: -1.0,
                high: 1.0,
            },
            Latent::Categorical { k: 10 },
        ]);
        let s = spec
            .sample(10_000, &mut rng(1, RngStream::Training), &Device::Cpu)
            .unwrap();
        let z = s.z.to_vec2::<f32>().unwrap();
        let mut counts = [0usize; 10];
        for (row, &c) in z.iter().zip(&s.categories[0]) {
            let hot: Vec<_> = row[2..].to_vec();
            assert_eq!(hot.iter().sum::<f32>(), 1.0);
            assert_eq!(hot[c as usize], 1.0);
            counts[c as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (850..1150).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn same_seed_same_draw_streams_differ() {
        let spec = LatentSpec(vec![Latent::Gaussian { dim: 5 }]);
        let a = spec
            .sample(3, &mut rng(3, RngStream::Training), &Device::Cpu)
            .unwrap()
            .z
            .to_vec2::<f32>()
            .unwrap();
        let b = spec
            .sample(3, &mut rng(3, RngStream::Training), &Device::Cpu)
            .unwrap()
            .z
            .to_vec2::<f32>()
            .unwrap();
        let c = spec
            .sample(3, &mut rng(3, RngStream::Figures), &Device::Cpu)
            .unwrap()
            .z
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_specs_are_errors() {
        let bad = LatentSpec(vec![Latent::Uniform {
            dim: 1,
            low: 1.0,
            high: 1.0,
        }]);
        assert!(bad
            .sample(1, &mut rng(0, RngStream::Training), &Device::Cpu)
            .is_err());
        assert!(one_hot(&[3], 3, &Device::Cpu).is_err());
    }
}
