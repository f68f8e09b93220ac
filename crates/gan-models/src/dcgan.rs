//! DCGAN (Radford et al. 2016), sized for 28x28: strided convolutions in D, transposed
//! convolutions in G, batch norm, no pooling and no fully connected hidden layers. G's
//! first layer, a 7x7 transposed convolution of z, is the paper's "projection and
//! reshape"; D's last, a 7x7 convolution to one logit, its flattening into a sigmoid.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gan_core::fast::layers::{
    batch_norm, conv2d, conv_transpose2d, frozen, BatchNorm, Conv2d, ConvSpec, ConvTranspose2d,
};
use serde::{Deserialize, Serialize};

use crate::registry::Registered;
use gan_core::engine::no_such_phase;
use gan_core::init::{reinit, WeightInit};
use gan_core::loss::{binary_accuracy, discriminator_loss, generator_loss, GeneratorLoss};
use gan_core::prior::{rng, Latent, LatentSpec, Rng};
use gan_core::{Batch, Every, Figure, Model, Phase, Step, StepOutput};

/// Settings of DCGAN; the defaults here are the CLI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct DcganConfig {
    /// Width of the noise z ~ N(0, I).
    #[arg(long, default_value_t = 100)]
    pub z_dim: usize,
    /// Channels of G's 14x14 layer (its 7x7 layer has twice as many).
    #[arg(long, default_value_t = 32)]
    pub g_width: usize,
    /// Channels of D's 14x14 layer (its 7x7 layer has twice as many).
    #[arg(long, default_value_t = 32)]
    pub d_width: usize,
    /// Generator loss: saturating or non-saturating.
    #[arg(long, default_value = "non-saturating")]
    pub g_loss: GeneratorLoss,
    /// G's step reuses the fakes of D's step instead of drawing fresh noise (the official
    /// PyTorch DCGAN example): one generator forward per step instead of two. Off by
    /// default: Algorithm 1 draws fresh noise. Not written when off, so older runs match.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_fakes: bool,
    /// Learning rate of G (D uses --lr): 10x D's 2e-4. G at 5x (InfoGAN's pair) halved
    /// the MNIST-FID at equal epochs, and 10x with samples from G's running average
    /// (--ema-decay) took it down again (docs/RESULTS.md). A training setting: the run
    /// keeps it among its per-network learning rates, not in the model's config.
    #[arg(long, default_value_t = 2e-3)]
    #[serde(skip, default = "lr_g")]
    pub lr_g: f64,
    /// 3x3 stride-1 convolutions (with batch norm) added at the 7x7 stage of G and of D:
    /// depth for a 28x28 DCGAN, whose two strided layers each way are shallower than
    /// the paper's four; one cut the MNIST-FID by 40-60% at equal epochs. 0 is not
    /// written, so older runs (all without them) still match.
    #[arg(long, default_value_t = 1)]
    #[serde(default, skip_serializing_if = "crate::registry::is_default")]
    pub extra_layers: usize,
}

/// `n` 3x3 stride-1 convolutions of `c` channels with batch norm, named `extra{i}`.
fn extra_layers(
    n: usize,
    c: usize,
    vb: &VarBuilder,
) -> candle_core::Result<Vec<(Conv2d, BatchNorm)>> {
    (0..n)
        .map(|i| {
            Ok((
                down(c, c, 3, 1, 1, vb.pp(format!("extra{i}")))?,
                bn(c, vb.pp(format!("extra{i}_bn")))?,
            ))
        })
        .collect()
}

fn lr_g() -> f64 {
    2e-3
}

impl Default for DcganConfig {
    fn default() -> Self {
        crate::registry::defaults()
    }
}

fn bn(n: usize, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    batch_norm(n, vb)
}

fn up(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> candle_core::Result<ConvTranspose2d> {
    let spec = ConvSpec {
        padding,
        stride,
        output_padding: 0,
    };
    conv_transpose2d(i, o, k, spec, vb)
}

fn down(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    conv2d(
        i,
        o,
        k,
        ConvSpec {
            padding,
            stride,
            output_padding: 0,
        },
        vb,
    )
}

/// z -> 7x7x2w -> 14x14xw -> 28x28x1.
pub(crate) struct Generator {
    proj: ConvTranspose2d,
    bn0: BatchNorm,
    extra: Vec<(Conv2d, BatchNorm)>,
    up1: ConvTranspose2d,
    bn1: BatchNorm,
    up2: ConvTranspose2d,
}

impl Generator {
    pub(crate) fn new(z_dim: usize, w: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Self::with_channels(z_dim, w, 1, vb)
    }

    /// The same generator drawing `channels`-channel images (3 for a colour domain).
    pub(crate) fn with_channels(
        z_dim: usize,
        w: usize,
        channels: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            proj: up(z_dim, 2 * w, 7, 1, 0, vb.pp("proj"))?,
            bn0: bn(2 * w, vb.pp("bn0"))?,
            extra: Vec::new(),
            up1: up(2 * w, w, 4, 2, 1, vb.pp("up1"))?,
            bn1: bn(w, vb.pp("bn1"))?,
            up2: up(w, channels, 4, 2, 1, vb.pp("up2"))?,
        })
    }

    /// `z` is `[B, z_dim]`; the output `[B, channels, 28, 28]` in [-1, 1].
    pub(crate) fn forward_t(&self, z: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (b, d) = z.dims2()?;
        let x = self.proj.forward(&z.reshape((b, d, 1, 1))?)?;
        let mut x = self.bn0.forward_act(&x, train, 0.0)?;
        for (conv, bn) in &self.extra {
            x = bn.forward_act(&conv.forward(&x)?, train, 0.0)?;
        }
        let x = self.bn1.forward_act(&self.up1.forward(&x)?, train, 0.0)?;
        gan_core::fast::nn::tanh(&self.up2.forward(&x)?)
    }
}

