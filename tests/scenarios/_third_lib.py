"""Data generators and models for the third scenario set (a helper: the loader skips "_" files).

Written apart from the rest of the suite. Every generator draws from private
torch.Generator objects only, so a run depends on its seed alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

Batch = tuple[torch.Tensor, torch.Tensor]


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """Per-batch generator (a different stream per seed, step and salt)."""
    return torch.Generator().manual_seed(seed * 6_700_417 + step * 13 + salt + 5)


def fixed(seed: int, k: int) -> torch.Generator:
    """Generator for a run's fixed objects (teachers, datasets)."""
    return torch.Generator().manual_seed(seed * 4_099 + k * 101 + 3)


# ------------------------------------------------------------------------------------------ data


def bigram_tokens(batch: int = 16, length: int = 32, vocab: int = 24, seed: int = 0):
    """Tokens from a random bigram model with peaked rows (a few likely successors; entropy > 0)."""
    g0 = fixed(seed, 1)
    # Peaked rows (a few likely successors per token): softmax of scaled Gaussians.
    probs = torch.softmax(3.0 * torch.randn(vocab, vocab, generator=g0), dim=1)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 1)
        tok = torch.empty(batch, length + 1, dtype=torch.long)
        tok[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        for t in range(length):
            tok[:, t + 1] = torch.multinomial(probs[tok[:, t]], 1, generator=g).squeeze(1)
        return tok[:, :-1], tok[:, 1:]

    batch_at.entropy = float(-(probs * probs.clamp_min(1e-30).log()).sum(1).mean())  # type: ignore[attr-defined]
    return batch_at


def blob_images(batch: int = 32, size: int = 16, noise: float = 0.4, seed: int = 0):
    """Images of 1-3 Gaussian blobs at random positions on a noisy background (autoencoder input)."""
    r = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 2)
        clean = torch.zeros(batch, 1, size, size)
        for k in range(3):
            cy = torch.rand(batch, generator=g) * (size - 1)
            cx = torch.rand(batch, generator=g) * (size - 1)
            w = 1.5 + 2.0 * torch.rand(batch, generator=g)
            on = (torch.rand(batch, generator=g) < (1.0 if k == 0 else 0.5)).float()
            blob = torch.exp(
                -((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / (2 * w[:, None, None] ** 2)
            )
            clean[:, 0] += on[:, None, None] * blob
        noisy = clean + noise * torch.randn(clean.shape, generator=g)
        return noisy, clean  # denoising: noisy in, clean out

    return batch_at


def sparse_parity(batch: int = 64, bits: int = 20, k: int = 3, seed: int = 0):
    """x in {-1, +1}^bits; label = parity of k fixed secret bits (the classic plateau-then-drop task)."""
    secret = torch.randperm(bits, generator=fixed(seed, 3))[:k]

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 3)
        x = torch.randint(0, 2, (batch, bits), generator=g).float() * 2 - 1
        y = (x[:, secret].prod(1) > 0).long()
        return x, y

    return batch_at


def poisson_counts(batch: int = 2, dim: int = 8, seed: int = 0):
    """Counts y ~ Poisson(exp(0.5 + x @ w)): small-batch count regression (per-step loss is very noisy)."""
    w = 0.6 * torch.randn(dim, generator=fixed(seed, 4)) / dim**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 4)
        x = torch.randn(batch, dim, generator=g)
        rate = torch.exp(0.5 + x @ w)
        return x, torch.poisson(rate, generator=g).unsqueeze(1)

    return batch_at


def motif_sequences(batch: int = 32, length: int = 48, channels: int = 3, classes: int = 4, seed: int = 0):
    """1-D signals: class k plants motif k (length 6) at a random position; noise(step) sets the difficulty.

    Returns ``batch_at(step, noise)``.
    """
    motifs = torch.randn(classes, channels, 6, generator=fixed(seed, 5))
    motifs = motifs / motifs.flatten(1).norm(dim=1)[:, None, None] * 3.0

    def batch_at(step: int, noise: float) -> Batch:
        g = gen(seed, step, 5)
        y = torch.randint(0, classes, (batch,), generator=g)
        x = noise * torch.randn(batch, channels, length, generator=g)
        pos = torch.randint(0, length - 6, (batch,), generator=g)
        for i in range(batch):
            x[i, :, pos[i] : pos[i] + 6] += motifs[y[i]]
        return x, y

    return batch_at


