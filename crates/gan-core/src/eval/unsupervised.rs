//! What a categorical code found without labels (InfoGAN's c1) says of itself on real
//! images, before anyone looks at the labels: the quantities a restart could pick a run
//! by. Each is compared with the labelled accuracy in docs/INFOGAN.md; none is used
//! to train.

use anyhow::{ensure, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::engine::Classifier;

/// Label-free measures of a code on real images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelFree {
    /// Mean over images of the largest class probability.
    pub confidence: f64,
    /// H(mean p) - mean H(p), in nats: the code's mutual information with the image
    /// as the classifier reads it (at most ln K).
    pub mutual_information: f64,
    /// Fraction of images whose class is kept when the image moves by
    /// [`SHIFT`] pixels, averaged over the four directions. A digit's identity survives
    /// a small shift; a category split by a stroke's position or slant less so.
    pub shift_agreement: f64,
}

/// Pixels an image is moved by for [`LabelFree::shift_agreement`].
pub const SHIFT: usize = 2;

/// Confidence and mutual information of per-image class probabilities `probs`
/// (`n` rows of `k`, each summing to 1).
pub fn confidence_and_information(probs: &[f32], k: usize) -> Result<(f64, f64)> {
    ensure!(
        k > 0 && !probs.is_empty() && probs.len().is_multiple_of(k),
        "probabilities must be rows of {k} classes, got {} values",
        probs.len()
    );
    let n = probs.len() / k;
    let mut mean = vec![0f64; k];
    let (mut confidence, mut conditional) = (0f64, 0f64);
    for row in probs.chunks(k) {
        let mut top = 0f64;
        for (j, &p) in row.iter().enumerate() {
            let p = p as f64;
            mean[j] += p / n as f64;
            top = top.max(p);
            if p > 0.0 {
                conditional -= p * p.ln() / n as f64;
            }
        }
        confidence += top / n as f64;
    }
    let marginal: f64 = mean
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.ln())
        .sum();
    Ok((confidence, marginal - conditional))
}

/// `images` `[N, C, H, W]` moved `dx` pixels right and `dy` down (negative: left, up),
/// the uncovered border filled with the background, -1.
pub fn shift(images: &Tensor, dx: isize, dy: isize) -> Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    ensure!(
        dx.unsigned_abs() < w && dy.unsigned_abs() < h,
        "a shift of ({dx}, {dy}) leaves nothing of a {h}x{w} image"
    );
    let moved = |x: Tensor, d: isize, axis: usize, len: usize| -> Result<Tensor> {
        if d == 0 {
            return Ok(x);
        }
        let a = d.unsigned_abs();
        let mut pad_shape = x.dims().to_vec();
        pad_shape[axis] = a;
        let pad = Tensor::full(-1f32, pad_shape, x.device())?.to_dtype(x.dtype())?;
        Ok(if d > 0 {
            Tensor::cat(&[&pad, &x.narrow(axis, 0, len - a)?], axis)?
        } else {
            Tensor::cat(&[&x.narrow(axis, a, len - a)?, &pad], axis)?
        })
    };
    let x = moved(images.clone(), dx, 3, w)?;
    moved(x, dy, 2, h)
}

/// Fraction of `images` that `classifier` puts in the class it gave them unmoved
/// (`unmoved`), after each of the four shifts by [`SHIFT`] pixels, averaged.
pub fn shift_agreement(
    classifier: &dyn Classifier,
    images: &Tensor,
    unmoved: &[u32],
) -> Result<f64> {
    ensure!(
        images.dim(0)? == unmoved.len() && !unmoved.is_empty(),
        "{} classes for {} images",
        unmoved.len(),
        images.dim(0)?
    );
    let s = SHIFT as isize;
    let mut kept = 0usize;
    for (dx, dy) in [(s, 0), (-s, 0), (0, s), (0, -s)] {
        let classes = classifier.classify(&shift(images, dx, dy)?)?;
        kept += classes.iter().zip(unmoved).filter(|(a, b)| a == b).count();
    }
    Ok(kept as f64 / (4 * unmoved.len()) as f64)
}

/// Every label-free measure of `classifier` on `images`, given its classes of them;
/// `None` when it gives no probabilities.
pub fn label_free(
    classifier: &dyn Classifier,
    images: &Tensor,
    unmoved: &[u32],
) -> Result<Option<LabelFree>> {
    let Some(probs) = classifier.probabilities(images)? else {
        return Ok(None);
    };
    let k = probs.dim(1)?;
    let (confidence, mutual_information) =
        confidence_and_information(&probs.flatten_all()?.to_vec1::<f32>()?, k)?;
    Ok(Some(LabelFree {
        confidence,
        mutual_information,
        shift_agreement: shift_agreement(classifier, images, unmoved)?,
    }))
}

/// How many of the same images two runs' codes group alike: the share of images on
/// which `a` and `b` (one of `k` categories each) agree under the one-to-one matching of
/// their categories that agrees most (the matching `eval` makes with the labels).
pub fn agreement(a: &[u32], b: &[u32], k: usize) -> Result<f64> {
    ensure!(
        a.len() == b.len() && !a.is_empty(),
        "{} against {} categories",
        a.len(),
        b.len()
    );
    let as_labels = b
        .iter()
        .map(|&c| u8::try_from(c).map_err(|_| anyhow::anyhow!("category {c} of {k}")))
        .collect::<Result<Vec<u8>>>()?;
    Ok(crate::eval::metrics::CodeEval::new(a, &as_labels, k, k)?.accuracy)
}

