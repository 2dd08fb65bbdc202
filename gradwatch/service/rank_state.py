"""Per-rank state of one run: each rank's newest scalars, and where non-finite values appeared.

Layer statistics come from one reporter per model shard, but every rank sends
its own loss, step time and pre-reduction non-finite flag. Those are kept here,
bounded by ``max_ranks``, for the per-rank metrics and for naming the rank a
NaN began on (after the gradient all-reduce every rank has it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradwatch.service.windows import Window
from gradwatch.wire import StepRecord

#: Non-finite sightings kept per run (older ones leave the window).
INCIDENT_WINDOW = 512


@dataclass
class RankLatest:
    """One rank's newest values."""

    step: int = -1
    loss: float | None = None
    step_time: float | None = None
    #: Steps on which this rank saw NaN/Inf in its own loss or local gradients.
    nonfinite_steps: int = 0
    last_report_time: float = 0.0
    host: str = ""


def local_nonfinite(record: StepRecord, has_layers: bool) -> bool:
    """The record shows NaN/Inf that began on this rank (its loss, or its gradients before reduction).

    Gradient flags on a step the optimizer skipped are AMP loss scaling at work.
    ``has_layers``: the step came with a statistics row (whose per-layer flags then decide).
    """
    if record.loss is not None and not math.isfinite(record.loss):
        return True
    if record.skipped:
        return False
    if record.local_grad_nonfinite:
        return True
    return not has_layers and record.grad_norm is not None and not math.isfinite(record.grad_norm)


class RankTable:
    """Newest values per rank and a window of (step, rank) non-finite sightings."""

    def __init__(self, max_ranks: int = 4096) -> None:
        self.max_ranks = max_ranks
        self.latest: dict[int, RankLatest] = {}
        self.incidents = Window(INCIDENT_WINDOW, {"step": (np.int64, ()), "rank": (np.int64, ())})

    def note_report(self, rank: int, host: str, now: float) -> None:
        entry = self._entry(rank)
        if entry is not None:
            entry.last_report_time = now
            entry.host = host

    def add(self, rank: int, record: StepRecord, has_layers: bool) -> None:
        entry = self._entry(rank)
        if entry is not None:
            entry.step = record.step
            if record.loss is not None:
                entry.loss = record.loss
            if record.step_time is not None:
                entry.step_time = record.step_time
        if local_nonfinite(record, has_layers):
            if entry is not None:
                entry.nonfinite_steps += 1
            self.incidents.append(step=record.step, rank=rank)

    def hosts(self) -> dict[int, str]:
        return {rank: entry.host for rank, entry in self.latest.items() if entry.host}

    def _entry(self, rank: int) -> RankLatest | None:
        entry = self.latest.get(rank)
        if entry is None and len(self.latest) < self.max_ranks:
            entry = self.latest[rank] = RankLatest()
        return entry
