//! Sample-quality metrics computed from what a judge classifier says about images.
//!
//! A GAN's loss says little about how good its samples are, so models are compared by
//! a fixed MNIST classifier (the *judge*): its penultimate-layer features and its class
//! probabilities on generated and real images. Everything here is plain arithmetic on
//! those numbers, independent of candle, so that it can be checked against known
//! answers:
//!
//! - [`frechet_distance`] between two [`FeatureStats`] (MNIST-FID);
//! - [`class_coverage`]: the histogram of predicted classes, the classes covered and the
//!   KL divergence from uniform, where mode collapse shows;
//! - [`inception_score`]: exp E\[KL(p(y|x) || p(y))\], the Inception-Score analogue;
//! - [`conditional_accuracy`]: whether a conditional model draws the digit it is asked for;
//! - [`features`]: 1-nearest-neighbour and linear-probe accuracy of learned features;
//! - [`judge`]: the judge itself, a LeNet-style classifier the project trains;
//! - [`suite`]: every metric that applies to a model's capabilities, in one report;
//! - [`metrics`]: confusion matrices and the Hungarian matching of unsupervised
//!   categories to labels;
//! - [`unsupervised`]: what such a code says of itself on real images without labels.

pub mod features;
pub mod judge;
pub mod metrics;
pub mod suite;
pub mod unsupervised;

use anyhow::{bail, ensure, Result};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::{Deserialize, Serialize};

/// Mean and covariance of a set of feature vectors: all the Frechet distance needs.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    /// Number of vectors the statistics come from.
    pub n: usize,
    /// Mean vector.
    pub mean: DVector<f64>,
    /// Unbiased covariance (divided by n - 1, as numpy's `cov` and the reference FID code).
    pub cov: DMatrix<f64>,
}

impl FeatureStats {
    /// Statistics of `n = features.len() / dim` row vectors stored one after another.
    /// Accumulated in f64: the covariance of 10,000 f32 rows loses digits otherwise.
    pub fn from_rows(features: &[f32], dim: usize) -> Result<Self> {
        ensure!(dim > 0, "feature vectors must have at least one dimension");
        ensure!(
            features.len().is_multiple_of(dim),
            "{} numbers do not split into rows of {dim} features",
            features.len()
        );
        let n = features.len() / dim;
        ensure!(
            n >= 2,
            "a covariance needs at least 2 feature vectors, got {n}"
        );
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            bail!(
                "feature {} of row {} is {}: the images fed to the judge were not finite",
                i % dim,
                i / dim,
                features[i]
            )
        }
        let x = DMatrix::from_row_iterator(n, dim, features.iter().map(|&v| v as f64));
        let mean = x.row_mean().transpose();
        let mut centred = x;
        for mut row in centred.row_iter_mut() {
            row -= mean.transpose();
        }
        let cov = centred.tr_mul(&centred) / (n as f64 - 1.0);
        Ok(Self { n, mean, cov })
    }

    /// Number of features per vector.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The square root of a symmetric positive semi-definite matrix: the one symmetric PSD
