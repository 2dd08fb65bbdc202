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

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gradwatch.service.metrics_state import AggregatorSnapshot, RunSnapshot
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
_NONFINITE_DOC = "1 when the layer's gradients or weights held NaN/Inf at the newest statistics step."
# Info-style series carrying each layer's position in the model (input first),
# zero-padded so that sorting by label sorts by depth: dashboards join it onto
# the layer gauges to draw input layers at the bottom.
_LAYER_INFO_DOC = "1 per layer; the depth label is the layer's position in the model, input first, zero-padded."
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
        self._templates: Templates = {}

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

    def render(self) -> bytes:
        """The text ``generate_latest`` would write for this collector alone, byte for byte, but fast.

        prometheus-client builds a Sample tuple and formats it per series;
        100 runs x 200 layers is 120,000 layer series, over a second that way.
        Layer families are written here from the arrays into per-run
        templates (kept between scrapes while the run's layers stay the same);
        the few other families go through the same metric objects as
        :meth:`collect`.
        """
        runs = [run for snapshot in self._snapshots for run in snapshot.runs]
        out: list[str] = []
        for family in (*_symptom_families(runs), *_run_families(runs)):
            _render_family(family, out)
        self._templates = _render_layers(runs, out, self._templates)
        for family in (*_rank_families(runs), *_service_families(self._snapshots, len(runs))):
            _render_family(family, out)
        return "".join(out).encode("utf-8")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(name: str, documentation: str, kind: str, out: list[str]) -> None:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    out.append(f"# HELP {name} {doc}\n")
    out.append(f"# TYPE {name} {kind}\n")


def _render_family(family: Metric, out: list[str]) -> None:
    """One gauge or counter family, as prometheus-client's text exposition writes it."""
    name = family.name + "_total" if family.type == "counter" else family.name
    _header(name, family.documentation, family.type, out)
    for sample in family.samples:
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
        out.append(f"{sample.name}{{{labels}}} " if labels else f"{sample.name} ")
        out.append(floatToGoString(sample.value) + "\n")


def _values(values: np.ndarray) -> list[float] | list[str]:
    """What to put in a template's %s: the float itself where str() is floatToGoString's text.

    They agree for finite values below 1e6 (the usual statistics); others go
    through floatToGoString (NaN, +Inf, and Go's exponent form for large values).
    """
    floats = values.tolist()
    if np.isfinite(values).all() and not (values >= 1e6).any():
        return floats
    return [floatToGoString(v) for v in floats]


#: Per (run, layer names): one %-template per layer family; the label part of
#: 1,000s of series is built once per run, not once per scrape.
Templates = dict[tuple[str, tuple[str, ...]], dict[str, str]]


def _templates(run: RunSnapshot) -> dict[str, str]:
    labels = [f'{{layer="{_escape(layer)}",run="{_escape(run.run)}"}} '.replace("%", "%%") for layer in run.layers]
    names = [f"gradwatch_{metric}" for metric, _, _ in _LAYER_GAUGES] + ["gradwatch_layer_nonfinite"]
    templates = {name: "".join(f"{name}{label}%s\n" for label in labels) for name in names}
    # Constant per run: the whole text, not a template.
    templates[_INFO] = "".join(
        f'{_INFO}{{depth="{depth:05d}",layer="{_escape(layer)}",run="{_escape(run.run)}"}} 1.0\n'
        for depth, layer in enumerate(run.layers)
    )
    return templates


_INFO = "gradwatch_layer_info"


def _render_layers(runs: list[RunSnapshot], out: list[str], cache: Templates) -> Templates:
    """The layer families; returns the templates of these runs (a run gone from the snapshots drops out)."""
    used: Templates = {}
    for run in runs:
        key = (run.run, run.layers)
        used[key] = cache.get(key) or _templates(run)
    for metric, attribute, documentation in _LAYER_GAUGES:
        name = f"gradwatch_{metric}"
        _header(name, documentation, "gauge", out)
        for run in runs:
            values = getattr(run.latest, attribute)
            if values is None:
                continue
            if len(values) != len(run.layers):
                raise ValueError(f"run {run.run}: {len(values)} values for {len(run.layers)} layers")
            out.append(used[run.run, run.layers][name] % tuple(_values(np.asarray(values, dtype=float))))
    name = "gradwatch_layer_nonfinite"
    _header(name, _NONFINITE_DOC, "gauge", out)
    for run in runs:
        bad = run.latest.layer_nonfinite
        if bad is None:
            continue
        if len(bad) != len(run.layers):
            raise ValueError(f"run {run.run}: {len(bad)} values for {len(run.layers)} layers")
        out.append(used[run.run, run.layers][name] % tuple("1.0" if b else "0.0" for b in bad.tolist()))
    _header("gradwatch_layer_info", _LAYER_INFO_DOC, "gauge", out)
    for run in runs:
        out.append(used[run.run, run.layers][_INFO])
    return used


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
    nonfinite = GaugeMetricFamily("gradwatch_layer_nonfinite", _NONFINITE_DOC, labels=["run", "layer"])
    for run in runs:
        if run.latest.layer_nonfinite is None:
            continue
        for layer, bad in zip(run.layers, run.latest.layer_nonfinite.tolist(), strict=True):
            nonfinite.add_metric([run.run, layer], 1.0 if bad else 0.0)
    yield nonfinite
    info = GaugeMetricFamily("gradwatch_layer_info", _LAYER_INFO_DOC, labels=["run", "layer", "depth"])
    for run in runs:
        for depth, layer in enumerate(run.layers):
            info.add_metric([run.run, layer, f"{depth:05d}"], 1.0)
    yield info


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
    load = GaugeMetricFamily(
        "gradwatch_aggregator_load",
        "Share of the last ~2 s that ingesting and evaluating every report as it comes would take an "
        "aggregator shard (above 1: more than it has); from paced_above_load up it paces rule evaluations.",
        labels=["shard"],
    )
    for shard, snapshot in enumerate(snapshots):
        load.add_metric([str(shard)], snapshot.load)
    yield load
