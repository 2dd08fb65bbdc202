"""Combining FSDP shards' layer statistics into whole-layer values (pure, no torch.distributed)."""

from __future__ import annotations

import math

import pytest
import torch

from gradwatch.service.columns import LayerColumns
from gradwatch.service.shards import ShardCombiner, combine_shards
from gradwatch.wire import LayerStats


def _stats(
    pieces: list[torch.Tensor],
    grads: list[torch.Tensor | None],
    ratio: list[float] | None = None,
    missing: list[int] | None = None,
) -> LayerColumns:
    wire = LayerStats(
        names=[f"l{i}" for i in range(len(pieces))],
        numel=[p.numel() for p in pieces],
        grad_norm=[None if g is None else float(g.norm()) for g in grads],
        grad_max_abs=[None if g is None else float(g.abs().max()) if g.numel() else 0.0 for g in grads],
        weight_norm=[float(p.norm()) for p in pieces],
        weight_max_abs=[float(p.abs().max()) if p.numel() else 0.0 for p in pieces],
        update_ratio=ratio,
        grad_missing=missing,
    )
    return LayerColumns.of(wire)


def test_combined_shards_equal_the_whole_layer():
    torch.manual_seed(0)
    weights = [torch.randn(10, 7), torch.randn(5)]
    grads = [torch.randn(10, 7), torch.randn(5)]
    shards = [
        _stats(
            [w.chunk(3)[i] if i < len(w.chunk(3)) else w[:0] for w in weights],
            [g.chunk(3)[i] if i < len(g.chunk(3)) else g[:0] for g in grads],
        )
        for i in range(3)
    ]
    whole = combine_shards(shards)
    for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
        assert math.isclose(whole.weight_norm.values[i], float(w.norm()), rel_tol=1e-6)
        assert math.isclose(whole.grad_norm.values[i], float(g.norm()), rel_tol=1e-6)
        assert whole.grad_max_abs.values[i] == pytest.approx(float(g.abs().max()))
        assert whole.grad_max_abs.present[i] and whole.weight_max_abs.present[i]
        assert whole.numel[i] == w.numel()


def test_update_ratio_and_missing_gradients_combine():
    a, b = torch.ones(4), 3 * torch.ones(4)
    shards = [_stats([a], [None], ratio=[0.1]), _stats([b], [None], ratio=[0.2])]
    whole = combine_shards(shards)
    # A frozen layer stays "not measured".
    assert not whole.grad_norm.present[0] and not whole.grad_max_abs.present[0]
    expected = math.sqrt((0.1 * 2) ** 2 + (0.2 * 6) ** 2) / math.sqrt(2**2 + 6**2)
    assert whole.update_ratio is not None and whole.update_ratio.values[0] == pytest.approx(expected)


def test_a_layer_misses_its_gradient_only_when_no_shard_has_one():
    w, g = torch.ones(4), torch.ones(4)
    # Layer 0: no shard has a gradient, one says the optimizer expects it. Layer 1: one shard has a gradient.
    shards = [_stats([w, w], [None, None], missing=[0, 1]), _stats([w, w], [None, g], missing=[0])]
    assert combine_shards(shards).grad_missing == (0,)


def test_a_nan_in_one_shard_makes_the_layer_nan():
    shards = [_stats([torch.ones(2)], [torch.ones(2)]), _stats([torch.ones(2)], [torch.tensor([1.0, math.nan])])]
    whole = combine_shards(shards)
    assert math.isnan(whole.grad_max_abs.values[0]) and math.isnan(whole.grad_norm.values[0])
    assert whole.grad_max_abs.present[0]  # NaN is data, not "not measured"


def test_combiner_waits_for_every_shard_and_drops_steps_that_never_complete():
    combiner = ShardCombiner(max_pending=2)
    part = _stats([torch.ones(2)], [torch.ones(2)])
    assert combiner.add(0, 0, 2, part) is None
    assert combiner.add(0, 1, 2, part).weight_norm.values[0] == pytest.approx(2.0)
    for step in (1, 2, 3):  # shard 1 of these steps never arrives
        assert combiner.add(step, 0, 2, part) is None
    assert combiner.incomplete_steps == 1