/// `R` with `R R = m`, through nalgebra's symmetric eigendecomposition `m = V diag(l) V'`
/// as `V diag(sqrt(l)) V'`. Eigenvalues that round-off made slightly negative are taken
/// as zero; clearly negative ones (the matrix is not PSD) are an error.
pub fn sqrtm_psd(m: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    ensure!(
        m.is_square() && m.nrows() > 0,
        "the square root needs a non-empty square matrix, got {}x{}",
        m.nrows(),
        m.ncols()
    );
    ensure!(
        m.iter().all(|v| v.is_finite()),
        "the matrix has non-finite entries"
    );
    let scale = m.amax().max(f64::MIN_POSITIVE);
    let asym = (m - m.transpose()).amax();
    ensure!(
        asym <= 1e-8 * scale,
        "the matrix is not symmetric (largest |m - m'| is {asym:e})"
    );
    // Decomposed at unit scale, round-off dust (entries below 1e-15 of the largest)
    // swept to zero: on a collapsed generator's features (constant columns, entries down
    // to 1e-166) nalgebra's iteration once returned NaN, which the distance's clamp
    // then showed as a perfect 0.
    let unit = ((m + m.transpose()) * (0.5 / scale)).map(|v| if v.abs() < 1e-15 { 0.0 } else { v });
    let eig = SymmetricEigen::new(unit);
    ensure!(
        eig.eigenvalues
            .iter()
            .chain(eig.eigenvectors.iter())
            .all(|v| v.is_finite()),
        "the eigendecomposition of a {}x{} matrix did not converge",
        m.nrows(),
        m.ncols()
    );
    let most_negative = eig.eigenvalues.min() * scale;
    ensure!(
        most_negative >= -1e-8 * scale,
        "the matrix is not positive semi-definite (eigenvalue {most_negative:e})"
    );
    let roots = eig.eigenvalues.map(|l| (l * scale).max(0.0).sqrt());
    let v = &eig.eigenvectors;
    Ok(v * DMatrix::from_diagonal(&roots) * v.transpose())
}

/// Each row of `rows` (`n` vectors of `dim` numbers, row after row) projected on the
/// first two principal components of them all: a picture of where a set of features
/// lies, e.g. two domains' features, apart or mixed.
pub fn principal_plane(rows: &[f32], dim: usize) -> Result<Vec<(f64, f64)>> {
    ensure!(
        dim >= 2 && rows.len().is_multiple_of(dim),
        "rows of {dim} numbers, got {} numbers",
        rows.len()
    );
    let n = rows.len() / dim;
    ensure!(n >= 2, "a projection needs at least 2 rows, got {n}");
    ensure!(
        rows.iter().all(|v| v.is_finite()),
        "the rows have non-finite entries"
    );
    let stats = FeatureStats::from_rows(rows, dim)?;
    let eig = SymmetricEigen::new(stats.cov.clone());
    // The two largest eigenvalues' vectors.
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let axes = [
        eig.eigenvectors.column(order[0]),
        eig.eigenvectors.column(order[1]),
    ];
    Ok(rows
        .chunks_exact(dim)
        .map(|r| {
            let along = |axis: &nalgebra::DVectorView<f64>| {
                r.iter()
                    .zip(stats.mean.iter())
                    .zip(axis.iter())
                    .map(|((&v, m), a)| (v as f64 - m) * a)
                    .sum::<f64>()
            };
            (along(&axes[0]), along(&axes[1]))
        })
        .collect())
}

/// Frechet distance between the Gaussians fitted to two feature sets:
/// `|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))`.
///
/// `S_a S_b` is not symmetric, but it is similar to `S_a^(1/2) S_b S_a^(1/2)`, which is
/// symmetric PSD and has the same eigenvalues, so the trace of the square root is taken
/// through two symmetric square roots ([`sqrtm_psd`]), which stay accurate where a
/// general matrix square root of a near-singular product would not.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    ensure!(
        a.dim() == b.dim(),
        "feature sets of different widths ({} and {})",
        a.dim(),
        b.dim()
    );
    let mean_term = (&a.mean - &b.mean).norm_squared();
    let root_a = sqrtm_psd(&a.cov)?;
    let inner = &root_a * &b.cov * &root_a;
    let sym = (&inner + inner.transpose()) * 0.5;
    let cross = sqrtm_psd(&sym)?.trace();
    let d = mean_term + a.cov.trace() + b.cov.trace() - 2.0 * cross;
    // Never a NaN shown as a perfect 0 by the clamp below.
    ensure!(d.is_finite(), "the Frechet distance came out as {d}");
    // Round-off can leave a distance of a set to itself a hair below zero.
    Ok(d.max(0.0))
}

/// A class counts as covered when it receives at least this fraction of its share
/// under a uniform distribution (with 10 classes and 10,000 samples: 100 samples), so
/// that a handful of stray misclassifications does not make a collapsed model look whole.
pub const COVERED_FRACTION_OF_UNIFORM: f64 = 0.1;

