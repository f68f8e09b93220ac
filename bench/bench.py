"""PyTorch twins of gan-rs's models: training and generation throughput on the CPU or a GPU.

Each model is the same network with the same training step as its Rust module in
crates/gan-models (layer sizes, activations, batch-norm settings, weight initialisation,
priors, losses, one Adam per network with the CLI's learning rates, the model's phases
in its order: for the GANs one D step then one G step per batch with fresh noise for
each, as gan-core's engine does with its default k = 1; for the encoder family and the
newer models (dann, disentangle, dpredict, triplegan) their own phases, see `Phase`).
Throughput does not depend on what the images show, so the data are random images in
[-1, 1] (and labels 0-9 in turn), as in the Rust benchmark
(crates/gan-models/benches/throughput.rs), which `cargo xtask bench --vs-pytorch`
runs beside this script. Models that read several streams (dann, disentangle: source
and target, in 3 channels; triplegan: unlabelled 100, labelled 100, pseudo 400) get
each stream at its own batch size (else --batch) and channels, as the Rust benchmark
gives them (see `Stream`); their images per step are the first stream's.

Triple-GAN's twin is its game step (D, G, C phases): run the Rust side with
--config '{"pretrain_steps":0}' to compare, not its default C pre-training.

    python bench/bench.py --model infogan [--batch 64] [--threads 2] [--warmup 5]
                          [--steps 30] [--freeze-d] [--device cpu|cuda] [--json]

Training: the median wall time of --steps timed steps after --warmup untimed ones
(the upper median, times[steps // 2], as the Rust benchmark takes it), reported as
images/s (batch / median) and ms/step; the best step is reported too. Generation:
images/s of G (the decoder De for vae, vaegan, bigan; G(z, y) for triplegan; for dpredict
its search, 200 Langevin steps up D from uniform noise) alone in eval mode under
torch.no_grad(), at the same batch size, over max(steps, 10) batches and at least one
second after 2 untimed ones; null for ae, which has no prior to sample from, and for
dann and disentangle, which have no generator (as the Rust benchmark, where these have
none).

Plain idiomatic PyTorch: nn.Module, float32, torch.optim.Adam with its defaults but
betas (0.5, 0.999), zero_grad(set_to_none=True), no torch.compile.

--device cuda puts the same networks, data and step on the first CUDA GPU (the Rust
benchmark's --device cuda): every timer is read after torch.cuda.synchronize(), as the
Rust benchmark synchronizes the device after each step.
"""

import argparse
import json
import sys
import math
import time
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = [
    "gan", "dcgan", "cgan", "infogan", "ae", "vae", "vaegan", "bigan",
    "dann", "disentangle", "dpredict", "triplegan",
]

# Where the networks, data and noise live: set once by main() from --device.
DEVICE = torch.device("cpu")


def sync():
    """Wait for the GPU's queued work, so a timer reads the time it took (no-op on CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


# --------------------------------------------------------------------------- helpers


def init_normal(module, std=0.02):
    """gan_core::init::WeightInit::Normal: weights N(0, std), batch-norm scales N(1, std),
    biases 0 (dcgan.rs, infogan.rs)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def init_fan_in_uniform(module):
    """gan_core::init::WeightInit::FanInUniform: weights U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (fan_in: in_features, or in_channels * kernel area for a convolution), biases 0,
    batch-norm scales 1 (gan.rs, cgan.rs, dann.rs, dpredict.rs, triplegan.rs)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            b = 1.0 / math.sqrt(m.weight[0].numel())
            nn.init.uniform_(m.weight, -b, b)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def bce(logits, target):
    """Binary cross-entropy on logits against a constant target (1 real, 0 fake), the
    mean over the batch: gan_core::loss's discriminator and non-saturating G losses."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def gaussian_nll(x, mean, log_var):
    """gan_core::loss::gaussian_nll: summed over the codes, averaged over the batch."""
    per = 0.5 * (x - mean) ** 2 * torch.exp(-log_var) + 0.5 * math.log(2 * math.pi)
    return (per + 0.5 * log_var).sum(1).mean()


def reconstruction_error(x_hat, x):
    """gan_models::encdec::reconstruction_error: squared error summed over the pixels,
    averaged over the batch."""
    return (x_hat - x).square().sum() / x.shape[0]


def kl_to_standard_normal(mean, log_var):
    """gan_core::loss::kl_to_standard_normal: KL(N(mean, exp(log_var)) || N(0, I)), summed
    over the codes, averaged over the batch."""
    return (0.5 * (mean.square() + log_var.exp() - log_var) - 0.5).sum(1).mean()


def reparameterise(mean, log_var):
    """vae.rs `reparameterise`: mean + exp(log_var / 2) * eps, eps ~ N(0, I)."""
    return mean + (0.5 * log_var).exp() * torch.randn_like(mean)


class Phase(NamedTuple):
    """One phase of gan-core's engine step (`Phase::new(name, nets)` and the model's
    `run_phase`): zero the grads of `nets`, compute `loss(images, labels)`, backward, one
    Adam step per network of `nets`.

    frozen: networks whose weights take no gradient in this phase (requires_grad off
        from before the loss to after backward), where the Rust phase runs them inside
        gan_core::fast::layers::frozen.
    retain_graph: keep the graph after backward, because a later phase of the step
        backpropagates through part of it again (the Rust model hands tensors on with
        Step::put, graphs and all).
    own_grads_only: backward with inputs = the weights of `nets` alone, as the engine's
        Collector::backward_for does for every phase: no gradients for other networks the
        graph reaches. Needed where the graph reaches a network an earlier phase of the
        step has already stepped in place (PyTorch refuses to backpropagate through its
        saved weights), and leaner wherever it reaches one at all."""

    name: str
    nets: Sequence[str]
    loss: Callable
    frozen: Sequence[str] = ()
    retain_graph: bool = False
    own_grads_only: bool = False


class Stream(NamedTuple):
    """One stream of batches a model reads (gan-core's `Stream`): its name, its own batch
    size (None: --batch) and the channels of its images. The Rust benchmark gives each
    stream its own batch size where the model declares one and 3-channel images for a
    colour domain; its images per step are the first stream's. Models without `streams`
    read one stream of --batch grey images, handed to their losses as (images, labels);
    models with `streams` get one dict, stream name -> (images, labels)."""

    name: str
    batch: int | None = None
    channels: int = 1


class Mlp(nn.Sequential):
    """gan.rs `Mlp`: linear layers with leaky ReLU 0.2 between them (none after the last);
    `slope` 0: ReLU (`Mlp::relu`)."""

    def __init__(self, widths, slope=0.2, batch_norm=False):
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(a, b))
            if i + 2 < len(widths):
                # `Mlp::with_batch_norm`: batch norm before each hidden activation.
                if batch_norm:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.LeakyReLU(slope) if slope else nn.ReLU())
        super().__init__(*layers)