/// Every pair's [`agreement`] (`codes[i]`: run i's categories of the same images): a
/// symmetric matrix with ones on its diagonal.
pub fn agreements(codes: &[Vec<u32>], k: usize) -> Result<Vec<Vec<f64>>> {
    let n = codes.len();
    let mut m = vec![vec![1f64; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            m[i][j] = agreement(&codes[i], &codes[j], k)?;
            m[j][i] = m[i][j];
        }
    }
    Ok(m)
}

/// Each run's mean agreement with every other run, from [`agreements`]: the restart
/// criterion of docs/INFOGAN.md. A run that splits or merges digits does so its own
/// way, so it agrees less with the others than a run whose categories are the digits,
/// which every good run shares.
pub fn consensus(agreements: &[Vec<f64>]) -> Result<Vec<f64>> {
    let n = agreements.len();
    ensure!(n > 1, "agreement needs two runs or more");
    Ok(agreements
        .iter()
        .enumerate()
        .map(|(i, row)| (row.iter().sum::<f64>() - row[i]) / (n - 1) as f64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn certain_balanced_codes_carry_ln_k() {
        // Four images, two classes, each image certain, classes balanced: ln 2.
        let p = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let (c, mi) = confidence_and_information(&p, 2).unwrap();
        assert!((c - 1.0).abs() < 1e-12);
        assert!((mi - 2f64.ln()).abs() < 1e-9, "{mi}");
        // Every image unsure in the same way: no information.
        let (c, mi) = confidence_and_information(&[0.5, 0.5, 0.5, 0.5], 2).unwrap();
        assert!((c - 0.5).abs() < 1e-12 && mi.abs() < 1e-12);
        // Certain but always the same class: no information either.
        let (_, mi) = confidence_and_information(&[1.0, 0.0, 1.0, 0.0], 2).unwrap();
        assert!(mi.abs() < 1e-12);
        assert!(confidence_and_information(&[0.5, 0.5, 1.0], 2).is_err());
    }

    #[test]
    fn agreement_matches_categories_and_consensus_finds_the_odd_run() {
        // The same grouping under other names agrees fully.
        let truth = [0u32, 0, 1, 1, 2, 2];
        assert_eq!(agreement(&truth, &[2, 2, 0, 0, 1, 1], 3).unwrap(), 1.0);
        // Merging groups 1 and 2 (and splitting group 0): the merged category matches one
        // of the two (2 images), one half of group 0 matches its split (1): 3 of 6.
        let merged = [0u32, 1, 2, 2, 2, 2];
        assert!((agreement(&truth, &merged, 3).unwrap() - 0.5).abs() < 1e-12);
        // Three runs that group alike under other names and one that merges: the merger
        // agrees least with the rest.
        let runs = vec![
            truth.to_vec(),
            vec![1, 1, 2, 2, 0, 0],
            vec![2, 2, 0, 0, 1, 1],
            merged.to_vec(),
        ];
        let c = consensus(&agreements(&runs, 3).unwrap()).unwrap();
        assert!((c[0] - 2.5 / 3.0).abs() < 1e-12, "{c:?}");
        assert!((c[3] - 0.5).abs() < 1e-12, "{c:?}");
        assert!(agreement(&truth, &truth[..5], 3).is_err());
        assert!(consensus(&agreements(&runs[..1], 3).unwrap()).is_err());
    }

    #[test]
    fn shift_moves_pixels_and_fills_background() {
        let v: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let x = Tensor::from_vec(v, (1, 1, 3, 3), &Device::Cpu).unwrap();
        let right = shift(&x, 1, 0).unwrap().flatten_all().unwrap();
        assert_eq!(
            right.to_vec1::<f32>().unwrap(),
            [-1., 0., 1., -1., 3., 4., -1., 6., 7.]
        );
        let up = shift(&x, 0, -1).unwrap().flatten_all().unwrap();
        assert_eq!(
            up.to_vec1::<f32>().unwrap(),
            [3., 4., 5., 6., 7., 8., -1., -1., -1.]
        );
        assert!(shift(&x, 3, 0).is_err());
    }

    /// Classes by total ink (shift-invariant while the ink stays inside) or by the
    /// column of the brightest pixel (moved by every horizontal shift).
    struct ByInk(bool);

    impl Classifier for ByInk {
        fn classify(&self, images: &Tensor) -> Result<Vec<u32>> {
            let (n, _, h, w) = images.dims4()?;
            let v = images.flatten_all()?.to_vec1::<f32>()?;
            Ok(v.chunks(h * w)
                .take(n)
                .map(|img| {
                    if self.0 {
                        (img.iter().filter(|&&p| p > 0.0).count() % 3) as u32
                    } else {
                        let top = (0..img.len())
                            .max_by(|&a, &b| img[a].total_cmp(&img[b]))
                            .unwrap_or(0);
                        (top % w) as u32
                    }
                })
                .collect())
        }
        fn classes(&self) -> usize {
            28
        }
        fn supervised(&self) -> bool {
            false
        }
    }

    #[test]
    fn shift_agreement_tells_identity_from_position() {
        // Ten 28x28 images, each a centred blob of 1..=10 lit pixels in a row.
        let mut v = vec![-1f32; 10 * 28 * 28];
        for i in 0..10 {
            for j in 0..=i {
                v[i * 784 + 14 * 28 + 9 + j] = 1.0 - 0.01 * j as f32;
            }
        }
        let x = Tensor::from_vec(v, (10, 1, 28, 28), &Device::Cpu).unwrap();
        for (c, want) in [(ByInk(true), 1.0), (ByInk(false), 0.5)] {
            let unmoved = c.classify(&x).unwrap();
            let kept = shift_agreement(&c, &x, &unmoved).unwrap();
            assert!((kept - want).abs() < 1e-12, "{kept} != {want}");
        }
    }
}
