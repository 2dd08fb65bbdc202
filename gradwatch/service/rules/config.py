"""Validated settings for the symptom rules: one pydantic model per rule.

The service loads these from the ``[rules]`` table of its TOML config, e.g.::

    [rules.loss_spike]
    z_threshold = 12

Defaults are chosen to be right for most runs (see ``docs/rules.md``). Every
model forbids unknown keys so a typo in a config file is an error that names
the key instead of a setting that silently does nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _RuleConfig(BaseModel):
    """Common model settings: strict keys, immutable, validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class NonfiniteConfig(_RuleConfig):
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


class ExplodingGradientConfig(_RuleConfig):
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
        default=1e3,
        gt=0.0,
        description=(
            "Global ||g|| / ||w|| at or above which gradients dwarf the weights they update (healthy runs sit "
            "around 1e-3..1); must hold for depth_rows rows, or once at 10x this."
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


class VanishingGradientConfig(_RuleConfig):
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


class LossSpikeConfig(_RuleConfig):
    """Settings of the ``loss_spike`` rule."""

    z_threshold: float = Field(
        default=10.0, gt=0.0, description="Jump over the baseline, in noise sigmas, that is a spike."
    )
    log_z_threshold: float = Field(
        default=4.0,
        gt=0.0,
        description=(
            "For a positive loss the jump must also exceed this many sigmas of log(loss). Multiplicative noise "
            "is close to Gaussian in log units, so its outliers stay under it; raise it for losses with wide "
            "multiplicative noise that never decays (see benchmarks/spike_threshold.py for the trade-off)."
        ),
    )
    initial_floor: float = Field(
        default=0.01,
        ge=0.0,
        description="Jumps smaller than this fraction of the run's initial loss are never spikes (losses near 0).",
    )
    above_initial: float = Field(
        default=2.0,
        gt=0.0,
        description=(
            "A run that had learned (baseline under 1/this of its initial loss) and whose loss lands above this "
            "multiple of its initial loss is spiking, whatever the log test says: near a memorised set the "
            "batches span orders of magnitude (1e-4..0.1) and the log-noise with them, but no healthy batch "
            "lands far above where training started."
        ),
    )
    heavy_tail_excess: float = Field(
        default=2.0,
        gt=0.0,
        description=(
            "Log-noise counts as heavy-tailed once its near misses (log z above 2.5) so far are at least 3 and at "
            "least this many times what Gaussian noise would give (0.62% of the steps). There outlier batches are "
            "the data's own (heavy-tailed targets), so a spike must also hold the loss up afterwards (confirm_z)."
        ),
    )
    confirm_steps: int = Field(
        default=3, ge=1, le=20, description="Steps after a spike judged for its after-effect in heavy-tailed noise."
    )
    confirm_z: float = Field(
        default=3.0,
        gt=0.0,
        description=(
            "In heavy-tailed noise, the median of the confirm_steps losses after a spike must stay this many log "
            "sigmas above the spike's baseline (a one-batch outlier of the data returns at once)."
        ),
    )
    min_rel_jump: float = Field(
        default=0.1, ge=0.0, description="Jump must also exceed this fraction of max(|baseline|, sigma)."
    )
    abrupt_steps: int = Field(
        default=3,
        ge=1,
        le=20,
        description="A spike must rise within this many steps: see abrupt_share.",
    )
    abrupt_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description=(
            "At least this share of a spike's jump over the baseline must be above the median of the abrupt_steps "
            "losses just before it: a loss that drifted up over many steps (a GAN's discriminator loss, say) is a "
            "trend, however far above the baseline it ends."
        ),
    )
    baseline_steps: int = Field(default=50, ge=3, description="Previous finite losses whose median is the baseline.")
    min_history: int = Field(
        default=20,
        ge=3,
        description=(
            "Finite losses needed before a step is judged: a noise estimate from fewer first differences is "
            "unreliable, and the first steps are often calmer than the rest (an output still near-constant)."
        ),
    )
    rel_noise_floor: float = Field(
        default=1e-3,
        ge=0.0,
        description="Noise sigma is at least this fraction of |baseline| (guards smooth losses).",
    )
    recovery_fraction: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="A spike stays present while the newest loss is above baseline + this * z_threshold * sigma.",
    )

    @model_validator(mode="after")
    def _history_fits_baseline(self) -> LossSpikeConfig:
        if self.min_history > self.baseline_steps:
            raise ValueError(
                f"loss_spike.min_history ({self.min_history}) must not exceed "
                f"loss_spike.baseline_steps ({self.baseline_steps})"
            )
        return self


class OverfittingConfig(_RuleConfig):
    """Settings of the ``overfitting`` rule."""

    min_val_points: int = Field(
        default=4, ge=2, description="Finite validation losses needed before the rule is judged."
    )
    rel_tolerance: float = Field(
        default=0.05,
        ge=0.0,
        description="Val loss must exceed its running minimum by more than this fraction of |min|.",
    )
    noise_k: float = Field(
        default=3.0,
        ge=0.0,
        description="Val loss must also exceed its running minimum by this many val-noise sigmas.",
    )
    patience: int = Field(default=3, ge=1, description="Latest val points that must all be above the tolerance line.")
    rise_points: int = Field(
        default=4,
        ge=2,
        description=(
            "A steady rise also counts: this many consecutive val increases after the minimum, adding up to more "
            "than min_rel_rise and noise_k val-noise sigmas (catches a smooth rise before it crosses the line). "
            "Three also fired on a val loss that rose for three points on a plateau, or while the run was still "
            "learning, and then fell for good."
        ),
    )
    min_rel_rise: float = Field(
        default=0.005, ge=0.0, description="Smallest total steady rise, as a fraction of the val minimum."
    )
    train_window_steps: int = Field(
        default=20, ge=1, description="Every-step losses at or before a val step whose median is the train loss then."
    )

    @model_validator(mode="after")
    def _patience_fits(self) -> OverfittingConfig:
        if self.patience >= self.min_val_points:
            raise ValueError(
                f"overfitting.patience ({self.patience}) must be smaller than "
                f"overfitting.min_val_points ({self.min_val_points}): a minimum must precede the rise"
            )
        return self