# --------------------------------------------------------------------------- models
#
# Each model has `nets` (name -> module, the Rust model's `networks()`), `lr` per network,
# `g` (the network put in eval mode for generation) and `generate(n)` (None: no
# generation). The four GANs have `d_nets` and `g_nets` (what each phase's Adam steps)
# and the two phase losses `d_loss(images, labels)` and `g_loss(images, labels)` of their
# Rust `d_step`/`g_step`, from which `measure` makes the D phase and the G phase; the
# encoder family and the newer models list their own `phases` (see `Phase`), the newer
# ones also their `streams` (see `Stream`).


class Gan:
    """gan.rs, default GanConfig: z 100 ~ N(0, I); G 100-256-512-1024-784 + tanh;
    D 784-1024-512-256-1; leaky ReLU 0.2; non-saturating G loss; G at 1e-3 and its
    running average (--ema-decay 0.999)."""

    z_dim = 100

    def __init__(self):
        self.g = Mlp([self.z_dim, 256, 512, 1024, 784])
        self.d = Mlp([784, 1024, 512, 256, 1])
        init_fan_in_uniform(self.g)
        init_fan_in_uniform(self.d)
        self.nets = {"g": self.g, "d": self.d}
        self.d_nets, self.g_nets = ["d"], ["g"]
        self.lr = {"g": 1e-3, "d": 2e-4}
        self.engine_ema = {"g": 0.999}

    def fake(self, n):
        return torch.tanh(self.g(torch.randn(n, self.z_dim, device=DEVICE)))

    def critic(self, flat):
        return self.d(flat).squeeze(1)

    def d_loss(self, images, labels):
        real = self.critic(images.flatten(1))
        fake = self.critic(self.fake(images.shape[0]).detach())
        return bce(real, 1.0) + bce(fake, 0.0)

    def g_loss(self, images, labels):
        return bce(self.critic(self.fake(images.shape[0])), 1.0)

    def generate(self, n):
        return self.fake(n).view(n, 1, 28, 28)


class Cgan:
    """cgan.rs, default CganConfig: the MLP GAN with the one-hot label beside z (G
    110-256-512-1024-784 + tanh, batch norm on its hidden layers) and beside the pixels
    (D 794-1024-512-256-1)."""

    z_dim, classes = 100, 10

    def __init__(self):
        self.g = Mlp([self.z_dim + self.classes, 256, 512, 1024, 784], batch_norm=True)
        self.d = Mlp([784 + self.classes, 1024, 512, 256, 1])
        init_fan_in_uniform(self.g)
        init_fan_in_uniform(self.d)
        self.nets = {"g": self.g, "d": self.d}
        self.d_nets, self.g_nets = ["d"], ["g"]
        self.lr = {"g": 2e-4, "d": 2e-4}

    def random_labels(self, n):
        return F.one_hot(torch.randint(0, self.classes, (n,), device=DEVICE), self.classes).float()

    def fake(self, y):
        z = torch.randn(y.shape[0], self.z_dim, device=DEVICE)
        return torch.tanh(self.g(torch.cat([z, y], 1)))

    def critic(self, flat, y):
        return self.d(torch.cat([flat, y], 1)).squeeze(1)

    def d_loss(self, images, labels):
        y_real = F.one_hot(labels, self.classes).float()
        real = self.critic(images.flatten(1), y_real)
        y_fake = self.random_labels(images.shape[0])
        fake = self.critic(self.fake(y_fake).detach(), y_fake)
        return bce(real, 1.0) + bce(fake, 0.0)

    def g_loss(self, images, labels):
        y = self.random_labels(images.shape[0])
        return bce(self.critic(self.fake(y), y), 1.0)

    def generate(self, n):
        return self.fake(self.random_labels(n)).view(n, 1, 28, 28)


def extra_layers(n, c):
    """dcgan.rs `extra_layers`: `n` 3x3 stride-1 convolutions of `c` channels, each with
    its batch norm."""
    return nn.ModuleList(
        nn.ModuleList([nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c)]) for _ in range(n)
    )


