"""The layers dashboard: where in the network gradients vanish, explode or turn non-finite."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import heatmap, statetimeline, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import heatmap as heatmap_models

from gradwatch.dashboards.common import (
    DATASOURCE,
    LAYER,
    RUN,
    STATE_MAPPINGS,
    Grid,
    dashboard,
    diagnoses_link,
    log_scale,
    query,
    render,
    thresholds,
    variables,
)

UID = "gradwatch-layers"
TITLE = "gradwatch / Layers"

#: Joins the layer's zero-padded depth onto a per-layer series, so series sort
#: (and the heatmap stacks rows) by position in the model, input layer first.
_BY_DEPTH = f"* on (job, instance, run, layer) group_left (depth) gradwatch_layer_info{{{LAYER}}}"


def _per_layer(title: str, description: str, unit: str, expr: str, *, log: bool = True) -> Any:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .line_width(1)
        .show_points(common_models.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.RIGHT)
            .calcs(["lastNotNull"])
        )
        .with_target(query(expr, "{{layer}}"))
    )
    return panel.scale_distribution(log_scale()) if log else panel


def build() -> Any:
    """The layers dashboard builder."""
    grid = Grid()
    grid.add(
        heatmap.Panel()
        .title("Gradient norm per layer (log10)")
        .description(
            "Rows are layers in model order, the input layer at the bottom and the output layer at the top; "
            "columns are time; colour is log10 of the layer's gradient L2 norm (each step of the colour scale "
            "is a decade). Vanishing gradients show as the bottom rows fading to the cold end while the top "
            "stays warm; exploding gradients as colour climbing upwards over time, usually from the top."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .calculate(False)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Spectral")
            .scale(heatmap_models.HeatmapColorScale.LINEAR)
            .reverse(True)
            .steps(64)
        )
        .y_axis(heatmap.YAxisConfig().unit("none").axis_label("layer (input at the bottom)").reverse(False))
        .cell_values(heatmap.CellValues().unit("none").decimals(1))
        # The default hides cells <= 1e-9, i.e. every negative log10: show them all.
        .filter_values(heatmap.FilterValueRange())
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common_models.HeatmapCellLayout.UNKNOWN))
        .show_legend()
        .show_tooltip()
        .with_target(query(f"log10(gradwatch_layer_grad_norm{{{LAYER}}}) {_BY_DEPTH}", "{{depth}} {{layer}}")),
        w=24,
        h=12,
    )
    grid.add(
        _per_layer(
            "Update ratio ‖Δw‖/‖w‖ per layer",
            "How much each optimizer step changes a layer relative to its size, on sampled steps. The green "
            "band is the healthy range around 1e-3: far below it (1e-5 and less) the layer barely learns, far "
            "above it (1e-1) each step rewrites the layer and training is unstable.",
            "sci",
            f"gradwatch_layer_update_ratio{{{LAYER}}}",
        )
        .thresholds(thresholds((None, "transparent"), (3e-4, "green"), (3e-3, "transparent")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common_models.GraphTresholdsStyleMode.AREA)
        ),
        w=12,
        h=9,
    )
    grid.add(
        _per_layer(
            "Weight norm per layer",
            "L2 norm of each layer's weights. Slow drift is normal; a layer whose norm grows without bound is "
            "diverging, one that collapses towards 0 is being killed by weight decay or dead units.",
            "sci",
            f"gradwatch_layer_weight_norm{{{LAYER}}}",
        ),
        w=12,
        h=9,
    )
    grid.add(
        _per_layer(
            "Gradient max-abs per layer",
            "Largest absolute gradient value in each layer. One huge entry with a modest norm points at a "
            "single exploding unit or a bad sample; a gap in the line is a NaN/Inf.",
            "sci",
            f"gradwatch_layer_grad_max_abs{{{LAYER}}}",
        ),
        w=12,
        h=9,
    )
    grid.add(
        _per_layer(
            "Weight max-abs per layer",
            "Largest absolute weight value in each layer. Values growing by decades mean the layer is diverging "
            "even if the loss still looks fine; a gap in the line means the weights hold NaN/Inf.",
            "sci",
            f"gradwatch_layer_weight_max_abs{{{LAYER}}}",
        ),
        w=12,
        h=9,
    )
    grid.add(
        statetimeline.Panel()
        .title("Non-finite values per layer")
        .description(
            "One row per layer: red while the layer's gradients or weights hold NaN/Inf at the newest "
            "statistics step. The lowest row to turn red first is usually where the NaN was born; once the "
            "weights are NaN every later layer follows."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .mappings(STATE_MAPPINGS)
        .with_target(query(f"gradwatch_layer_nonfinite{{{LAYER}}}", "{{layer}}")),
        w=12,
        h=9,
    )
    grid.add(
        timeseries.Panel()
        .title("Non-finite counts per run and rank")
        .description(
            "Layers holding NaN/Inf right now (per-layer statistics come from one reporter per model shard), "
            "and per rank the steps on which that rank's own loss or pre-all-reduce gradients held NaN/Inf: "
            "in data-parallel training the rank whose count rises first is where to look for the bad batch "
            "or the overflowing kernel (the nonfinite diagnosis names it)."
        )
        .datasource(DATASOURCE)
        .unit("short")
        .min(0)
        .draw_style(common_models.GraphDrawStyle.BARS)
        .with_target(query(f"sum by (run) (gradwatch_layer_nonfinite{{{LAYER}}})", "layers with NaN/Inf {{run}}"))
        .with_target(
            query(
                f"sum by (run, rank) (gradwatch_rank_nonfinite_steps_total{{{RUN}}})",
                "non-finite steps on rank {{rank}}",
                "B",
            )
        ),
        w=12,
        h=9,
    )
    return dashboard(
        UID,
        TITLE,
        "Per-layer gradient and weight statistics of one run: the picture of vanishing and exploding gradients.",
        grid,
        variables(run_multi=False, with_layer=True),
    ).link(diagnoses_link())


def generate() -> str:
    """The layers dashboard as JSON text."""
    return render(build())
