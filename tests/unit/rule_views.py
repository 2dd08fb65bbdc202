"""Builders of synthetic RunViews shared by the table-driven rule tests."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from gradwatch.service.rules import Finding, RunView

STRIDE = 5


def make_view(
    loss: Any = None,
    *,
    steps: int | None = None,
    lr: Any = 1e-3,
    skipped: Any = False,
    val: tuple[Any, Any] | None = None,
    grad: Any = None,
    weight: Any = None,
    update: Any = None,
    grad_bad: Any = None,
    weight_bad: Any = None,
    numel: Any = 1000,
    new_loss_from: int = 0,
    new_stat_from: int = 0,
    new_val_from: int = 0,
    loss_rank: Any = None,
    norm_bad: Any = False,
    recurrent: Any = None,
    gated: bool | None = None,
    missing: Any = None,
) -> RunView:
    """Build a RunView; layer arrays are (S, L) with row s at step s * STRIDE."""
    loss = np.asarray(loss if loss is not None else np.ones(steps or 0), dtype=float)
    t = loss.size
    grad = np.zeros((0, 0)) if grad is None else np.asarray(grad, dtype=float)
    s, n_layers = grad.shape
    ones = np.ones((s, n_layers))
    return RunView(
        layers=tuple(f"layer{i}" for i in range(n_layers)),
        layer_numel=np.broadcast_to(np.asarray(numel, dtype=np.int64), (n_layers,)).copy(),
        loss_steps=np.arange(t, dtype=np.int64),
        loss=loss,
        lr=np.broadcast_to(np.asarray(lr, dtype=float), (t,)).copy(),
        skipped=np.broadcast_to(np.asarray(skipped, dtype=bool), (t,)).copy(),
        step_grad_nonfinite=np.broadcast_to(np.asarray(norm_bad, dtype=bool), (t,)).copy(),
        val_steps=np.asarray(val[0] if val else [], dtype=np.int64),
        val_loss=np.asarray(val[1] if val else [], dtype=float),
        stat_steps=np.arange(s, dtype=np.int64) * STRIDE,
        grad_norm=grad,
        weight_norm=ones * 10.0 if weight is None else np.asarray(weight, dtype=float),
        update_ratio=ones * np.nan if update is None else np.asarray(update, dtype=float),
        grad_nonfinite=np.zeros((s, n_layers), bool) if grad_bad is None else np.asarray(grad_bad, bool),
        weight_nonfinite=np.zeros((s, n_layers), bool) if weight_bad is None else np.asarray(weight_bad, bool),
        grad_missing=np.zeros((s, n_layers), bool) if missing is None else np.asarray(missing, bool),
        new_loss_from=new_loss_from,
        new_stat_from=new_stat_from,
        new_val_from=new_val_from,
        loss_rank=np.zeros(0, np.int64) if loss_rank is None else np.asarray(loss_rank, np.int64),
        recurrent_ratio=np.full(s, np.nan) if recurrent is None else np.asarray(recurrent, dtype=float),
        recurrent_module=None if recurrent is None else "rnn",
        recurrent_gated=gated,
        # As the service does: the median of the run's first five finite losses.
        initial_loss=float(np.median(loss[np.isfinite(loss)][:5])) if np.isfinite(loss).any() else float("nan"),
    )


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def decaying_loss(t: int = 500, seed: int = 0, noise: float = 0.02, start: float = 4.0, end: float = 2.0) -> np.ndarray:
    """A loss falling from ``start`` towards ``end`` with multiplicative lognormal noise."""
    x = np.arange(t)
    return (end + (start - end) * np.exp(-x / 150)) * np.exp(noise * rng(seed).standard_normal(t))


def noisy_grads(rows: int = 64, n_layers: int = 8, seed: int = 0, sigma: float = 0.2, scale: float = 1.0) -> np.ndarray:
    return scale * np.exp(sigma * rng(seed).standard_normal((rows, n_layers)))


def assert_plain_json(obj: Any) -> None:
    """Evidence must be plain Python (no numpy scalars) and JSON-serialisable."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str
            assert_plain_json(v)
    elif isinstance(obj, list):
        for v in obj:
            assert_plain_json(v)
    else:
        assert obj is None or type(obj) in (bool, int, float, str), (obj, type(obj))
    json.dumps(obj)


def check(finding: Finding | None, symptom: str, step: int | None = None) -> Finding:
    assert finding is not None, f"{symptom} did not fire"
    assert finding.symptom == symptom
    if step is not None:
        assert finding.step == step
    assert_plain_json(finding.evidence)
    assert isinstance(finding.advice, str) and finding.advice
    assert finding.layer is None or isinstance(finding.layer, str)
    return finding


def sampled(value: float, rows: int = 64, n_layers: int = 4) -> np.ndarray:
    u = np.full((rows, n_layers), np.nan)
    u[::4] = value
    return u


def explode_after(rows: int, start: int, factor: float, n_layers: int = 8, seed: int = 0) -> np.ndarray:
    g = noisy_grads(rows, n_layers, seed)
    k = np.arange(rows) - start + 1
    return g * np.where(k > 0, factor ** np.maximum(k, 0), 1.0)[:, None]


def hinge_with_exact_zeros() -> RunView:
    """A margin-ranking loss near convergence: on half the statistics steps, and the newest four, every margin
    is met, so the loss, the gradients and (plain SGD) the update are exactly 0; the other rows are healthy."""
    loss = 0.01 * np.abs(rng(21).standard_normal(320))
    zero_rows = (np.arange(64) % 2 == 0) | (np.arange(64) >= 60)
    loss[np.arange(64)[zero_rows] * STRIDE] = 0.0
    grad = noisy_grads(64, 4) * ~zero_rows[:, None]
    update = np.full((64, 4), np.nan)
    update[::4] = 1e-3
    update[zero_rows & ~np.isnan(update[:, 0])] = 0.0
    return make_view(loss, grad=grad, update=update)
