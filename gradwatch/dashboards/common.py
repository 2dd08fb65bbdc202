"""Shared pieces of the gradwatch dashboards: data source, variables, query and panel helpers, rendering.

Every dashboard is built with grafana-foundation-sdk builders; this module
only adds gradwatch's conventions on top: one Prometheus data source by uid,
the same template variables everywhere, explicit panel ids and grid positions
(so regenerating gives byte-identical JSON), and a unit and a description on
every panel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

#: The uid of the data source in deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "gradwatch-prometheus"
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
#: Tag shared by all gradwatch dashboards; the dashboards link to each other through it.
TAG = "gradwatch"
#: Where the gradwatch JSON API is, for links to a run's diagnoses (a dashboard variable).
DEFAULT_GRADWATCH_URL = "http://127.0.0.1:8617"

#: Label matchers every per-run query carries; ``namespace`` is absent outside
#: Kubernetes, and its "All" value ``.*`` also matches a missing label.
SCOPE = 'job=~"$job", namespace=~"$namespace"'
RUN = SCOPE + ', run=~"$run"'
LAYER = RUN + ', layer=~"$layer"'

#: Per-run and per-layer symptom timelines: 0 is healthy, 1 is active.
STATE_MAPPINGS: list[dashboard_models.ValueMapping] = [
    dashboard_models.ValueMap(
        options={
            "0": dashboard_models.ValueMappingResult(text="ok", color="green", index=0),
            "1": dashboard_models.ValueMappingResult(text="active", color="red", index=1),
        }
    )
]


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False) -> Any:
    """A Prometheus query on the gradwatch data source."""
    target = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    if instant:
        target = target.instant()
    else:
        target = target.range()
    if table:
        target = target.format(prometheus_models.PromQueryFormat.TABLE)
    return target


def log_scale() -> Any:
    """A base-10 log axis: gradient norms and update ratios span many decades."""
    return common_builders.ScaleDistributionConfig().type(common_models.ScaleDistribution.LOG).log(10)


def thresholds(*steps: tuple[float | None, str]) -> Any:
    """Absolute thresholds from (value, colour) pairs; the first value is None (the base)."""
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=value, color=color) for value, color in steps])
    )


def variables(*, run_multi: bool, with_layer: bool) -> list[Any]:
    """job, namespace, run (and layer) from label_values on gradwatch's own series, plus the API URL."""

    def labels(name: str, label: str, source: str, *, multi: bool, description: str) -> Any:
        return (
            dashboard_builders.QueryVariable(name)
            .label(label)
            .description(description)
            .datasource(DATASOURCE)
            .query(f"label_values({source}, {name})")
            .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
            .multi(multi)
            .include_all(True)
            .all_value(".*")
        )

    found = [
        labels("job", "Job", "gradwatch_runs", multi=True, description="Prometheus job(s) scraping gradwatch."),
        labels(
            "namespace",
            "Namespace",
            'gradwatch_runs{job=~"$job"}',
            multi=True,
            description="Kubernetes namespace, where the scrape adds one; 'All' also matches none.",
        ),
        labels(
            "run",
            "Run",
            f"gradwatch_step{{{SCOPE}}}",
            multi=run_multi,
            description="Training run name, as passed to gradwatch.watch(run=...).",
        ),
    ]
    if with_layer:
        found.append(
            labels(
                "layer",
                "Layer",
                f"gradwatch_layer_grad_norm{{{RUN}}}",
                multi=True,
                description="Layer filter for the per-layer panels (parameter names, e.g. 0.weight).",
            )
        )
    found.append(
        dashboard_builders.TextBoxVariable("gradwatch_url")
        .label("gradwatch URL")
        .description("Base URL of the gradwatch service, for the links to a run's diagnoses (JSON API).")
        .default_value(DEFAULT_GRADWATCH_URL)
    )
    return found


def diagnoses_link() -> Any:
    """A dashboard link to the selected run's diagnoses on the gradwatch JSON API."""
    return (
        dashboard_builders.DashboardLink("Diagnoses of $run (JSON API)")
        .type(dashboard_models.DashboardLinkType.LINK)
        .url("${gradwatch_url}/v1/runs/${run}/diagnoses")
        .tooltip("Every diagnosis of the run with its evidence and advice, from the gradwatch service")
        .icon("external link")
        .target_blank(True)
    )


def sibling_links() -> Any:
    """A drop-down of the other gradwatch dashboards, keeping the time range and variables."""
    return (
        dashboard_builders.DashboardLink("gradwatch dashboards")
        .type(dashboard_models.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )


@dataclass
class Grid:
    """Places panels left to right in rows of 24 columns, with explicit ids and positions.

    The SDK would place panels by itself, but only from its own running cursor;
    explicit positions keep the layout readable in the code and stable in the JSON.
    """

    x: int = 0
    y: int = 0
    row_height: int = 0
    next_id: int = 1
    panels: list[Any] = field(default_factory=list)

    def add(self, panel: Any, w: int, h: int) -> None:
        """Put ``panel`` in the current row (or a new one when it does not fit) with the next id."""
        if not 0 < w <= 24:
            raise ValueError(f"panel width must be 1..24 columns, got {w}")
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel.id(self.next_id).grid_pos(dashboard_models.GridPos(h=h, w=w, x=self.x, y=self.y))
        self.panels.append(panel)
        self.next_id += 1
        self.x += w
        self.row_height = max(self.row_height, h)


def annotation(name: str, expr: str, color: str) -> Any:
    """A Prometheus annotation: a region on every time panel while ``expr`` has a series."""
    return (
        dashboard_builders.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .hide(False)
        .icon_color(color)
        .expr(expr)
    )


#: Annotation names, also the keys of their Prometheus-specific formats below.
DIAGNOSES = "gradwatch diagnoses"
ALERTS = "Firing alerts"
ANNOTATION_FORMATS = {
    DIAGNOSES: {"titleFormat": "{{symptom}}", "textFormat": "{{summary}}", "tagKeys": "run,symptom,layer,rank"},
    ALERTS: {"titleFormat": "{{alertname}}", "textFormat": "{{summary}}", "tagKeys": "severity,run,symptom"},
}


def dashboard(uid: str, title: str, description: str, grid: Grid, variables_: list[Any]) -> Any:
    """A gradwatch dashboard builder holding ``grid``'s panels, with active diagnoses as annotations."""
    built = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .time("now-1h", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .variables(variables_)
        .link(sibling_links())
        .annotation(
            annotation(
                DIAGNOSES,
                f"max by (run, symptom, layer, rank, summary) (gradwatch_diagnosis_active{{{RUN}}})",
                "red",
            )
        )
    )
    for panel in grid.panels:
        built = built.with_panel(panel)
    return built


def render(model: Any, annotation_formats: dict[str, dict[str, Any]] = ANNOTATION_FORMATS) -> str:
    """The dashboard as stable, pretty JSON text (sorted keys, trailing newline).

    ``annotation_formats`` adds, per annotation name, the Prometheus-specific
    fields the SDK's generic AnnotationQuery has no setter for (titleFormat,
    textFormat, tagKeys, step), as Grafana's Prometheus data source reads them.
    """
    data = json.loads(JSONEncoder().encode(model.build()))
    for panel in data.get("panels", []):
        # The SDK writes "options": null for panels left at their defaults;
        # Grafana fills defaults into a missing object, not into null.
        if panel.get("options") is None:
            panel["options"] = {}
    for item in data.get("annotations", {}).get("list", []):
        item.update(annotation_formats.get(item.get("name"), {}))
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