/// Which classes a set of samples falls into, according to the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCoverage {
    /// Samples counted.
    pub n: usize,
    /// `histogram[y]`: samples the judge assigns to class `y`.
    pub histogram: Vec<u64>,
    /// Classes with at least [`COVERED_FRACTION_OF_UNIFORM`] of their uniform share.
    pub classes_covered: usize,
    /// KL(histogram / n || uniform) in nats: 0 for a perfectly balanced set, ln K for a
    /// set of one class.
    pub kl_from_uniform: f64,
}

/// Coverage of `classes` classes by the predicted classes `predicted`.
pub fn class_coverage(predicted: &[u32], classes: usize) -> Result<ClassCoverage> {
    ensure!(classes > 0, "there must be at least one class");
    ensure!(!predicted.is_empty(), "no predictions to count");
    let mut histogram = vec![0u64; classes];
    for &p in predicted {
        ensure!(
            (p as usize) < classes,
            "predicted class {p} is out of range (0..{classes})"
        );
        histogram[p as usize] += 1;
    }
    let n = predicted.len();
    let threshold = COVERED_FRACTION_OF_UNIFORM * n as f64 / classes as f64;
    let classes_covered = histogram.iter().filter(|&&c| c as f64 >= threshold).count();
    let kl_from_uniform = histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            p * (p * classes as f64).ln()
        })
        .sum::<f64>()
        .max(0.0);
    Ok(ClassCoverage {
        n,
        histogram,
        classes_covered,
        kl_from_uniform,
    })
}

