"""PyTorch twins of gan-rs's models: training and generation throughput on the CPU or a GPU.

Each model is the same network with the same training step as its Rust module in
crates/gan-models (layer sizes, activations, batch-norm settings, weight initialisation,
priors, losses, one Adam per network with the CLI's learning rates, the model's phases
in its order: for the GANs one D step then one G step per batch with fresh noise for
each, as gan-core's engine does with its default k = 1; for the encoder family their own
phases, see `Phase`). Throughput does not depend on what the images show, so the data
are random images in [-1, 1] (and labels 0-9 in turn for cgan), as in the Rust benchmark
(crates/gan-models/benches/throughput.rs), which `cargo xtask bench --vs-pytorch`
runs beside this script.

    python bench/bench.py --model infogan [--batch 64] [--threads 2] [--warmup 5]
                          [--steps 30] [--freeze-d] [--device cpu|cuda] [--json]

Training: the median wall time of --steps timed steps after --warmup untimed ones
(the upper median, times[steps // 2], as the Rust benchmark takes it), reported as
images/s (batch / median) and ms/step; the best step is reported too. Generation:
images/s of G (the decoder De for vae, vaegan, bigan) alone in eval mode under
torch.no_grad(), at the same batch size, over max(steps, 10) batches after 2 untimed
ones; null for ae, which has no prior to sample from (as the Rust benchmark, whose ae
has no generator).

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

MODELS = ["gan", "dcgan", "cgan", "infogan", "ae", "vae", "vaegan", "bigan"]

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
    """gan_core::init::WeightInit::FanInUniform: weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    biases 0 (gan.rs, cgan.rs)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            b = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -b, b)
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
    own_grads_only: backward with inputs = the weights of `nets` alone. Needed where the
        graph reaches a network an earlier phase of the step has already stepped in place:
        PyTorch refuses to backpropagate through its saved weights (candle computes those
        gradients and throws them away)."""

    name: str
    nets: Sequence[str]
    loss: Callable
    frozen: Sequence[str] = ()
    retain_graph: bool = False
    own_grads_only: bool = False


class Mlp(nn.Sequential):
    """gan.rs `Mlp`: linear layers with leaky ReLU 0.2 between them (none after the last)."""

    def __init__(self, widths):
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(a, b))
            if i + 2 < len(widths):
                layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


# --------------------------------------------------------------------------- models
#
# Each model has `nets` (name -> module, the Rust model's `networks()`), `lr` per network,
# `g` (the network put in eval mode for generation) and `generate(n)` (None: no
# generation). The four GANs have `d_nets` and `g_nets` (what each phase's Adam steps)
# and the two phase losses `d_loss(images, labels)` and `g_loss(images, labels)` of their
# Rust `d_step`/`g_step`, from which `measure` makes the D phase and the G phase; the
# encoder family lists its own `phases` (see `Phase`).


class Gan:
    """gan.rs, default GanConfig: z 100 ~ N(0, I); G 100-256-512-1024-784 + tanh;
    D 784-1024-512-256-1; leaky ReLU 0.2; non-saturating G loss."""

    z_dim = 100

    def __init__(self):
        self.g = Mlp([self.z_dim, 256, 512, 1024, 784])
        self.d = Mlp([784, 1024, 512, 256, 1])
        init_fan_in_uniform(self.g)
        init_fan_in_uniform(self.d)
        self.nets = {"g": self.g, "d": self.d}
        self.d_nets, self.g_nets = ["d"], ["g"]
        self.lr = {"g": 2e-4, "d": 2e-4}

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
    110-256-512-1024-784 + tanh) and beside the pixels (D 794-1024-512-256-1)."""

    z_dim, classes = 100, 10

    def __init__(self):
        self.g = Mlp([self.z_dim + self.classes, 256, 512, 1024, 784])
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


