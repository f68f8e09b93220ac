//! Losses of the GAN family, written on logits so that they stay finite where a
//! sigmoid would round to 0 or 1.
//!
//! Every function returns a scalar tensor (the mean over the batch) so that it can be
//! summed with others and handed to `backward()`.

use candle_core::{DType, Result, Tensor, D};

/// `softplus(x) = log(1 + exp(x))`, as `relu(x) + log(1 + exp(-|x|))` so that neither
/// a large positive nor a large negative logit overflows.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    x.relu()? + tail
}

/// `log(sigmoid(x)) = -softplus(-x)`, the log-probability a discriminator with logit `x`
/// gives to "real".
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    softplus(&x.neg()?)?.neg()
}

/// Binary cross-entropy between `targets` in [0, 1] and `sigmoid(logits)`, averaged over
/// every element: `max(x, 0) - x t + log(1 + exp(-|x|))`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.to_dtype(logits.dtype())?;
    (softplus(logits)? - (logits * targets)?)?.mean_all()
}

/// BCE against a constant target (1 for "real", 0 for "fake"), without building a
/// target tensor.
pub fn bce_with_logits_const(logits: &Tensor, target: f64) -> Result<Tensor> {
    (softplus(logits)? - logits.affine(target, 0.0)?)?.mean_all()
}

/// The value function of Goodfellow et al. (2014),
/// `V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))]`, from the discriminator's logits on
/// real and generated samples. D ascends it; G descends it.
pub fn minimax_value(real_logits: &Tensor, fake_logits: &Tensor) -> Result<Tensor> {
    let real = log_sigmoid(real_logits)?.mean_all()?;
    let fake = log_sigmoid(&fake_logits.neg()?)?.mean_all()?;
    real + fake
}

/// The discriminator's loss, `-V(D, G)`: BCE with "real" on data and "fake" on samples.
pub fn discriminator_loss(real_logits: &Tensor, fake_logits: &Tensor) -> Result<Tensor> {
    minimax_value(real_logits, fake_logits)?.neg()
}

/// Which generator objective to descend (section 3 of the GAN paper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorLoss {
    /// `E[log(1 - D(G(z)))]`, the minimax game itself. Its gradient vanishes when D
    /// confidently rejects the samples, which is the case early in training.
    Saturating,
    /// `-E[log D(G(z))]`: the same fixed point, strong gradients early on.
    NonSaturating,
}

impl std::str::FromStr for GeneratorLoss {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "saturating" => Ok(Self::Saturating),
            "non-saturating" => Ok(Self::NonSaturating),
            other => {
                anyhow::bail!("unknown generator loss {other:?}: use saturating or non-saturating")
            }
        }
    }
}

/// The generator's loss on the discriminator's logits for generated samples.
pub fn generator_loss(fake_logits: &Tensor, kind: GeneratorLoss) -> Result<Tensor> {
    match kind {
        GeneratorLoss::Saturating => log_sigmoid(&fake_logits.neg()?)?.mean_all(),
        GeneratorLoss::NonSaturating => log_sigmoid(fake_logits)?.mean_all()?.neg(),
    }
}

/// Categorical cross-entropy of `logits` `[B, K]` against class indices `targets` `[B]`
/// (u32), through a log-softmax so that large logits stay finite.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, &targets.to_dtype(DType::U32)?)
}

/// Negative log-likelihood of `x` under a diagonal Gaussian with mean `mean` and
/// log-variance `log_var` (same shapes `[B, D]`): summed over dimensions, averaged over
/// the batch. InfoGAN's Q uses it for the continuous codes.
pub fn gaussian_nll(x: &Tensor, mean: &Tensor, log_var: &Tensor) -> Result<Tensor> {
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let sq = (x - mean)?.sqr()?;
    let inv_var = log_var.neg()?.exp()?;
    let per = ((sq * inv_var)?.affine(0.5, half_log_2pi)? + log_var.affine(0.5, 0.0)?)?;
    per.sum(D::Minus1)?.mean_all()
}

/// `KL(N(mean, exp(log_var)) || N(0, I))`, summed over dimensions and averaged over the
/// batch: the prior term of a VAE's evidence lower bound.
pub fn kl_to_standard_normal(mean: &Tensor, log_var: &Tensor) -> Result<Tensor> {
    let per = ((mean.sqr()? + log_var.exp()?)? - log_var)?.affine(0.5, -0.5)?;
    per.sum(D::Minus1)?.mean_all()
}