/// 28x28x1 -> 14x14xw -> 7x7x2w -> `outputs` logits (one for DCGAN).
pub(crate) struct Discriminator {
    c1: Conv2d,
    c2: Conv2d,
    bn2: BatchNorm,
    extra: Vec<(Conv2d, BatchNorm)>,
    out: Conv2d,
}

impl Discriminator {
    pub(crate) fn new(in_channels: usize, w: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Self::with_outputs(in_channels, w, 1, vb)
    }

    pub(crate) fn with_outputs(
        in_channels: usize,
        w: usize,
        outputs: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            c1: down(in_channels, w, 4, 2, 1, vb.pp("c1"))?,
            c2: down(w, 2 * w, 4, 2, 1, vb.pp("c2"))?,
            bn2: bn(2 * w, vb.pp("bn2"))?,
            extra: Vec::new(),
            out: down(2 * w, outputs, 7, 1, 0, vb.pp("out"))?,
        })
    }

    /// The 7x7x2w layer, `[B, 2w, 7, 7]`: the "layer l" of a feature-space loss.
    pub(crate) fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.c1.forward_leaky(x, 0.2)?;
        let mut x = self.bn2.forward_act(&self.c2.forward(&x)?, train, 0.2)?;
        for (conv, bn) in &self.extra {
            x = bn.forward_act(&conv.forward(&x)?, train, 0.2)?;
        }
        Ok(x)
    }

    /// `[B, outputs]` logits from [`Discriminator::features`].
    pub(crate) fn logits(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        self.out.forward(features)?.flatten_from(1)
    }

    /// `x` is `[B, C, 28, 28]`; the output `[B]` logits (one output).
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.out.forward(&self.features(x, train)?)?.flatten_all()
    }
}

/// DCGAN on MNIST.
pub struct Dcgan {
    cfg: DcganConfig,
    prior: LatentSpec,
    g_vars: VarMap,
    d_vars: VarMap,
    g: Generator,
    d: Discriminator,
    device: Device,
}

impl Dcgan {
    /// Builds both networks on `device`, weights drawn N(0, 0.02) from `seed`.
    pub fn new(cfg: DcganConfig, device: &Device, seed: u64) -> Result<Self> {
        anyhow::ensure!(
            cfg.z_dim > 0 && cfg.g_width > 0 && cfg.d_width > 0,
            "dcgan needs --z-dim, --g-width and --d-width > 0 (got {}, {}, {})",
            cfg.z_dim,
            cfg.g_width,
            cfg.d_width
        );
        let (g_vars, d_vars) = (VarMap::new(), VarMap::new());
        let (g_vb, d_vb) = (
            VarBuilder::from_varmap(&g_vars, DType::F32, device),
            VarBuilder::from_varmap(&d_vars, DType::F32, device),
        );
        let mut g = Generator::new(cfg.z_dim, cfg.g_width, g_vb.clone())?;
        g.extra = extra_layers(cfg.extra_layers, 2 * cfg.g_width, &g_vb)?;
        let mut d = Discriminator::new(1, cfg.d_width, d_vb.clone())?;
        d.extra = extra_layers(cfg.extra_layers, 2 * cfg.d_width, &d_vb)?;
        let mut r = rng(seed, gan_core::prior::RngStream::Init);
        reinit(&g_vars, WeightInit::Normal { std: 0.02 }, &mut r)?;
        reinit(&d_vars, WeightInit::Normal { std: 0.02 }, &mut r)?;
        let prior = LatentSpec(vec![Latent::Gaussian { dim: cfg.z_dim }]);
        Ok(Self {
            cfg,
            prior,
            g_vars,
            d_vars,
            g,
            d,
            device: device.clone(),
        })
    }

    fn fake(&self, n: usize, rng: &mut Rng, train: bool) -> Result<Tensor> {
        let z = self.prior.sample(n, rng, &self.device)?.z;
        Ok(self.g.forward_t(&z, train)?)
    }
}

