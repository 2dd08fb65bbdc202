"""The run overview: loss curves, global gradient norm, learning rate, step time, active symptoms, alerts."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as common_models

from gradwatch.dashboards.common import (
    ALERTS,
    DATASOURCE,
    RUN,
    STATE_MAPPINGS,
    Grid,
    annotation,
    dashboard,
    diagnoses_link,
    log_scale,
    query,
    render,
    variables,
)

UID = "gradwatch-run"
TITLE = "gradwatch / Run overview"


def _series(title: str, description: str, unit: str) -> Any:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .line_width(1)
        .fill_opacity(5)
        .show_points(common_models.VisibilityMode.NEVER)
    )


def build() -> Any:
    """The run overview dashboard builder."""
    grid = Grid()
    grid.add(
        statetimeline.Panel()
        .title("Active symptoms")
        .description(
            "One row per symptom of the selected run: red while gradwatch holds the diagnosis active, green "
            "otherwise. A diagnosis clears after clear_after_steps quiet steps. Open the 'Diagnoses' link above "
            "for the evidence and advice of each one."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .mappings(STATE_MAPPINGS)
        .min(0)
        .max(1)
        .with_target(query(f"max by (run, symptom) (gradwatch_symptom_active{{{RUN}}})", "{{run}} {{symptom}}")),
        w=24,
        h=7,
    )
    grid.add(
        _series(
            "Loss and validation loss",
            "Training loss at each reported step and the newest held-out loss. A sudden jump is a loss spike; "
            "validation rising while training falls is overfitting; a flat line far above the start is "
            "stagnation. Red regions are active diagnoses, alert markers come from Prometheus' ALERTS.",
            "none",
        )
        .with_target(query(f"gradwatch_loss{{{RUN}}}", "loss {{run}}"))
        .with_target(query(f"gradwatch_val_loss{{{RUN}}}", "val loss {{run}}", "B")),
        w=12,
        h=9,
    )
    grid.add(
        _series(
            "Global gradient norm",
            "L2 norm of all gradients together at the newest statistics step, on a log axis. Growing by "
            "decades means exploding gradients; collapsing towards 0 means learning has stopped. NaN/Inf "
            "breaks the line (see the non-finite panels on the Layers dashboard).",
            "sci",
        )
        .scale_distribution(log_scale())
        .with_target(query(f"gradwatch_grad_norm{{{RUN}}}", "grad norm {{run}}")),
        w=12,
        h=9,
    )
    grid.add(
        _series(
            "Learning rate",
            "Learning rate of the first parameter group, as the optimizer had it. Read it next to the loss: "
            "a spike right after a warm-up step or a schedule change points at the schedule.",
            "sci",
        ).with_target(query(f"gradwatch_learning_rate{{{RUN}}}", "lr {{run}}")),
        w=8,
        h=8,
    )
    grid.add(
        _series(
            "Step time",
            "Wall-clock seconds of the newest optimizer step, measured inside training by the agent. Jumps "
            "point at data loading, checkpointing or a slow rank, not at gradwatch (its cost is in the "
            "agent's background thread).",
            "s",
        ).with_target(query(f"gradwatch_step_seconds{{{RUN}}}", "step time {{run}}")),
        w=8,
        h=8,
    )
    grid.add(
        _series(
            "Training progress",
            "Newest optimizer step reported by the run. A flat line while the job is up means training hung "
            "or its agent cannot reach gradwatch (compare with report lag on the Fleet dashboard).",
            "none",
        ).with_target(query(f"gradwatch_step{{{RUN}}}", "step {{run}}")),
        w=8,
        h=8,
    )
    grid.add(
        table.Panel()
        .title("Active diagnoses")
        .description(
            "The diagnoses active now, with the layer and rank they point at, their onset step, a one-line "
            "summary and the advice. The full evidence is in the run's diagnoses on the gradwatch API "
            "(link on each row and at the top of the dashboard)."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .data_links([diagnoses_link()])
        .with_target(
            query(
                f"max by (run, symptom, layer, rank, onset_step, summary, advice) (gradwatch_diagnosis_active{{{RUN}}})",
                instant=True,
                table=True,
            )
        ),
        w=24,
        h=8,
    )
    return (
        dashboard(
            UID,
            TITLE,
            "One training run: loss, gradients, learning rate, step time and gradwatch's diagnoses.",
            grid,
            variables(run_multi=False, with_layer=False),
        )
        .link(diagnoses_link())
        .annotation(annotation(ALERTS, 'ALERTS{alertstate="firing", run=~"$run"}', "orange"))
    )


def generate() -> str:
    """The run overview as dashboard JSON text."""
    return render(build())
