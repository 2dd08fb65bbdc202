"""Data and small models for the ninth held-out set (not a scenario file)."""

from __future__ import annotations

import torch
from torch import nn


def gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def tabular(seed: int, batch: int = 32, n_cont: int = 6, cards=(7, 5, 11), noise: float = 0.3, sentinel_at=None):
    """Mixed tabular regression: continuous columns + categorical columns with per-category effects.

    ``sentinel_at``: (step, rows, cols) -- those entries hold the -999 "missing" sentinel.
    """
    g0 = torch.Generator().manual_seed(seed + 101)
    w = torch.randn(n_cont, generator=g0) / n_cont**0.5
    effects = [0.7 * torch.randn(c, generator=g0) for c in cards]

    def batch_at(step: int):
        g = gen(seed, step)
        xc = torch.randn(batch, n_cont, generator=g)
        xk = torch.stack([torch.randint(0, c, (batch,), generator=g) for c in cards], 1)
        y = torch.tanh(xc @ w) + 0.3 * xc[:, 0] * xc[:, 1]
        for j, e in enumerate(effects):
            y = y + e[xk[:, j]]
        y = y + noise * torch.randn(batch, generator=g)
        if sentinel_at is not None and step == sentinel_at[0]:
            rows, cols = sentinel_at[1], sentinel_at[2]
            for r in rows:
                for c in cols:
                    xc[r, c] = -999.0
        return (xc, xk), y[:, None]

    return batch_at


class TabularNet(nn.Module):
    """Entity embeddings for the categorical columns, concatenated with the continuous ones, MLP."""

    def __init__(self, n_cont: int = 6, cards=(7, 5, 11), emb: int = 4, hidden: int = 64, out: int = 1):
        super().__init__()
        self.embs = nn.ModuleList(nn.Embedding(c, emb) for c in cards)
        self.net = nn.Sequential(
            nn.Linear(n_cont + emb * len(cards), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out),
        )

    def forward(self, inputs):
        xc, xk = inputs
        h = torch.cat([xc] + [e(xk[:, j]) for j, e in enumerate(self.embs)], 1)
        return self.net(h)


class PlainCNN(nn.Module):
    """Two conv+ReLU layers without normalisation, average pool, linear head."""

    def __init__(self, channels: int = 16, classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(channels * 4, classes)

    def forward(self, x):
        return self.head(self.body(x))
