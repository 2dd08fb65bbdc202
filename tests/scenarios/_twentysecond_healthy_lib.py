"""Set 22 helpers for the healthy controls: synthetic data, small models and a hand-written SGLD optimizer.

Every data generator draws from private ``torch.Generator`` objects seeded by (seed, step, salt); every model is
built right after ``torch.manual_seed(seed)``, so a run depends on its seed alone. The loop (run_loop / simple_step /
mean_val) is set 18's, shared. ``DIAG`` is the set's ``_twentysecond_lib.DIAG``: a few numbers a train function
leaves for the offline measurement script; training never reads it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from _eighteenth_lib import mean_val, run_loop, simple_step  # noqa: F401  (re-exported for the scenario file)
from torch import nn
from torch.nn import functional as F

try:  # the set's shared DIAG dict, read by _measure.py
    from _twentysecond_lib import DIAG
except ImportError:  # pragma: no cover
    DIAG: dict[str, Any] = {}

torch.set_num_threads(1)

VAL = 10**6  # held-out batches come from steps >= VAL of the same generator (never trained on)


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_039 + step * 31 + salt * 7_919_129 + 22)


def held_out_val(model, data, loss_fn, n=4):
    """Mean loss over the held-out batches data(VAL + i), i < n."""
    return mean_val(model, lambda i: data(VAL + i), loss_fn, n)


def mlp(sizes, act=nn.ReLU, dropout=0.0):
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def teacher_data(seed, dim=16, classes=6, batch=64, label_probs=None):
    """Tabular data labelled by a fixed random tanh-MLP teacher (argmax of its logits). ``label_probs(step)``: when
    given, each batch is resampled (from 4x as many draws) to follow that class distribution (a non-IID client)."""
    g0 = torch.Generator().manual_seed(seed + 2201)
    w1 = torch.randn(dim, 24, generator=g0) / dim**0.5
    w2 = torch.randn(24, classes, generator=g0) * 2.0 / 24**0.5

    def batch_at(step):
        g = gen(seed, step, 1)
        n = batch if label_probs is None else 8 * batch
        x = torch.randn(n, dim, generator=g)
        y = (torch.tanh(x @ w1) @ w2).argmax(-1)
        if label_probs is not None:
            w = label_probs(step)[y]
            idx = torch.multinomial(w, batch, replacement=True, generator=g)
            x, y = x[idx], y[idx]
        return x, y

    return batch_at


# ---------------------------------------------------------------------------------------------------------------
# Barlow Twins: points on 6 noisy clusters in a 12-dim subspace of R^32, two views = feature dropout + noise.
# ---------------------------------------------------------------------------------------------------------------


def ssl_views(seed, batch=128, dim=32):
    g0 = torch.Generator().manual_seed(seed + 2202)
    basis = torch.linalg.qr(torch.randn(dim, 12, generator=g0))[0]
    centres = torch.randn(6, 12, generator=g0) * 2.0

    def batch_at(step):
        g = gen(seed, step, 2)
        z = centres[torch.randint(0, 6, (batch,), generator=g)] + torch.randn(batch, 12, generator=g)
        x = z @ basis.T

        def view():
            keep = (torch.rand(batch, dim, generator=g) > 0.2).float()
            return x * keep / 0.8 + 0.3 * torch.randn(batch, dim, generator=g)

        return view(), view()

    return batch_at


def barlow_loss(z1, z2, lam=0.02):
    n, d = z1.shape
    z1 = (z1 - z1.mean(0)) / (z1.std(0) + 1e-5)
    z2 = (z2 - z2.mean(0)) / (z2.std(0) + 1e-5)
    c = z1.T @ z2 / n
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lam * off


# ---------------------------------------------------------------------------------------------------------------
# MINE: pairs (x, y) of 4-dim Gaussians with per-coordinate correlation 0.8: I(X;Y) = -2 ln(1 - 0.64) = 2.04 nats.
# ---------------------------------------------------------------------------------------------------------------

TRUE_MI = -2 * math.log(1 - 0.8**2)


def correlated_pairs(seed, batch=256, rho=0.8):
    def batch_at(step):
        g = gen(seed, step, 3)
        x = torch.randn(batch, 4, generator=g)
        y = rho * x + (1 - rho**2) ** 0.5 * torch.randn(batch, 4, generator=g)
        return x, y, torch.randperm(batch, generator=g)

    return batch_at


def dv_terms(net, x, y, perm):
    tj = net(torch.cat([x, y], 1)).squeeze(1)
    tm = net(torch.cat([x, y[perm]], 1)).squeeze(1)
    return tj.mean(), torch.logsumexp(tm, 0) - math.log(len(tm)), tm


# ---------------------------------------------------------------------------------------------------------------
# Oriented gratings (16x16, 6 orientations, random frequency/phase, noise) and a small MLP-Mixer on 4x4 patches.
# ---------------------------------------------------------------------------------------------------------------


def gratings(seed, batch=64, label_noise=0.1):
    u = torch.arange(16.0)
    yy, xx = torch.meshgrid(u, u, indexing="ij")

    def batch_at(step):
        g = gen(seed, step, 4)
        y = torch.randint(0, 6, (batch,), generator=g)
        ang = y.float() * math.pi / 6 + 0.15 * torch.randn(batch, generator=g)
        freq = 0.5 + 0.5 * torch.rand(batch, generator=g)
        phase = 2 * math.pi * torch.rand(batch, generator=g)
        proj = xx[None] * torch.cos(ang)[:, None, None] + yy[None] * torch.sin(ang)[:, None, None]
        img = torch.sin(freq[:, None, None] * proj + phase[:, None, None]) + 0.8 * torch.randn(
            batch, 16, 16, generator=g
        )
        flip = torch.rand(batch, generator=g) < label_noise
        y = torch.where(flip, torch.randint(0, 6, (batch,), generator=g), y)
        return img.unsqueeze(1), y

    return batch_at


class MixerBlock(nn.Module):
    def __init__(self, tokens, dim):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tok = nn.Sequential(nn.Linear(tokens, 32), nn.GELU(), nn.Linear(32, tokens))
        self.ch = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, h):
        h = h + self.tok(self.n1(h).transpose(1, 2)).transpose(1, 2)
        return h + self.ch(self.n2(h))


class Mixer(nn.Module):
    def __init__(self, dim=32, blocks=2, classes=6):
        super().__init__()
        self.stem = nn.Conv2d(1, dim, 4, stride=4)
        self.blocks = nn.Sequential(*(MixerBlock(16, dim) for _ in range(blocks)))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        h = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(h)).mean(1))


# ---------------------------------------------------------------------------------------------------------------
# DQN on a deterministic 5x5 grid (goal in a corner, reward 1 on reaching it, gamma 0.9): uniform replay of random
# transitions, a target network; Q* by value iteration for the held-out metric.
# ---------------------------------------------------------------------------------------------------------------

GRID, GAMMA = 5, 0.9
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])


def grid_step(s, a):
    r, c = s // GRID, s % GRID
    rc = torch.stack([r, c], 1) + MOVES[a]
    rc = rc.clamp(0, GRID - 1)
    s2 = rc[:, 0] * GRID + rc[:, 1]
    done = s2 == GRID * GRID - 1
    return s2, done.float(), done.float()


def q_star():
    s = torch.arange(GRID * GRID).repeat_interleave(4)
    a = torch.arange(4).repeat(GRID * GRID)
    s2, rew, done = grid_step(s, a)
    q = torch.zeros(GRID * GRID, 4)
    for _ in range(100):
        q = (rew + GAMMA * (1 - done) * q.max(1).values[s2]).view(GRID * GRID, 4)
    return q


def replay_batch(seed, step, batch=64):
    g = gen(seed, step, 5)
    s = torch.randint(0, GRID * GRID - 1, (batch,), generator=g)  # never start in the terminal goal
    a = torch.randint(0, 4, (batch,), generator=g)
    s2, rew, done = grid_step(s, a)
    return s, a, rew, s2, done


# ---------------------------------------------------------------------------------------------------------------
# Hand-written SGLD (Welling & Teh): theta -= lr * grad(mean NLL + prior/N) + N(0, 2 lr / N) noise (temperature 1).
# ---------------------------------------------------------------------------------------------------------------


class SGLD(torch.optim.Optimizer):
    def __init__(self, params, lr, n_data, prior_std=1.0, seed=0):
        super().__init__(params, {"lr": lr})
        self.n, self.prior_var = n_data, prior_std**2
        self.g = torch.Generator().manual_seed(seed + 2203)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.add_(p.grad + p / (self.n * self.prior_var), alpha=-lr)
                p.add_(torch.randn(p.shape, generator=self.g), alpha=(2 * lr / self.n) ** 0.5)


# ---------------------------------------------------------------------------------------------------------------
# Survival data for a Cox model: log hazard = a fixed nonlinear function of 10 covariates, exponential event times,
# independent exponential censoring (~35% censored).
# ---------------------------------------------------------------------------------------------------------------


def survival_data(seed, batch=128):
    g0 = torch.Generator().manual_seed(seed + 2204)
    w = torch.randn(10, 2, generator=g0)

    def batch_at(step):
        g = gen(seed, step, 6)
        x = torch.randn(batch, 10, generator=g)
        risk = torch.tanh(x @ w[:, 0]) * 1.5 + 0.5 * (x @ w[:, 1]) / 10**0.5
        t = torch.empty(batch).exponential_(generator=g) / risk.exp()
        c = torch.empty(batch).exponential_(generator=g) / 0.4
        return x, torch.stack([torch.minimum(t, c), (t <= c).float()], 1)

    return batch_at


def cox_loss(risk, te):
    """Negative Breslow partial log-likelihood per event (ties have probability 0)."""
    risk = risk.view(-1)
    order = te[:, 0].argsort(descending=True)
    r, e = risk[order], te[order, 1]
    return -((r - torch.logcumsumexp(r, 0)) * e).sum() / e.sum().clamp_min(1)


def concordance(risk, te):
    risk, t, e = risk.view(-1), te[:, 0], te[:, 1]
    comparable = (t[:, None] < t[None, :]) & (e[:, None] > 0)
    return float(((risk[:, None] > risk[None, :]) & comparable).sum() / comparable.sum())


# ---------------------------------------------------------------------------------------------------------------
# Insurance claims: ~75-85% zeros, claim counts Poisson(lambda(x)), log-normal severities (sigma 1.2): heavy-tailed
# totals (in thousands). Tweedie deviance (p = 1.5) with a log link.
# ---------------------------------------------------------------------------------------------------------------


def claims_data(seed, batch=256):
    g0 = torch.Generator().manual_seed(seed + 2205)
    w = torch.randn(12, generator=g0) * 0.45

    def batch_at(step):
        g = gen(seed, step, 7)
        x = torch.randn(batch, 12, generator=g)
        lam = (math.log(0.1) + x @ w + 0.3 * torch.sin(2 * x[:, 0])).exp()
        n = torch.poisson(lam, generator=g)
        sev = (0.5 + 0.4 * x[:, 1] + 1.2 * torch.randn(batch, generator=g)).exp()
        return x, n * sev * (1 + 0.3 * torch.rand(batch, generator=g))

    return batch_at


def tweedie_loss(f, y, p=1.5):
    f = f.view(-1)
    return (-y * torch.exp((1 - p) * f) / (1 - p) + torch.exp((2 - p) * f) / (2 - p)).mean()


# ---------------------------------------------------------------------------------------------------------------
# Sequence tagging: tags from a sticky 5-state Markov chain, tokens (vocab 24) emitted by the tag with noise; a
# conv1d emission network + a linear-chain CRF (NLL by the forward algorithm).
# ---------------------------------------------------------------------------------------------------------------


def hmm_tags(seed, batch=32, length=16, vocab=24, tags=5):
    g0 = torch.Generator().manual_seed(seed + 2206)
    trans = torch.softmax(torch.randn(tags, tags, generator=g0) + 2.5 * torch.eye(tags), 1)
    emit = torch.softmax(2.0 * torch.randn(tags, vocab, generator=g0), 1)

    def batch_at(step):
        g = gen(seed, step, 8)
        y = torch.empty(batch, length, dtype=torch.long)
        y[:, 0] = torch.randint(0, tags, (batch,), generator=g)
        for t in range(1, length):
            y[:, t] = torch.multinomial(trans[y[:, t - 1]], 1, generator=g).squeeze(1)
        x = torch.multinomial(emit[y.view(-1)], 1, generator=g).view(batch, length)
        return x, y

    return batch_at


class CRFTagger(nn.Module):
    def __init__(self, vocab=24, tags=5, dim=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, dim, 5, padding=2)
        self.out = nn.Linear(dim, tags)
        self.trans = nn.Parameter(torch.zeros(tags, tags))
        self.start = nn.Parameter(torch.zeros(tags))

    def emissions(self, x):
        h = self.emb(x)
        h = h + torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        return self.out(h)

    def nll(self, x, y):
        e = self.emissions(x)
        b, n, _ = e.shape
        alpha = self.start + e[:, 0]
        score = self.start[y[:, 0]] + e[:, 0].gather(1, y[:, :1]).squeeze(1)
        for t in range(1, n):
            alpha = torch.logsumexp(alpha[:, :, None] + self.trans[None], 1) + e[:, t]
            score = score + self.trans[y[:, t - 1], y[:, t]] + e[:, t].gather(1, y[:, t : t + 1]).squeeze(1)
        return (torch.logsumexp(alpha, 1) - score).mean()


# ---------------------------------------------------------------------------------------------------------------
# Neural field with a multiresolution hash encoding (Instant-NGP style): 4 levels of 2-D grids (res 8..64), each
# hashed into a 1024-row table of 2 features, bilinear interpolation, a small MLP. Target: a smooth 2-D image.
# ---------------------------------------------------------------------------------------------------------------


def field_target(seed):
    g0 = torch.Generator().manual_seed(seed + 2207)
    k = torch.randn(6, 2, generator=g0) * 4
    ph = torch.rand(6, generator=g0) * 6.28
    amp = torch.rand(6, generator=g0) * 0.3 + 0.1

    def f(uv):
        return (amp * torch.sin(uv @ k.T + ph)).sum(1, keepdim=True)

    return f


def field_data(seed, batch=256):
    f = field_target(seed)

    def batch_at(step):
        uv = torch.rand(batch, 2, generator=gen(seed, step, 9))
        return uv, f(uv)

    return batch_at


class HashField(nn.Module):
    PRIMES = (1, 2_654_435_761)

    def __init__(self, levels=(8, 16, 32, 64), table=1024, feats=2):
        super().__init__()
        self.levels, self.table = levels, table
        self.tables = nn.ModuleList(nn.Embedding(table, feats) for _ in levels)
        for t in self.tables:
            nn.init.uniform_(t.weight, -1e-4, 1e-4)
        self.mlp = nn.Sequential(nn.Linear(feats * len(levels), 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, uv):
        out = []
        for res, emb in zip(self.levels, self.tables, strict=True):
            p = uv * res
            p0 = p.floor().long()
            w = p - p0
            acc = 0
            for dx in (0, 1):
                for dy in (0, 1):
                    c = p0 + torch.tensor([dx, dy])
                    idx = ((c[:, 0] * self.PRIMES[0]) ^ (c[:, 1] * self.PRIMES[1])) % self.table
                    wx = w[:, 0] if dx else 1 - w[:, 0]
                    wy = w[:, 1] if dy else 1 - w[:, 1]
                    acc = acc + (wx * wy)[:, None] * emb(idx)
            out.append(acc)
        return self.mlp(torch.cat(out, 1))


def rows_with_grad(model, x, y):
    """Fraction of each hash table's rows that one batch gives a nonzero gradient (for the measurement notes)."""
    model.zero_grad(set_to_none=True)
    F.mse_loss(model(x), y).backward()
    return [round(float((t.weight.grad.abs().sum(1) > 0).float().mean()), 2) for t in model.tables]