class DcganGenerator(nn.Module):
    """dcgan.rs `Generator`: z -> 7x7x2w (7x7 transposed conv) -> 14x14xw -> 28x28x1
    (`channels` out: `Generator::with_channels`)."""

    def __init__(self, z_dim=100, w=32, channels=1, extra=0):
        super().__init__()
        self.proj = nn.ConvTranspose2d(z_dim, 2 * w, 7, 1, 0)
        self.bn0 = nn.BatchNorm2d(2 * w)
        # `--extra-layers`: 3x3 convolutions + batch norm at the 7x7 stage.
        self.extra = extra_layers(extra, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(w)
        self.up2 = nn.ConvTranspose2d(w, channels, 4, 2, 1)

    def forward(self, z):
        x = F.relu(self.bn0(self.proj(z[:, :, None, None])))
        for conv, bn in self.extra:
            x = F.relu(bn(conv(x)))
        x = F.relu(self.bn1(self.up1(x)))
        return torch.tanh(self.up2(x))


class DcganDiscriminator(nn.Module):
    """dcgan.rs `Discriminator`: 28x28x1 -> 14x14xw -> 7x7x2w (BN) -> one logit (7x7 conv),
    leaky ReLU 0.2."""

    def __init__(self, w=32, extra=0):
        super().__init__()
        self.c1 = nn.Conv2d(1, w, 4, 2, 1)
        self.c2 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.extra = extra_layers(extra, 2 * w)
        self.out = nn.Conv2d(2 * w, 1, 7, 1, 0)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = F.leaky_relu(self.bn2(self.c2(x)), 0.2)
        for conv, bn in self.extra:
            x = F.leaky_relu(bn(conv(x)), 0.2)
        return self.out(x).flatten()


class Dcgan:
    """dcgan.rs, default DcganConfig: z 100 ~ N(0, I), g_width = d_width = 32, one extra
    3x3 layer at the 7x7 stage of each, G's learning rate 2e-3, a running average of G
    (--ema-decay 0.999)."""

    z_dim = 100

    def __init__(self):
        self.g = DcganGenerator(self.z_dim, 32, extra=1)
        self.d = DcganDiscriminator(32, extra=1)
        init_normal(self.g)
        init_normal(self.d)
        self.nets = {"g": self.g, "d": self.d}
        self.d_nets, self.g_nets = ["d"], ["g"]
        self.lr = {"g": 2e-3, "d": 2e-4}
        self.engine_ema = {"g": 0.999}

    def fake(self, n):
        return self.g(torch.randn(n, self.z_dim, device=DEVICE))

    def d_loss(self, images, labels):
        real = self.d(images)
        fake = self.d(self.fake(images.shape[0]).detach())
        return bce(real, 1.0) + bce(fake, 0.0)

    def g_loss(self, images, labels):
        return bce(self.d(self.fake(images.shape[0])), 1.0)

    def generate(self, n):
        return self.fake(n)


class InfoganGenerator(nn.Module):
    """infogan.rs `Generator`: FC 1024 + BN + ReLU, FC 7x7x128 + BN (per feature) + ReLU,
    up-convolutions to 14x14x64 (BN, ReLU) and 28x28x1 (tanh)."""

    def __init__(self, inp=74):
        super().__init__()
        self.fc1 = nn.Linear(inp, 1024)
        self.bn1 = nn.BatchNorm1d(1024)
        self.fc2 = nn.Linear(1024, 7 * 7 * 128)
        self.bn2 = nn.BatchNorm1d(7 * 7 * 128)
        self.up1 = nn.ConvTranspose2d(128, 64, 4, 2, 1)
        self.bn3 = nn.BatchNorm2d(64)
        self.up2 = nn.ConvTranspose2d(64, 1, 4, 2, 1)

    def forward(self, zc):
        x = F.relu(self.bn1(self.fc1(zc)))
        x = F.relu(self.bn2(self.fc2(x))).view(-1, 128, 7, 7)
        x = F.relu(self.bn3(self.up1(x)))
        return torch.tanh(self.up2(x))


class InfoganTrunk(nn.Module):
    """infogan.rs `Trunk`, shared by D and Q: conv 64 (leaky 0.1), conv 128 + BN (leaky
    0.1), FC 1024 + BN (leaky 0.1)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 64, 4, 2, 1)
        self.c2 = nn.Conv2d(64, 128, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(128)
        self.fc = nn.Linear(7 * 7 * 128, 1024)
        self.bn3 = nn.BatchNorm1d(1024)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.1)
        x = F.leaky_relu(self.bn2(self.c2(x)), 0.1)
        return F.leaky_relu(self.bn3(self.fc(x.flatten(1))), 0.1)


class Infogan:
    """infogan.rs, default InfoganConfig: z 62 ~ U(-1, 1), one 10-way categorical code,
    2 continuous codes ~ U(-1, 1); D = trunk + FC 1 (network "d"); Q = FC 128 + BN +
    leaky 0.1 + FC 14 on the trunk (network "q": 10 logits, 2 means, 2 log-variances);
    G and Q descend the non-saturating loss + 1.0 * (CE(c1) + 0.1 * Gaussian NLL(c2, c3))
    with lr 1e-3 (gan-cli's --lr-g), D ascends with lr 2e-4."""

    z_dim, k, n_cont, lambda_, lambda_cont = 62, 10, 2, 1.0, 0.1

    def __init__(self):
        self.g = InfoganGenerator(self.z_dim + self.k + self.n_cont)
        self.trunk = InfoganTrunk()
        self.d_head = nn.Linear(1024, 1)
        self.q = nn.Sequential(
            nn.Linear(1024, 128),
            nn.BatchNorm1d(128),
            nn.LeakyReLU(0.1),
            nn.Linear(128, self.k + 2 * self.n_cont),
        )
        self.d = nn.ModuleList([self.trunk, self.d_head])
        for net in (self.g, self.d, self.q):
            init_normal(net)
        self.nets = {"g": self.g, "d": self.d, "q": self.q}
        self.d_nets, self.g_nets = ["d"], ["g", "q"]
        self.lr = {"g": 1e-3, "q": 1e-3, "d": 2e-4}

    def sample(self, n):
        """The prior, blocks in the Rust order: z, one-hot c1, continuous codes."""
        z = torch.rand(n, self.z_dim, device=DEVICE) * 2 - 1
        cat = torch.randint(0, self.k, (n,), device=DEVICE)
        cont = torch.rand(n, self.n_cont, device=DEVICE) * 2 - 1
        return torch.cat([z, F.one_hot(cat, self.k).float(), cont], 1), cat, cont

    def discriminate(self, x):
        """`Infogan::discriminate`: D's logit and Q's output through one pass of the trunk."""
        h = self.trunk(x)
        return self.d_head(h).squeeze(1), self.q(h)

    def d_loss(self, images, labels):
        # As in the Rust d_step, D's pass also runs Q's head (its output is unused, so it
        # costs a forward pass and moves Q's batch-norm statistics, nothing more).
        real, _ = self.discriminate(images)
        zc, _, _ = self.sample(images.shape[0])
        fake, _ = self.discriminate(self.g(zc).detach())
        return bce(real, 1.0) + bce(fake, 0.0)

    def g_loss(self, images, labels):
        zc, cat, cont = self.sample(images.shape[0])
        logit, out = self.discriminate(self.g(zc))
        adv = bce(logit, 1.0)
        l_cat = F.cross_entropy(out[:, : self.k], cat)
        mean = out[:, self.k : self.k + self.n_cont]
        log_var = out[:, self.k + self.n_cont :]
        l_info = l_cat + self.lambda_cont * gaussian_nll(cont, mean, log_var)
        return adv + self.lambda_ * l_info

    def generate(self, n):
        return self.g(self.sample(n)[0])


class ConvEncoder(nn.Module):
    """encdec.rs `ConvEncoder`: 28x28x1 -> 14x14xw (leaky 0.2) -> 7x7x2w (BN, leaky 0.2)
    -> flatten -> FC to `out` numbers (`channels` in: `ConvEncoder::with_channels`)."""

    def __init__(self, w=32, out=32, channels=1):
        super().__init__()
        self.c1 = nn.Conv2d(channels, w, 4, 2, 1)
        self.c2 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.out = nn.Linear(2 * w * 49, out)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = F.leaky_relu(self.bn2(self.c2(x)), 0.2)
        return self.out(x.flatten(1))


class EncDec:
    """encdec.rs `EncDec`: En (ConvEncoder; 2 * z_dim outputs, mean and log-variance,
    when variational) and De (DCGAN's generator with z_dim inputs), both of width w,
    weights N(0, 0.02) and BN scales N(1, 0.02), one Adam each, lr 2e-4 (gan-cli's --lr:
    these models set no per-network rate)."""

    z_dim, w = 32, 32

    def __init__(self, variational):
        self.en = ConvEncoder(self.w, 2 * self.z_dim if variational else self.z_dim)
        self.de = DcganGenerator(self.z_dim, self.w)
        init_normal(self.en)
        init_normal(self.de)
        self.nets = {"en": self.en, "de": self.de}
        self.lr = {"en": 2e-4, "de": 2e-4}
        self.g = self.de
        # Step::put / Step::take: what one phase hands on to the next within a step.
        self.carry = {}

    def posterior(self, x):
        """`EncDec::posterior`: the mean and log-variance halves of En(x)."""
        out = self.en(x)
        return out[:, : self.z_dim], out[:, self.z_dim :]


class Ae(EncDec):
    """ae.rs, default AeConfig (z 32, width 32): one phase "recon", En and De descend
    ||De(En(x)) - x||^2. No prior, so no generation: gen_img_per_s is null, as in the Rust
    benchmark (whose ae has no generator)."""

    generate = None

    def __init__(self):
        super().__init__(variational=False)
        self.phases = [Phase("recon", ["en", "de"], self.recon_loss)]

    def recon_loss(self, images, labels):
        return reconstruction_error(self.de(self.en(images)), images)


class Vae(EncDec):
    """vae.rs, default VaeConfig (z 32, width 32, beta 1): one phase "elbo", En and De
    descend ||De(z~) - x||^2 + beta KL(q(z|x) || N(0, I)), z~ reparameterised. Generation:
    De on z ~ N(0, I)."""

    beta = 1.0

    def __init__(self):
        super().__init__(variational=True)
        self.phases = [Phase("elbo", ["en", "de"], self.elbo_loss)]

    def elbo_loss(self, images, labels):
        mean, log_var = self.posterior(images)
        x_hat = self.de(reparameterise(mean, log_var))
        recon = reconstruction_error(x_hat, images)
        return recon + self.beta * kl_to_standard_normal(mean, log_var)

    def generate(self, n):
        return self.de(torch.randn(n, self.z_dim, device=DEVICE))


class Vaegan(EncDec):
    """vaegan.rs, default VaeganConfig (z 32, width 32, --dis binary, --recon pixel, gamma
    0.01, beta 1): the VAE's En and De and DCGAN's discriminator (width 32, one logit) as
    Dis. Three phases from one forward pass, made in the en phase and handed on:
    - en (steps En): x~ = De(z~), z~ reparameterised from En(x); x^ = De(z), z ~ N(0, I);
      loss ||x~ - x||^2 + beta KL. Backward into En's weights alone (through De, without
      De's weight gradients, as gan-core's Collector::backward_for), keeping the graph
      for the de phase.
    - de (steps De): Dis, frozen, on x~ and on x^ (two passes); loss gamma * the en
      phase's reconstruction error (its graph, not recomputed) + BCE(Dis(x~), 1) +
      BCE(Dis(x^), 1). Backward into De's weights alone: the graph also reaches En,
      whose weights the en phase's Adam has changed in place (PyTorch would refuse to
      backpropagate through them; gan-core hands En's branch zeros instead).
    - dis (steps Dis): Dis on x, on x~ detached and on x^ detached (three passes); loss
      BCE(Dis(x), 1) + BCE(Dis(x~), 0) + BCE(Dis(x^), 0).
    Generation: De on z ~ N(0, I)."""

    gamma, beta = 0.01, 1.0

    def __init__(self):
        super().__init__(variational=True)
        self.dis = DcganDiscriminator(self.w)
        init_normal(self.dis)
        self.nets["dis"] = self.dis
        self.lr["dis"] = 2e-4
        self.phases = [
            Phase("en", ["en"], self.en_loss, retain_graph=True, own_grads_only=True),
            Phase("de", ["de"], self.de_loss, frozen=["dis"], own_grads_only=True),
            Phase("dis", ["dis"], self.dis_loss),
        ]

    def en_loss(self, images, labels):
        mean, log_var = self.posterior(images)
        x_tilde = self.de(reparameterise(mean, log_var))
        x_hat = self.de(torch.randn(images.shape[0], self.z_dim, device=DEVICE))
        recon = reconstruction_error(x_tilde, images)
        kl = kl_to_standard_normal(mean, log_var)
        self.carry.update(x_tilde=x_tilde, x_hat=x_hat, recon=recon)
        return recon + self.beta * kl

    def de_loss(self, images, labels):
        x_tilde, x_hat = self.carry.pop("x_tilde"), self.carry.pop("x_hat")
        recon = self.carry.pop("recon")
        adv = bce(self.dis(x_tilde), 1.0) + bce(self.dis(x_hat), 1.0)
        self.carry.update(x_tilde=x_tilde.detach(), x_hat=x_hat.detach())
        return self.gamma * recon + adv

    def dis_loss(self, images, labels):
        x_tilde, x_hat = self.carry.pop("x_tilde"), self.carry.pop("x_hat")
        return (
            bce(self.dis(images), 1.0)
            + bce(self.dis(x_tilde), 0.0)
            + bce(self.dis(x_hat), 0.0)
        )

    def generate(self, n):
        return self.de(torch.randn(n, self.z_dim, device=DEVICE))


class BiganDiscriminator(nn.Module):
    """bigan.rs `JointDiscriminator`: x through conv 1->w and w->2w (BN) with leaky 0.2, z
    through FC z->joint with leaky 0.2, both joined (x's 2w*49 features first), FC
    (2w*49 + joint)->joint with leaky 0.2, FC joint->1."""

    def __init__(self, z_dim=32, w=32, joint=256):
        super().__init__()
        self.c1 = nn.Conv2d(1, w, 4, 2, 1)
        self.c2 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.zp = nn.Linear(z_dim, joint)
        self.joint = nn.Linear(2 * w * 49 + joint, joint)
        self.out = nn.Linear(joint, 1)

    def forward(self, x, z):
        hx = F.leaky_relu(self.c1(x), 0.2)
        hx = F.leaky_relu(self.bn2(self.c2(hx)), 0.2)
        hz = F.leaky_relu(self.zp(z), 0.2)
        h = F.leaky_relu(self.joint(torch.cat([hx.flatten(1), hz], 1)), 0.2)
        return self.out(h).flatten()


class Bigan(EncDec):
    """bigan.rs, default BiganConfig (z 32 ~ U(-1, 1), width 32, joint 256): En (z_dim
    outputs) and De as the AE's, Dis on (x, z) pairs. Two phases from one forward pass
    of En and De, made in the dis phase and handed on:
    - dis (steps Dis): En(x), De(z); loss BCE(Dis(x, En(x) detached), 1) +
      BCE(Dis(De(z) detached, z), 0).
    - ende (steps En and De): Dis, frozen, on (x, En(x)) and (De(z), z), the dis phase's
      tensors with their graphs; loss BCE(real pair, 0) + BCE(fake pair, 1).
    Generation: De on z ~ U(-1, 1)."""

    joint = 256

    def __init__(self):
        super().__init__(variational=False)
        self.dis = BiganDiscriminator(self.z_dim, self.w, self.joint)
        init_normal(self.dis)
        self.nets["dis"] = self.dis
        self.lr["dis"] = 2e-4
        self.phases = [
            Phase("dis", ["dis"], self.dis_loss),
            Phase("ende", ["en", "de"], self.ende_loss, frozen=["dis"]),
        ]

    def prior(self, n):
        return torch.rand(n, self.z_dim, device=DEVICE) * 2 - 1

    def dis_loss(self, images, labels):
        z = self.prior(images.shape[0])
        encoded = self.en(images)
        decoded = self.de(z)
        real = self.dis(images, encoded.detach())
        fake = self.dis(decoded.detach(), z)
        self.carry.update(en_x=encoded, de_z=decoded, z=z)
        return bce(real, 1.0) + bce(fake, 0.0)

    def ende_loss(self, images, labels):
        encoded, decoded = self.carry.pop("en_x"), self.carry.pop("de_z")
        z = self.carry.pop("z")
        real = self.dis(images, encoded)
        fake = self.dis(decoded, z)
        return bce(real, 0.0) + bce(fake, 1.0)

    def generate(self, n):
        return self.de(self.prior(n))


# --------------------------------------------------------------------------- newer models
#
# These read several streams (`streams`, see `Stream`), and their phase losses take the
# step's batches as one dict, stream name -> (images, labels).


class GradReverse(torch.autograd.Function):
    """gan_core::fast::layers::grad_reverse: the identity forward, the gradient times
    -lambda backward."""

    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


class DannFeatures(nn.Module):
    """dann.rs `Features` (--batch-norm true): 5x5 conv 32 (valid), BN, ReLU, 2x2 max pool;
    5x5 conv 48 (valid), BN, ReLU, 2x2 max pool: 28x28xc -> 12x12x32 -> 4x4x48 = 768."""

    def __init__(self, channels):
        super().__init__()
        self.c1 = nn.Conv2d(channels, 32, 5)
        self.bn1 = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 48, 5)
        self.bn2 = nn.BatchNorm2d(48)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        return F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2).flatten(1)


