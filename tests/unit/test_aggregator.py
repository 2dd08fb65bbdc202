"""The aggregator without Ray: windows, evaluation, snapshots, exposition and the HTTP layer."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from gradwatch.service.aggregator import Aggregator, IngestRefused
from gradwatch.service.backends import LocalBackend
from gradwatch.service.config import LimitsConfig, ServiceConfig
from gradwatch.service.exposition import SnapshotCollector
from gradwatch.service.http import make_app
from gradwatch.service.windows import Window
from gradwatch.wire import LayerStats, Report, StepRecord


def _layers(grad=(1.0, 2.0), weight_max=(0.5, 0.5)):
    return LayerStats(
        names=["in", "out"],
        numel=[10, 4],
        grad_norm=list(grad),
        grad_max_abs=[0.1, 0.2],
        weight_norm=[3.0, 4.0],
        weight_max_abs=list(weight_max),
        update_ratio=[1e-3, 2e-3],
    )


def _report(run="r", steps=range(5), rank=0, world_size=1, loss=lambda s: 1.0 / (s + 1), layers_at=(0,)):
    return Report(
        run=run,
        rank=rank,
        world_size=world_size,
        steps=[StepRecord(step=s, loss=loss(s), lr=0.1, layers=_layers() if s in layers_at else None) for s in steps],
    )


def test_window_keeps_the_newest_rows_and_tracks_unseen():
    window = Window(4, {"x": (float, ())})
    for i in range(11):
        window.append(x=i)
    assert window.column("x").tolist() == [7, 8, 9, 10]
    assert window.new_from() == 0
    window.mark_seen()
    window.append(x=11)
    assert window.column("x").tolist() == [8, 9, 10, 11] and window.new_from() == 3


def test_nan_loss_fires_nonfinite_at_its_step_and_shows_in_snapshot():
    agg = Aggregator()
    agg.ingest(_report(steps=range(20)))
    changes = agg.ingest(_report(steps=range(20, 25), loss=lambda s: math.nan if s >= 22 else 0.05))
    assert [(c.kind, c.diagnosis["symptom"], c.diagnosis["step"]) for c in changes] == [("fired", "nonfinite", 22)]
    (run,) = agg.snapshot().runs
    assert run.active["nonfinite"] is True and math.isnan(run.latest.loss)
    assert agg.runs()[0]["active_symptoms"] == ["nonfinite"]


def test_other_ranks_only_contribute_non_finite_values():
    agg = Aggregator()
    agg.ingest(_report(steps=range(10)), now=0.0)
    # Ranks 1 and 2 have not reported step 10 yet: the NaN's origin may still change.
    assert agg.ingest(_report(steps=[10], rank=3, world_size=4, loss=lambda s: math.inf), now=0.1) == []
    changes = agg.ingest(_report(steps=[11], rank=3, world_size=4, loss=lambda s: math.inf), now=2.5)
    assert changes[0].diagnosis["symptom"] == "nonfinite" and changes[0].diagnosis["rank"] == 3
    agg.ingest(_report(steps=range(10, 20), rank=2, world_size=4), now=3.0)
    assert agg.runs()[0]["step"] == 9  # healthy duplicates from rank 2 are not mixed in


def test_nan_origin_is_the_rank_that_saw_it_first_whatever_order_reports_arrive_in():
    agg = Aggregator()
    for rank in range(4):
        agg.ingest(_report(steps=range(10), rank=rank, world_size=4), now=0.0)
    nan_from = {2: 10, 0: 11, 1: 11, 3: 11}  # rank 2's batch was bad; the all-reduce spread it

    def from_rank(rank):
        return _report(steps=[10, 11], rank=rank, world_size=4, loss=lambda s: math.nan if s >= nan_from[rank] else 0.1)

    assert agg.ingest(from_rank(3), now=0.1) == []  # rank 3's NaN at 11 arrives first
    assert agg.ingest(from_rank(2), now=0.2) == []  # ranks 0 and 1 are still behind step 10
    assert agg.ingest(from_rank(0), now=0.3) == []
    (change,) = agg.ingest(from_rank(1), now=0.4)
    assert change.diagnosis["rank"] == 2 and change.diagnosis["onset_step"] == 10
    assert change.diagnosis["evidence"]["origin_ranks"] == [2]


def test_a_later_report_with_an_earlier_onset_moves_the_diagnosis_back():
    agg = Aggregator()
    agg.ingest(_report(steps=range(10), rank=0, world_size=2), now=0.0)
    agg.ingest(_report(steps=range(12), rank=1, world_size=2, loss=lambda s: math.nan if s >= 11 else 0.1), now=0.1)
    # Rank 0 never reports steps 10-11 in time: after the wait the incident fires as seen so far.
    (change,) = agg.ingest(_report(steps=[12], rank=1, world_size=2, loss=lambda s: math.nan), now=3.0)
    assert change.diagnosis["onset_step"] == 11 and change.diagnosis["rank"] == 1
    agg.ingest(_report(steps=[10, 11, 12], rank=0, world_size=2, loss=lambda s: math.nan), now=3.1)
    (item,) = [d for d in agg.diagnoses("r") if d["symptom"] == "nonfinite"]
    assert item["onset_step"] == 10 and item["step"] == 10 and item["rank"] == 0


def test_restarted_training_starts_new_windows():
    agg = Aggregator()
    agg.ingest(_report(steps=range(100)))
    agg.ingest(_report(steps=range(5)))
    assert agg.runs()[0]["step"] == 4


def test_records_re_sent_by_the_same_agent_session_are_ignored():
    agg = Aggregator()
    first = _report(steps=range(50)).model_copy(update={"session": "abc"})
    agg.ingest(first)
    # The agent never got the answer and re-sends an overlapping batch.
    agg.ingest(_report(steps=range(40, 60)).model_copy(update={"session": "abc"}))
    (run,) = agg.snapshot().runs
    assert run.latest.step == 59 and agg._runs["r"].state.restarts == 0
    assert agg._runs["r"].state.steps.column("step").tolist() == list(range(60))
    # A new session whose steps go back is a restart.
    agg.ingest(_report(steps=range(3)).model_copy(update={"session": "def"}))
    assert agg._runs["r"].state.restarts == 1


def test_limits_refuse_new_runs_and_wide_reports():
    agg = Aggregator(ServiceConfig(limits=LimitsConfig(max_runs=1, max_layers=1)))
    with pytest.raises(IngestRefused) as info:
        agg.ingest(_report(run="a"))
    assert info.value.status == 413
    assert agg.runs() == []  # nothing was kept of the refused report
    agg.ingest(_report(run="a", layers_at=()))
    with pytest.raises(IngestRefused) as info:
        agg.ingest(_report(run="b", layers_at=()))
    assert info.value.status == 429 and "max_runs" in info.value.reason


def test_idle_runs_make_room_for_new_ones():
    agg = Aggregator(ServiceConfig(limits=LimitsConfig(max_runs=1, run_idle_seconds=60)))
    agg.ingest(_report(run="old"), now=1000.0)
    agg.ingest(_report(run="new"), now=1061.0)
    assert [r["run"] for r in agg.runs()] == ["new"]


def test_exposition_is_exact_for_a_known_state():
    agg = Aggregator()
    agg.ingest(_report(run="exp", steps=range(3), layers_at=(2,)), now=1000.0)
    collector = SnapshotCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update([agg.snapshot()])
    text = generate_latest(registry).decode()
    assert 'gradwatch_symptom_active{run="exp",symptom="nonfinite"} 0.0' in text
    assert 'gradwatch_layer_grad_norm{layer="in",run="exp"} 1.0' in text
    assert 'gradwatch_layer_update_ratio{layer="out",run="exp"} 0.002' in text
    assert 'gradwatch_layer_nonfinite{layer="out",run="exp"} 0.0' in text
    assert 'gradwatch_step{run="exp"} 2.0' in text
    assert 'gradwatch_run_steps_total{run="exp"} 3.0' in text
    assert 'gradwatch_last_report_timestamp_seconds{run="exp"} 1000.0' in text
    assert "gradwatch_val_loss{" not in text  # never reported: absent, not NaN
    assert text.count("gradwatch_symptom_active{") == 6


def test_http_layer_over_an_in_process_aggregator():
    async def scenario():
        app = make_app(LocalBackend(Aggregator()), ServiceConfig(limits=LimitsConfig(max_body_bytes=4096)))
        async with TestClient(TestServer(app)) as client:
            body = _report(run="h", steps=range(3), loss=lambda s: math.nan if s == 2 else 1.0).model_dump_json()
            response = await client.post("/v1/reports", data=body)
            assert response.status == 202 and (await response.json()) == {"accepted": 3, "run": "h"}
            items = await (await client.get("/v1/runs/h/diagnoses")).json()
            assert items[0]["symptom"] == "nonfinite" and items[0]["evidence"]["loss_now"] == "NaN"
            response = await client.post("/v1/reports", data=b"x" * 5000)
            assert response.status == 413
            text = await (await client.get("/metrics")).text()
            assert 'gradwatch_ingest_rejected_reports_total{reason="too_large"} 1.0' in text
            assert 'gradwatch_http_requests_total{code="202",route="/v1/reports"} 1.0' in text
            runs = json.loads(await (await client.get("/v1/runs")).text())  # strict JSON parses
            assert runs[0]["loss"] == "NaN"

    asyncio.run(scenario())


def test_every_rank_gets_its_own_few_series_and_the_budget_holds():
    from prometheus_client import CollectorRegistry, generate_latest

    from gradwatch.service.exposition import SnapshotCollector

    agg = Aggregator()
    for rank in range(8):
        loss = (lambda s: math.nan) if rank == 5 else (lambda s: 0.5)
        agg.ingest(_report(steps=range(3), rank=rank, world_size=8, loss=loss, layers_at=(0,)), now=10.0)
    registry = CollectorRegistry()
    collector = SnapshotCollector()
    collector.update([agg.snapshot()])
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'gradwatch_rank_nonfinite_steps_total{rank="5",run="r"} 3.0' in text
    assert 'gradwatch_rank_nonfinite_steps_total{rank="4",run="r"} 0.0' in text
    assert 'gradwatch_rank_step{rank="7",run="r"} 2.0' in text
    per_rank = [line for line in text.splitlines() if line.startswith("gradwatch_rank_") and 'rank="3"' in line]
    assert 0 < len(per_rank) <= 10


def test_a_batch_answers_each_report_and_a_refused_one_leaves_the_others_alone():
    agg = Aggregator(ServiceConfig(limits=LimitsConfig(max_runs=2)))
    results = agg.ingest_many(
        [_report(run="a"), _report(run="b"), _report(run="c"), _report(run="a", steps=range(5, 9))]
    )
    assert [type(r).__name__ for r in results] == ["list", "list", "IngestRefused", "list"]
    assert results[2].status == 429
    assert sorted(r.run for r in agg.snapshot().runs) == ["a", "b"]
    assert agg.snapshot().runs[0].steps_received == 9


def test_a_batch_evaluates_each_run_once_and_a_nan_on_its_own_step():
    # evaluate_min_interval=0: every batch ends with an evaluation (pacing is tested in test_evaluation_pacing.py).
    batched, single = Aggregator(ServiceConfig(evaluate_min_interval=0, paced_above_load=0)), Aggregator()
    reports = [_report(steps=range(i * 5, i * 5 + 5), layers_at=(i * 5 + 4,)) for i in range(8)]
    reports.append(_report(steps=range(40, 45), loss=lambda s: math.nan if s == 42 else 0.05))
    for report in reports:
        single.ingest(report)
    results = batched.ingest_many(reports)
    assert batched.snapshot().evaluations_total == 2  # the NaN's step, then the end of the batch
    assert single.snapshot().evaluations_total > batched.snapshot().evaluations_total
    fired = [(c.kind, c.diagnosis["symptom"], c.diagnosis["step"]) for r in results for c in r]
    assert fired == [("fired", "nonfinite", 42)]

    def key(agg):
        return [(d["symptom"], d["onset_step"], d["active"], d["layer"]) for d in agg.diagnoses("r")]

    assert key(batched) == key(single) == [("nonfinite", 42, True, None)]


def test_ingest_refused_survives_the_trip_back_from_the_actor():
    import pickle

    refused = pickle.loads(pickle.dumps(IngestRefused(413, "too many layers")))
    assert (refused.status, refused.reason) == (413, "too many layers")


def test_fast_exposition_is_byte_identical_to_prometheus_client():
    """The /metrics text is rendered without prometheus-client's per-sample path; it must not differ by a byte."""
    agg = Aggregator()
    odd = LayerStats(
        names=['quote"d', "back\\slash", "new\nline", "per%cent", "big", "absent"],
        numel=[1] * 6,
        grad_norm=[math.nan, math.inf, 1e7, 123456789.0, -1e20, None],
        grad_max_abs=[math.nan, 1.0, 2.0, 3.0, math.inf, None],
        weight_norm=[1e-300, 0.0, -0.0, 2.5e15, 1e16, 7.0],
        weight_max_abs=[1.0] * 6,
    )
    agg.ingest(Report(run="x/y:z", steps=[StepRecord(step=0, loss=math.nan, lr=1e9, layers=odd, scalars={"s": 1.5})]))
    agg.ingest(_report(run="plain", steps=range(3), layers_at=(2,)))
    collector = SnapshotCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    for _ in range(2):  # the second render reuses the per-run templates
        collector.update([agg.snapshot()])
        assert collector.render() == generate_latest(registry)
    agg.ingest(_report(run="plain", steps=range(3, 6), layers_at=(5,)).model_copy(update={"session": "s2"}))
    collector.update([agg.snapshot()])
    assert collector.render() == generate_latest(registry)


