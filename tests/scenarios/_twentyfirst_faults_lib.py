"""Set 21 fault helpers: synthetic data, small models and the loop shared by twentyfirst_faults.py.

Every data generator draws from private ``torch.Generator`` objects seeded by (seed, step, salt); every model is built
right after ``torch.manual_seed(seed)`` by the scenario, so a run depends on its seed alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

torch.set_num_threads(1)

VAL = 10**6  # held-out batches come from steps >= VAL of the same generator (never trained on)


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_033 + step * 31 + salt * 7_919_121 + 21)


def loop(
    watch: Any,
    model: nn.Module,
    opt: Any,
    steps: int,
    train_step: Callable[[int], Any],
    val: Callable[[], float] | None = None,
    every: int = 10,
) -> None:
    """watch once; train_step(step) does one optimizer step and returns the loss; val() every ``every`` steps."""
    mon = watch(model, opt)
    for step in range(steps):
        model.train()
        loss = train_step(step)
        v = None
        if val is not None and step % every == every - 1:
            model.eval()
            with torch.no_grad():
                v = float(val())
            model.train()
        mon.step(loss.detach(), val_loss=v)


def plain_step(model, opt, data, loss_fn, before=None, sched=None):
    def train_step(step):
        if before is not None:
            before(step)
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return loss

    return train_step


def mean_val(model, data, loss_fn, n=4):
    return lambda: sum(float(loss_fn(model(x), y)) for x, y in (data(VAL + i) for i in range(n))) / n


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def mlp_teacher_data(seed, dim=16, classes=4, batch=64, hidden=32):
    """Inputs N(0, 1); class = argmax of a fixed random tanh MLP (a nonlinear but learnable boundary)."""
    g = torch.Generator().manual_seed(seed + 5)
    w1 = torch.randn(dim, hidden, generator=g) / dim**0.5
    w2 = torch.randn(hidden, classes, generator=g) / hidden**0.5

    def batch_at(step):
        x = torch.randn(batch, dim, generator=gen(seed, step, 1))
        return x, (torch.tanh(2 * x @ w1) @ w2).argmax(1)

    return batch_at


def motif_sequences(seed, batch=32, length=32, classes=4):
    """Noisy 1-channel sequences; class = which of 4 fixed motifs (length 9) is planted at a random place."""
    g = torch.Generator().manual_seed(seed + 11)
    motifs = torch.randn(classes, 9, generator=g) * 1.5

    def batch_at(step):
        gg = gen(seed, step, 3)
        y = torch.randint(0, classes, (batch,), generator=gg)
        x = 0.8 * torch.randn(batch, length, generator=gg)
        pos = torch.randint(0, length - 9, (batch,), generator=gg)
        for i in range(batch):
            x[i, pos[i] : pos[i] + 9] += motifs[y[i]]
        return x.unsqueeze(1), y

    return batch_at


def blob_images(seed, batch=64, size=8):
    """8x8 grey images in [0, 1] quantised to k/255: a few bright Gaussian blobs on an exactly-0 background.

    Returned as (x, None).
    """

    def one(step):
        gg = gen(seed, step, 4)
        c = torch.rand(batch, 2, 2, generator=gg) * (size - 1)
        r = torch.arange(size).float()
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        img = torch.zeros(batch, size, size)
        for k in range(2):
            d2 = (yy - c[:, k, 0, None, None]) ** 2 + (xx - c[:, k, 1, None, None]) ** 2
            img = img + torch.exp(-d2 / 2.0)
        img = (img / img.amax((1, 2), keepdim=True)).clamp(0, 1)
        img = torch.where(img < 0.05, torch.zeros_like(img), img)
        return torch.round(img * 255).flatten(1) / 255, None

    return one


def paired_views(seed, n_items=12800, dim=32, latent=8):
    """Item i has a latent z_i; view a / view b = two fixed random projections of z_i (tanh) plus noise.

    ``views(idx)`` returns (view a, view b) of the items ``idx``; indices >= n_items are held-out items.
    """
    g = torch.Generator().manual_seed(seed + 17)
    pa = torch.randn(latent, dim, generator=g) / latent**0.5
    pb = torch.randn(latent, dim, generator=g) / latent**0.5
    z = torch.randn(n_items + 256, latent, generator=g)
    va = torch.tanh(z @ pa) + 0.1 * torch.randn(n_items + 256, dim, generator=g)
    vb = torch.tanh(z @ pb) + 0.1 * torch.randn(n_items + 256, dim, generator=g)

    def views(idx):
        idx = torch.where(idx >= n_items, n_items + (idx - n_items) % 256, idx)
        return va[idx], vb[idx]

    return views


def checker_2d(seed, batch=128, cells=2):
    """2-D points in [-1, 1]^2; label = checkerboard colour (``cells`` x ``cells``): no linear boundary at all."""

    def one(step):
        x = 2 * torch.rand(batch, 2, generator=gen(seed, step, 7)) - 1
        k = torch.floor((x + 1) * cells / 2).clamp(max=cells - 1).long()
        return x, (k[:, 0] + k[:, 1]) % 2

    return one


def quadrant_patches(seed, batch=64, size=8):
    """8x8 noisy images; class = which quadrant is bright."""

    def one(step):
        gg = gen(seed, step, 8)
        x = 0.8 * torch.randn(batch, 1, size, size, generator=gg)
        y = torch.randint(0, 4, (batch,), generator=gg)
        h = size // 2
        for q in range(4):
            r, c = divmod(q, 2)
            x[y == q, :, r * h : (r + 1) * h, c * h : (c + 1) * h] += 1.0
        return x, y

    return one


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class EulerODENet(nn.Module):
    """Encoder, a vector field f(h) = W2 tanh(W1 h) (minus h if ``leak``) integrated by ``n_steps`` explicit Euler steps
    of size dt, head."""

    def __init__(self, dim=16, width=32, hidden=64, classes=4, n_steps=10, dt=0.1, leak=False) -> None:
        super().__init__()
        self.enc = nn.Linear(dim, width)
        self.f1, self.f2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.head = nn.Linear(width, classes)
        self.n_steps, self.dt, self.leak = n_steps, dt, leak

    def forward(self, x):
        h = self.enc(x)
        for _ in range(self.n_steps):
            h = h + self.dt * (self.f2(torch.tanh(self.f1(h))) - (h if self.leak else 0))
        return self.head(h)


class TCN(nn.Module):
    """Causal dilated Conv1d residual blocks (conv-ReLU-conv), global average pool, linear head.

    ``scale_whole_sum``: the EDSR-style res_scale is applied as res_scale * (x + body(x)) instead of
    x + res_scale * body(x).
    """

    def __init__(self, width=24, blocks=8, classes=4, res_scale=1.0, scale_whole_sum=False) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, width, 3, padding=2)
        self.convs = nn.ModuleList()
        for b in range(blocks):
            d = 2 ** (b % 4)
            self.convs.append(nn.Conv1d(width, width, 3, dilation=d, padding=2 * d))
            self.convs.append(nn.Conv1d(width, width, 3, dilation=d, padding=2 * d))
        self.head = nn.Linear(width, classes)
        self.res_scale, self.whole = res_scale, scale_whole_sum

    def forward(self, x):
        n = x.shape[-1]
        h = F.relu(self.stem(x)[..., :n])
        for c1, c2 in zip(self.convs[::2], self.convs[1::2], strict=True):
            body = c2(F.relu(c1(h)[..., :n]))[..., :n]
            h = self.res_scale * (h + body) if self.whole else h + self.res_scale * body
            h = F.relu(h)
        return self.head(h.mean(-1))


def naive_softmax(z, dim=-1):
    """softmax as e^z / sum e^z, without subtracting the max (the hand-written version)."""
    e = torch.exp(z)
    return e / e.sum(dim, keepdim=True)


class SoftMoE(nn.Module):
    """Dense mixture of 4 GELU experts mixed by a router softmax(router(x) / tau); linear head."""

    def __init__(self, dim=16, hidden=32, experts=4, classes=4, handwritten=True) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.router = nn.Linear(hidden, experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, 64), nn.GELU(), nn.Linear(64, hidden)) for _ in range(experts)
        )
        self.head = nn.Linear(hidden, classes)
        self.tau, self.handwritten = 1.0, handwritten

    def forward(self, x):
        h = F.gelu(self.inp(x))
        z = self.router(h) / self.tau
        w = naive_softmax(z) if self.handwritten else torch.softmax(z, -1)
        out = torch.stack([e(h) for e in self.experts], 1)
        return self.head(h + (w.unsqueeze(-1) * out).sum(1))


class Coupling(nn.Module):
    def __init__(self, dim, mask, hidden=64) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * dim))

    def forward(self, z):
        s, t = self.net(z * self.mask).chunk(2, -1)
        s = torch.tanh(s) * (1 - self.mask)
        t = t * (1 - self.mask)
        return z * self.mask + (1 - self.mask) * (z * torch.exp(s) + t), s.sum(-1)


class LogitFlow(nn.Module):
    """RealNVP on [0, 1]-valued pixels: y = logit(x) (the usual flow preprocessing), 6 affine couplings, N(0, I).

    ``forward(x)`` returns the per-dimension negative log-likelihood in nats (log-det of the logit included).
    """

    def __init__(self, dim=64, layers=6) -> None:
        super().__init__()
        masks = [(torch.arange(dim) % 2 == (k % 2)).float() for k in range(layers)]
        self.layers = nn.ModuleList(Coupling(dim, m) for m in masks)
        self.dim = dim

    def forward(self, x):
        y = torch.log(x) - torch.log1p(-x)
        logdet = -(torch.log(x) + torch.log1p(-x)).sum(-1)
        z = y
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        logp = -0.5 * (z**2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return -(logp + logdet).mean() / self.dim


def teacher_net(classes=4, dim=16) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, classes))


class MixerBlock(nn.Module):
    def __init__(self, tokens, d) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.tok = nn.Sequential(nn.Linear(tokens, 32), nn.GELU(), nn.Linear(32, tokens))
        self.ch = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))

    def forward(self, x):
        x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ch(self.n2(x))


class Mixer(nn.Module):
    """MLP-Mixer on 8x8 images: 2x2 patches (16 tokens), 2 blocks, mean pool, head."""

    def __init__(self, d=32, blocks=2, classes=4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, d, 2, stride=2)
        self.blocks = nn.Sequential(*(MixerBlock(16, d) for _ in range(blocks)))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(h)).mean(1))


def leaky_mlp(widths, act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(widths) - 1):
        layers.append(nn.Linear(widths[k], widths[k + 1]))
        if k < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class SiameseEncoder(nn.Module):
    """Two MLP towers (view a, view b) to L2-normalised 16-d embeddings."""

    def __init__(self, dim=32) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 16))
        self.b = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 16))

    def forward(self, xa, xb):
        return F.normalize(self.a(xa), dim=-1), F.normalize(self.b(xb), dim=-1)


def info_nce(za, zb, tau=0.1):
    logits = za @ zb.T / tau
    return F.cross_entropy(logits, torch.arange(len(za)))


def graph_regression(seed, nodes=64, dim=8, p=0.1):
    """A fixed random graph (symmetric-normalised adjacency with self loops); each step draws fresh node features
    X and targets y = tanh(A tanh(A X w1) w2) (a 2-hop function) + noise. Returns (A, batch_at)."""
    g = torch.Generator().manual_seed(seed + 41)
    adj = (torch.rand(nodes, nodes, generator=g) < p).float()
    adj = ((adj + adj.T) > 0).float() + torch.eye(nodes)
    d = adj.sum(1).rsqrt()
    a = d[:, None] * adj * d[None, :]
    w1, w2 = torch.randn(dim, 16, generator=g), torch.randn(16, 1, generator=g) / 2

    def one(step):
        gg = gen(seed, step, 10)
        x = torch.randn(nodes, dim, generator=gg)
        return x, 2 * torch.tanh(a @ torch.tanh(a @ x @ w1) @ w2) + 0.1 * torch.randn(nodes, 1, generator=gg)

    return a, one


class HandGCN(nn.Module):
    """Two graph convolutions written by hand: relu(A X W1), relu(A H W2), linear readout per node."""

    def __init__(self, a, dim=8, hidden=64) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.w1, self.w2, self.out = nn.Linear(dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, x):
        h = F.relu(self.a @ self.w1(x))
        return self.out(F.relu(self.a @ self.w2(h)))


def small_graphs(seed, nodes=12, dim=6, classes=4, label_noise=0.15):
    """Graph ``i`` (a function of its index): a random graph (edge prob 0.25, self loops, row-normalised) with
    N(0, 1) node features; class = argmax of a fixed map of the mean of tanh(A X) (flipped with prob label_noise).
    ``batch(idx)`` returns (A, X, y) for the graphs ``idx``."""
    g = torch.Generator().manual_seed(seed + 53)
    t = torch.randn(dim, classes, generator=g)

    @functools.cache
    def one(i):
        gg = gen(seed, i, 11)
        a = (torch.rand(nodes, nodes, generator=gg) < 0.25).float()
        a = ((a + a.T) > 0).float() + torch.eye(nodes)
        a = a / a.sum(1, keepdim=True)
        x = torch.randn(nodes, dim, generator=gg)
        y = (torch.tanh(2 * a @ x).mean(0) @ t).argmax()
        if torch.rand((), generator=gg) < label_noise:
            y = torch.randint(0, classes, (), generator=gg)
        return a, x, y

    def batch(idx):
        a, x, y = zip(*(one(int(i)) for i in idx), strict=True)
        return torch.stack(a), torch.stack(x), torch.stack(y)

    return batch


class HandGIN(nn.Module):
    """Graph classifier written by hand: two rounds of relu(A H W), mean over nodes, MLP head."""

    def __init__(self, dim=6, hidden=128, classes=4) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(dim, hidden), nn.Linear(hidden, hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, a, x):
        h = F.relu(self.w1(a @ x))
        h = F.relu(self.w2(a @ h))
        return self.head(h.mean(1))