class Dann:
    """dann.rs, default DannConfig (target mnistm, method dann, schedule joint, d_hidden
    1024,1024, batch norm on, no entropy terms): F (DannFeatures, 3 channels: both streams
    are colour, MNIST repeated), C = MLP 768-100-100-10 with ReLU, D = MLP 768-1024-1024-1
    with ReLU; weights U(±1/sqrt(fan_in)); one Adam each, lr mu_0 = 1e-3 (the learning-
    rate annealing changes nothing of a step's cost). Streams: source (M = --batch labelled
    digits) and target (M unlabelled images). One phase "fcd" (steps F, C and D): h =
    F([x_s; x_t]) in one pass, loss CE(C(h_s), y_s) + BCE(D(R_lambda(h)), domain) (0
    source, 1 target, averaged over the 2M rows), R the gradient reversal with lambda_p
    at the Rust benchmark's progress p = 0 (its trainer knows no total step count), that
    is lambda = 0: the same graph and cost as any lambda. No generator: gen_img_per_s is
    null."""

    generate = None
    gamma, domain_weight, progress = 10.0, 1.0, 0.0

    def __init__(self):
        self.streams = [Stream("source", None, 3), Stream("target", None, 3)]
        self.f = DannFeatures(3)
        self.c = Mlp([768, 100, 100, 10], slope=0)
        self.d = Mlp([768, 1024, 1024, 1], slope=0)
        for net in (self.f, self.c, self.d):
            init_fan_in_uniform(net)
        self.nets = {"f": self.f, "c": self.c, "d": self.d}
        self.lr = {"f": 1e-3, "c": 1e-3, "d": 1e-3}
        self.phases = [Phase("fcd", ["f", "c", "d"], self.joint_loss)]

    def lam(self):
        """`Dann::lambda`: domain_weight * (2 / (1 + exp(-gamma p)) - 1)."""
        return self.domain_weight * (2 / (1 + math.exp(-self.gamma * self.progress)) - 1)

    def joint_loss(self, b):
        (xs, ys), (xt, _) = b["source"], b["target"]
        m, t = xs.shape[0], xt.shape[0]
        h = self.f(torch.cat([xs, xt], 0))
        ce = F.cross_entropy(self.c(h[:m]), ys)
        dom = torch.cat([torch.zeros(m, device=DEVICE), torch.ones(t, device=DEVICE)])
        logits = self.d(GradReverse.apply(h, self.lam())).squeeze(1)
        return ce + F.binary_cross_entropy_with_logits(logits, dom)