class DcganGenerator(nn.Module):
    """dcgan.rs `Generator`: z -> 7x7x2w (7x7 transposed conv) -> 14x14xw -> 28x28x1."""

    def __init__(self, z_dim=100, w=32):
        super().__init__()
        self.proj = nn.ConvTranspose2d(z_dim, 2 * w, 7, 1, 0)
        self.bn0 = nn.BatchNorm2d(2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(w)
        self.up2 = nn.ConvTranspose2d(w, 1, 4, 2, 1)

    def forward(self, z):
        x = F.relu(self.bn0(self.proj(z[:, :, None, None])))
        x = F.relu(self.bn1(self.up1(x)))
        return torch.tanh(self.up2(x))


class DcganDiscriminator(nn.Module):
    """dcgan.rs `Discriminator`: 28x28x1 -> 14x14xw -> 7x7x2w (BN) -> one logit (7x7 conv),
    leaky ReLU 0.2."""

    def __init__(self, w=32):
        super().__init__()
        self.c1 = nn.Conv2d(1, w, 4, 2, 1)
        self.c2 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.out = nn.Conv2d(2 * w, 1, 7, 1, 0)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = F.leaky_relu(self.bn2(self.c2(x)), 0.2)
        return self.out(x).flatten()


class Dcgan:
    """dcgan.rs, default DcganConfig: z 100 ~ N(0, I), g_width = d_width = 32."""

    z_dim = 100

    def __init__(self):
        self.g = DcganGenerator(self.z_dim, 32)
        self.d = DcganDiscriminator(32)
        init_normal(self.g)
        init_normal(self.d)
        self.nets = {"g": self.g, "d": self.d}
        self.d_nets, self.g_nets = ["d"], ["g"]
        self.lr = {"g": 2e-4, "d": 2e-4}

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
    -> flatten -> FC to `out` numbers."""

    def __init__(self, w=32, out=32):
        super().__init__()
        self.c1 = nn.Conv2d(1, w, 4, 2, 1)
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
      loss ||x~ - x||^2 + beta KL. Its backward also fills De's gradients (thrown away,
      as candle's does), and keeps the graph for the de phase.
    - de (steps De): Dis, frozen, on x~ and on x^ (two passes); loss gamma * the en
      phase's reconstruction error (its graph, not recomputed) + BCE(Dis(x~), 1) +
      BCE(Dis(x^), 1). Backward into De's weights alone: the graph also reaches En,
      whose weights the en phase's Adam has changed in place (candle backpropagates into
      them anyway and throws the gradients away; PyTorch would refuse).
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
            Phase("en", ["en"], self.en_loss, retain_graph=True),
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


BUILD = {
    "gan": Gan,
    "dcgan": Dcgan,
    "cgan": Cgan,
    "infogan": Infogan,
    "ae": Ae,
    "vae": Vae,
    "vaegan": Vaegan,
    "bigan": Bigan,
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
        # The encoder family freezes what its Rust phases freeze, whatever --freeze-d says.
        frozen_note = "; ".join(
            f"{'+'.join(ph.frozen)} frozen in {ph.name} phase" for ph in phases if ph.frozen
        )
    own = {ph.name: [p for k in ph.nets for p in params[k]] for ph in phases}
    n = 16 * batch
    images = torch.rand(n, 1, 28, 28, device=DEVICE) * 2 - 1
    labels = torch.arange(n, device=DEVICE) % 10

    def step(i):
        """gan_core::Trainer::train_step with k = 1: the model's phases in order (the GANs:
        a D step, then a G step)."""
        start = (i * batch) % n
        x, y = images[start : start + batch], labels[start : start + batch]
        losses = []
        for ph in phases:
            for k in ph.nets:
                opts[k].zero_grad(set_to_none=True)
            for k in ph.frozen:
                for p in params[k]:
                    p.requires_grad_(False)
            loss = ph.loss(x, y)
            if ph.own_grads_only:
                torch.autograd.backward(loss, inputs=own[ph.name])
            else:
                loss.backward(retain_graph=ph.retain_graph)
            for k in ph.frozen:
                for p in params[k]:
                    p.requires_grad_(True)
            for k in ph.nets:
                opts[k].step()
            losses.append(loss)
        # The engine reads every phase's loss back for its log.
        return [loss.item() for loss in losses]

    for i in range(warmup):
        step(i)
    sync()
    times = []
    for i in range(steps):
        t = time.perf_counter()
        step(i)
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]

    gen_img_per_s = None  # no prior to sample from (ae): null, as the Rust benchmark
    if model.generate is not None:
        model.g.eval()
        with torch.no_grad():
            for _ in range(2):
                model.generate(batch)
            sync()
            reps = max(steps, 10)
            t = time.perf_counter()
            for _ in range(reps):
                model.generate(batch).sum().item()
            sync()
            gen_img_per_s = reps * batch / (time.perf_counter() - t)
    r = {
        "model": name,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "device": DEVICE.type,
        "steps": steps,
        "warmup": warmup,
        # Whether a phase froze a network (the GANs: --freeze-d; the encoder family:
        # wherever gan-rs freezes one, vaegan and bigan).
        "freeze_d": bool(frozen_note),
        "train_img_per_s": batch / median,
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
        "never uses them); the GANs only: the encoder family (ae, vae, vaegan, bigan) "
        "always freezes where gan-rs does",
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
