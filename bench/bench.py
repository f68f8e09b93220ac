"""PyTorch twins of gan-rs's models, for `cargo xtask bench --vs-pytorch`.

Each model is the same network with the same training step as its Rust module in
crates/gan-models (layer sizes, activations, batch norm settings, priors, losses, Adam
settings, one D step then one G step per batch, fresh noise for each). Throughput does
not depend on what the images show, so the data are random images in [-1, 1].

    python bench/bench.py --model infogan [--batch 64] [--threads 2] [--steps 30] [--json]

Training throughput is the median over the timed steps (after --warmup untimed ones),
as in the Rust benchmark; generation is G in eval mode under no_grad.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = ["gan", "dcgan", "cgan", "infogan"]


def mlp(widths):
    """Linear layers with leaky ReLU 0.2 between them (gan.rs `Mlp`)."""
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i + 2 < len(widths):
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class Gan:
    """gan.rs: z ~ N(0, I) of 100, G 100-256-512-1024-784 + tanh, D 784-1024-512-256-1."""

    def __init__(self):
        self.z_dim = 100
        self.g = mlp([100, 256, 512, 1024, 784])
        self.d = mlp([784, 1024, 512, 256, 1])
        self.lr = {"g": 2e-4, "d": 2e-4}

    def fake(self, n, labels=None):
        return torch.tanh(self.g(torch.randn(n, self.z_dim)))

    def critic(self, flat, labels=None):
        return self.d(flat).squeeze(1)

    def d_step(self, images, labels):
        real = self.critic(images.flatten(1))
        fake = self.critic(self.fake(images.shape[0]).detach())
        return bce(real, 1.0) + bce(fake, 0.0)

    def g_step(self, images, labels):
        return bce(self.critic(self.fake(images.shape[0])), 1.0)

    def generate(self, n):
        return self.fake(n)


class Cgan(Gan):
    """cgan.rs: the MLP GAN with the one-hot label beside z and beside the pixels."""

    def __init__(self):
        self.z_dim = 100
        self.g = mlp([110, 256, 512, 1024, 784])
        self.d = mlp([794, 1024, 512, 256, 1])
        self.lr = {"g": 2e-4, "d": 2e-4}

    def fake(self, n, labels=None):
        y = F.one_hot(labels if labels is not None else torch.randint(0, 10, (n,)), 10).float()
        return torch.tanh(self.g(torch.cat([torch.randn(n, self.z_dim), y], 1))), y

    def d_step(self, images, labels):
        y = F.one_hot(labels, 10).float()
        real = self.d(torch.cat([images.flatten(1), y], 1)).squeeze(1)
        x, yf = self.fake(images.shape[0])
        fake = self.d(torch.cat([x.detach(), yf], 1)).squeeze(1)
        return bce(real, 1.0) + bce(fake, 0.0)

    def g_step(self, images, labels):
        x, y = self.fake(images.shape[0])
        return bce(self.d(torch.cat([x, y], 1)).squeeze(1), 1.0)

    def generate(self, n):
        return self.fake(n)[0]


class DcganG(nn.Module):
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


class DcganD(nn.Module):
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


class Dcgan(Gan):
    """dcgan.rs: z of 100 -> 7x7x64 -> 14x14x32 -> 28x28x1; D mirrors it."""

    def __init__(self):
        self.z_dim = 100
        self.g = DcganG()
        self.d = DcganD()
        self.lr = {"g": 2e-4, "d": 2e-4}

    def fake(self, n, labels=None):
        return self.g(torch.randn(n, self.z_dim))

    def critic(self, x, labels=None):
        return self.d(x)

    def d_step(self, images, labels):
        real = self.d(images)
        fake = self.d(self.fake(images.shape[0]).detach())
        return bce(real, 1.0) + bce(fake, 0.0)


class InfoganG(nn.Module):
    """infogan.rs `Generator`: FC 1024, FC 7x7x128, up-convolutions to 28x28 (paper C.1)."""

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
    """infogan.rs `Trunk`: conv 64, conv 128 + BN, FC 1024 + BN, leaky ReLU 0.1."""

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
    """infogan.rs: z 62 ~ U(-1, 1), c1 one-hot of 10, c2, c3 ~ U(-1, 1); D and Q share the
    trunk; G and Q minimise the non-saturating loss + CE(c1) + 0.1 Gaussian NLL(c2, c3)."""

    def __init__(self):
        self.g = InfoganG()
        self.trunk = InfoganTrunk()
        self.d_head = nn.Linear(1024, 1)
        self.q = nn.Sequential(
            nn.Linear(1024, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.1), nn.Linear(128, 14)
        )
        # The Rust model's networks: g, d (trunk and head), q (Q's own layers).
        self.d = nn.ModuleList([self.trunk, self.d_head])
        self.lr = {"g": 1e-3, "q": 1e-3, "d": 2e-4}

    def sample(self, n):
        z = torch.rand(n, 62) * 2 - 1
        cat = torch.randint(0, 10, (n,))
        cont = torch.rand(n, 2) * 2 - 1
        return torch.cat([z, F.one_hot(cat, 10).float(), cont], 1), cat, cont

    def d_step(self, images, labels):
        real = self.d_head(self.trunk(images)).squeeze(1)
        zc, _, _ = self.sample(images.shape[0])
        fake = self.d_head(self.trunk(self.g(zc).detach())).squeeze(1)
        return bce(real, 1.0) + bce(fake, 0.0)

    def g_step(self, images, labels):
        zc, cat, cont = self.sample(images.shape[0])
        h = self.trunk(self.g(zc))
        logit = self.d_head(h).squeeze(1)
        out = self.q(h)
        l_cat = F.cross_entropy(out[:, :10], cat)
        mean, log_var = out[:, 10:12], out[:, 12:14]
        nll = 0.5 * (cont - mean) ** 2 * torch.exp(-log_var) + 0.5 * math.log(2 * math.pi)
        l_cont = (nll + 0.5 * log_var).sum(1).mean()
        return bce(logit, 1.0) + (l_cat + 0.1 * l_cont)

    def generate(self, n):
        return self.g(self.sample(n)[0])


def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def networks(model):
    if isinstance(model, Infogan):
        return {"g": model.g, "d": model.d, "q": model.q}
    return {"g": model.g, "d": model.d}


def measure(name, batch, warmup, steps, freeze_d):
    model = {"gan": Gan, "dcgan": Dcgan, "cgan": Cgan, "infogan": Infogan}[name]()
    nets = networks(model)
    opts = {
        k: torch.optim.Adam(n.parameters(), lr=model.lr[k], betas=(0.5, 0.999))
        for k, n in nets.items()
    }
    for n in nets.values():
        n.train()
    images = torch.rand(16 * batch, 1, 28, 28) * 2 - 1
    labels = torch.arange(16 * batch) % 10

    def step(i):
        start = (i * batch) % images.shape[0]
        x, y = images[start : start + batch], labels[start : start + batch]
        opts["d"].zero_grad(set_to_none=True)
        model.d_step(x, y).backward()
        opts["d"].step()
        g_nets = [k for k in nets if k != "d"]
        for k in g_nets:
            opts[k].zero_grad(set_to_none=True)
        if freeze_d:
            for p in nets["d"].parameters():
                p.requires_grad_(False)
        model.g_step(x, y).backward()
        if freeze_d:
            for p in nets["d"].parameters():
                p.requires_grad_(True)
        for k in g_nets:
            opts[k].step()

    for i in range(warmup):
        step(i)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    times.sort()
    median = statistics.median(times)
    g = nets["g"]
    g.eval()
    with torch.no_grad():
        for _ in range(2):
            model.generate(batch)
        reps = max(steps, 10)
        t = time.perf_counter()
        for _ in range(reps):
            model.generate(batch).sum().item()
        gen = time.perf_counter() - t
    return {
        "model": name,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "freeze_d": freeze_d,
        "train_img_per_s": batch / median,
        "train_ms_per_step": 1e3 * median,
        "train_best_ms_per_step": 1e3 * times[0],
        "gen_img_per_s": reps * batch / gen,
        "torch": torch.__version__,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="all", choices=MODELS + ["all"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument(
        "--freeze-d",
        action="store_true",
        help="turn off D's requires_grad during the G step (what gan-rs does; plain PyTorch "
        "code usually computes and discards those gradients)",
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name in MODELS if a.model == "all" else [a.model]:
        r = measure(name, a.batch, a.warmup, a.steps, a.freeze_d)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(
                f"{name:>8}  batch {a.batch:>3}  train {r['train_img_per_s']:8.1f} img/s "
                f"(median {r['train_ms_per_step']:6.1f} ms/step, best "
                f"{r['train_best_ms_per_step']:6.1f})  generate {r['gen_img_per_s']:9.1f} img/s  "
                f"[{r['threads']} threads, torch {r['torch']}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
