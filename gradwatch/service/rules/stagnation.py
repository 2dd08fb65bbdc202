"""The ``stagnation`` rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import StagnationConfig
from .robust import as_float, nanmedian, safe_ratio, trend
from .series import global_update_ratio, has_converged
from .view import Finding, RunView

ADVICE = {
    "tiny_updates": (
        "Training has stalled with tiny updates: raise the learning rate (an update/weight ratio near 1e-3 is "
        "typical) and check that the optimizer holds all parameters and the scheduler did not set lr to ~0."
    ),
    "dead_gradients": (
        "Gradients are zero in every layer: check that the loss depends on the parameters (detached tensors, "
        "requires_grad=False), and for dead ReLUs or saturated activations."
    ),
    "all_steps_skipped": (
        "The optimizer skipped almost every step (AMP GradScaler keeps finding inf gradients): train in bf16 or "
        "fp32, lower the learning rate, or find the overflowing layer."
    ),
    "frozen_parameters": (
        "Almost every parameter is frozen or gets no gradient, and the loss has not moved from where it started: "
        "check requires_grad and which parameters the optimizer holds."
    ),
    "loss_frozen": (
        "The loss has not moved at all: check that optimizer.step() runs, the learning rate is not zero, and "
        "the parameters being trained are the ones the loss uses."
    ),
}


def _inactive_shares(view: RunView, cfg: StagnationConfig) -> tuple[float, float]:
    """Latest stats row: (share of measured parameters with a dead gradient, share of parameters frozen).

    Shares count parameters, not layers: one live output bias does not make a
    network of dead ReLUs a training one. A gradient is dead when it is 0 or at
    most dead_grad_ratio of its layer's weight norm; a layer is frozen when it
    has no gradient at all.
    """
    if view.stat_steps.size == 0 or view.layer_numel.size == 0:
        return 0.0, 0.0
    g = np.asarray(view.grad_norm, dtype=float)[-1]
    w = np.asarray(view.weight_norm, dtype=float)[-1]
    numel = np.asarray(view.layer_numel, dtype=float)
    measured = np.isfinite(g)
    rel = safe_ratio(g, w)
    dead = measured & ((g == 0) | (np.nan_to_num(rel, nan=np.inf) <= cfg.dead_grad_ratio))
    dead_share = float(numel[dead].sum() / numel[measured].sum()) if measured.any() and numel[measured].sum() else 0.0
    # A layer with a live gradient that the latest sampled step left exactly unchanged is not being
    # trained (its parameters are not in the optimizer, or their group's lr is 0): frozen, as far
    # as training goes.
    frozen = ~measured | (_unmoved(view) & measured & ~dead)
    frozen_share = float(numel[frozen].sum() / numel.sum()) if numel.sum() else 0.0
    return dead_share, frozen_share


def _unmoved(view: RunView) -> np.ndarray:
    """Per layer: the newest row that sampled the update ratio shows exactly 0 (all False when none did)."""
    u = np.asarray(view.update_ratio, dtype=float)
    rows = np.flatnonzero(np.isfinite(u).any(axis=1)) if u.size else np.zeros(0, dtype=int)
    if rows.size == 0:
        return np.zeros(view.layer_numel.size, dtype=bool)
    return u[rows[-1]] == 0


def _has_nonfinite(view: RunView, window: int) -> bool:
    """NaN/Inf in the latest ``window`` losses or in the newest stats row."""
    recent = np.asarray(view.loss, dtype=float)[-window:]
    if recent.size and not np.all(np.isfinite(recent)):
        return True
    rows = (np.asarray(view.grad_nonfinite, dtype=bool), np.asarray(view.weight_nonfinite, dtype=bool))
    return any(flags.size and flags[-1].any() for flags in rows)


def _lr_collapsed(lr: np.ndarray, factor: float, substantial: float) -> bool:
    """Did the lr fall by more than ``factor`` in one step from a substantial level (a collapse, not a decay)?

    A schedule's last steps to exactly 0 start from an lr that is already tiny
    (below ``substantial``), so they do not count.
    """
    finite = lr[np.isfinite(lr)]
    if finite.size < 2:
        return False
    before, after = finite[:-1], finite[1:]
    return bool(np.any((before >= substantial) & (before > 0) & (after < before / factor)))


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_stagnation(view: RunView, config: StagnationConfig) -> Finding | None:
    """Report a loss that does not improve because the weights barely move.

    Not improving: over the last window_steps finite losses, with medians m1,
    m3 of the first and last thirds and sigma the noise from first
    differences, m1 - m3 <= max(min_improvement * sigma, rel_tolerance * |m1|).
    Barely moving (first that holds): at least inactive_fraction of the
    measured parameters (by count) have a gradient that is zero or <=
    dead_grad_ratio * weight norm (dead_gradients); at least inactive_fraction
    of all parameters are frozen (no gradient, or a gradient but an update
    ratio of exactly 0 at the newest sampled row: not in the optimizer) or
    dead, and the loss is still within
    no_progress_rel of the run's initial loss (frozen_parameters: a frozen
    backbone whose head has learned is not stalled); >= skipped_fraction of
    the window's steps were skipped (all_steps_skipped); the latest sampled
    global update ratio < min_update_ratio (tiny_updates); or, with no update
    ratio ever sampled, the loss range <= frozen_rel_range * |median|
    (loss_frozen). A converged run, whose loss is flat but whose weights still
    move, stays silent.

    Silent during warmup (latest lr > warmup_lr_rise * lr at the window start)
    and in the tail of a decay schedule (latest lr < decay_tail_fraction * max lr
    in view), where small updates are intended -- unless the lr collapsed (fell
    by more than collapse_factor in one step), which no schedule does. The step
    is the window's first step.

    Silent too once the median of the newest losses is at most
    converged_fraction of the initial loss: the run has learned its task.
    """
    if _has_nonfinite(view, config.window_steps):
        # NaN/Inf belongs to the nonfinite rule: NaN gradients would read as
        # "no gradient" here, and a NaN-stuck loss as a flat one.
        return None
    if has_converged(view, config.converged_fraction):
        # A loss at 1e-14 of where it began (a realisable regression at float precision) does not
        # improve and its updates are tiny: that is the task solved, not a stall.
        return None
    ok = np.isfinite(view.loss)
    steps = view.loss_steps[ok][-config.window_steps :]
    loss = np.asarray(view.loss, dtype=float)[ok][-config.window_steps :]
    if loss.size < config.window_steps:
        return None
    tr = trend(loss)
    if tr.improving(config.min_improvement, config.rel_tolerance):
        return None

    lr = np.asarray(view.lr, dtype=float)
    in_window = np.flatnonzero(view.loss_steps >= steps[0])
    lr_now = lr[-1] if lr.size else np.nan
    lr_start = lr[in_window[0]] if in_window.size and lr.size else np.nan
    lr_max = np.nanmax(lr) if np.isfinite(lr).any() else np.nan
    if lr_now > config.warmup_lr_rise * lr_start:
        return None
    tail = config.decay_tail_fraction * lr_max
    if lr_now < tail and not _lr_collapsed(lr, config.collapse_factor, tail):
        return None

    skipped = np.asarray(view.skipped, dtype=bool)[-config.skipped_window_steps :]
    if skipped.size < config.skipped_window_steps:
        skipped = skipped[:0]
    u_all = global_update_ratio(view)
    sampled = np.flatnonzero(np.isfinite(u_all))
    u_now = u_all[sampled[-1]] if sampled.size else np.nan
    median = nanmedian(loss)
    dead_share, frozen_share = _inactive_shares(view, config)
    initial = view.initial_loss
    never_learned = bool(
        np.isfinite(initial) and abs(tr.last - initial) <= max(config.no_progress_rel * abs(initial), 3.0 * tr.sigma)
    )
    if dead_share >= config.inactive_fraction:
        reason = "dead_gradients"
    elif frozen_share + (1.0 - frozen_share) * dead_share >= config.inactive_fraction and never_learned:
        reason = "frozen_parameters"
    elif skipped.size and skipped.mean() >= config.skipped_fraction:
        reason = "all_steps_skipped"
    elif sampled.size and u_now < config.min_update_ratio:
        reason = "tiny_updates"
    elif not sampled.size and np.ptp(loss) <= config.frozen_rel_range * abs(median):
        reason = "loss_frozen"
    else:
        return None

    evidence: dict[str, Any] = {
        "reason": reason,
        "update_ratio": as_float(u_now),
        "update_ratio_step": int(view.stat_steps[sampled[-1]]) if sampled.size else None,
        "loss_first_third": as_float(tr.first),
        "loss_last_third": as_float(tr.last),
        "improvement": as_float(-tr.change),
        "loss_sigma": as_float(tr.sigma),
        "lr_now": as_float(lr_now),
        "lr_max": as_float(lr_max),
        "skipped_fraction": as_float(skipped.mean()) if skipped.size else 0.0,
        "dead_gradient_share": as_float(dead_share),
        "frozen_share": as_float(frozen_share),
        "initial_loss": as_float(initial),
        "window_steps": int(loss.size),
    }
    return Finding(symptom="stagnation", step=int(steps[0]), evidence=evidence, advice=ADVICE[reason])