/// Fraction of logits on the right side of 0: for a discriminator, how often it calls
/// real data real (`target_real = true`) or samples fake (`false`).
pub fn binary_accuracy(logits: &Tensor, target_real: bool) -> Result<f32> {
    let hits = if target_real {
        logits.gt(0.0)?
    } else {
        logits.le(0.0)?
    };
    let n = logits.elem_count().max(1) as f32;
    Ok(hits.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }
    fn s(x: Tensor) -> f32 {
        x.to_scalar::<f32>().unwrap()
    }
    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-5, "{a} != {b}");
    }

    #[test]
    fn softplus_matches_definition_and_stays_finite() {
        let out = softplus(&t(&[-100.0, -1.0, 0.0, 2.0, 100.0]))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        close(out[0], 0.0);
        close(out[1], (1.0 + (-1.0f32).exp()).ln());
        close(out[2], 2f32.ln());
        close(out[3], (1.0 + 2f32.exp()).ln());
        close(out[4], 100.0);
    }

    #[test]
    fn bce_by_hand() {
        // x = [2, -1], t = [1, 0]: mean(log(1+e^-2), log(1+e^-1)).
        let want = ((1.0 + (-2f32).exp()).ln() + (1.0 + (-1f32).exp()).ln()) / 2.0;
        close(
            s(bce_with_logits(&t(&[2.0, -1.0]), &t(&[1.0, 0.0])).unwrap()),
            want,
        );
        // Soft target 0.3 on logit 0.5: -(0.3 log s + 0.7 log(1-s)).
        let sg = 1.0 / (1.0 + (-0.5f32).exp());
        let want = -(0.3 * sg.ln() + 0.7 * (1.0 - sg).ln());
        close(s(bce_with_logits(&t(&[0.5]), &t(&[0.3])).unwrap()), want);
        close(s(bce_with_logits_const(&t(&[0.5]), 0.3).unwrap()), want);
        // Extreme logits: finite, where log(sigmoid) would give inf.
        let big = s(bce_with_logits(&t(&[-200.0]), &t(&[1.0])).unwrap());
        close(big, 200.0);
    }

    #[test]
    fn value_function_and_generator_losses_by_hand() {
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        let (r, f) = ([1.0f32, 3.0], [-2.0f32, 0.5]);
        let v = (sig(r[0]).ln() + sig(r[1]).ln()) / 2.0
            + ((1.0 - sig(f[0])).ln() + (1.0 - sig(f[1])).ln()) / 2.0;
        close(s(minimax_value(&t(&r), &t(&f)).unwrap()), v);
        close(s(discriminator_loss(&t(&r), &t(&f)).unwrap()), -v);
        let sat = ((1.0 - sig(f[0])).ln() + (1.0 - sig(f[1])).ln()) / 2.0;
        let ns = -(sig(f[0]).ln() + sig(f[1]).ln()) / 2.0;
        close(
            s(generator_loss(&t(&f), GeneratorLoss::Saturating).unwrap()),
            sat,
        );
        close(
            s(generator_loss(&t(&f), GeneratorLoss::NonSaturating).unwrap()),
            ns,
        );
        // At D's optimum against a perfect G (D = 1/2 everywhere), V = -log 4.
        close(
            s(minimax_value(&t(&[0.0]), &t(&[0.0])).unwrap()),
            -(4f32.ln()),
        );
    }

    #[test]
    fn saturating_gradient_vanishes_where_non_saturating_does_not() {
        let x = candle_core::Var::new(&[-8.0f32], &Device::Cpu).unwrap();
        let g_sat = generator_loss(x.as_tensor(), GeneratorLoss::Saturating)
            .unwrap()
            .backward()
            .unwrap();
        let g_ns = generator_loss(x.as_tensor(), GeneratorLoss::NonSaturating)
            .unwrap()
            .backward()
            .unwrap();
        let gs = g_sat.get(&x).unwrap().to_vec1::<f32>().unwrap()[0].abs();
        let gn = g_ns.get(&x).unwrap().to_vec1::<f32>().unwrap()[0].abs();
        assert!(
            gs < 1e-3 && gn > 0.99,
            "saturating {gs}, non-saturating {gn}"
        );
    }

    #[test]
    fn cross_entropy_by_hand() {
        let logits = Tensor::new(&[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        let want = ((lse - 3.0) + 3f32.ln()) / 2.0;
        close(s(cross_entropy(&logits, &targets).unwrap()), want);
    }

    #[test]
    fn gaussian_nll_and_kl_by_hand() {
        let dev = &Device::Cpu;
        let x = Tensor::new(&[[0.5f32, -1.0]], dev).unwrap();
        let mu = Tensor::new(&[[0.0f32, 1.0]], dev).unwrap();
        let lv = Tensor::new(&[[0.0f32, 2f32.ln()]], dev).unwrap();
        let l2p = (2.0 * std::f32::consts::PI).ln();
        let want = 0.5 * (l2p + 0.25) + 0.5 * (l2p + 2f32.ln() + 4.0 / 2.0);
        close(s(gaussian_nll(&x, &mu, &lv).unwrap()), want);
        // KL(N(1, 2) || N(0, 1)) = 0.5 (2 + 1 - 1 - ln 2); KL of N(0, 1) to itself is 0.
        let mu = Tensor::new(&[[1.0f32, 0.0]], dev).unwrap();
        let want = 0.5 * (2.0 + 1.0 - 1.0 - 2f32.ln());
        close(s(kl_to_standard_normal(&mu, &lv.clone()).unwrap()), want);
        let z = Tensor::zeros((3, 4), DType::F32, dev).unwrap();
        close(s(kl_to_standard_normal(&z, &z).unwrap()), 0.0);
    }

    #[test]
    fn accuracy_counts_sides() {
        let x = t(&[1.0, -1.0, 2.0, 0.0]);
        close(binary_accuracy(&x, true).unwrap(), 0.5);
        close(binary_accuracy(&x, false).unwrap(), 0.5);
    }
}