def fir_signals(batch: int = 32, length: int = 64, taps: int = 9, noise: float = 1e-3, seed: int = 0):
    """White-noise signals x (B, 1, L) and y = x filtered by a fixed unknown FIR filter, plus noise (MSE floor noise^2)."""
    h = torch.randn(1, 1, taps, generator=fixed(seed, 10)) / 3

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 10)
        x = torch.randn(batch, 1, length, generator=g)
        return x, F.conv1d(x, h, padding=taps // 2) + noise * torch.randn(batch, 1, length, generator=g)

    return batch_at


def shape_patches(batch: int = 32, size: int = 12, seed: int = 0):
    """12x12 images: class = which of 4 shapes (cross, box, diagonal, dot grid) is drawn; target 2 = its brightness.

    Returns (x, (y_class, y_brightness)).
    """
    s = size
    shapes = torch.zeros(4, s, s)
    shapes[0, s // 2 - 1 : s // 2 + 1, :] = 1
    shapes[0, :, s // 2 - 1 : s // 2 + 1] = 1
    shapes[1, 2:-2, 2] = shapes[1, 2:-2, -3] = shapes[1, 2, 2:-2] = shapes[1, -3, 2:-2] = 1
    shapes[2] = torch.eye(s)
    shapes[3, ::3, ::3] = 1

    def batch_at(step: int):
        g = gen(seed, step, 7)
        y = torch.randint(0, 4, (batch,), generator=g)
        bright = 0.5 + torch.rand(batch, generator=g)
        shift = torch.randint(-1, 2, (batch, 2), generator=g)
        base = torch.stack(
            [torch.roll(shapes[c], (int(a), int(b)), (0, 1)) for c, (a, b) in zip(y, shift, strict=True)]
        )
        x = bright[:, None, None] * base + 0.5 * torch.randn(batch, s, s, generator=g)
        return x[:, None], (y, bright)

    return batch_at


def multilabel_tags(batch: int = 32, dim: int = 24, tags: int = 6, label_noise: float = 0.1, seed: int = 0):
    """Dense features; tag j is on when a fixed linear score j > 0 (labels flipped with prob label_noise)."""
    w = torch.randn(dim, tags, generator=fixed(seed, 8)) / dim**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 8)
        x = torch.randn(batch, dim, generator=g)
        y = (x @ w > 0).float()
        flip = (torch.rand(y.shape, generator=g) < label_noise).float()
        return x, (y + flip) % 2

    return batch_at


def interactions(n_users: int = 40, n_items: int = 50, rank: int = 3, bias: float = 1.5, seed: int = 0):
    """Implicit feedback: P(click | u, i) = sigmoid(<p_u, q_i> + b_i + c_u) from low-rank truth. Returns sampler(n, g)."""
    g0 = fixed(seed, 9)
    p = torch.randn(n_users, rank, generator=g0)
    q = torch.randn(n_items, rank, generator=g0)
    b = bias * torch.randn(n_items, generator=g0)
    c = bias * torch.randn(n_users, generator=g0)

    def sample(n: int, g: torch.Generator) -> Batch:
        u = torch.randint(0, n_users, (n,), generator=g)
        i = torch.randint(0, n_items, (n,), generator=g)
        prob = torch.sigmoid((p[u] * q[i]).sum(1) + b[i] + c[u])
        y = (torch.rand(n, generator=g) < prob).float()
        return torch.stack([u, i], 1), y

    return sample


# ---------------------------------------------------------------------------------------- models


class GRULanguageModel(nn.Module):
    """Token embedding (with dropout), 1-layer GRU, linear readout at every position."""

    def __init__(self, vocab: int = 24, d: int = 48, dropout: float = 0.1) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.out = nn.Linear(d, vocab)

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.drop(self.emb(tok)))
        return self.out(self.drop(h))


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class ConvAutoencoder(nn.Module):
    """Strided conv encoder (16x16 -> 4x4, 16 channels) and transposed-conv decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


class Conv1dNet(nn.Module):
    """Stack of same-padded Conv1d layers with an activation, global max pool, linear head (no normalisation)."""

    def __init__(self, channels: int = 3, width: int = 24, depth: int = 3, classes: int = 4, act=nn.ReLU) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for _ in range(depth):
            layers += [nn.Conv1d(c, width, 5, padding=2), act()]
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).amax(dim=2))


class PatchViT(nn.Module):
    """Tiny ViT: 3x3 patches -> tokens, [CLS], 2 pre-LN encoder layers with dropout, two heads (class, brightness)."""

    def __init__(self, size: int = 12, patch: int = 3, d: int = 32, classes: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        n = (size // patch) ** 2
        self.patch = nn.Conv2d(1, d, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n + 1, d))
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=dropout, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.cls_head = nn.Linear(d, classes)
        self.reg_head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        h = self.norm(self.enc(t)[:, 0])
        return self.cls_head(h), self.reg_head(h).squeeze(1)


class Recommender(nn.Module):
    """User and item embeddings, concatenated, through a ReLU MLP to a click logit (NCF-style)."""

    def __init__(self, n_users: int = 40, n_items: int = 50, d: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, d)
        self.item = nn.Embedding(n_items, d)
        self.mlp = nn.Sequential(
            nn.Linear(2 * d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, ui: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.user(ui[:, 0]), self.item(ui[:, 1])], 1)).squeeze(1)


def cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