impl Dcgan {
    /// D's line: ascend log D(x) + log(1 - D(G(z))). With `reuse_fakes` the fakes are
    /// kept, graph and all, for G's line.
    fn d_step(&self, batch: &Batch, step: &mut Step) -> Result<StepOutput> {
        let real = self.d.forward_t(&batch.images, true)?;
        let fake = self.fake(batch.images.dim(0)?, step.rng, true)?;
        if self.cfg.reuse_fakes {
            step.put("fake", fake.clone());
        }
        let fake = self.d.forward_t(&fake.detach(), true)?;
        Ok(StepOutput::new(discriminator_loss(&real, &fake)?)
            .with("d_real_acc", binary_accuracy(&real, true)?)
            .with("d_fake_acc", binary_accuracy(&fake, false)?))
    }

    /// G's line: descend G's loss on fresh fakes (or D's, with `reuse_fakes`).
    fn g_step(&self, m: usize, step: &mut Step) -> Result<StepOutput> {
        let fake = match step.take("fake") {
            Some(f) => f,
            None => self.fake(m, step.rng, true)?,
        };
        // D is only passed through: no gradient for its weights.
        let logit = frozen(|| self.d.forward_t(&fake, true))?;
        Ok(StepOutput::new(generator_loss(&logit, self.cfg.g_loss)?))
    }
}

impl Model for Dcgan {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).expect("config serialises")
    }

    fn networks(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("g", &self.g_vars), ("d", &self.d_vars)]
    }

    fn averaged(&self) -> Vec<&'static str> {
        vec!["g"]
    }

    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("d", &["d"]),
            Phase::new("g", &["g"]).every(Every::K),
        ]
    }

    fn run_phase(&self, phase: &str, step: &mut Step) -> Result<StepOutput> {
        let batch = step.real()?;
        match phase {
            "d" => self.d_step(batch, step),
            "g" => self.g_step(batch.len()?, step),
            other => Err(no_such_phase(self.kind(), other)),
        }
    }

    fn figures(&self, rng: &mut Rng) -> Result<Vec<Figure>> {
        Ok(vec![Figure {
            name: "samples".into(),
            images: gan_core::Generator::generate(self, 64, None, rng)?,
            cols: 8,
        }])
    }

    fn generator(&self) -> Option<&dyn gan_core::Generator> {
        Some(self)
    }

    fn completer(&self) -> Option<&dyn gan_core::Completer> {
        Some(self)
    }
}

/// Steps of the search over z that completes an image, and their Adam learning rate.
const COMPLETION_STEPS: usize = 200;
const COMPLETION_LR: f64 = 0.05;

impl gan_core::Completer for Dcgan {
    /// Prediction through the generator: the z whose G(z) best matches the given pixels
    /// (Adam on the squared error there, from a prior draw), its free pixels filled in.
    fn complete(&self, images: &Tensor, free: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let n = images.dim(0)?;
        let given = free.affine(-1.0, 1.0)?;
        let vars = VarMap::new();
        let z = vars.get(
            (n, self.cfg.z_dim),
            "z",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &self.device,
        )?;
        let start = self.prior.sample(n, rng, &self.device)?.z;
        vars.data().lock().expect("z lock")["z"].set(&start)?;
        let mut adam = gan_core::Adam::new(
            &vars,
            gan_core::AdamConfig {
                lr: COMPLETION_LR,
                beta1: 0.9,
                ..gan_core::AdamConfig::default()
            },
        )?;
        for _ in 0..COMPLETION_STEPS {
            let x = frozen(|| self.g.forward_t(&z, false))?;
            let err = (x - images)?.broadcast_mul(&given)?.sqr()?.sum_all()?;
            adam.step(&err.backward()?)?;
        }
        let x = self.g.forward_t(&z, false)?.detach();
        Ok((images.broadcast_mul(&given)? + x.broadcast_mul(free)?)?)
    }
}

impl gan_core::Generator for Dcgan {
    fn generate(&self, n: usize, class: Option<u32>, rng: &mut Rng) -> Result<Tensor> {
        crate::unconditional(Self::KIND, class)?;
        self.fake(n, rng, false)
    }
}

impl Registered for Dcgan {
    type Config = DcganConfig;
    const KIND: &'static str = "dcgan";
    const ABOUT: &'static str = "DCGAN: strided and transposed convolutions with batch norm";
    /// Under 10 minutes on the 2-core VM (docs/RESULTS.md).
    const EPOCHS: usize = 9;
    /// Samples come from the averaged G (with G at 2e-3: docs/RESULTS.md).
    const EMA: Option<f64> = Some(0.999);
    fn build(cfg: DcganConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new(cfg, device, seed)
    }
    fn network_lr(cfg: &DcganConfig) -> Vec<(&'static str, f64)> {
        vec![("g", cfg.lr_g)]
    }
}
