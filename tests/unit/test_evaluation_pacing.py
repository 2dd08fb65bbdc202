"""Under load a run's rules run at most once per evaluate_min_interval; nothing is lost, and urgent data never waits.

Most tests here set paced_above_load=0 (pace every batch); the default paces only a busy aggregator.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.config import ServiceConfig, WindowConfig
from gradwatch.service.load import LoadMeter
from gradwatch.service.server import Service
from gradwatch.wire import Report, StepRecord


def _report(run: str, steps: range, loss=lambda s: 1.0 / (s + 1)) -> Report:
    return Report(run=run, steps=[StepRecord(step=s, loss=loss(s)) for s in steps])


def _spike_loss(s: int) -> float:
    return 50.0 if s == 45 else 1.0 + 0.01 * (s % 3)


def test_a_batch_defers_a_run_evaluated_within_the_interval_and_evaluate_due_takes_it_later():
    agg = Aggregator(ServiceConfig(evaluate_min_interval=1.0, paced_above_load=0))
    agg.ingest_many([_report("a", range(0, 40), _spike_loss)], now=100.0)  # alone: evaluated at once
    evaluations = agg._evaluations
    # Two reports in one call (the front batched them): "a" was evaluated 0.2 s ago, so its spike waits.
    results = agg.ingest_many([_report("a", range(40, 50), _spike_loss), _report("b", range(0, 5))], now=100.2)
    assert results[0] == [] and agg._evaluations == evaluations + 1  # only "b", never evaluated before
    assert agg.evaluate_due(now=100.5) == []  # still inside the interval
    (change,) = agg.evaluate_due(now=101.3)
    assert (change.kind, change.diagnosis["symptom"], change.diagnosis["step"]) == ("fired", "loss_spike", 45)
    assert agg.evaluate_due(now=105.0) == []  # evaluated once, nothing left


def test_a_run_faster_than_its_windows_is_evaluated_before_rows_fall_out_unseen():
    # 64-step windows and a 60 s interval: without the guard, the spike at step 45 would leave the
    # window in the batches that follow, all inside the interval, before any evaluation saw it.
    agg = Aggregator(ServiceConfig(evaluate_min_interval=60.0, windows=WindowConfig(steps=64), paced_above_load=0))
    agg.ingest_many([_report("a", range(0, 40), _spike_loss)], now=100.0)  # alone: evaluated at once
    fired = []
    for start in range(40, 400, 20):
        results = agg.ingest_many(
            [_report("a", range(start, start + 10), _spike_loss), _report("b", range(start, start + 10))], now=100.1
        )
        fired += [c for result in results for c in result if c.kind == "fired"]
    assert [(c.diagnosis["symptom"], c.diagnosis["step"]) for c in fired] == [("loss_spike", 45)]
    # Evaluations came at half-window intervals (every 4th batch here), not at every batch (36).
    assert agg._evaluations <= 36 // 2


def test_non_finite_loss_in_a_batch_is_evaluated_at_once_whatever_the_interval():
    agg = Aggregator(ServiceConfig(evaluate_min_interval=60.0, paced_above_load=0))
    agg.ingest_many([_report("a", range(0, 20))], now=100.0)
    nan = _report("a", range(20, 25), lambda s: math.nan if s >= 23 else 0.05)
    results = agg.ingest_many([nan, _report("b", range(0, 5))], now=100.1)
    assert [(c.kind, c.diagnosis["symptom"], c.diagnosis["step"]) for c in results[0]] == [("fired", "nonfinite", 23)]


def test_changes_of_direct_ingests_reach_the_front_once():
    """Ray Train workers call ingest() on the actor: the front learns of their diagnoses from evaluate_due()."""
    agg = Aggregator()
    agg.ingest(_report("a", range(0, 20)))
    fired = agg.ingest(_report("a", range(20, 25), lambda s: math.nan if s >= 22 else 0.05))
    assert [c.diagnosis["symptom"] for c in fired] == ["nonfinite"]
    assert [c.diagnosis["symptom"] for c in agg.evaluate_due()] == ["nonfinite"]
    assert agg.evaluate_due() == []


class _Backend:
    def __init__(self, batches: list[list]) -> None:
        self.batches = batches
        self.calls = 0

    async def evaluate_due(self) -> list:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("actor restarting")  # one failed round must not stop the loop
        return self.batches.pop(0) if self.batches else []


def test_the_service_dispatches_what_evaluate_due_returns_and_survives_a_failed_round():
    agg = Aggregator()
    agg.ingest(_report("a", range(0, 20)))
    agg.ingest(_report("a", range(20, 25), lambda s: math.nan if s >= 22 else 0.05))
    seen = []
    service = Service(ServiceConfig(evaluate_min_interval=0.01), on_change=seen.append)
    backend = _Backend([agg.evaluate_due()])

    async def run() -> None:
        task = asyncio.create_task(service._evaluation_loop(backend))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if seen:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert [c.diagnosis["symptom"] for c in seen] == ["nonfinite"] and backend.calls >= 2


def test_due_runs_are_evaluated_in_slices_longest_waiting_first(monkeypatch):
    import gradwatch.service.aggregator as aggregator_module

    agg = Aggregator(ServiceConfig(evaluate_min_interval=0.5, paced_above_load=0))
    for i, run in enumerate(("a", "b", "c")):
        agg.ingest_many([_report(run, range(0, 10))], now=100.0 + i)  # evaluated at 100, 101, 102
    for run in ("c", "a", "b"):
        agg.ingest_many([_report(run, range(10, 20)), _report("other", range(0, 2))], now=90.0)  # too soon: deferred
    monkeypatch.setattr(aggregator_module, "EVALUATION_SLICE_SECONDS", 0.0)  # one evaluation per call
    order = []
    for _ in range(4):  # "other" (deferred since 90) is first, then a, b, c
        before = {run: agg._runs[run].last_evaluated for run in "abc"}
        agg.evaluate_due(now=110.0)
        order += [run for run in "abc" if agg._runs[run].last_evaluated != before[run]]
    assert order == ["a", "b", "c"]
    assert agg.evaluate_due(now=111.0) == [] and not any(agg._runs[run].state.has_unseen for run in "abc")


def test_load_meter_prices_every_checkpoint_whether_or_not_it_was_evaluated():
    meter = LoadMeter(window=2.0)
    assert meter.share == 0.0  # a fresh aggregator evaluates everything
    meter.record(10.0, 10.5, evaluated=0.0, checkpoints=10, per_evaluation=0.01)
    assert meter.share == 0.0  # the first window is not complete yet
    # 0.5 s of ingest + 10 checkpoints at 10 ms, then a call of 0.5 s of which 0.4 s evaluating 5 checkpoints of
    # 20 in it: a paced call counts all 20 checkpoints, not the 0.4 s it spent on 5.
    meter.record(11.5, 12.0, evaluated=0.4, checkpoints=20, per_evaluation=0.01)
    assert meter.share == pytest.approx((0.5 + 0.1 + 0.1 + 0.2) / 2.0)
    meter.record(30.0, 30.1, evaluated=0.0, checkpoints=0, per_evaluation=0.01)  # a long idle gap is idle time
    assert meter.share == pytest.approx(0.1 / (30.1 - 12.0))
    meter.record(30.1, 32.1, evaluated=0.0, checkpoints=200, per_evaluation=0.01)
    assert meter.share == pytest.approx((2.0 + 2.0) / 2.0)  # above 1: more than it has


def _val_report(run: str, steps: range) -> Report:
    # Train loss falls throughout; held-out loss falls until step 60, then rises (overfitting), and a
    # loss spike at step 45 recovers at once.
    def val(s: int) -> float:
        return 1.0 - 0.005 * s if s <= 60 else 0.7 + 0.01 * (s - 60)

    return Report(
        run=run,
        steps=[
            StepRecord(
                step=s, loss=(20.0 if s == 45 else 2.0 / (1 + 0.02 * s)), val_loss=val(s) if s % 5 == 4 else None
            )
            for s in steps
        ],
    )


def test_an_aggregator_with_time_to_spare_evaluates_a_batch_as_if_each_report_came_alone():
    """Verdicts must not depend on how many agents post at once: batches are paced only when the shard is loaded."""
    single, batched = Aggregator(), Aggregator()
    reports = [_val_report(run, range(start, start + 5)) for start in range(0, 200, 5) for run in ("a", "b")]
    for report in reports:
        single.ingest_many([report], now=100.0)
    for i in range(0, len(reports), 4):
        batched.ingest_many(reports[i : i + 4], now=100.0)  # within the interval: pacing would defer most

    def key(agg: Aggregator, run: str) -> list:
        return [(d["symptom"], d["onset_step"], d["detected_step"], d["active"]) for d in agg.diagnoses(run)]

    assert not batched.paced
    assert key(batched, "a") == key(single, "a") and key(batched, "b") == key(single, "b")
    assert {d[0] for d in key(single, "a")} >= {"loss_spike", "overfitting"}
    assert batched._evaluations == single._evaluations


def test_a_busy_aggregator_paces_its_batches():
    agg = Aggregator(ServiceConfig(evaluate_min_interval=1.0))
    agg.ingest_many([_report("a", range(0, 40), _spike_loss)], now=100.0)
    agg._load = LoadMeter()
    agg._load.record(0.0, 2.0, evaluated=0.0, checkpoints=0, per_evaluation=0.0)  # two seconds of ingest out of two
    assert agg.paced and agg.snapshot().load == 1.0
    results = agg.ingest_many([_report("a", range(40, 50), _spike_loss), _report("b", range(0, 5))], now=100.2)
    assert results[0] == []  # "a" was evaluated 0.2 s ago: its spike waits for evaluate_due
    (change,) = agg.evaluate_due(now=101.3)
    assert (change.diagnosis["symptom"], change.diagnosis["step"]) == ("loss_spike", 45)