def soft_mse(a, b):
    return F.mse_loss(torch.softmax(a, -1), torch.softmax(b, -1))


# ---------------------------------------------------------------------------------------------------------------
# Matrix completion: a rank-4 120x90 matrix (+ noise 0.1), 35% of entries observed for training, 10% held out.
# ---------------------------------------------------------------------------------------------------------------


class MF(nn.Module):
    def __init__(self, rows=120, cols=90, rank=8):
        super().__init__()
        self.rows, self.cols = nn.Embedding(rows, rank), nn.Embedding(cols, rank)
        nn.init.normal_(self.rows.weight, std=0.3)
        nn.init.normal_(self.cols.weight, std=0.3)

    def forward(self, ij):
        return (self.rows(ij[:, 0]) * self.cols(ij[:, 1])).sum(1)


def low_rank_entries(seed, rows=120, cols=90, batch=256):
    g0 = torch.Generator().manual_seed(seed + 2208)
    m = torch.randn(rows, 4, generator=g0) @ torch.randn(4, cols, generator=g0) / 2
    m = m + 0.1 * torch.randn(rows, cols, generator=g0)
    ij = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).view(-1, 2)
    perm = torch.randperm(len(ij), generator=g0)
    n_tr, n_va = int(0.35 * len(ij)), int(0.1 * len(ij))
    tr, va = ij[perm[:n_tr]], ij[perm[n_tr : n_tr + n_va]]

    def batch_at(step):
        if step >= VAL:
            sel = va[(step - VAL) * 270 : (step - VAL + 1) * 270]
        else:
            sel = tr[torch.randint(0, n_tr, (batch,), generator=gen(seed, step, 10))]
        return sel, m[sel[:, 0], sel[:, 1]]

    return batch_at
