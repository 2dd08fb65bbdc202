"""A training restarted under the same run name (its step counter goes back) leaves consistent per-layer state."""

from __future__ import annotations

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.exposition import SnapshotCollector
from gradwatch.wire import Report


def _layers(names):
    n = len(names)
    return {
        "names": names,
        "numel": [1] * n,
        "grad_norm": [1.0] * n,
        "grad_max_abs": [1.0] * n,
        "weight_norm": [1.0] * n,
        "weight_max_abs": [1.0] * n,
    }


def test_a_restart_without_layer_stats_yet_keeps_metrics_and_layers_consistent():
    # Found by the ingest fuzz test: /metrics answered 500 for every run after one run restarted.
    agg = Aggregator()
    agg.ingest(Report.model_validate({"run": "r", "steps": [{"step": 10, "loss": 1.0, "layers": _layers(["a", "b"])}]}))
    agg.ingest(Report.model_validate({"run": "r", "steps": [{"step": 0, "loss": 1.0}]}))  # steps went back
    collector = SnapshotCollector()
    collector.update([agg.snapshot()])
    families = list(collector.collect())  # raised "zip() argument 2 is longer than argument 1"
    assert families
    layers = agg.layers("r")
    assert layers["layers"] == [] and layers["grad_norm"] is None


def test_records_re_sent_after_a_lost_answer_are_counted_once():
    # A 503 from an ingest that timed out while the actor still took the report makes the agent send it
    # again; /metrics must not count those steps twice (the load test's exact accounting relies on it).
    agg = Aggregator()
    report = Report.model_validate({"run": "r", "session": "s", "steps": [{"step": i, "loss": 1.0} for i in range(5)]})
    agg.ingest(report)
    agg.ingest(report)
    [run] = agg.snapshot().runs
    assert run.steps_received == 5 and run.reports == 2
    assert agg._runs["r"].state.steps_resent == 5
