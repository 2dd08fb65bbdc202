"""Prometheus exposition: a custom collector over aggregator snapshots.

Metric families are built fresh on every scrape from the newest snapshots, so
a run that is forgotten disappears from /metrics by itself, and nothing is
registered on prometheus-client's global registry.

Label budget per run: 6 symptom series, ~8 run series plus the user's named
scalars (at most 32), 7 series per layer and 5 per rank. Layers are per run,
never per rank × layer: a 1,024-rank, 1,000-layer run is ~12k series.

The service's own process (memory, CPU, open files) is exported too, under
prometheus-client's standard ``process_*`` names, so dashboards can show the
aggregator front's footprint next to its ingest rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gradwatch.service.aggregator import AggregatorSnapshot, RunSnapshot
from gradwatch.service.rules.view import SYMPTOMS

_LAYER_GAUGES = (
    ("layer_grad_norm", "layer_grad_norm", "Gradient L2 norm of the layer at the newest statistics step."),
    ("layer_weight_norm", "layer_weight_norm", "Weight L2 norm of the layer at the newest statistics step."),
    (
        "layer_grad_max_abs",
        "layer_grad_max_abs",
        "Largest absolute gradient value in the layer (NaN/Inf when it holds one).",
    ),
    (
        "layer_weight_max_abs",
        "layer_weight_max_abs",
        "Largest absolute weight value in the layer (NaN/Inf when it holds one).",
    ),
    (
        "layer_update_ratio",
        "layer_update_ratio",
        "||dw||/||w|| of the layer at the newest sampled step (healthy is near 1e-3).",
    ),
)
_RUN_GAUGES = (
    ("step", "step", "Newest optimizer step reported."),
    ("loss", "loss", "Training loss at the newest step."),
    ("val_loss", "val_loss", "Newest held-out loss the run reported."),
    ("learning_rate", "lr", "Learning rate of the first parameter group."),
    ("grad_norm", "grad_norm", "Global gradient L2 norm at the newest statistics step."),
    ("step_seconds", "step_time", "Wall-clock seconds of the newest step, measured by the agent."),
)


class SnapshotCollector(Collector):
    """Collects from the snapshots last passed to :meth:`update`."""

    def __init__(self) -> None:
        self._snapshots: Sequence[AggregatorSnapshot] = ()
        # Not registered anywhere: collected through this collector, so the
        # service's one registry carries it without a second registration.
        self._process = ProcessCollector(registry=None)

    def update(self, snapshots: Sequence[AggregatorSnapshot]) -> None:
        """Replace the snapshots the next ``collect()`` reads."""
        self._snapshots = snapshots

    def collect(self) -> Iterable[Metric]:
        runs = [run for snapshot in self._snapshots for run in snapshot.runs]
        yield from _symptom_families(runs)
        yield from _run_families(runs)
        yield from _layer_families(runs)
        yield from _rank_families(runs)
        yield from _service_families(self._snapshots, len(runs))
        yield from self._process.collect()


def _symptom_families(runs: list[RunSnapshot]) -> Iterable[Metric]:
    active = GaugeMetricFamily(
        "gradwatch_symptom_active", "1 while the symptom is active on the run, 0 otherwise.", labels=["run", "symptom"]
    )
    onset = GaugeMetricFamily(
        "gradwatch_symptom_onset_step",
        "First step at which the symptom was seen on the run.",
        labels=["run", "symptom"],
    )
    for run in runs:
        for symptom in SYMPTOMS:
            active.add_metric([run.run, symptom], 1.0 if run.active.get(symptom) else 0.0)
            if symptom in run.onsets:
                onset.add_metric([run.run, symptom], float(run.onsets[symptom]))
    yield active
    yield onset
    # The alert-facing series: present only while a diagnosis is active, with
    # the labels an alert carries (frozen for the episode, so the series, and
    # the alert, keep one identity while it lasts).
    diagnosis = GaugeMetricFamily(
        "gradwatch_diagnosis_active",
        "1 for each active diagnosis, labelled with its layer, rank, summary and advice (absent otherwise).",
        labels=["run", "symptom", "layer", "rank", "summary", "advice", "onset_step"],
    )
    for run in runs:
        for symptom, info in sorted(run.alerts.items()):
            diagnosis.add_metric(
                [
                    run.run,
                    symptom,
                    info.get("layer", ""),
                    info.get("rank", ""),
                    info.get("summary", ""),
                    info.get("advice", ""),
                    info.get("onset_step", ""),
                ],
                1.0,
            )
    yield diagnosis


def _run_families(runs: list[RunSnapshot]) -> Iterable[Metric]:
    for metric, attribute, documentation in _RUN_GAUGES:
        family = GaugeMetricFamily(f"gradwatch_{metric}", documentation, labels=["run"])
        for run in runs:
            value = getattr(run.latest, attribute)
            # A value never reported stays absent; a reported NaN is exported as NaN.
            if value is not None:
                family.add_metric([run.run], float(value))
        yield family
    scalars = GaugeMetricFamily(
        "gradwatch_scalar", "Named scalars the run passed to mon.step().", labels=["run", "name"]
    )
    reports = CounterMetricFamily("gradwatch_run_reports", "Reports received from the run's agents.", labels=["run"])
    steps = CounterMetricFamily("gradwatch_run_steps", "Step records received from the run's agents.", labels=["run"])
    dropped = CounterMetricFamily(
        "gradwatch_agent_dropped_steps", "Step records the run's agents dropped before delivery.", labels=["run"]
    )
    last = GaugeMetricFamily(
        "gradwatch_last_report_timestamp_seconds", "Unix time of the newest report from the run.", labels=["run"]
    )
    ranks = GaugeMetricFamily("gradwatch_run_ranks", "Ranks that have reported for the run.", labels=["run"])
    finished = GaugeMetricFamily(
        "gradwatch_run_finished", "1 once the run's agent closed (its silence is expected), else 0.", labels=["run"]
    )
    for run in runs:
        for name, value in run.latest.scalars.items():
            scalars.add_metric([run.run, name], value)
        reports.add_metric([run.run], run.reports)
        steps.add_metric([run.run], run.steps_received)
        dropped.add_metric([run.run], run.agent_dropped)
        last.add_metric([run.run], run.last_report_time)
        ranks.add_metric([run.run], run.ranks)
        finished.add_metric([run.run], 1.0 if run.finished else 0.0)
    yield from (scalars, reports, steps, dropped, last, ranks, finished)


def _layer_families(runs: list[RunSnapshot]) -> Iterable[Metric]:
    for metric, attribute, documentation in _LAYER_GAUGES:
        family = GaugeMetricFamily(f"gradwatch_{metric}", documentation, labels=["run", "layer"])
        for run in runs:
            values = getattr(run.latest, attribute)
            if values is None:
                continue
            for layer, value in zip(run.layers, values.tolist(), strict=True):
                family.add_metric([run.run, layer], value)
        yield family
    # Info-style series carrying each layer's position in the model (input
    # first), zero-padded so that sorting by label sorts by depth: dashboards
    # join it onto the layer gauges to draw input layers at the bottom.
    info = GaugeMetricFamily(
        "gradwatch_layer_info",
        "1 per layer; the depth label is the layer's position in the model, input first, zero-padded.",
        labels=["run", "layer", "depth"],
    )
    for run in runs:
        for depth, layer in enumerate(run.layers):
            info.add_metric([run.run, layer, f"{depth:05d}"], 1.0)
    yield info
    nonfinite = GaugeMetricFamily(
        "gradwatch_layer_nonfinite",
        "1 when the layer's gradients or weights held NaN/Inf at the newest statistics step.",
        labels=["run", "layer"],
    )
    for run in runs:
        if run.latest.layer_nonfinite is None:
            continue
        for layer, bad in zip(run.layers, run.latest.layer_nonfinite.tolist(), strict=True):
            nonfinite.add_metric([run.run, layer], 1.0 if bad else 0.0)
    yield nonfinite


#: Per-rank series: (metric, RankLatest attribute, help). Five per rank, so a
#: 1,024-rank run adds ~5k series, not a series per rank x layer.
_RANK_GAUGES = (
    ("rank_step", "step", "Newest optimizer step the rank reported."),
    ("rank_loss", "loss", "The rank's own newest training loss (before any cross-rank averaging)."),
    ("rank_step_seconds", "step_time", "The rank's newest wall-clock seconds per optimizer step."),
    ("rank_last_report_timestamp_seconds", "last_report_time", "Unix time of the rank's newest report."),
)


def _rank_families(runs: list[RunSnapshot]) -> Iterable[Metric]:
    for metric, attribute, documentation in _RANK_GAUGES:
        family = GaugeMetricFamily(f"gradwatch_{metric}", documentation, labels=["run", "rank"])
        for run in runs:
            for rank, latest in sorted(run.per_rank.items()):
                value = getattr(latest, attribute)
                if value is not None:
                    family.add_metric([run.run, str(rank)], float(value))
        yield family
    nonfinite = CounterMetricFamily(
        "gradwatch_rank_nonfinite_steps",
        "Steps on which the rank's own loss or pre-reduction gradients held NaN/Inf.",
        labels=["run", "rank"],
    )
    for run in runs:
        for rank, latest in sorted(run.per_rank.items()):
            nonfinite.add_metric([run.run, str(rank)], latest.nonfinite_steps)
    yield nonfinite


def _service_families(snapshots: Sequence[AggregatorSnapshot], num_runs: int) -> Iterable[Metric]:
    runs = GaugeMetricFamily("gradwatch_runs", "Runs the aggregator holds.")
    runs.add_metric([], num_runs)
    yield runs
    totals = (
        ("gradwatch_ingested_reports", "Reports ingested by the aggregator.", "reports_total"),
        ("gradwatch_ingested_steps", "Step records ingested by the aggregator.", "steps_total"),
        ("gradwatch_rule_evaluations", "Rule evaluations run by the aggregator.", "evaluations_total"),
        ("gradwatch_rule_evaluation_seconds", "Seconds spent evaluating rules.", "evaluation_seconds_total"),
    )
    for name, documentation, attribute in totals:
        family = CounterMetricFamily(name, documentation)
        family.add_metric([], sum(getattr(s, attribute) for s in snapshots))
        yield family
