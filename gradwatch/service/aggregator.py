"""The aggregator: per-run state, incremental rule evaluation, snapshots.

:class:`Aggregator` is plain Python so it can be tested directly; the service
runs it as a named, detached, restartable Ray actor (see
:func:`gradwatch.service.ray_actor.start_aggregator`). Ray calls an actor's
methods one at a time, so nothing here needs a lock.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradwatch.service import rules
from gradwatch.service.columns import ColumnarReport, LayerColumns
from gradwatch.service.config import ServiceConfig
from gradwatch.service.diagnoses import Change, DiagnosisTracker, alert_labels
from gradwatch.service.load import LoadMeter
from gradwatch.service.metrics_state import AggregatorSnapshot, RunSnapshot
from gradwatch.service.page.series import SeriesLimits, build_series
from gradwatch.service.run_state import RunState
from gradwatch.wire import Report, StepRecord

#: A NaN reaches every data-parallel rank through the gradient all-reduce, and
#: ranks' reports race each other. Before a new ``nonfinite`` fires in a
#: multi-rank run, wait this long for every rank to report up to its onset, so
#: the rank it names is where it began, not whichever report came first.
NAN_ORIGIN_WAIT_SECONDS = 2.0
#: Under load, evaluations of runs that came due run in slices of about this long per
#: actor call (ingest waits behind them); runs left over are first in line next time.
#: A report waits out about three calls (the one running, the one queued, its own), so the
#: slice sets much of the ingest latency: 10 ms, then 4, now 2 (one 1,000-layer run, about).
#: Under saturation each run is then evaluated less often than evaluate_min_interval, which
#: moves when a diagnosis is seen, not its onset step.
EVALUATION_SLICE_SECONDS = 0.002
#: Changes kept for the front from direct ingests (bounded if no front collects them).
_MAX_UNDISPATCHED = 1000

logger = logging.getLogger("gradwatch.service")


class IngestRefused(Exception):
    """A report that is valid but cannot be taken; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[int, str]]:
        # Travels back from the actor as a value (one per report of a batch).
        return IngestRefused, (self.status, self.reason)


@dataclass
class _Run:
    state: RunState
    tracker: DiagnosisTracker
    restarts_seen: int = 0
    #: When a new NaN incident started waiting to hear from every rank.
    nan_waiting_since: float | None = None
    #: Wall time of the run's last evaluation (for evaluate_min_interval).
    last_evaluated: float = 0.0


