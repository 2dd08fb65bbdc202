"""The history behind the live page: ``GET /v1/runs/{run}/series``, bounded whatever the run's size.

A run's windows can hold up to 100,000 loss points and 20,000 layers; the page
polls every two seconds, so the answer is cut down here, on the aggregator,
before it is serialised:

- loss points: at most ``points``; each bucket of consecutive steps is
  represented by its highest loss, so a spike (or a NaN) is never averaged away;
- statistics rows (heatmap columns): at most ``columns``, the newest ones
  (the heatmap shows "now", and rows are already sparse: every ``stats_every``);
- layers (heatmap rows): at most ``rows``; consecutive layers beyond that are
  merged into one row whose value is their geometric mean (the heatmap's
  colours are logarithmic, so this is the mean of what the eye sees).

Absent values (a layer without a gradient at that step) are ``None``;
non-finite gradient norms stay non-finite, and the HTTP layer writes them as
the strings "NaN" / "Infinity".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from gradwatch.service.run_state import RunState


class SeriesLimits(BaseModel):
    """How much history one series answer may carry (the query parameters of the endpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    points: int = Field(default=600, ge=16, le=5_000, description="Loss/learning-rate points at most.")
    columns: int = Field(default=128, ge=8, le=1_024, description="Statistics rows (heatmap columns) at most.")
    rows: int = Field(default=256, ge=8, le=4_096, description="Layers (heatmap rows) at most; more are merged.")


def peak_buckets(values: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` entries of ``values``: the highest of each bucket of consecutive entries.

    Non-finite values rank above every finite one (they are what the page must
    show); the last entry is always kept so the curve ends at the newest step.
    """
    n = len(values)
    if n <= limit:
        return np.arange(n)
    edges = np.linspace(0, n, limit + 1).astype(np.int64)
    key = np.where(np.isfinite(values), values, np.inf)
    # NaN loss is data (a NaN step); only a missing value would be NaN here and
    # the loss window never stores those.
    picked = np.array([edges[i] + int(np.argmax(key[edges[i] : edges[i + 1]])) for i in range(limit)])
    picked[-1] = n - 1
    return np.unique(picked)


def merge_layers(matrix: np.ndarray, present: np.ndarray, names: tuple[str, ...], limit: int) -> tuple:
    """Merge consecutive layers (rows of ``matrix``, shape (L, T)) into at most ``limit`` rows.

    Returns ``(values, present, labels, counts)``: a merged row's value is the
    geometric mean of its present finite values, non-finite when any member is
    non-finite (so a NaN layer is never hidden), and absent when none is present.
    """
    n = matrix.shape[0]
    if n <= limit:
        return matrix, present, list(names), [1] * n
    edges = np.linspace(0, n, limit + 1).astype(np.int64)
    values = np.full((limit, matrix.shape[1]), math.nan)
    merged_present = np.zeros((limit, matrix.shape[1]), dtype=bool)
    labels, counts = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(limit):
            block, mask = matrix[edges[i] : edges[i + 1]], present[edges[i] : edges[i + 1]]
            finite = mask & np.isfinite(block) & (block > 0)
            logs = np.where(finite, np.log(np.where(finite, block, 1.0)), 0.0)
            count = finite.sum(axis=0)
            row = np.where(count > 0, np.exp(logs.sum(axis=0) / np.maximum(count, 1)), math.nan)
            # Zero gradients are present and finite but have no logarithm.
            row = np.where((count == 0) & (mask & (block == 0)).any(axis=0), 0.0, row)
            bad = mask & ~np.isfinite(block)
            row = np.where(bad.any(axis=0), block[np.argmax(bad, axis=0), np.arange(block.shape[1])], row)
            values[i] = row
            merged_present[i] = mask.any(axis=0)
            first, last = names[edges[i]], names[edges[i + 1] - 1]
            labels.append(first if first == last else f"{first} … {last}")
            counts.append(int(edges[i + 1] - edges[i]))
    return values, merged_present, labels, counts


def _cells(values: np.ndarray, present: np.ndarray) -> list[Any]:
    """One heatmap row: 4 significant digits (plenty for a colour), None where absent."""
    return [
        float(f"{v:.4g}") if p and math.isfinite(v) else (float(v) if p else None)
        for v, p in zip(values, present, strict=True)
    ]


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


def _optional(values: np.ndarray) -> list[float | None]:
    """Values that cannot be non-finite as data (learning rate): NaN means "not reported"."""
    return [float(v) if math.isfinite(v) else None for v in values]


def build_series(state: RunState, limits: SeriesLimits) -> dict[str, Any]:
    """The JSON body of ``GET /v1/runs/{run}/series`` for one run (see the module docstring)."""
    steps = state.steps
    loss_steps, loss, lr = steps.column("step"), steps.column("loss"), steps.column("lr")
    # Other ranks add their non-finite steps as they arrive: put them in step order.
    order = np.argsort(loss_steps, kind="stable")
    loss_steps, loss, lr = loss_steps[order], loss[order], lr[order]
    keep = peak_buckets(loss, limits.points)

    val_keep = peak_buckets(state.val.column("val_loss"), limits.points)

    names = state.layer_names
    if state.stats is not None and len(state.stats):
        stat_steps = state.stats.column("step")[-limits.columns :]
        grad = state.stats.column("grad_norm")[-limits.columns :]
        nonfinite = state.stats.column("grad_nonfinite")[-limits.columns :]
    else:
        stat_steps = np.zeros(0, dtype=np.int64)
        grad = np.zeros((0, len(names)))
        nonfinite = np.zeros((0, len(names)), dtype=bool)
    # A NaN norm is either "not measured" (None on the wire) or a NaN gradient;
    # the non-finite flag tells them apart.
    present = np.isfinite(grad) | nonfinite
    with np.errstate(invalid="ignore", over="ignore"):
        sumsq = np.where(present, grad, 0.0) ** 2
        total = np.sqrt(sumsq.sum(axis=1))
    # The agent's global norm is the same sum over the layers it measured.
    global_norm: list[float | None] = [float(v) if p else None for v, p in zip(total, present.any(axis=1), strict=True)]
    values, row_present, labels, counts = merge_layers(grad.T, present.T, names, limits.rows)

    return {
        "run": state.run,
        "step": state.latest.step,
        "finished": state.finished,
        "steps": [int(s) for s in loss_steps[keep]],
        "loss": _floats(loss[keep]),
        "lr": _optional(lr[keep]),
        "loss_points": int(len(loss_steps)),
        "val_steps": [int(s) for s in state.val.column("step")[val_keep]],
        "val_loss": _floats(state.val.column("val_loss")[val_keep]),
        "stat_steps": [int(s) for s in stat_steps],
        "grad_norm": global_norm,
        "layers": labels,
        "layer_count": len(names),
        "layer_rows": counts,
        "layer_grad_norm": [_cells(values[i], row_present[i]) for i in range(len(labels))],
        "limits": limits.model_dump(),
    }
