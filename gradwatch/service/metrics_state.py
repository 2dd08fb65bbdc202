"""What ``/metrics`` shows of an aggregator: a consistent copy of its runs' newest values and diagnoses.

The aggregator actor builds it (:meth:`gradwatch.service.aggregator.Aggregator.snapshot`); the HTTP
front and its renderer child read it, and need nothing else of the aggregator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gradwatch.service.rank_state import RankLatest
from gradwatch.service.run_state import Latest


@dataclass(frozen=True)
class RunSnapshot:
    """What /metrics shows of one run."""

    run: str
    latest: Latest
    layers: tuple[str, ...]
    active: dict[str, bool]
    onsets: dict[str, int]
    reports: int
    steps_received: int
    agent_dropped: int
    last_report_time: float
    ranks: int
    finished: bool
    #: Active diagnoses: symptom -> the labels and one-line summary alerts carry.
    alerts: dict[str, dict[str, str]]
    #: Every rank's own newest values, by rank.
    per_rank: dict[int, RankLatest] = field(default_factory=dict)


@dataclass(frozen=True)
class AggregatorSnapshot:
    runs: list[RunSnapshot]
    reports_total: int
    steps_total: int
    evaluations_total: int
    evaluation_seconds_total: float
    #: Share of recent time that evaluating every report would take (see LoadMeter).
    load: float = 0.0