@dataclass
class Aggregator:
    """All runs of one aggregator shard."""

    config: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._reports = 0
        self._steps = 0
        self._evaluations = 0
        self._evaluation_seconds = 0.0
        #: Changes from reports that did not come through the HTTP front
        #: (Ray Train workers calling :meth:`ingest` directly): the front
        #: collects them with :meth:`evaluate_due` and sends the alerts.
        self._undispatched: list[Change] = []
        #: Evaluations that evaluating every report as it comes would have run
        #: (counted whether or not they ran), for the load model.
        self._checkpoints = 0
        #: Share of recent time that ingesting and evaluating every report would
        #: take: below config.paced_above_load a batch is evaluated report by report.
        self._load = LoadMeter()
        #: Each run's rule settings (config.rules_for) from its first evaluation on; never in a snapshot.
        self._rules_of_run: dict[str, rules.RulesConfig] = {}

    def ping(self) -> bool:
        return True

    def ingest(
        self, report: Report | ColumnarReport, now: float | None = None, *, caller_dispatches: bool = False
    ) -> list[Change]:
        """Take one report, evaluate the run's rules, return what fired or cleared.

        Callers other than the HTTP front (Ray Train workers holding the actor)
        do not log or alert: their changes are also kept for :meth:`evaluate_due`,
        through which the front does. ``caller_dispatches`` says the caller
        does it itself (a front in the same process).
        """
        (result,) = self.ingest_many([report], now)
        if isinstance(result, IngestRefused):
            raise result
        if not caller_dispatches:
            self._undispatched += result
            del self._undispatched[:-_MAX_UNDISPATCHED]
        return result

    def evaluate_due(self, now: float | None = None) -> list[Change]:
        """Evaluate runs whose data waited out evaluate_min_interval; with changes not yet sent, return them.

        The front calls this about every evaluate_min_interval: it finishes the
        evaluations deferred under load (and NaN incidents waiting for every
        rank) even when their run sends nothing more, and it carries the changes
        of reports that reached the actor without the front (Ray Train).
        """
        began, evaluated = time.perf_counter(), self._evaluation_seconds
        now = time.time() if now is None else now
        changes, self._undispatched = self._undispatched, []
        changes += self._evaluate_waiting(list(self._runs.values()), now)
        self._record_load(began, evaluated, self._checkpoints)
        return changes

    def _record_load(self, began: float, evaluated_before: float, checkpoints_before: int) -> None:
        per_evaluation = self._evaluation_seconds / self._evaluations if self._evaluations else 0.0
        self._load.record(
            began,
            time.perf_counter(),
            self._evaluation_seconds - evaluated_before,
            self._checkpoints - checkpoints_before,
            per_evaluation,
        )

    def _evaluate_waiting(self, entries: list[_Run], now: float) -> list[Change]:
        """Evaluate those of ``entries`` with unseen data whose interval is up, longest waiting first, in a slice.

        At most about EVALUATION_SLICE_SECONDS of evaluations per actor call, so
        that ingest never waits behind a burst of them (32 runs coming due at
        once took 120 ms); the rest stay first in line for the next call.
        """
        interval = self.config.evaluate_min_interval
        due = [e for e in entries if e.state.has_unseen and now - e.last_evaluated >= interval]
        changes: list[Change] = []
        deadline = time.perf_counter() + EVALUATION_SLICE_SECONDS
        for entry in sorted(due, key=lambda e: e.last_evaluated):
            changes += self._evaluate(entry, now)
            if time.perf_counter() >= deadline:
                break
        return changes

    def ingest_many(
        self, reports: Sequence[Report | ColumnarReport], now: float | None = None
    ) -> list[list[Change] | IngestRefused]:
        """Take several reports in one call; per report, what fired or cleared, or why it was refused.

        The HTTP front batches the reports that arrive while the actor is busy.
        While the aggregator has time to spare (its load is under
        ``paced_above_load``), every report of a batch is evaluated as if
        it came alone: at every statistics row, held-out loss and non-finite
        loss. Once it is busy, batches are paced: a non-finite loss, gradient
        norm or rank-local NaN is still evaluated on its own step at once, but
        otherwise each run of the batch is evaluated only if its last evaluation
        is evaluate_min_interval old, longest waiting first, within a time slice
        (:meth:`evaluate_due` takes the rest). Pacing delays diagnoses, and for
        rules that judge the newest rows of a window (stagnation, overfitting,
        some exploding triggers) it can also move the onset they report or let
        a short episode pass unseen; that is the price of keeping up under load.
        The HTTP front sends :class:`ColumnarReport`; a wire :class:`Report`
        (tests, Ray Train workers) is converted here.
        """
        began, evaluated, checkpoints = time.perf_counter(), self._evaluation_seconds, self._checkpoints
        try:
            return self._ingest_many(reports, time.time() if now is None else now)
        finally:
            self._record_load(began, evaluated, checkpoints)

    @property
    def paced(self) -> bool:
        """Whether batches are evaluated at most every evaluate_min_interval per run (the shard is loaded)."""
        return self._load.share >= self.config.paced_above_load

    def _ingest_many(
        self, reports: Sequence[Report | ColumnarReport], now: float
    ) -> list[list[Change] | IngestRefused]:
        # A batch alone says little (two agents posting at once make one); pacing
        # moves when some rules see their data, so it waits until time is short.
        batched = len(reports) > 1 and self.paced
        results: list[list[Change] | IngestRefused] = []
        last_of_run: dict[str, int] = {}
        for item in reports:
            columnar = ColumnarReport.of(item)
            try:
                results.append(self._take(columnar, now, batched))
                last_of_run[columnar.report.run] = len(results) - 1
            except IngestRefused as exc:
                results.append(exc)
        if not batched:  # the actor keeps up: every report is evaluated as it comes
            for run, index in last_of_run.items():
                entry, changes = self._runs.get(run), results[index]
                if entry is not None and entry.state.has_unseen and isinstance(changes, list):
                    changes += self._evaluate(entry, now)
            return results
        # Load: each run at most every evaluate_min_interval, in a time slice; the
        # changes go back with the run's last report of the batch.
        for change in self._evaluate_waiting([self._runs[run] for run in last_of_run if run in self._runs], now):
            changes = results[last_of_run[change.run]]
            if isinstance(changes, list):
                changes.append(change)
        return results

    def _take(self, columnar: ColumnarReport, now: float, batched: bool) -> list[Change]:
        """Add one report's steps, evaluating at its checkpoints (only urgent ones when ``batched``)."""
        report, rows = columnar.report, columnar.rows
        # Refuse before touching any state: a refused report must leave nothing behind.
        width = max((len(row) for row in rows if row is not None), default=0)
        if width > self.config.limits.max_layers:
            raise IngestRefused(413, f"report has {width} layers; limits.max_layers is {self.config.limits.max_layers}")
        entry = self._runs.get(report.run)
        self._check_layer_series(width, entry)
        if entry is None:
            if len(self._runs) >= self.config.limits.max_runs:
                self._evict_idle(now)
            if len(self._runs) >= self.config.limits.max_runs:
                raise IngestRefused(
                    429,
                    f"this aggregator already holds {len(self._runs)} active runs (limits.max_runs); "
                    "refusing a new run",
                )
            entry = _Run(RunState(report.run, self.config.windows), DiagnosisTracker(self.config.clear_after_steps))
            self._runs[report.run] = entry
        state = entry.state
        state.note_report(report, now)
        self._reports += 1
        self._steps += len(report.steps)
        # Rules run at every point where a person would want a verdict: each
        # statistics row, each held-out loss, each non-finite loss, and at least
        # every `evaluate_every_steps` steps. A report batches many steps (a
        # fast job sends hundreds per request); evaluating only at its end
        # would make detection depend on how fast the job trains.
        changes: list[Change] = []
        # pending: steps no evaluation has seen; since_checkpoint: steps since the last point where
        # evaluating every report would evaluate (the same count unless paced), for the load model.
        pending = since_checkpoint = 0
        for record, row in zip(report.steps, rows, strict=True):
            restarts = state.restarts
            added = state.add_step(record, report.rank, report.session, report.shard, row)
            pending += added
            since_checkpoint += added
            checkpoint = bool(since_checkpoint) and self._is_checkpoint(record, row, since_checkpoint)
            if checkpoint:
                self._checkpoints += 1
                since_checkpoint = 0
            if state.restarts != restarts:
                entry.tracker.reset_clock(state.latest.step)
            if batched:
                # Paced, a run waits for evaluate_min_interval, but never so long that a window
                # turns over: a run training faster than its windows hold in that interval would
                # push rows out before any rule saw them, and miss what happened in them.
                due = bool(pending) and (self._is_urgent(record) or state.unseen_fills_half_a_window)
            else:
                due = checkpoint
            if due:
                changes += self._evaluate(entry, now)
                pending = 0
        self._checkpoints += since_checkpoint > 0  # the end of a report is one too
        if state.has_unseen and not batched:
            changes += self._evaluate(entry, now)
        return changes

    @staticmethod
    def _is_urgent(record: StepRecord) -> bool:
        """A non-finite loss, total gradient norm or local gradient: evaluated on its own step even in a batch."""
        return (
            (record.loss is not None and not math.isfinite(record.loss))
            or (record.grad_norm is not None and not math.isfinite(record.grad_norm))
            or bool(record.local_grad_nonfinite and not record.skipped)
        )

    def _check_layer_series(self, width: int, entry: _Run | None) -> None:
        """Refuse a report of ``width`` layers that would take the aggregator past limits.max_layer_series."""
        current = len(entry.state.layer_names) if entry is not None else 0
        if width <= current:
            return  # the common case: no new series
        total = sum(len(e.state.layer_names) for e in self._runs.values()) - current + width
        if total > self.config.limits.max_layer_series:
            raise IngestRefused(
                429,
                f"this aggregator would hold {total} layers over all runs; limits.max_layer_series is "
                f"{self.config.limits.max_layer_series}",
            )

    def _is_checkpoint(self, record: StepRecord, row: LayerColumns | None, pending: int) -> bool:
        return (
            row is not None
            or record.val_loss is not None
            or self._is_urgent(record)
            or pending >= self.config.evaluate_every_steps
        )

    def _evict_idle(self, now: float) -> None:
        """Forget runs that have not reported for limits.run_idle_seconds."""
        cutoff = now - self.config.limits.run_idle_seconds
        for name in [n for n, e in self._runs.items() if e.state.last_report_time < cutoff]:
            del self._runs[name]
            self._rules_of_run.pop(name, None)

    def _evaluate(self, entry: _Run, now: float) -> list[Change]:
        started = time.perf_counter()
        view = entry.state.view()
        run = entry.state.run
        settings = self._rules_of_run.get(run) or self._rules_of_run.setdefault(run, self.config.rules_for(run))
        findings = rules.evaluate(view, settings, entry.tracker.active_symptoms())
        if self._wait_for_nan_origin(entry, findings.get("nonfinite"), now):
            # Not marked seen: the next report re-evaluates this data with more ranks in.
            return []
        entry.state.mark_seen()
        entry.last_evaluated = now
        changes = entry.tracker.update(entry.state.run, findings, max(view.latest_step, entry.state.latest.step), now)
        self._evaluations += 1
        self._evaluation_seconds += time.perf_counter() - started
        return changes

    def _wait_for_nan_origin(self, entry: _Run, finding: rules.Finding | None, now: float) -> bool:
        if finding is None or "nonfinite" in entry.tracker.active_symptoms():
            entry.nan_waiting_since = None
            return False
        if not entry.state.ranks_behind(finding.step):
            entry.nan_waiting_since = None
            return False
        if entry.nan_waiting_since is None:
            entry.nan_waiting_since = now
        if now - entry.nan_waiting_since < NAN_ORIGIN_WAIT_SECONDS:
            return True
        entry.nan_waiting_since = None
        return False

    def runs(self) -> list[dict[str, Any]]:
        """The run list of ``GET /v1/runs``."""
        out = []
        for name, entry in sorted(self._runs.items()):
            state = entry.state
            out.append(
                {
                    "run": name,
                    "step": state.latest.step,
                    "loss": state.latest.loss,
                    "ranks": sorted(state.ranks),
                    "world_size": state.world_size,
                    "reports": state.reports,
                    "layers": len(state.layer_names),
                    "first_report_time": state.first_report_time,
                    "last_report_time": state.last_report_time,
                    "active_symptoms": sorted(entry.tracker.active_symptoms()),
                    "finished": state.finished,
                }
            )
        return out

    def diagnoses(self, run: str) -> list[dict[str, Any]] | None:
        """The diagnoses of one run, or None for a run never seen."""
        entry = self._runs.get(run)
        return None if entry is None else entry.tracker.items()

    def layers(self, run: str) -> dict[str, Any] | None:
        """Newest per-layer statistics of one run (for people and the live page)."""
        entry = self._runs.get(run)
        if entry is None:
            return None
        latest = entry.state.latest
        return {
            "run": run,
            "step": latest.step,
            "layers": list(entry.state.layer_names),
            "grad_norm": _as_list(latest.layer_grad_norm),
            "weight_norm": _as_list(latest.layer_weight_norm),
            "update_ratio": _as_list(latest.layer_update_ratio),
        }

    def series(self, run: str, limits: SeriesLimits | None = None) -> dict[str, Any] | None:
        """Recent history of one run, cut to ``limits`` (``GET /v1/runs/{run}/series``, the live page)."""
        entry = self._runs.get(run)
        return None if entry is None else build_series(entry.state, limits or SeriesLimits())

    def snapshot(self) -> AggregatorSnapshot:
        """A consistent copy of what /metrics exposes."""
        runs = []
        for name, entry in self._runs.items():
            state, tracker = entry.state, entry.tracker
            runs.append(
                RunSnapshot(
                    run=name,
                    latest=state.latest,
                    layers=state.layer_names,
                    active={s: d.active for s, d in tracker.by_symptom.items()},
                    onsets={s: d.step for s, d in tracker.by_symptom.items()},
                    reports=state.reports,
                    steps_received=state.steps_received,
                    agent_dropped=state.agent_dropped,
                    last_report_time=state.last_report_time,
                    ranks=len(state.ranks),
                    finished=state.finished,
                    alerts={s: alert_labels(d) for s, d in tracker.by_symptom.items() if d.active},
                    per_rank={rank: replace(latest) for rank, latest in state.rank_table.latest.items()},
                )
            )
        return AggregatorSnapshot(
            runs, self._reports, self._steps, self._evaluations, self._evaluation_seconds, self._load.share
        )


def _as_list(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else values.tolist()
