"""Aggregator snapshots: a faithful round trip, no code execution, damage tolerated, cost bounded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gradwatch.service.config import ServiceConfig, SnapshotConfig
from gradwatch.service.snapshots import (
    LEGACY_SNAPSHOT_FILE,
    SNAPSHOT_FILE,
    SnapshotError,
    SnapshottingAggregator,
    decode,
    encode,
    read_snapshot,
)
from gradwatch.wire import Report


def _layers(n: int) -> dict:
    return {
        "names": [f"l{i}" for i in range(n)],
        "numel": [10] * n,
        "grad_norm": [1.0] * (n - 1) + [None],
        "grad_max_abs": [1.0] * (n - 1) + [None],
        "weight_norm": [2.0] * n,
        "weight_max_abs": [1.0] * (n - 1) + [math.inf],
    }


def _config(tmp_path, background: bool = True) -> ServiceConfig:
    return ServiceConfig(snapshots=SnapshotConfig(dir=str(tmp_path), background=background))


def _feed(agg: SnapshottingAggregator) -> None:
    steps = [
        {"step": s, "loss": math.nan if s == 30 else 1.0, "layers": _layers(3) if s % 5 == 0 else None}
        for s in range(40)
    ]
    agg.ingest(
        Report.model_validate({"run": "a", "session": "x", "rank": 0, "world_size": 2, "steps": steps}), now=100.0
    )
    agg.ingest(Report.model_validate({"run": "b", "steps": [{"step": 0, "loss": 2.0}]}), now=101.0)


@pytest.mark.parametrize("background", [True, False], ids=["forked-writer", "in-line"])
def test_a_restored_aggregator_is_the_same_aggregator(tmp_path, background):
    first = SnapshottingAggregator(_config(tmp_path, background))
    _feed(first)
    assert first.save_snapshot()
    assert not first.save_snapshot()  # in flight, or nothing changed: nothing written
    first._reap(block=True)
    assert first._saved_reports == first._reports  # counted once the writer succeeded
    assert not first.save_snapshot()  # nothing changed: nothing written
    second = SnapshottingAggregator(_config(tmp_path))
    assert second.restored_from is not None
    assert second.runs() == first.runs()
    assert json.dumps(second.diagnoses("a")) == json.dumps(first.diagnoses("a"))  # NaN-safe comparison
    assert second.snapshot().runs[0].alerts == first.snapshot().runs[0].alerts
    view_a, view_b = first._runs["a"].state.view(), second._runs["a"].state.view()
    for name in ("loss", "grad_norm", "weight_norm", "update_ratio"):
        np.testing.assert_array_equal(getattr(view_a, name), getattr(view_b, name))
    # It carries on identically: the same report gives the same changes, re-sent records stay ignored.
    more = Report.model_validate(
        {"run": "a", "session": "x", "steps": [{"step": s, "loss": 1.0} for s in range(35, 80)]}
    )
    assert [c.kind for c in first.ingest(more, now=200.0)] == [c.kind for c in second.ingest(more, now=200.0)]
    assert second.runs() == first.runs()


def test_decoding_builds_only_gradwatch_service_classes():
    with pytest.raises(SnapshotError, match="outside"):
        decode({"__obj__": "os:system", "attrs": {}})
    with pytest.raises(SnapshotError, match="outside"):
        decode({"__model__": "subprocess:Popen", "data": {}})
    with pytest.raises(SnapshotError, match="not allowed"):
        decode({"__nd__": "|O", "shape": [1], "b64": ""})
    with pytest.raises(TypeError):
        encode(object())
    value = {"t": (1, 2), "s": {3}, 4: np.arange(3, dtype=np.int64)}
    back = decode(json.loads(json.dumps(encode(value))))
    assert back["t"] == (1, 2) and back["s"] == {3} and back[4].tolist() == [0, 1, 2] and back[4].flags.writeable


def test_a_damaged_snapshot_is_ignored_not_a_crash_loop(tmp_path, caplog):
    (tmp_path / SNAPSHOT_FILE).write_text('{"format": 1, "written_at": 0, "state": {"_runs": {"__obj__": "os:x"}}}')
    agg = SnapshottingAggregator(_config(tmp_path))
    assert agg.runs() == [] and agg.restored_from is None
    assert "ignoring the aggregator snapshot" in caplog.text


def test_a_format_1_snapshot_still_restores(tmp_path):
    # Format 1, written by earlier versions: all JSON, arrays as base64, in aggregator.json.
    first = SnapshottingAggregator(_config(tmp_path, background=False))
    _feed(first)
    body = {"format": 1, "written_at": 5.0, "state": {k: encode(v) for k, v in first.saved_state().items()}}
    (tmp_path / LEGACY_SNAPSHOT_FILE).write_text(json.dumps(body))
    second = SnapshottingAggregator(_config(tmp_path, background=False))
    assert second.restored_from == 5.0 and second.runs() == first.runs()
    assert json.dumps(second.diagnoses("a")) == json.dumps(first.diagnoses("a"))
    second.ingest(Report.model_validate({"run": "b", "steps": [{"step": 1, "loss": 2.0}]}))
    assert second.save_snapshot()
    # The first snapshot in format 2 replaces it: a stale state cannot return if that one is removed.
    assert (tmp_path / SNAPSHOT_FILE).exists() and not (tmp_path / LEGACY_SNAPSHOT_FILE).exists()


def test_a_truncated_snapshot_is_refused(tmp_path, caplog):
    agg = SnapshottingAggregator(_config(tmp_path, background=False))
    _feed(agg)
    assert agg.save_snapshot()
    path = tmp_path / SNAPSHOT_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SnapshotError, match="truncated"):
        read_snapshot(path)
    assert SnapshottingAggregator(_config(tmp_path)).runs() == []


def test_snapshots_are_throttled_to_a_fraction_of_the_actor_time(tmp_path):
    agg = SnapshottingAggregator(_config(tmp_path))
    _feed(agg)
    assert agg.save_snapshot()
    agg._reap(block=True)
    agg._next_save_allowed += 3600  # as if the last snapshot had been slow
    agg.ingest(Report.model_validate({"run": "b", "steps": [{"step": 1, "loss": 2.0}]}))
    assert not agg.save_snapshot()
    assert agg.save_snapshot(force=True)  # the last one, at shutdown
    agg.ingest(Report.model_validate({"run": "b", "steps": [{"step": 2, "loss": 2.0}]}))
    agg._next_save_allowed = 0.0
    assert agg.save_snapshot()
    agg._reap(block=True)
    assert agg._saved_reports == agg._reports


def test_disabled_snapshots_write_nothing(tmp_path):
    agg = SnapshottingAggregator(ServiceConfig(snapshots=SnapshotConfig(enabled=False, dir=str(tmp_path))))
    _feed(agg)
    assert not agg.save_snapshot()
    assert not (tmp_path / SNAPSHOT_FILE).exists()


def test_a_window_saves_its_live_rows_only_and_reads_an_older_whole_buffer_save():
    from gradwatch.service.windows import Window

    window = Window(4, {"x": (np.float64, ()), "v": (np.float64, (3,))})
    for i in range(7):
        window.append(x=i, v=np.full(3, i))
    window.mark_seen()
    window.append(x=99, v=np.zeros(3))
    data = encode(window)
    assert data["attrs"]["rows"]["__dict__"][0][1]["shape"] == [4]  # not the 8-row buffer
    restored = decode(data)
    assert restored.column("x").tolist() == [4, 5, 6, 99] and restored.new_from() == 3
    restored.append(x=100, v=np.ones(3))
    assert restored.column("x").tolist() == [5, 6, 99, 100] and restored.column("v")[-1].tolist() == [1, 1, 1]
    # A snapshot from before windows saved their rows only held the whole object.
    older = {"__obj__": data["__obj__"], "attrs": {k: encode(v) for k, v in vars(window).items()}}
    assert decode(older).column("x").tolist() == [4, 5, 6, 99]
