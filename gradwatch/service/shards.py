"""Combining per-shard layer statistics (FSDP) into the true per-layer values.

A rank holding one shard of every layer reports the norms of its local piece.
For one step, with shards i = 1..n of a layer:

    ||g|| = sqrt(sum_i ||g_i||^2)        max|g| = max_i max|g_i|        numel = sum_i numel_i

and the update ratio, from ||dw_i|| = ratio_i * ||w_i|| (the weight before and
after one step differ by far less than the rounding this tolerates):

    ratio = sqrt(sum_i (ratio_i * ||w_i||)^2) / sqrt(sum_i ||w_i||^2)

A step is combined once all of its shards arrived; steps that never complete
(a rank died mid-step) are dropped after ``max_pending`` newer steps.
"""

from __future__ import annotations

import math

import numpy as np

from gradwatch.wire import LayerStats


def _column(stats: LayerStats, name: str) -> np.ndarray:
    values = getattr(stats, name)
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _present(stats: LayerStats, name: str) -> np.ndarray:
    return np.array([v is not None for v in getattr(stats, name)], dtype=bool)


def combine_shards(shards: list[LayerStats]) -> LayerStats:
    """The whole layers' statistics from the statistics of all their shards (same layer names).

    NaN/Inf in any shard is data and carries into the layer's value; a shard
    without a gradient for a layer (``None``) adds nothing to it.
    """

    def stacked(name: str) -> tuple[np.ndarray, np.ndarray]:
        present = np.stack([_present(s, name) for s in shards])
        return np.where(present, np.stack([_column(s, name) for s in shards]), 0.0), present

    with np.errstate(all="ignore"):
        weight_norm, _ = stacked("weight_norm")
        grad_norm, grad_present = stacked("grad_norm")
        grad_max, _ = stacked("grad_max_abs")
        weight_max, _ = stacked("weight_max_abs")
        no_grad = ~grad_present.any(axis=0)
        weight_sumsq = np.sum(weight_norm * weight_norm, axis=0)
        update: list[float | None] | None = None
        if all(s.update_ratio is not None for s in shards):
            ratio, ratio_present = stacked("update_ratio")
            delta = np.sqrt(np.sum((ratio * weight_norm) ** 2, axis=0))
            update = _none_where(delta / np.sqrt(weight_sumsq), ~ratio_present.all(axis=0))
        combined = LayerStats(
            names=list(shards[0].names),
            numel=[sum(column) for column in zip(*(s.numel for s in shards), strict=True)],
            grad_norm=_none_where(np.sqrt(np.sum(grad_norm * grad_norm, axis=0)), no_grad),
            # np.max, not nanmax: a shard holding NaN makes the layer's max-abs NaN.
            grad_max_abs=_none_where(np.max(grad_max, axis=0), no_grad),
            weight_norm=np.sqrt(weight_sumsq).tolist(),
            weight_max_abs=np.max(weight_max, axis=0).tolist(),
            update_ratio=update,
        )
    return combined


def _none_where(values: np.ndarray, missing: np.ndarray) -> list[float | None]:
    return [None if m else float(v) for v, m in zip(values, missing, strict=True)]


class ShardCombiner:
    """Collects the shards of each step's layer statistics; hands back whole steps."""

    def __init__(self, max_pending: int = 16) -> None:
        self.max_pending = max_pending
        self._pending: dict[int, dict[int, LayerStats]] = {}
        #: Steps given up on because a shard never arrived.
        self.incomplete_steps = 0

    def add(self, step: int, index: int, count: int, stats: LayerStats) -> LayerStats | None:
        """Add shard ``index`` of ``count`` for ``step``; the combined statistics once all are in."""
        shards = self._pending.setdefault(step, {})
        if shards and next(iter(shards.values())).names != stats.names:
            shards.clear()  # the model changed under the same run: start this step again
        shards[index] = stats
        if len(shards) >= count:
            del self._pending[step]
            return combine_shards([shards[i] for i in sorted(shards)])
        while len(self._pending) > self.max_pending:
            del self._pending[min(self._pending)]
            self.incomplete_steps += 1
        return None
