"""Helpers for the eleventh held-out set (not a scenario file): seeded generators, small models, an offline recorder."""

from __future__ import annotations

import math

import torch
from torch import nn


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + salt * 7_919)


class Recorder:
    """A stand-in for ``watch`` used only for the offline measurements (never by gradwatch eval)."""

    def __init__(self):
        self.rows = []
        self.optimizer = None

    def __call__(self, model, optimizer=None, **options):
        self.model = model
        self.optimizer = optimizer
        return self

    def step(self, loss=None, val_loss=None, grad_norm=None, **scalars):
        norms = {}
        for n, p in self.model.named_parameters():
            if p.grad is not None:
                norms[n] = float(p.grad.detach().float().norm())
        finite = [v for v in norms.values() if math.isfinite(v)]
        total = math.sqrt(sum(v * v for v in finite)) if len(finite) == len(norms) else float("nan")
        pfin = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None
        self.rows.append(
            dict(
                loss=float(loss) if loss is not None else None,
                val=val_loss,
                gn=total,
                norms=norms,
                pfin=pfin,
                lr=lr,
                clip=None if grad_norm is None else float(grad_norm),
                scalars={k: float(v) for k, v in scalars.items()},
            )
        )

    def flush(self, timeout=None):
        return True

    def close(self):
        pass


class AttentionBlock(nn.Module):
    """Pre-LN single-head self-attention + MLP block with separate q/k/v projections.

    ``scale`` multiplies the q.k scores (1/sqrt(d) is the textbook value).
    """

    def __init__(self, d: int, scale: float, causal: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.scale = scale
        self.causal = causal

    def forward(self, x):
        h = self.ln1(x)
        scores = self.q(h) @ self.k(h).transpose(1, 2) * self.scale
        if self.causal:
            t = x.shape[1]
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        x = x + self.o(scores.softmax(-1) @ self.v(h))
        return x + self.ff(self.ln2(x))