class Disentangle:
    """disentangle.rs, default DisentangleConfig (target mnistm, content 32, style 16, width
    32, adversary 256,256, adversary weight 100, paired, shared-style weight 1, style
    weight 0.01, margin 1): Ec = ConvEncoder(3 channels, 32 outputs), Ed =
    ConvEncoder(3 channels, 16 outputs), De = DCGAN's generator with 48 inputs and 3
    output channels (weights N(0, 0.02), BN scales N(1, 0.02)), A = MLP 32-256-256-1 with
    leaky ReLU 0.2 (weights U(±1/sqrt(fan_in))); one Adam each, lr 2e-4 (gan-cli's --lr).
    Streams: source and target, M = --batch colour images each. Phases:
    - adversary (steps A): c = Ec([x_s; x_t]) detached; loss BCE(A(c_s), 0) + BCE(A(c_t), 1).
    - codes (steps Ec, Ed, De; A frozen): c = Ec([x_s; x_t]), s = Ed([x_s; x_t]) (one pass
      each); ||De(c, s) - x||^2 + ||De(c swapped between the pairs, s) - x||^2 +
      1 * ||De(c_s, s_s shifted by one row) - x_s||^2 + 100 * BCE(A(c), 1/2) + 0.01 *
      the style constraint on (s_s, s_t): three passes of De (2M, 2M, M rows).
    No generator: gen_img_per_s is null."""

    generate = None
    content_dim, style_dim, w = 32, 16, 32
    adversary_weight, shared_style_weight, style_weight, style_margin = 100.0, 1.0, 0.01, 1.0

    def __init__(self):
        self.streams = [Stream("source", None, 3), Stream("target", None, 3)]
        self.content = ConvEncoder(self.w, self.content_dim, channels=3)
        self.style = ConvEncoder(self.w, self.style_dim, channels=3)
        self.decoder = DcganGenerator(self.content_dim + self.style_dim, self.w, channels=3)
        self.adversary = Mlp([self.content_dim, 256, 256, 1])
        for net in (self.content, self.style, self.decoder):
            init_normal(net)
        init_fan_in_uniform(self.adversary)
        self.nets = {
            "content": self.content,
            "style": self.style,
            "decoder": self.decoder,
            "adversary": self.adversary,
        }
        self.lr = {k: 2e-4 for k in self.nets}
        self.phases = [
            Phase("adversary", ["adversary"], self.adversary_loss),
            Phase("codes", ["content", "style", "decoder"], self.codes_loss,
                  frozen=["adversary"]),
        ]

    def render(self, c, s):
        return self.decoder(torch.cat([c, s], 1))

    @staticmethod
    def style_constraint(s, t, margin):
        """`Disentangle::style_constraint`: each code's squared distance to its domain's
        mean (averaged), plus the squared shortfall of the means' distance from `margin`."""
        ms, mt = s.mean(0, keepdim=True), t.mean(0, keepdim=True)
        spread = (s - ms).square().sum(1).mean() + (t - mt).square().sum(1).mean()
        apart = ((ms - mt).square().sum() + 1e-8).sqrt()
        return F.relu(margin - apart).square() + spread

    def adversary_loss(self, b):
        xs, xt = b["source"][0], b["target"][0]
        m = xs.shape[0]
        c = self.content(torch.cat([xs, xt], 0)).detach()
        logits = self.adversary(c).squeeze(1)
        return bce(logits[:m], 0.0) + bce(logits[m:], 1.0)

    def codes_loss(self, b):
        xs, xt = b["source"][0], b["target"][0]
        m = xs.shape[0]
        both = torch.cat([xs, xt], 0)
        c, s = self.content(both), self.style(both)
        loss = reconstruction_error(self.render(c, s), both)
        # paired: each image from its pair's content and its own domain code
        swapped = torch.cat([c[m:], c[:m]], 0)
        loss = loss + reconstruction_error(self.render(swapped, s), both)
        # shared style: source row i with source row i + 1's domain code
        nxt = (torch.arange(m, device=DEVICE) + 1) % m
        shared = reconstruction_error(self.render(c[:m], s[:m].index_select(0, nxt)), xs)
        loss = loss + self.shared_style_weight * shared
        confusion = bce(self.adversary(c).squeeze(1), 0.5)
        loss = loss + self.adversary_weight * confusion
        sc = self.style_constraint(s[:m], s[m:], self.style_margin)
        return loss + self.style_weight * sc


