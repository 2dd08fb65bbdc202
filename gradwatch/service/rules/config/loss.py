"""Settings of the rules that read the loss curves: ``loss_spike``, ``overfitting``, ``stagnation``."""

from __future__ import annotations

from pydantic import Field, model_validator

from ._base import _SymptomConfig


class LossSpikeConfig(_SymptomConfig):
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
        default=0.5,
        ge=0.0,
        description=(
            "Jump must also exceed this fraction of max(|baseline|, sigma): a spike takes the loss to at least "
            "1.5x where it stood. A low-noise loss wobbling 20-40% for one batch is many sigmas, and no spike."
        ),
    )
    sustained_rel_jump: float = Field(
        default=0.1,
        ge=0.0,
        description=(
            "The same fraction for a sustained jump (above every loss of its baseline window for confirm_steps "
            "steps in a row): a loss that steps up 30% and stays there has changed, where one batch 30% up has not."
        ),
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


class OverfittingConfig(_SymptomConfig):
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


class StagnationConfig(_SymptomConfig):
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
        default=1e-9,
        ge=0.0,
        description=(
            "grad_norm x weight_norm (what a relative change of the layer's weights does to the loss, to first "
            "order), as a fraction of the loss's size, at or below which a layer's gradient counts as dead."
        ),
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
