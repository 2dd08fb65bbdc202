"""Set 20 helpers (part 2), for the controls: a GRU classifier, two-view data for BYOL, LoRA adapters, a curriculum
denoiser, heavy-tailed regression, a residual MLP and a Fourier-feature MLP. Same seeding rules as _twentieth_lib."""

from __future__ import annotations

import math

import torch
from _twentieth_lib import VAL, Batch, gen
from torch import nn
from torch.nn import functional as F


class GRUClassifier(nn.Module):
    def __init__(self, dim=4, hidden=48, classes=4) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


# ---------------------------------------------------------------- BYOL
def two_views(seed, batch=128, latent=8, dim=32, clusters=8):
    """x = M z with z from one of 8 clusters; two views = x with 25% of the features masked + noise. Returns
    (view1, view2, cluster)."""
    gt = torch.Generator().manual_seed(seed + 2002)
    centres = 1.5 * torch.randn(clusters, latent, generator=gt)
    m = torch.randn(latent, dim, generator=gt) / latent**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 22)
        c = torch.randint(0, clusters, (batch,), generator=g)
        x = (centres[c] + 0.5 * torch.randn(batch, latent, generator=g)) @ m
        v = [
            x * (torch.rand(batch, dim, generator=g) > 0.25) + 0.3 * torch.randn(batch, dim, generator=g) for _ in "ab"
        ]
        return v[0], v[1], c

    return batch_at


def byol_mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o))


# ---------------------------------------------------------------- LoRA
class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a rank-r update (alpha / r) * B A; A ~ N(0, 1/r) (Kaiming-ish), B = 0."""

    def __init__(self, base: nn.Linear, r=4, alpha=8.0) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(r, base.in_features) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)


def permuted_tokens(batch_at, seed, vocab=16):
    """The same batches with the word ids 1..vocab-1 permuted (PAD stays 0): the class now depends on other words."""
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(vocab - 1, generator=gen(seed, 0, 23))])
    return lambda step: (lambda b: (perm[b[0]], b[1]))(batch_at(step))


# ---------------------------------------------------------------- curriculum denoiser
def smooth_signals(seed, batch=32, length=64, sigma_at=lambda step: 0.3):
    """Clean = 3 sinusoids (periods 6-40 samples, random amplitude/phase); input = clean + sigma_at(step) noise;
    target = clean. Held-out batches (step >= VAL) use the noise level of the `step - VAL` they are asked for as."""

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 24)
        t = torch.arange(length).float().view(1, 1, -1)
        per = 6 + 34 * torch.rand(batch, 3, 1, generator=g)
        amp = 0.3 + 0.7 * torch.rand(batch, 3, 1, generator=g)
        ph = 2 * math.pi * torch.rand(batch, 3, 1, generator=g)
        clean = (amp * torch.sin(2 * math.pi * t / per + ph)).sum(1, keepdim=True)
        sigma = sigma_at(step if step < VAL else 0)
        return clean + sigma * torch.randn(clean.shape, generator=g), clean

    return batch_at


def conv_denoiser(width=32):
    return nn.Sequential(
        nn.Conv1d(1, width, 9, padding=4),
        nn.ReLU(),
        nn.Conv1d(width, width, 9, padding=4),
        nn.ReLU(),
        nn.Conv1d(width, 1, 9, padding=4),
    )


# ---------------------------------------------------------------- heavy-tailed regression
def cauchy_regression(seed, batch=32, dim=8, scale=0.2):
    """Targets = smooth nonlinear teacher + `scale` x standard Cauchy noise (no mean, infinite variance)."""
    gt = torch.Generator().manual_seed(seed + 2003)
    w1 = torch.randn(dim, 32, generator=gt) / dim**0.5
    w2 = torch.randn(32, 1, generator=gt) / 32**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 25)
        x = torch.randn(batch, dim, generator=g)
        u = torch.rand(batch, 1, generator=g)
        return x, torch.tanh(x @ w1) @ w2 + scale * torch.tan(math.pi * (u - 0.5))

    return batch_at


# ---------------------------------------------------------------- residual MLP, Fourier-feature MLP
class PreLNResMLP(nn.Module):
    def __init__(self, dim=16, width=64, blocks=4, out=4) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(blocks)
        )
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, out)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(self.ln(h))


def coordinate_curve(seed, batch=128, scale=0.02):
    """x ~ U(0, 1); y = scale * (a smooth random curve: 3 harmonics with random amplitudes and phases)."""
    gt = torch.Generator().manual_seed(seed + 2004)
    amp, ph = torch.randn(3, generator=gt), 2 * math.pi * torch.rand(3, generator=gt)

    def batch_at(step: int) -> Batch:
        x = torch.rand(batch, 1, generator=gen(seed, step, 26))
        k = torch.arange(1, 4).float()
        return x, scale * (amp * torch.sin(2 * math.pi * k * x + ph)).sum(1, keepdim=True)

    return batch_at


class FourierMLP(nn.Module):
    """sin/cos features of `freqs` harmonics -> tanh MLP; the output layer's weights are scaled by `out_scale` and its
    bias zeroed (the output starts at the scale of the small target)."""

    def __init__(self, freqs=6, hidden=64, out_scale=0.01) -> None:
        super().__init__()
        self.register_buffer("k", torch.arange(1, freqs + 1).float())
        self.net = nn.Sequential(nn.Linear(2 * freqs, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.net[2].weight.mul_(out_scale)
            self.net[2].bias.zero_()

    def forward(self, x):
        z = 2 * math.pi * x * self.k
        return self.net(torch.cat([z.sin(), z.cos()], -1))
