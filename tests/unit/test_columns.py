"""Statistics rows as arrays (service/columns.py): what the HTTP front hands the aggregator actor."""

from __future__ import annotations

import math
import pickle

import numpy as np

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.columns import ColumnarReport, LayerColumns, LayoutCache
from gradwatch.service.shards import ShardCombiner
from gradwatch.service.snapshots import decode, encode
from gradwatch.wire import LayerStats, Report, StepRecord


def _stats(grad_max: list[float | None], update: list[float | None] | None = None) -> LayerStats:
    n = len(grad_max)
    return LayerStats(
        names=[f"l{i}" for i in range(n)],
        numel=[10 * (i + 1) for i in range(n)],
        grad_norm=[None if g is None else 2.0 * g for g in grad_max],
        grad_max_abs=grad_max,
        weight_norm=[1.0] * n,
        weight_max_abs=[0.5] * n,
        update_ratio=update,
    )


def test_null_is_not_measured_and_nan_is_data():
    row = LayerColumns.of(_stats([1.0, None, math.nan]))
    assert row.grad_max_abs.present.tolist() == [True, False, True]
    assert row.grad_max_abs.values[0] == 1.0
    assert math.isnan(row.grad_max_abs.values[1]) and math.isnan(row.grad_max_abs.values[2])
    assert row.weight_norm.present.all() and row.numel.tolist() == [10, 20, 30]
    assert row.update_ratio is None  # not sampled on this row


def test_update_ratio_keeps_its_own_mask():
    row = LayerColumns.of(_stats([1.0, 2.0], update=[1e-3, None]))
    assert row.update_ratio is not None
    assert row.update_ratio.present.tolist() == [True, False]
    assert row.update_ratio.values[0] == 1e-3


def test_a_report_becomes_rows_aligned_with_its_steps():
    report = Report(
        run="r",
        steps=[StepRecord(step=0, loss=1.0), StepRecord(step=1, loss=1.0, layers=_stats([1.0, 2.0]))],
    )
    columnar = ColumnarReport.of(report)
    assert columnar.rows[0] is None and columnar.rows[1] is not None
    assert all(step.layers is None for step in columnar.report.steps)  # carried once, as arrays
    assert [s.step for s in columnar.report.steps] == [0, 1]
    assert ColumnarReport.of(columnar) is columnar


def test_layouts_are_shared_so_a_batch_pickles_names_once():
    layouts = LayoutCache()
    a = LayerColumns.of(_stats([1.0] * 50), layouts)
    b = LayerColumns.of(_stats([2.0] * 50), layouts)
    assert a.names is b.names
    one = len(pickle.dumps([a], protocol=5))
    two = len(pickle.dumps([a, b], protocol=5))
    names = len(pickle.dumps(a.names, protocol=5))
    assert two - one < one - names + 100  # the second row adds its numbers, not its names again
    back = pickle.loads(pickle.dumps(b, protocol=5))
    assert back.names == b.names and np.array_equal(back.values, b.values, equal_nan=True)


def test_ingesting_the_wire_or_the_columnar_form_gives_the_same_state():
    def report(step: int) -> Report:
        grads = [1.0, None, math.inf] if step == 3 else [1.0, None, 0.5]
        return Report(run="r", steps=[StepRecord(step=step, loss=1.0, layers=_stats(grads, update=[1e-3] * 3))])

    wire, columnar = Aggregator(), Aggregator()
    for step in range(5):
        wire.ingest(report(step), now=100.0)
        columnar.ingest(ColumnarReport.of(report(step), LayoutCache()), now=100.0)
    assert wire.diagnoses("r") == columnar.diagnoses("r")
    assert any(d["symptom"] == "nonfinite" for d in wire.diagnoses("r") or [])
    a, b = wire._runs["r"].state, columnar._runs["r"].state
    for name in ("grad_norm", "weight_norm", "update_ratio", "grad_nonfinite", "summary"):
        assert np.array_equal(a.stats.column(name), b.stats.column(name), equal_nan=True)


def test_pending_shards_survive_a_snapshot():
    # In their wire form they could not: snapshots decode only the service's own classes.
    combiner = ShardCombiner()
    assert combiner.add(7, 0, 2, LayerColumns.of(_stats([1.0, 2.0]))) is None
    restored = decode(encode(combiner))
    whole = restored.add(7, 1, 2, LayerColumns.of(_stats([3.0, 4.0])))
    assert whole is not None and whole.grad_max_abs.values.tolist() == [3.0, 4.0]