class DpredictCritic(nn.Module):
    """dpredict.rs `Critic` (width 16): 3x3 conv 16 (same), 4x4 conv 32 stride 2, 4x4 conv
    64 stride 2 (padding 1), leaky ReLU 0.2 after each, FC 64*49 -> 1; no batch norm."""

    def __init__(self, w=16):
        super().__init__()
        self.c1 = nn.Conv2d(1, w, 3, 1, 1)
        self.c2 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.c3 = nn.Conv2d(2 * w, 4 * w, 4, 2, 1)
        self.out = nn.Linear(4 * w * 49, 1)

    def forward(self, x):
        h = F.leaky_relu(self.c1(x), 0.2)
        h = F.leaky_relu(self.c2(h), 0.2)
        h = F.leaky_relu(self.c3(h), 0.2)
        return self.out(h.flatten(1)).flatten()


class Dpredict:
    """dpredict.rs, default DpredictConfig (width 16, 20 Langevin steps, step size 1, noise
    0.01, buffer 10000, reinit 0.05, alpha 0.1, 200 sample steps): D alone (weights
    U(±1/sqrt(fan_in)), Adam lr 2e-4) and a replay buffer of 10000 images, uniform noise
    at the start. One phase "d" (steps D): the negatives are M distinct buffer rows, each
    started afresh from uniform noise with probability 0.05, moved by 20 Langevin steps
    x <- clamp(x + 1.0 grad_x sum D(x) + 0.01 eps, -1, 1) with D frozen (a forward and a
    backward to the images each), and written back to the buffer; then D on the real
    batch and on the negatives (two passes), loss mean D(x~) - mean D(x) + 0.1 (mean D(x)^2
    + mean D(x~)^2). Generation (`Generator for Dpredict`): the search of 200 Langevin
    steps from uniform noise, D in eval mode (it has no batch norm or dropout)."""

    w, langevin_steps, step_size, noise = 16, 20, 1.0, 0.01
    buffer_size, reinit, alpha, sample_steps = 10000, 0.05, 0.1, 200
    # The search freezes D inside the phase (not a phase's `frozen`).
    frozen_note = "d frozen in its Langevin search"

    def __init__(self):
        self.d = DpredictCritic(self.w)
        init_fan_in_uniform(self.d)
        self.nets = {"d": self.d}
        self.lr = {"d": 2e-4}
        self.g = self.d
        self.buffer = self.uniform(self.buffer_size)
        self.phases = [Phase("d", ["d"], self.d_loss)]

    @staticmethod
    def uniform(n):
        return torch.rand(n, 1, 28, 28, device=DEVICE) * 2 - 1

    def search(self, start, steps):
        """`Dpredict::search`: `steps` Langevin steps up D's score, D's weights frozen."""
        params = list(self.d.parameters())
        for p in params:
            p.requires_grad_(False)
        x = start.detach()
        with torch.enable_grad():
            for _ in range(steps):
                x.requires_grad_(True)
                (g,) = torch.autograd.grad(self.d(x).sum(), x)
                x = (x + self.step_size * g + self.noise * torch.randn_like(x)).clamp(-1, 1)
                x = x.detach()
        for p in params:
            p.requires_grad_(True)
        return x

    def negatives(self, m):
        """`Dpredict::negatives`: M distinct buffer rows (a `reinit` share of them noise
        again), moved by the search and written back."""
        idx = torch.randperm(self.buffer_size, device=DEVICE)[:m]
        fresh = torch.rand(m, 1, 1, 1, device=DEVICE) < self.reinit
        start = torch.where(fresh, self.uniform(m), self.buffer[idx])
        neg = self.search(start, self.langevin_steps)
        self.buffer[idx] = neg
        return neg

    def d_loss(self, images, labels):
        neg = self.negatives(images.shape[0])
        sr, sn = self.d(images), self.d(neg)
        return sn.mean() - sr.mean() + self.alpha * (sr.square().mean() + sn.square().mean())

    def generate(self, n):
        return self.search(self.uniform(n), self.sample_steps)


class TripleganC(nn.Module):
    """triplegan.rs `Cnn`: on x mapped to [0, 1], 5x5 conv 32 (valid) + BN + ReLU + 2x2 max
    pool + dropout 0.5; 3x3 conv 64 (same) + BN + ReLU; 3x3 conv 64 (valid) + BN + ReLU +
    pool + dropout 0.5; 3x3 convs 128, 128 (same) + BN + ReLU; global mean pooling; FC
    128 -> 10 logits. Dropout and batch statistics in train mode."""

    def __init__(self):
        super().__init__()
        spec = [(1, 32, 5, 0), (32, 64, 3, 1), (64, 64, 3, 0), (64, 128, 3, 1), (128, 128, 3, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, k, 1, p) for a, b, k, p in spec)
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) for _, b, _, _ in spec)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        h = 0.5 * x + 0.5
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            h = F.relu(bn(conv(h)))
            if i in (0, 2):
                h = F.dropout(F.max_pool2d(h, 2), 0.5, self.training)
        return self.out(h.mean((2, 3)))


class TripleganG(nn.Module):
    """triplegan.rs `Gen`: [z, y] -> 500 (BN, softplus) -> 500 (BN, softplus) -> 784, the
    one-hot label concatenated to every layer's input; the image tanh(a / 2) = 2
    sigmoid(a) - 1."""

    def __init__(self, z_dim=100):
        super().__init__()
        self.fc0 = nn.Linear(z_dim + 10, 500)
        self.bn0 = nn.BatchNorm1d(500)
        self.fc1 = nn.Linear(510, 500)
        self.bn1 = nn.BatchNorm1d(500)
        self.out = nn.Linear(510, 784)

    def forward(self, z, y):
        h = F.softplus(self.bn0(self.fc0(torch.cat([z, y], 1))))
        h = F.softplus(self.bn1(self.fc1(torch.cat([h, y], 1))))
        return torch.tanh(0.5 * self.out(torch.cat([h, y], 1))).view(-1, 1, 28, 28)


class TripleganD(nn.Module):
    """triplegan.rs `Disc`: 784 -> 1000 -> 500 -> 250 -> 250 -> 250 -> 1, leaky ReLU 0.2,
    the one-hot label concatenated to every layer's input, Gaussian noise (std 0.3) on
    the input mapped to [0, 1] and (std 0.5) after every hidden activation, always (the
    Rust D adds it in every pass). Returns logits."""

    def __init__(self, noise_input=0.3, noise_hidden=0.5):
        super().__init__()
        widths = [784, 1000, 500, 250, 250, 250, 1]
        self.layers = nn.ModuleList(nn.Linear(a + 10, b) for a, b in zip(widths, widths[1:]))
        self.noise_input, self.noise_hidden = noise_input, noise_hidden

    def forward(self, x, y):
        h = 0.5 * x.flatten(1) + 0.5
        h = h + self.noise_input * torch.randn_like(h)
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([h, y], 1))
            if i + 1 < len(self.layers):
                h = F.leaky_relu(h, 0.2)
                h = h + self.noise_hidden * torch.randn_like(h)
        return h.squeeze(1)


