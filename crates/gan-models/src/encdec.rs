//! The encoder and decoder every model of the encoder family shares (AE, VAE, VAE-GAN,
//! BiGAN), so that their numbers compare networks of one size: a DCGAN-style
//! convolutional encoder 28x28x1 -> 14x14xw -> 7x7x2w -> linear, and DCGAN's generator
//! as the decoder.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gan_core::fast::layers::{batch_norm, conv2d, linear, BatchNorm, Conv2d, ConvSpec, Linear};
use gan_core::fast::nn::leaky_relu;
use gan_core::init::{reinit, WeightInit};
use gan_core::prior::Rng;
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
        let spec = ConvSpec {
            padding: 1,
            stride: 2,
            output_padding: 0,
        };
        Ok(Self {
            c1: conv2d(1, w, 4, spec, vb.pp("c1"))?,
            c2: conv2d(w, 2 * w, 4, spec, vb.pp("c2"))?,
            bn2: batch_norm(2 * w, vb.pp("bn2"))?,
            out: linear(2 * w * 49, out, vb.pp("out"))?,
        })
    }

    /// The layer before the output, flattened: `[B, 2w * 49]`.
    pub(crate) fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = leaky_relu(&self.c1.forward(x)?, 0.2)?;
        self.bn2
            .forward_act(&self.c2.forward(&x)?, train, 0.2)?
            .flatten_from(1)
    }

    /// `[B, out]`.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.out.forward(&self.features(x, train)?)
    }
}

/// An encoder with `out` outputs and a decoder from `z_dim` codes, each with its own
/// variables, weights drawn N(0, 0.02) as DCGAN's.
pub(crate) struct EncDec {
    pub en_vars: VarMap,
    pub de_vars: VarMap,
    pub en: ConvEncoder,
    pub de: Generator,
    pub device: Device,
}

impl EncDec {
    pub(crate) fn new(
        z_dim: usize,
        width: usize,
        out: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        anyhow::ensure!(
            z_dim > 0 && width > 0,
            "the encoder family needs --z-dim and --width > 0 (got {z_dim}, {width})"
        );
        let (en_vars, de_vars) = (VarMap::new(), VarMap::new());
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
        })
    }
}

/// Squared error summed over the pixels of each image, averaged over the batch: the
/// reconstruction term of the autoencoders' losses.
pub(crate) fn reconstruction_error(x_hat: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let b = x.dim(0)? as f64;
    (x_hat - x)?.sqr()?.sum_all()? / b
}

/// Originals and reconstructions in alternating rows of eight: what a reader checks first.
pub(crate) fn reconstruction_figure(real: &Tensor, recon: &Tensor) -> Result<Figure> {
    Ok(Figure {
        name: "reconstructions".into(),
        images: gan_core::engine::grid::interleave_rows(real, recon, 8)?,
        cols: 8,
    })
}