/// The Inception-Score analogue with the judge as the classifier:
/// `exp(E_x[KL(p(y|x) || p(y))])`, where `p(y)` is the mean of `p(y|x)` over the set.
/// It is 1 when every sample gets the same class distribution and `classes` when each
/// sample is confidently one class and the classes are used equally: it rewards samples
/// that are both recognisable and varied. `probs` holds one row of `classes`
/// probabilities per sample.
pub fn inception_score(probs: &[f32], classes: usize) -> Result<f64> {
    ensure!(classes > 0, "there must be at least one class");
    ensure!(
        !probs.is_empty() && probs.len().is_multiple_of(classes),
        "{} probabilities do not make rows of {classes} classes",
        probs.len()
    );
    let n = probs.len() / classes;
    for (i, row) in probs.chunks(classes).enumerate() {
        let sum: f64 = row.iter().map(|&p| p as f64).sum();
        ensure!(
            row.iter().all(|p| p.is_finite() && *p >= 0.0) && (sum - 1.0).abs() < 1e-3,
            "row {i} is not a probability distribution (sums to {sum})"
        );
    }
    let mut marginal = vec![0f64; classes];
    for row in probs.chunks(classes) {
        for (m, &p) in marginal.iter_mut().zip(row) {
            *m += p as f64 / n as f64;
        }
    }
    let mean_kl = probs
        .chunks(classes)
        .map(|row| {
            row.iter()
                .zip(&marginal)
                .filter(|(&p, _)| p > 0.0)
                .map(|(&p, &m)| p as f64 * (p as f64 / m).ln())
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    Ok(mean_kl.max(0.0).exp())
}

/// How often the judge recognises the class a conditional generator was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionalAccuracy {
    /// Samples scored.
    pub n: usize,
    /// Fraction of all samples whose predicted class is the requested one.
    pub accuracy: f64,
    /// `per_class[y]`: that fraction among samples requested as class `y` (None when
    /// none was requested).
    pub per_class: Vec<Option<f64>>,
}

/// Scores `predicted` against `requested` classes, overall and per requested class.
pub fn conditional_accuracy(
    requested: &[u32],
    predicted: &[u32],
    classes: usize,
) -> Result<ConditionalAccuracy> {
    ensure!(
        requested.len() == predicted.len(),
        "{} requested classes for {} predictions",
        requested.len(),
        predicted.len()
    );
    ensure!(!requested.is_empty(), "no samples to score");
    let mut hits = vec![0u64; classes];
    let mut totals = vec![0u64; classes];
    for (&r, &p) in requested.iter().zip(predicted) {
        ensure!(
            (r as usize) < classes,
            "requested class {r} is out of range (0..{classes})"
        );
        totals[r as usize] += 1;
        hits[r as usize] += u64::from(r == p);
    }
    let n = requested.len();
    Ok(ConditionalAccuracy {
        n,
        accuracy: hits.iter().sum::<u64>() as f64 / n as f64,
        per_class: hits
            .iter()
            .zip(&totals)
            .map(|(&h, &t)| (t > 0).then(|| h as f64 / t as f64))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng};

    #[test]
    fn the_principal_plane_finds_the_spread() {
        // Points along (1, 2, 2)/3 at t in -4.5..4.5, each twice, wobbling by +-0.5
        // along (0, 1, -1)/sqrt(2) (uncorrelated with t).
        let mut rows = Vec::new();
        for i in 0..10 {
            let t = i as f32 - 4.5;
            for w in [0.5f32, -0.5] {
                let w = w / 2f32.sqrt();
                rows.extend([t / 3.0, 2.0 * t / 3.0 + w, 2.0 * t / 3.0 - w]);
            }
        }
        let p = principal_plane(&rows, 3).unwrap();
        for (i, (a, b)) in p.iter().enumerate() {
            let t = (i / 2) as f64 - 4.5;
            assert!((a.abs() - t.abs()).abs() < 1e-4, "row {i}: {a} vs {t}");
            assert!((b.abs() - 0.5).abs() < 1e-4, "row {i}: {b}");
        }
        assert!(principal_plane(&rows[..4], 3).is_err());
        assert!(principal_plane(&[f32::NAN; 6], 3).is_err());
    }

    fn gaussian_rows(n: usize, dim: usize, shift: f32, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut rows = Vec::with_capacity(n * dim);
        for _ in 0..n {
            // Correlated features: each one leans on the previous, so the covariance is
            // not diagonal and the square roots have real work to do.
            let mut prev = 0f32;
            for j in 0..dim {
                let u: f32 = rng.random_range(-1.0..1.0);
                prev = u * (1.0 + j as f32 * 0.3) + 0.6 * prev;
                rows.push(prev + shift);
            }
        }
        rows
    }

    #[test]
    fn sqrtm_of_a_known_matrix() {
        // [[5, 4], [4, 5]] has eigenvalues 9 and 1 on (1, 1) and (1, -1): its root is
        // [[2, 1], [1, 2]].
        let m = DMatrix::from_row_slice(2, 2, &[5.0, 4.0, 4.0, 5.0]);
        let r = sqrtm_psd(&m).unwrap();
        let want = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 2.0]);
        assert!((&r - &want).amax() < 1e-12, "{r}");
        // A 3x3 one built as R R from a known symmetric PSD R.
        let root = DMatrix::from_row_slice(3, 3, &[3.0, 1.0, 0.5, 1.0, 2.0, 0.25, 0.5, 0.25, 1.0]);
        let r = sqrtm_psd(&(&root * &root)).unwrap();
        assert!((&r - &root).amax() < 1e-10, "{r}");
        // A PSD but singular matrix keeps a zero eigenvalue.
        let singular = DMatrix::from_row_slice(2, 2, &[1.0, 1.0, 1.0, 1.0]);
        let r = sqrtm_psd(&singular).unwrap();
        assert!((&r * &r - &singular).amax() < 1e-12);
    }

    #[test]
    fn sqrtm_refuses_what_has_no_symmetric_root() {
        let asym = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 0.0, 1.0]);
        assert!(sqrtm_psd(&asym)
            .unwrap_err()
            .to_string()
            .contains("not symmetric"));
        let indefinite = DMatrix::from_row_slice(2, 2, &[1.0, 0.0, 0.0, -1.0]);
        assert!(sqrtm_psd(&indefinite)
            .unwrap_err()
            .to_string()
            .contains("positive semi-definite"));
        assert!(sqrtm_psd(&DMatrix::zeros(2, 3)).is_err());
    }

    #[test]
    fn frechet_of_a_set_with_itself_is_zero_and_grows_with_a_shift() {
        let dim = 6;
        let rows = gaussian_rows(2000, dim, 0.0, 1);
        let a = FeatureStats::from_rows(&rows, dim).unwrap();
        assert!(frechet_distance(&a, &a).unwrap() < 1e-9);
        let mut last = 0.0;
        for shift in [0.1f32, 0.5, 1.0, 2.0] {
            let shifted: Vec<f32> = rows.iter().map(|v| v + shift).collect();
            let b = FeatureStats::from_rows(&shifted, dim).unwrap();
            let d = frechet_distance(&a, &b).unwrap();
            // A pure shift moves only the means: the distance is |shift|^2 per feature.
            let want = (shift * shift) as f64 * dim as f64;
            assert!(
                (d - want).abs() < 1e-6 * want.max(1.0),
                "{shift}: {d} vs {want}"
            );
            assert!(d > last);
            last = d;
        }
        // Another sample of the same distribution is close, but not at zero.
        let other = FeatureStats::from_rows(&gaussian_rows(2000, dim, 0.0, 2), dim).unwrap();
        let d = frechet_distance(&a, &other).unwrap();
        assert!(d > 0.0 && d < 0.1, "{d}");
    }

    #[test]
    fn a_collapsed_set_is_far_and_finite() {
        // One image over and over (a generator that ignores its noise): features constant
        // but for round-off, many exactly zero, against a spread set. Its distance is at
        // least tr(S_b) - 2 sqrt(tr(S_a) tr(S_b)) + |mu_a - mu_b|^2, never a NaN or 0.
        let dim = 64;
        let spread = gaussian_rows(1000, dim, 0.0, 3);
        let collapsed: Vec<f32> = (0..1000 * dim)
            .map(|i| match i % dim {
                c if c % 4 == 0 => 2.0 + 1e-7 * ((i / dim) % 3) as f32,
                _ => 0.0,
            })
            .collect();
        let (a, b) = (
            FeatureStats::from_rows(&collapsed, dim).unwrap(),
            FeatureStats::from_rows(&spread, dim).unwrap(),
        );
        let d = frechet_distance(&a, &b).unwrap();
        let bound = b.cov.trace() - 2.0 * (a.cov.trace() * b.cov.trace()).sqrt();
        assert!(
            d.is_finite() && d >= bound && d > 10.0,
            "{d} vs bound {bound}"
        );
        let roots = sqrtm_psd(&a.cov).unwrap();
        assert!(roots.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn frechet_matches_the_closed_form_for_2x2_covariances() {
        // For 2x2 PSD S_a, S_b: tr sqrt(S_a S_b) = sqrt(tr(S_a S_b) + 2 sqrt(det S_a det S_b)),
        // since the eigenvalues l1, l2 of S_a S_b are non-negative with l1 l2 = det.
        let sa = DMatrix::from_row_slice(2, 2, &[2.0, 0.6, 0.6, 1.0]);
        let sb = DMatrix::from_row_slice(2, 2, &[1.0, -0.3, -0.3, 3.0]);
        let a = FeatureStats {
            n: 10,
            mean: DVector::from_vec(vec![0.0, 1.0]),
            cov: sa.clone(),
        };
        let b = FeatureStats {
            n: 10,
            mean: DVector::from_vec(vec![1.0, -1.0]),
            cov: sb.clone(),
        };
        let cross =
            ((&sa * &sb).trace() + 2.0 * (sa.determinant() * sb.determinant()).sqrt()).sqrt();
        let want = 1.0 + 4.0 + sa.trace() + sb.trace() - 2.0 * cross;
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
        assert!((frechet_distance(&b, &a).unwrap() - want).abs() < 1e-10);
    }

    #[test]
    fn feature_stats_check_their_input() {
        let s = FeatureStats::from_rows(&[1.0, 2.0, 3.0, 6.0], 2).unwrap();
        assert_eq!(s.mean.as_slice(), &[2.0, 4.0]);
        // Two rows: cov = (x - mean)(x - mean)' summed / (n - 1).
        assert_eq!(s.cov.as_slice(), &[2.0, 4.0, 4.0, 8.0]);
        assert!(FeatureStats::from_rows(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(FeatureStats::from_rows(&[1.0, 2.0], 2)
            .unwrap_err()
            .to_string()
            .contains("at least 2"));
        assert!(FeatureStats::from_rows(&[1.0, f32::NAN, 3.0, 4.0], 2).is_err());
        let c = FeatureStats::from_rows(&[0.0; 6], 3).unwrap();
        assert!(frechet_distance(&s, &c).is_err());
    }

    #[test]
    fn coverage_of_one_class_and_of_all() {
        let one = class_coverage(&[3; 500], 10).unwrap();
        assert_eq!(one.classes_covered, 1);
        assert_eq!(one.histogram[3], 500);
        assert!((one.kl_from_uniform - 10f64.ln()).abs() < 1e-12);

        let all: Vec<u32> = (0..1000).map(|i| i % 10).collect();
        let c = class_coverage(&all, 10).unwrap();
        assert_eq!(c.classes_covered, 10);
        assert!(c.kl_from_uniform.abs() < 1e-12);

        // Five stray samples of another class do not count as covering it.
        let mut mostly = vec![0u32; 995];
        mostly.extend([1; 5]);
        let c = class_coverage(&mostly, 10).unwrap();
        assert_eq!(c.classes_covered, 1);
        assert!(c.kl_from_uniform > 2.0 && c.kl_from_uniform < 10f64.ln());

        assert!(class_coverage(&[], 10).is_err());
        assert!(class_coverage(&[10], 10).is_err());
    }

    #[test]
    fn inception_score_bounds() {
        let k = 10;
        // Confident and balanced: k.
        let mut probs = vec![0f32; 100 * k];
        for i in 0..100 {
            probs[i * k + i % k] = 1.0;
        }
        assert!((inception_score(&probs, k).unwrap() - k as f64).abs() < 1e-9);
        // Confident but all one class (mode collapse): 1.
        let mut probs = vec![0f32; 100 * k];
        for i in 0..100 {
            probs[i * k + 4] = 1.0;
        }
        assert!((inception_score(&probs, k).unwrap() - 1.0).abs() < 1e-9);
        // Balanced but unsure (uniform rows): 1.
        let probs = vec![0.1f32; 100 * k];
        assert!((inception_score(&probs, k).unwrap() - 1.0).abs() < 1e-6);
        // Two classes used equally and confidently: 2.
        let probs: Vec<f32> = (0..50).flat_map(|_| [1.0, 0.0, 0.0, 1.0]).collect();
        assert!((inception_score(&probs, 2).unwrap() - 2.0).abs() < 1e-9);
        assert!(inception_score(&[0.5, 0.6], 2).is_err());
        assert!(inception_score(&[0.5, 0.5, 1.0], 2).is_err());
    }

    #[test]
    fn conditional_accuracy_per_class() {
        let requested = [0, 0, 1, 1, 1, 2];
        let predicted = [0, 5, 1, 1, 0, 2];
        let a = conditional_accuracy(&requested, &predicted, 10).unwrap();
        assert_eq!(a.n, 6);
        assert!((a.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(a.per_class[0], Some(0.5));
        assert_eq!(a.per_class[2], Some(1.0));
        assert_eq!(a.per_class[3], None);
        assert!(conditional_accuracy(&[0], &[0, 1], 10).is_err());
        assert!(conditional_accuracy(&[12], &[0], 10).is_err());
    }
}
