"""How loaded an aggregator shard is: the share of its time that evaluating every report would take.

A batch of reports from the front says only that two reports arrived during
one actor call, which happens on a nearly idle service as soon as a few agents
post at once. Whether the shard can afford to evaluate every report as it
comes is a question of time, so that is what is measured, and in a way that
does not depend on the answer: the time spent ingesting, plus the evaluations
that evaluating every checkpoint would run, priced at the measured cost of one.
Measuring plain busy time instead would flap: a paced shard looks idle
(evaluations are most of the work), switches to evaluating everything, and
is swamped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoadMeter:
    """Demand as a share of wall time, over consecutive windows of about ``window`` seconds.

    ``share`` is the last complete window's; until one completes it is 0, so a
    fresh aggregator starts out evaluating every report.
    """

    window: float = 2.0
    share: float = 0.0
    _started: float | None = None
    _demand: float = 0.0

    def record(self, began: float, ended: float, evaluated: float, checkpoints: int, per_evaluation: float) -> None:
        """One call from ``began`` to ``ended`` (monotonic seconds), ``evaluated`` of it spent in rules.

        ``checkpoints`` is how many evaluations evaluating every report would
        have run for the data of this call, each costing ``per_evaluation``.
        """
        if self._started is None:
            self._started = began
        self._demand += max(ended - began - evaluated, 0.0) + checkpoints * per_evaluation
        elapsed = ended - self._started
        if elapsed >= self.window:
            self.share = self._demand / elapsed
            self._started, self._demand = ended, 0.0
