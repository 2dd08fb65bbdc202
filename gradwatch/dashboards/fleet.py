"""The fleet dashboard: every run's symptom state, agent health, and the aggregator's own load."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

from gradwatch.dashboards.common import (
    DATASOURCE,
    RUN,
    SCOPE,
    Grid,
    dashboard,
    query,
    render,
    thresholds,
    variables,
)

UID = "gradwatch-fleet"
TITLE = "gradwatch / Fleet"

#: Matches the GradwatchAgentSilent alert in deploy/prometheus/rules.
SILENT_AFTER_SECONDS = 120
#: Keeps process_* series (no gradwatch prefix) to the targets that are gradwatch services.
_SERVICE = f"and on (job, instance) gradwatch_runs{{{SCOPE}}}"


def _series(title: str, description: str, unit: str) -> Any:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .line_width(1)
        .show_points(common_models.VisibilityMode.NEVER)
    )


def _open_run(run: str) -> Any:
    """A data link to the run overview; ``run`` is how the panel names the clicked run's value."""
    return (
        dashboard_builders.DashboardLink("Open the run overview")
        .type(dashboard_models.DashboardLinkType.LINK)
        .url("/d/gradwatch-run/gradwatch-run-overview?${__url_time_range}&var-run=" + run)
    )


def build() -> Any:
    """The fleet dashboard builder."""
    grid = Grid()
    grid.add(
        statetimeline.Panel()
        .title("Symptom state per run")
        .description(
            "One row per run: green while no diagnosis is active, red with the number of active symptoms "
            "otherwise. Click a row to open that run's overview. Runs drop off when the aggregator forgets "
            "them (limits.run_idle_seconds)."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .mappings(
            [
                dashboard_models.ValueMap(
                    options={"0": dashboard_models.ValueMappingResult(text="healthy", color="green", index=0)}
                ),
                dashboard_models.RangeMap(
                    options=dashboard_models.DashboardRangeMapOptions(
                        from_val=1,
                        to=6,
                        result=dashboard_models.ValueMappingResult(text="symptoms active", color="red", index=1),
                    )
                ),
            ]
        )
        .data_links([_open_run("${__field.labels.run}")])
        .with_target(query(f"sum by (run) (gradwatch_symptom_active{{{RUN}}})", "{{run}}")),
        w=24,
        h=8,
    )
    grid.add(
        table.Panel()
        .title("Active diagnoses, all runs")
        .description(
            "Every diagnosis active now across the selected runs, with the layer and rank it points at, its "
            "onset step and summary. The same series drive the Prometheus alerts."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .data_links([_open_run("${__data.fields.run}")])
        .with_target(
            query(
                f"max by (run, symptom, layer, rank, onset_step, summary) (gradwatch_diagnosis_active{{{RUN}}})",
                instant=True,
                table=True,
            )
        ),
        w=24,
        h=8,
    )
    grid.add(
        _series(
            "Agent report lag",
            f"Seconds since each run's newest report reached gradwatch. A live run stays within a few flush "
            f"intervals; above {SILENT_AFTER_SECONDS} s (red line) the GradwatchAgentSilent alert fires unless "
            "the run finished. Finished runs keep growing here until they are forgotten.",
            "s",
        )
        .thresholds(thresholds((None, "green"), (SILENT_AFTER_SECONDS, "red")))
        .thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(common_models.GraphTresholdsStyleMode.LINE))
        .with_target(query(f"time() - max by (run) (gradwatch_last_report_timestamp_seconds{{{RUN}}})", "{{run}}")),
        w=12,
        h=8,
    )
    grid.add(
        _series(
            "Dropped step records",
            "Step records each run's agents dropped before delivery, per interval. Non-zero means an agent's "
            "bounded buffer overflowed because gradwatch was slow or unreachable: diagnoses for that stretch "
            "rest on fewer steps. Training itself is never slowed.",
            "short",
        )
        .draw_style(common_models.GraphDrawStyle.BARS)
        .with_target(
            query(f"sum by (run) (increase(gradwatch_agent_dropped_steps_total{{{RUN}}}[$__rate_interval]))", "{{run}}")
        ),
        w=12,
        h=8,
    )
    grid.add(
        _series(
            "Aggregator ingest rate",
            "Reports and step records the aggregator ingests per second, per gradwatch instance. It follows the "
            "number of live runs times their flush rate; a drop to 0 with runs still training means agents "
            "cannot reach the service.",
            "ops",
        )
        .with_target(
            query(
                f"sum by (instance) (rate(gradwatch_ingested_reports_total{{{SCOPE}}}[$__rate_interval]))",
                "reports/s {{instance}}",
            )
        )
        .with_target(
            query(
                f"sum by (instance) (rate(gradwatch_ingested_steps_total{{{SCOPE}}}[$__rate_interval]))",
                "steps/s {{instance}}",
                "B",
            )
        ),
        w=8,
        h=8,
    )
    grid.add(
        _series(
            "Ingest latency",
            "Seconds from receiving a report to its rules being evaluated (gradwatch_ingest_seconds), median "
            "and 99th percentile. Rising p99 with a flat rate means the aggregator actor is saturated.",
            "s",
        )
        .with_target(
            query(
                "histogram_quantile(0.5, sum by (instance, le) "
                f"(rate(gradwatch_ingest_seconds_bucket{{{SCOPE}}}[$__rate_interval])))",
                "p50 {{instance}}",
            )
        )
        .with_target(
            query(
                "histogram_quantile(0.99, sum by (instance, le) "
                f"(rate(gradwatch_ingest_seconds_bucket{{{SCOPE}}}[$__rate_interval])))",
                "p99 {{instance}}",
                "B",
            )
        ),
        w=8,
        h=8,
    )
    grid.add(
        _series(
            "Service memory",
            "Resident memory of each gradwatch service front (process_resident_memory_bytes of the scraped "
            "process). The front holds no run state, the Ray aggregator actor does, so this should stay flat; "
            "growth while the number of runs is steady is a leak in the front.",
            "bytes",
        ).with_target(query(f"process_resident_memory_bytes{{{SCOPE}}} {_SERVICE}", "RSS {{instance}}")),
        w=8,
        h=8,
    )
    grid.add(
        _series(
            "Rule evaluation time",
            "Seconds the aggregator spends in symptom rules per second of wall time (0.1 = 10 % of one core), "
            "per instance. It grows with runs × layers; the rules are the aggregator's main CPU cost.",
            "percentunit",
        ).with_target(
            query(
                f"sum by (instance) (rate(gradwatch_rule_evaluation_seconds_total{{{SCOPE}}}[$__rate_interval]))",
                "rules {{instance}}",
            )
        ),
        w=12,
        h=8,
    )
    grid.add(
        _series(
            "Aggregator load",
            "Share of each aggregator shard's time that evaluating every report as it arrives would take "
            "(ingest plus one rule evaluation per statistics row, held-out loss and NaN, at the measured cost "
            "of one). From paced_above_load (0.5) the shard paces evaluations: diagnoses arrive later and the "
            "onsets of stagnation and overfitting can move (docs/operations.md). Add shards before it stays "
            "there; above 1 it could not evaluate everything even with all its time.",
            "percentunit",
        ).with_target(
            query(
                f"max by (instance, shard) (gradwatch_aggregator_load{{{SCOPE}}})",
                "shard {{shard}} {{instance}}",
            )
        ),
        w=12,
        h=8,
    )
    grid.add(
        _series(
            "Runs held",
            "Runs the aggregator holds right now, per instance; bounded by limits.max_runs, after which new "
            "runs are refused with HTTP 429.",
            "short",
        ).with_target(query(f"sum by (instance) (gradwatch_runs{{{SCOPE}}})", "runs {{instance}}")),
        w=12,
        h=8,
    )
    return dashboard(
        UID,
        TITLE,
        "All runs at once, the agents' delivery health and the gradwatch aggregator's own load.",
        grid,
        variables(run_multi=True, with_layer=False),
    )


def generate() -> str:
    """The fleet dashboard as JSON text."""
    return render(build())
