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

import numpy as np

from gradwatch.service.columns import Column, LayerColumns


def combine_shards(shards: list[LayerColumns]) -> LayerColumns:
    """The whole layers' statistics from the statistics of all their shards (same layer names).

    NaN/Inf in any shard is data and carries into the layer's value; a shard
    without a gradient for a layer (not present) adds nothing to it.
    """

    def stacked(name: str) -> tuple[np.ndarray, np.ndarray]:
        columns = [s.column(name) for s in shards]
        present = np.stack([c.present for c in columns])
        return np.where(present, np.stack([c.values for c in columns]), 0.0), present

    with np.errstate(all="ignore"):
        weight_norm, weight_present = stacked("weight_norm")
        has_weight = weight_present.any(axis=0)
        grad_norm, grad_present = stacked("grad_norm")
        grad_max, _ = stacked("grad_max_abs")
        weight_max, _ = stacked("weight_max_abs")
        has_grad = np.asarray(grad_present.any(axis=0))
        weight_sumsq = np.sum(weight_norm * weight_norm, axis=0)
        update: Column | None = None
        if all(s.update_ratio is not None for s in shards):
            ratio, ratio_present = stacked("update_ratio")
            delta = np.sqrt(np.sum((ratio * weight_norm) ** 2, axis=0))
            update = _masked(delta / np.sqrt(weight_sumsq), ratio_present.all(axis=0))
        columns = {
            "grad_norm": _masked(np.sqrt(np.sum(grad_norm * grad_norm, axis=0)), has_grad),
            # np.max, not nanmax: a shard holding NaN makes the layer's max-abs NaN.
            "grad_max_abs": _masked(np.max(grad_max, axis=0), has_grad),
            "weight_norm": _masked(np.sqrt(weight_sumsq), has_weight),
            "weight_max_abs": _masked(np.max(weight_max, axis=0), has_weight),
            "update_ratio": update,
        }
    # A layer some shard trains without a gradient, and no shard has one for: the loss does not reach it.
    missing = sorted(i for i in set().union(*(s.grad_missing for s in shards)) if not has_grad[i])
    numel = np.sum(np.stack([s.numel for s in shards]), axis=0)
    return LayerColumns.from_columns(shards[0].names, numel, columns, tuple(missing))


def _masked(values: np.ndarray, present: np.ndarray | np.bool_) -> Column:
    mask = np.asarray(present, dtype=bool)
    return Column(np.where(mask, values, np.nan), mask)


class ShardCombiner:
    """Collects the shards of each step's layer statistics; hands back whole steps."""

    def __init__(self, max_pending: int = 16) -> None:
        self.max_pending = max_pending
        self._pending: dict[int, dict[int, LayerColumns]] = {}
        #: Steps given up on because a shard never arrived.
        self.incomplete_steps = 0

    def add(self, step: int, index: int, count: int, stats: LayerColumns) -> LayerColumns | None:
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
