"""Helpers for the tenth held-out set (not a scenario file): seeded generators and an offline recorder."""

from __future__ import annotations

import math

import torch


def gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class Recorder:
    """A stand-in for ``watch`` used only for independent checks (never by gradwatch eval)."""

    def __init__(self):
        self.rows = []

    def __call__(self, model, optimizer=None, **options):
        self.model = model
        return self

    def step(self, loss, val_loss=None, grad_norm=None):
        params = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
        norms = {n: float(p.grad.norm()) for n, p in params}
        total = math.sqrt(sum(v * v for v in norms.values())) if norms else 0.0
        pfin = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        self.rows.append(
            dict(
                loss=float(loss),
                val=val_loss,
                gn=total,
                first=next(iter(norms.values()), 0.0),
                last=list(norms.values())[-1] if norms else 0.0,
                pfin=pfin,
                clip=grad_norm,
            )
        )

    def close(self):
        pass
