"""Settings of the rules that read gradients: ``nonfinite``, ``exploding_gradient``, ``vanishing_gradient``."""

from __future__ import annotations

from pydantic import Field

from ._base import _SymptomConfig


class NonfiniteConfig(_SymptomConfig):
    """Settings of the ``nonfinite`` rule (NaN/Inf in loss, gradients or weights)."""

    max_layers_listed: int = Field(
        default=10, ge=1, description="How many affected layers (in model order) the evidence names."
    )
    ignore_skipped_steps: bool = Field(
        default=True,
        description=(
            "Ignore non-finite gradients on steps the optimizer skipped (AMP GradScaler found "
            "inf and skipped the step): routine loss scaling, not an incident."
        ),
    )


class ExplodingGradientConfig(_SymptomConfig):
    """Settings of the ``exploding_gradient`` rule."""

    growth_factor: float = Field(
        default=30.0, gt=1.0, description="Global gradient norm growth over its baseline that counts as explosion."
    )
    rise_rows: int = Field(
        default=2,
        ge=1,
        description="Consecutive rising stats rows needed before growth counts (rejects one-off spikes).",
    )
    baseline_rows: int = Field(
        default=8,
        ge=1,
        description="Stats rows whose median is a baseline (the window's first rows, or rows before the rise).",
    )
    growth_steps: int = Field(
        default=120,
        ge=1,
        description=(
            "Growth must be fast: the norm must also be growth_factor x its level this many steps before it "
            "reached the line (where the window reaches that far back). Gradients that grow 30x over hundreds "
            "of steps while the loss keeps improving (a mixture density network's shrinking sigmas) are training."
        ),
    )
    weight_growth_factor: float = Field(
        default=3.0,
        gt=1.0,
        description="Global weight norm growth over the window's first rows that counts as explosion.",
    )
    weight_accel_ratio: float = Field(
        default=0.75,
        ge=0.0,
        description=(
            "Weight growth only counts when it is not decelerating: the log-growth rate of the last "
            "third of the window must be at least this fraction of the first third's."
        ),
    )
    depth_ratio: float = Field(
        default=1e3,
        gt=1.0,
        description="Lowest-quarter / top-quarter median RMS gradient that counts as a depth explosion.",
    )
    depth_rows: int = Field(default=3, ge=1, description="Latest stats rows that must all show the depth ratio.")
    min_layers: int = Field(
        default=4, ge=2, description="Layers with a gradient needed before the depth profile is judged."
    )
    max_update_ratio: float = Field(
        default=1.0, gt=0.0, description="Global update/weight ratio at or above which one step rewrites the weights."
    )
    loss_window_steps: int = Field(
        default=40, ge=6, description="Every-step losses used to judge whether the loss is rising."
    )
    loss_noise_k: float = Field(
        default=2.0, ge=0.0, description="Loss change, in noise sigmas, that counts as rising or improving."
    )
    max_grad_weight_ratio: float = Field(
        default=float("inf"),
        gt=0.0,
        description=(
            "Global ||g|| / ||w|| at or above which gradients dwarf the weights they update; must hold for "
            "depth_rows rows, or once at 10x this. Off (inf) by default: the ratio carries the loss's units (a "
            "regression on prices in dollars has 1e9 and trains well), so only a run whose loss is an average "
            "over targets of order 1 may set it (1e3: healthy such runs sit around 1e-3..1)."
        ),
    )
    through_time_ratio: float = Field(
        default=100.0,
        gt=1.0,
        description=(
            "RMS gradient at a plain (ungated) recurrence's first time step / at its last, at or above which the "
            "gradient explodes through time; must hold on depth_rows rows."
        ),
    )
    divergence_factor: float = Field(
        default=100.0,
        gt=1.0,
        description="Loss growth over its pre-rise level, through consecutive rises, that counts as divergence.",
    )
    divergence_rises: int = Field(
        default=2, ge=1, description="Consecutive every-step loss rises needed before divergence counts."
    )
    max_jump_share: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description=(
            "Weight growth and loss divergence do not count when one stats row (weights) or step (loss) "
            "makes more than this share of the whole rise in log units, unless it is the newest, taken from "
            "a value already above everything before the rise (an accelerating blow-up): one jump is a "
            "level shift (a batch of bad data, a changed bias), not a divergence that feeds on itself."
        ),
    )
    ramp_rises: int = Field(
        default=10,
        ge=3,
        description=(
            "Consecutive every-step loss rises that make a loss ramp (with ramp_factor and ramp_rate_share): "
            "noise orders n + 1 losses increasingly once in (n + 1)!."
        ),
    )
    ramp_factor: float = Field(
        default=1.3, gt=1.0, description="Growth of the loss over a ramp's rises that counts as divergence."
    )
    ramp_floor: float = Field(
        default=0.01,
        ge=0.0,
        description=(
            "A ramp must take the loss above this fraction of the run's initial loss: a memorised training set at "
            "1e-4 that climbs for a dozen steps under Adam and falls back is not diverging."
        ),
    )
    ramp_rate_share: float = Field(
        default=0.8,
        ge=0.0,
        description=(
            "A ramp's mean log-increase per step over its second half must be at least this share of its first "
            "half's: a divergence keeps its rate, a healthy climb (a filling queue of negatives, a ramped "
            "loss weight) slows down."
        ),
    )


