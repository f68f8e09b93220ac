//! The encoder and decoder every model of the encoder family shares (AE, VAE, VAE-GAN,
//! BiGAN), so that their numbers compare networks of one size: a DCGAN-style
//! convolutional encoder 28x28x1 -> 14x14xw -> 7x7x2w -> linear, and DCGAN's generator
//! as the decoder.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gan_core::engine::Encoder;
use gan_core::fast::layers::{batch_norm, conv2d, linear, BatchNorm, Conv2d, ConvSpec, Linear};
use gan_core::init::{reinit, WeightInit};
use gan_core::prior::{LatentSpec, Rng};
use gan_core::Figure;

use crate::dcgan::Generator;

/// x -> 14x14xw -> 7x7x2w (the features) -> `out` numbers.
pub(crate) struct ConvEncoder {
    c1: Conv2d,
    c2: Conv2d,
    bn2: BatchNorm,
    out: Linear,
}

impl ConvEncoder {
    pub(crate) fn new(w: usize, out: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Self::with_channels(1, w, out, vb)
    }

    /// The same encoder reading `channels`-channel images.
    pub(crate) fn with_channels(
        channels: usize,
        w: usize,
        out: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let spec = ConvSpec {
            padding: 1,
            stride: 2,
            output_padding: 0,
        };
        Ok(Self {
            c1: conv2d(channels, w, 4, spec, vb.pp("c1"))?,
            c2: conv2d(w, 2 * w, 4, spec, vb.pp("c2"))?,
            bn2: batch_norm(2 * w, vb.pp("bn2"))?,
            out: linear(2 * w * 49, out, vb.pp("out"))?,
        })
    }

    /// The layer before the output, flattened: `[B, 2w * 49]`.
    pub(crate) fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.c1.forward_leaky(x, 0.2)?;
        self.bn2
            .forward_act(&self.c2.forward(&x)?, train, 0.2)?
            .flatten_from(1)
    }

    /// `[B, out]`.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.out.forward(&self.features(x, train)?)
    }
}

/// The encoder and decoder of one model, each with its own variables, weights drawn
/// N(0, 0.02) as DCGAN's, and what they can do once trained: encode (the posterior mean
/// when the encoder is variational), reconstruct, and, given a prior, generate.
pub(crate) struct EncDec {
    pub en_vars: VarMap,
    pub de_vars: VarMap,
    pub en: ConvEncoder,
    pub de: Generator,
    pub device: Device,
    /// The codes' prior, for models that sample from one.
    pub prior: Option<LatentSpec>,
    /// En gives the mean and log-variance of q(z|x), 2 * z_dim numbers.
    variational: bool,
    z_dim: usize,
    kind: &'static str,
}

impl EncDec {
    pub(crate) fn new(
        kind: &'static str,
        z_dim: usize,
        width: usize,
        variational: bool,
        prior: Option<LatentSpec>,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        anyhow::ensure!(
            z_dim > 0 && width > 0,
            "{kind} needs --z-dim and --width > 0 (got {z_dim}, {width})"
        );
        let (en_vars, de_vars) = (VarMap::new(), VarMap::new());
        let out = if variational { 2 * z_dim } else { z_dim };
        let en = ConvEncoder::new(
            width,
            out,
            VarBuilder::from_varmap(&en_vars, DType::F32, device),
        )?;
        let de = Generator::new(
            z_dim,
            width,
            VarBuilder::from_varmap(&de_vars, DType::F32, device),
        )?;
        reinit(&en_vars, WeightInit::Normal { std: 0.02 }, rng)?;
        reinit(&de_vars, WeightInit::Normal { std: 0.02 }, rng)?;
        Ok(Self {
            en_vars,
            de_vars,
            en,
            de,
            device: device.clone(),
            prior,
            variational,
            z_dim,
            kind,
        })
    }

    /// The two networks, as [`gan_core::Model::networks`] lists them.
    pub(crate) fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("en", &self.en_vars), ("de", &self.de_vars)]
    }

    /// The mean and log-variance of q(z|x) (a variational encoder's two halves).
    pub(crate) fn posterior(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let out = self.en.forward_t(x, train)?;
        let d = self.z_dim;
        Ok((out.narrow(1, 0, d)?, out.narrow(1, d, d)?))
    }

    /// `n` codes from the prior.
    pub(crate) fn prior_codes(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        match &self.prior {
            Some(p) => Ok(p.sample(n, rng, &self.device)?.z),
            None => anyhow::bail!("{} has no prior to sample codes from", self.kind),
        }
    }

    /// Prior samples, where there is a prior: the figure of every epoch.
    pub(crate) fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>> {
        if self.prior.is_none() {
            return Ok(Vec::new());
        }
        Ok(vec![Figure {
            name: "samples".into(),
            images: gan_core::Generator::generate(self, 64, None, rng)?,
            cols: 8,
        }])
    }

    /// Originals over their reconstructions, in rows of eight.
    pub(crate) fn reconstruction_figures(&self, real: &Tensor) -> Result<Vec<Figure>> {
        Ok(vec![Figure {
            name: "reconstructions".into(),
            images: gan_core::engine::grid::interleave_rows(real, &self.reconstruct(real)?, 8)?,
            cols: 8,
        }])
    }

    /// Itself as a generator, where it has a prior.
    pub(crate) fn as_generator(&self) -> Option<&dyn gan_core::Generator> {
        self.prior
            .as_ref()
            .map(|_| self as &dyn gan_core::Generator)
    }
}

impl gan_core::Generator for EncDec {
    /// De on codes from the prior.
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor> {
        crate::unconditional(self.kind, class)?;
        Ok(self.de.forward_t(&self.prior_codes(n, rng)?, false)?)
    }
}

impl Encoder for EncDec {
    /// En(x), or the posterior mean of a variational encoder.
    fn encode(&self, images: &Tensor) -> Result<Tensor> {
        if self.variational {
            Ok(self.posterior(images, false)?.0)
        } else {
            Ok(self.en.forward_t(images, false)?)
        }
    }

    fn features(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.en.features(images, false)?)
    }

    fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        Ok(self.de.forward_t(codes, false)?)
    }
}

/// Squared error summed over the pixels of each image, averaged over the batch: the
/// reconstruction term of the autoencoders' losses.
pub(crate) fn reconstruction_error(x_hat: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let b = x.dim(0)? as f64;
    (x_hat - x)?.sqr()?.sum_all()? / b
}