def test_per_row_summaries_give_the_rules_the_same_findings_as_the_full_window():
    """The aggregator hands rules per-row summaries computed on arrival; without them rules recompute: same result."""
    import dataclasses

    import numpy as np

    from gradwatch.service import rules
    from gradwatch.service.config import WindowConfig
    from gradwatch.service.run_state import RunState

    rng = np.random.default_rng(3)
    names = [f"l{i}" for i in range(12)]
    state = RunState("r", WindowConfig(stat_rows=32))
    scale = np.ones(12)
    seen: set[str] = set()
    for step in range(120):
        if step >= 60:
            scale *= 1.3  # an explosion, so that the layer rules have something to find
        grads = list(rng.lognormal(-3, 0.3, 12) * scale)
        grads[step % 12] = None if step % 7 == 0 else grads[step % 12]
        grad_max = [None if g is None else g / 10 for g in grads]
        if step == 90:
            grad_max[3] = math.nan
        layers = LayerStats(
            names=names,
            numel=[10 * (i + 1) for i in range(12)],
            grad_norm=grads,
            grad_max_abs=grad_max,
            weight_norm=list(rng.lognormal(0, 0.01, 12) * (1 + step / 100)),
            weight_max_abs=[1.0] * 12,
            update_ratio=list(rng.lognormal(-7, 0.3, 12)) if step % 4 == 0 else None,
        )
        record = StepRecord(step=step, loss=1.0 + rng.random() / 10, lr=0.1, skipped=step == 75, layers=layers)
        state.ingest(Report(run="r", steps=[record]))
        view = state.view()
        assert view.row_summaries is not None
        plain = dataclasses.replace(view, row_summaries=None, cache={})
        with_summaries, without = rules.evaluate(view), rules.evaluate(plain)
        assert {k: f and (f.step, f.layer) for k, f in with_summaries.items()} == {
            k: f and (f.step, f.layer) for k, f in without.items()
        }, step
        seen |= {k for k, f in with_summaries.items() if f is not None}
        state.mark_seen()
    assert "exploding_gradient" in seen