class VanishingGradientConfig(_SymptomConfig):
    """Settings of the ``vanishing_gradient`` rule."""

    depth_ratio: float = Field(
        default=1e-3,
        gt=0.0,
        lt=1.0,
        description="Lowest-quarter / top-quarter median RMS gradient below which lower layers have vanished.",
    )
    patience_rows: int = Field(default=3, ge=1, description="Latest stats rows whose median depth ratio is judged.")
    min_layers: int = Field(
        default=3, ge=2, description="Layers with a gradient needed before the depth profile is judged."
    )
    update_ratio_ratio: float = Field(
        default=1e-3,
        gt=0.0,
        lt=1.0,
        description="Lowest-quarter / top-quarter update ratio below which lower layers count as frozen.",
    )
    collapse_factor: float = Field(
        default=1e4,
        gt=1.0,
        description="Fall of the global grad norm from the window's first rows that counts as collapse.",
    )
    baseline_rows: int = Field(default=8, ge=1, description="First stats rows whose median is the collapse baseline.")
    loss_window_steps: int = Field(
        default=40, ge=6, description="Every-step losses used to judge whether the loss still improves."
    )
    min_improvement: float = Field(
        default=2.0,
        ge=0.0,
        description="Loss improvement, in noise sigmas, below which the loss counts as not improving.",
    )
    converged_fraction: float = Field(
        default=1e-3,
        ge=0.0,
        lt=1.0,
        description=(
            "The collapse trigger is silent once the recent loss is at most this fraction of the run's "
            "initial loss: a run that has learned its task has little gradient left (0 turns this off)."
        ),
    )
    through_time_ratio: float = Field(
        default=1e-4,
        gt=0.0,
        lt=1.0,
        description=(
            "RMS gradient reaching a recurrence's first time step / at its last step, below which the gradient "
            "has vanished through time (judged while the loss does not improve)."
        ),
    )
    through_time_recovery: float = Field(
        default=10.0,
        gt=1.0,
        description=(
            "Rise of that ratio across the judged rows that counts as the network learning to carry gradient "
            "back (an LSTM opening its forget gates): no finding while it rises this much."
        ),
    )
    stalled_fraction: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description=(
            "Share of the trained parameters (by count) whose update ratio is below stalled_update_ratio that "
            "makes a stalled bulk: judged with the bulk's gradient against the layers that move (depth_ratio), "
            "while the loss has not left its start."
        ),
    )
    stalled_update_ratio: float = Field(
        default=1e-5, gt=0.0, description="Update/weight ratio below which a layer counts as not moving."
    )
    no_progress_rel: float = Field(
        default=0.02,
        ge=0.0,
        description="For a stalled bulk: the loss counts as never having left its start within this fraction of it.",
    )