class StagnationConfig(_RuleConfig):
    """Settings of the ``stagnation`` rule."""

    window_steps: int = Field(default=16, ge=6, description="Latest finite every-step losses judged for improvement.")
    min_improvement: float = Field(
        default=2.0,
        ge=0.0,
        description="Improvement (first-third minus last-third median), in noise sigmas, that counts.",
    )
    rel_tolerance: float = Field(
        default=1e-3, ge=0.0, description="Improvement must also exceed this fraction of |median loss| to count."
    )
    min_update_ratio: float = Field(
        default=1e-5, gt=0.0, description="Global update/weight ratio below which updates are tiny."
    )
    stationary_gain: float = Field(
        default=1e-6,
        ge=0.0,
        description=(
            "A run whose loss is at its best after falling, and whose gradient is so small that a typical step "
            "(update ratio 1e-3) would lower the loss, to first order, by at most this fraction of itself, sits at "
            "a minimum: tiny updates there are convergence (full-batch L-BFGS), not a stall."
        ),
    )
    dead_grad_ratio: float = Field(
        default=1e-9, ge=0.0, description="grad_norm/weight_norm at or below which a layer's gradient counts as dead."
    )
    skipped_fraction: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Fraction of skipped optimizer steps over the last skipped_window_steps that means no updates.",
    )
    skipped_window_steps: int = Field(
        default=64,
        ge=1,
        description=(
            "Steps over which skipped steps are counted. A GradScaler calibrating its scale skips up to "
            "log2(init_scale / a working scale) steps in a row (about 25 from the default 2**16); that is normal."
        ),
    )
    frozen_rel_range: float = Field(
        default=1e-6, ge=0.0, description="Without update ratios: loss range <= this * |median| means frozen."
    )
    warmup_lr_rise: float = Field(
        default=1.05, gt=1.0, description="Silent while latest lr > this * lr at the window start (warmup)."
    )
    decay_tail_fraction: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="Silent while latest lr < this * max lr in view (end of a decay schedule).",
    )
    collapse_factor: float = Field(
        default=100.0,
        gt=1.0,
        description=(
            "An lr that fell by more than this in one step collapsed rather than decayed: the decay-tail "
            "exemption does not apply."
        ),
    )
    tail_max_share: float = Field(
        default=0.5,
        gt=0.0,
        description=(
            "The decay-tail exemption lasts while the lr has been in its tail for at most this share of the "
            "steps it took to get there: a schedule's tail is its last part, and an lr that reached it early "
            "and stays there ended the schedule too early (a scheduler stepped per batch instead of per epoch)."
        ),
    )
    inactive_fraction: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description=(
            "Share of parameters (by count) whose gradient is zero, or that are frozen, above which the network "
            "is effectively not training."
        ),
    )
    dead_rows: int = Field(
        default=3,
        ge=1,
        description=(
            "Statistics rows in a row with at least inactive_fraction of the parameters' gradients dead that "
            "make a dead network whatever the loss does (a live output bias can still pull the loss down to "
            "the class prior for a while)."
        ),
    )
    no_progress_rel: float = Field(
        default=0.02,
        ge=0.0,
        description="With mostly frozen parameters: the loss counts as never having learned within this fraction of its initial value.",
    )
    frozen_window_steps: int = Field(
        default=32,
        ge=6,
        description=(
            "Latest finite losses judged when the parameters are frozen without a gradient (requires_grad=False): "
            "what trains of a frozen model may start slowly (LoRA's zero-initialised adapters), so the verdict "
            "waits for a longer record than window_steps."
        ),
    )
    frozen_noise_rel: float = Field(
        default=0.1,
        gt=0.0,
        description=(
            "Parameters frozen without a gradient (requires_grad=False: a linear probe, LoRA) are reported as a "
            "stall only when the loss noise would let a drop of this fraction of the initial loss show; "
            "noisier runs are not judged frozen (a slow probe and a head that cannot learn look alike)."
        ),
    )
    converged_fraction: float = Field(
        default=1e-3,
        ge=0.0,
        lt=1.0,
        description=(
            "Silent once the recent loss is at most this fraction of the run's initial loss: a run that has "
            "learned its task has little gradient left, and its updates shrink with it (0 turns this off)."
        ),
    )


class RulesConfig(_RuleConfig):
    """All rule settings, one section per symptom (the ``[rules]`` TOML table)."""

    exploding_gradient: ExplodingGradientConfig = Field(default_factory=ExplodingGradientConfig)
    vanishing_gradient: VanishingGradientConfig = Field(default_factory=VanishingGradientConfig)
    nonfinite: NonfiniteConfig = Field(default_factory=NonfiniteConfig)
    loss_spike: LossSpikeConfig = Field(default_factory=LossSpikeConfig)
    overfitting: OverfittingConfig = Field(default_factory=OverfittingConfig)
    stagnation: StagnationConfig = Field(default_factory=StagnationConfig)