def test_loss_spike_memo_between_evaluations_never_changes_a_finding():
    """Baselines reused from the previous evaluation give the findings a fresh computation gives, step by step."""
    import dataclasses

    import numpy as np

    from gradwatch.service import rules
    from gradwatch.service.config import WindowConfig
    from gradwatch.service.run_state import RunState

    rng = np.random.default_rng(5)
    state = RunState("r", WindowConfig(steps=64))
    fired = []
    for step in range(400):
        loss = 2.0 * np.exp(-step / 300) * rng.lognormal(0, 0.05)
        if step in (150, 151, 320):
            loss *= 6  # spikes, one of them after the window has rolled over many times
        state.ingest(Report(run="r", world_size=2, steps=[StepRecord(step=step, loss=float(loss))]))
        if step % 37 == 0:  # a NaN row from another rank changes the series' shape
            state.ingest(Report(run="r", rank=1, world_size=2, steps=[StepRecord(step=step, loss=math.nan)]))
        view = state.view()
        fresh = dataclasses.replace(view, memo={})
        memoised = rules.evaluate(view)["loss_spike"]
        plain = rules.evaluate(fresh)["loss_spike"]
        assert (memoised and (memoised.step, memoised.evidence)) == (plain and (plain.step, plain.evidence)), step
        fired.append(memoised is not None)
        state.mark_seen()
    assert any(fired)