class Triplegan:
    """triplegan.rs, default TripleganConfig with pretrain_steps 0 (the game step, as the
    Rust benchmark is run with --config '{"pretrain_steps":0}'): labels 100, alpha 0.5, lr
    1e-3 for C, G and D, batch_u 100, batch_g 200, batch_pseudo 400, entropy 0.3, balance
    0.001 (in the game), decay 1e-4 on C's output weight, R_P off (it starts at epoch
    300), EMA rate 0.01, z 100 ~ U(0, 1). Weights U(±1/sqrt(fan_in)), BN scales 1.
    Streams: unlabelled (100), labelled (100, labels), pseudo (400). Phases, in order:
    - d (steps D; C and G frozen): C's argmax labels (train mode, no gradient) for the
      400 pseudo images and the 100 unlabelled ones; D on the real pairs (the first
      labelled pair, max(100 / 100, 1) = 1, and the 400 pseudo-labelled ones: 401), on
      the unlabelled images with C's labels (100) and on G's images (G in train mode, no
      gradient) of 200 evenly spread labels; loss BCE(real, 1) + 0.5 BCE(by C, 0) + 0.5
      BCE(by G, 0). Three passes of D.
    - g (steps G; D frozen): G on 200 evenly spread labels, D on its pairs; loss 0.5
      BCE(D, 1).
    - c (steps C; D frozen): the moving average a += 0.01 (c - a) over C's weights and
      running statistics; C on the labelled batch (CE + 1e-4 ||W_out||^2) and on the
      unlabelled one (log-softmax: entropy, balance); D (no gradient) on the unlabelled
      images with C's argmax labels; loss 0.5 mean(p_max (softplus(l) - l)) + CE + decay
      + 0.3 entropy + 0.001 balance.
    Generation (`Generator for Triplegan`): G in eval mode on z ~ U(0, 1) and random
    labels, at the first stream's batch (100)."""

    classes, z_dim, alpha, labels_n = 10, 100, 0.5, 100
    batch_u, batch_g, batch_pseudo = 100, 200, 400
    entropy, balance, decay, ema_rate = 0.3, 0.001, 1e-4, 0.01

    def __init__(self):
        self.streams = [
            Stream("unlabelled", self.batch_u),
            Stream("labelled", min(self.labels_n, 100)),
            Stream("pseudo", self.batch_pseudo),
        ]
        self.c, self.gen, self.d = TripleganC(), TripleganG(self.z_dim), TripleganD()
        for net in (self.c, self.gen, self.d):
            init_fan_in_uniform(net)
        # C's moving average (a buffer, not trained), starting at C's weights.
        self.ema = TripleganC().to(DEVICE)
        self.ema.load_state_dict(self.c.state_dict())
        self.nets = {"c": self.c, "g": self.gen, "d": self.d}
        self.lr = {"c": 1e-3, "g": 1e-3, "d": 1e-3}
        self.g = self.gen
        self.phases = [
            Phase("d", ["d"], self.d_loss, frozen=["c", "g"]),
            Phase("g", ["g"], self.g_loss, frozen=["d"]),
            Phase("c", ["c"], self.c_loss, frozen=["d"]),
        ]
        self.even = torch.arange(self.batch_g, device=DEVICE) * self.classes // self.batch_g

    def one_hot(self, y):
        return F.one_hot(y, self.classes).float()

    def fake(self, y):
        z = torch.rand(y.shape[0], self.z_dim, device=DEVICE)
        y1 = self.one_hot(y)
        return self.gen(z, y1), y1

    def c_labels(self, x):
        """C's argmax label, one-hot, C in train mode (dropout, batch statistics) and no
        gradient anywhere (`Triplegan::c_labels`)."""
        with torch.no_grad():
            return self.one_hot(self.c(x).argmax(1))

    def d_loss(self, b):
        (xl, yl), (xp, _), (xu, _) = b["labelled"], b["pseudo"], b["unlabelled"]
        n_l = max(self.labels_n // 100, 1)
        real = self.d(
            torch.cat([xl[:n_l], xp], 0),
            torch.cat([self.one_hot(yl[:n_l]), self.c_labels(xp)], 0),
        )
        by_c = self.d(xu, self.c_labels(xu))
        with torch.no_grad():
            xg, yg = self.fake(self.even)
        by_g = self.d(xg, yg)
        return bce(real, 1.0) + self.alpha * bce(by_c, 0.0) + (1 - self.alpha) * bce(by_g, 0.0)

    def g_loss(self, b):
        xg, yg = self.fake(self.even)
        return (1 - self.alpha) * bce(self.d(xg, yg), 1.0)

    def c_loss(self, b):
        with torch.no_grad():
            for a, c in zip(self.ema.parameters(), self.c.parameters()):
                a.lerp_(c, self.ema_rate)
            for a, c in zip(self.ema.buffers(), self.c.buffers()):
                if a.is_floating_point():
                    a.lerp_(c, self.ema_rate)
        xl, yl = b["labelled"]
        sup = F.cross_entropy(self.c(xl), yl) + self.decay * self.c.out.weight.square().sum()
        xu = b["unlabelled"][0]
        log_p = F.log_softmax(self.c(xu), 1)
        p = log_p.exp()
        ent = -(p * log_p).sum(1).mean()
        bal = -p.mean(0).clamp(1e-6, 1).log().mean()
        p_max, y_hat = p.max(1)
        with torch.no_grad():
            l = self.d(xu, self.one_hot(y_hat))
            per_pair = F.softplus(l) - l
        adv = self.alpha * (p_max * per_pair).mean()
        return adv + sup + self.entropy * ent + self.balance * bal

    def generate(self, n):
        return self.fake(torch.randint(0, self.classes, (n,), device=DEVICE))[0]


BUILD = {
    "gan": Gan,
    "dcgan": Dcgan,
    "cgan": Cgan,
    "infogan": Infogan,
    "ae": Ae,
    "vae": Vae,
    "vaegan": Vaegan,
    "bigan": Bigan,
    "dann": Dann,
    "disentangle": Disentangle,
    "dpredict": Dpredict,
    "triplegan": Triplegan,
}


# --------------------------------------------------------------------------- measure


def measure(name, batch, warmup, steps, freeze_d):
    model = BUILD[name]()
    for net in model.nets.values():
        net.to(DEVICE)
    opts = {
        k: torch.optim.Adam(net.parameters(), lr=model.lr[k], betas=(0.5, 0.999))
        for k, net in model.nets.items()
    }
    for net in model.nets.values():
        net.train()
    params = {k: list(net.parameters()) for k, net in model.nets.items()}
    phases = getattr(model, "phases", None)
    if phases is None:
        # The GANs: a D step, then a G step, D frozen in it only with --freeze-d.
        phases = [
            Phase("d", model.d_nets, model.d_loss),
            Phase("g", model.g_nets, model.g_loss, frozen=model.d_nets if freeze_d else ()),
        ]
        frozen_note = "D frozen in G step" if freeze_d else ""
    else:
        # The models with their own phases freeze what their Rust phases freeze, whatever
        # --freeze-d says.
        frozen_note = "; ".join(
            [f"{'+'.join(ph.frozen)} frozen in {ph.name} phase" for ph in phases if ph.frozen]
            + ([model.frozen_note] if getattr(model, "frozen_note", "") else [])
        )
    own = {ph.name: [p for k in ph.nets for p in params[k]] for ph in phases}
    # The data, as the Rust benchmark makes them: random grey images (repeated into 3
    # channels for a colour stream) and labels 0-9 in turn, 16 batches of the largest
    # stream; each stream at its own batch size (else --batch), cycled through them.
    streams = getattr(model, "streams", None)
    sizes = [s.batch or batch for s in streams] if streams else [batch]
    b0 = sizes[0]  # images per step: the first stream's (the one that makes the epoch)
    n = 16 * max(sizes)
    images = torch.rand(n, 1, 28, 28, device=DEVICE) * 2 - 1
    labels = torch.arange(n, device=DEVICE) % 10
    coloured = images.repeat(1, 3, 1, 1) if streams and any(s.channels == 3 for s in streams) else None

    def batches(i):
        """What a phase's loss takes: (images, labels) of one --batch stream, or for a model
        with `streams`, ({name: (images, labels)},)."""
        out = {}
        for s, bs in zip(streams or [Stream("real")], sizes):
            start = (i * bs) % (n - bs + 1)
            x = coloured if s.channels == 3 else images
            out[s.name] = (x[start : start + bs], labels[start : start + bs])
        return (out,) if streams else out["real"]

    ema = getattr(model, "engine_ema", {})
    buffers = {
        k: [b for b in model.nets[k].buffers() if b.is_floating_point()] for k in ema
    }
    averages = {
        k: [p.detach().clone() for p in params[k]] + [b.clone() for b in buffers[k]]
        for k in ema
    }

    def step(args):
        """gan_core::Trainer::train_step with k = 1: the model's phases in order (the GANs:
        a D step, then a G step)."""
        losses = []
        for ph in phases:
            for k in ph.nets:
                opts[k].zero_grad(set_to_none=True)
            for k in ph.frozen:
                for p in params[k]:
                    p.requires_grad_(False)
            loss = ph.loss(*args)
            if ph.own_grads_only:
                torch.autograd.backward(
                    loss, inputs=own[ph.name], retain_graph=ph.retain_graph
                )
            else:
                loss.backward(retain_graph=ph.retain_graph)
            for k in ph.frozen:
                for p in params[k]:
                    p.requires_grad_(True)
            for k in ph.nets:
                opts[k].step()
            losses.append(loss)
        # The running averages of the engine's --ema-decay (the GAN's and DCGAN's G):
        # a <- a + (w - a)(1 - d), with the engine's warm-up of d; BN statistics too.
        step.count = t = getattr(step, "count", 0) + 1
        for k, avg in averages.items():
            d = min(ema[k], (1 + t) / (10 + t))
            torch._foreach_lerp_(avg, [p.detach() for p in params[k]] + buffers[k], 1 - d)
        # The engine reads every phase's loss back for its log.
        return [loss.item() for loss in losses]

    for i in range(warmup):
        step(batches(i))
    sync()
    times = []
    for i in range(steps):
        args = batches(i)
        t = time.perf_counter()
        step(args)
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]

    # No generator (ae: no prior to sample from; dann, disentangle): null, as the Rust
    # benchmark (NaN there).
    gen_img_per_s = None
    if model.generate is not None:
        model.g.eval()
        with torch.no_grad():
            for _ in range(2):
                model.generate(b0)
            sync()
            # At least max(steps, 10) batches and one second (the Rust benchmark's rule).
            reps = 0
            t = time.perf_counter()
            while reps < max(steps, 10) or time.perf_counter() - t < 1.0:
                model.generate(b0).sum().item()
                reps += 1
            sync()
            gen_img_per_s = reps * b0 / (time.perf_counter() - t)
    r = {
        "model": name,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "device": DEVICE.type,
        "steps": steps,
        "warmup": warmup,
        # Whether a phase froze a network (the GANs: --freeze-d; the models with their own
        # phases: wherever gan-rs freezes one: vaegan, bigan, disentangle, dpredict,
        # triplegan).
        "freeze_d": bool(frozen_note),
        "train_img_per_s": b0 / median,
        "train_ms_per_step": 1e3 * median,
        "train_best_ms_per_step": 1e3 * times[0],
        "gen_img_per_s": gen_img_per_s,
        "torch": torch.__version__,
    }
    if DEVICE.type == "cuda":
        r["gpu"] = torch.cuda.get_device_name(DEVICE)
    return r, frozen_note


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Any name of gan-rs's registry: a model without a twin here yet is said so and skipped,
    # so `cargo xtask bench --vs-pytorch` still prints the Rust side of it.
    p.add_argument("--model", default="all")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument(
        "--freeze-d",
        action="store_true",
        help="switch off requires_grad of D's weights during the G step, as gan-rs does "
        "with gan_core::layers::frozen (plain PyTorch code computes those gradients and "
        "never uses them); the GANs only: the models with their own phases (ae, vae, "
        "vaegan, bigan, dann, disentangle, dpredict, triplegan) always freeze where gan-rs "
        "does",
    )
    p.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the networks and the step run (cuda: the first GPU)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    a = p.parse_args()
    if a.batch < 1 or a.steps < 1 or a.warmup < 0 or a.threads < 1:
        p.error("--batch, --steps and --threads must be positive, --warmup not negative")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: this PyTorch sees no CUDA GPU")
    global DEVICE
    DEVICE = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name in MODELS if a.model == "all" else [a.model]:
        if name not in BUILD:
            print(f"bench.py: no PyTorch twin of {name!r} yet (twins: {', '.join(MODELS)})",
                  file=sys.stderr)
            continue
        r, frozen_note = measure(name, a.batch, a.warmup, a.steps, a.freeze_d)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            gen = r["gen_img_per_s"]
            print(
                f"{name:>8}  batch {a.batch:>3}  train {r['train_img_per_s']:8.1f} img/s "
                f"(median {r['train_ms_per_step']:6.1f} ms/step, best "
                f"{r['train_best_ms_per_step']:6.1f})  generate "
                f"{'-' if gen is None else f'{gen:.1f}':>9} img/s  "
                f"[{r['threads']} threads{', ' + r['gpu'] if 'gpu' in r else ''}, torch {r['torch']}"
                f"{', ' + frozen_note if frozen_note else ''}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