def test_the_recurrence_and_whether_it_is_gated_reach_the_rules():
    agg = Aggregator(ServiceConfig())
    report = _report(steps=range(3))
    report.steps[0] = report.steps[0].model_copy(
        update={"recurrent_grad_ratio": 0.0, "recurrent_module": "gru", "recurrent_gated": True}
    )
    agg.ingest(report)
    view = agg._runs["r"].state.view()
    assert view.recurrent_module == "gru" and view.recurrent_gated is True


def test_a_settled_aggregator_freezes_what_is_alive_when_it_is_built():
    import gc

    from gradwatch.service.backends import _settled

    gc.unfreeze()
    try:
        aggregator = _settled(Aggregator)(ServiceConfig())
        assert gc.get_freeze_count() > 0
        assert type(aggregator).__name__ == "Aggregator"
        assert aggregator.runs() == []
    finally:
        gc.unfreeze()


def test_run_rules_turn_a_symptom_off_for_matching_runs_only():
    # A PPO run's surrogate loss jumps at every rollout by design; its operator turns loss_spike off for it.
    config = ServiceConfig.model_validate({"run_rules": [{"match": "ppo-*", "loss_spike": {"enabled": False}}]})
    agg = Aggregator(config)
    fired: dict[str, set[str]] = {}
    for run in ("ppo-1", "supervised"):
        for start in range(0, 200, 5):
            report = _report(
                run=run, steps=range(start, start + 5), loss=lambda s: 40.0 if s == 150 else 1.0 - s / 1000
            )
            fired.setdefault(run, set()).update(c.diagnosis["symptom"] for c in agg.ingest(report) if c.kind == "fired")
    assert fired == {"ppo-1": set(), "supervised": {"loss_spike"}}
