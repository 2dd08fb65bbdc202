"""The ``stagnation`` rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import StagnationConfig
from .robust import as_float, nanmedian, safe_ratio, trend
from .series import global_update_ratio
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
    "loss_frozen": (
        "The loss has not moved at all: check that optimizer.step() runs, the learning rate is not zero, and "
        "the parameters being trained are the ones the loss uses."
    ),
}


def _dead(view: RunView, cfg: StagnationConfig) -> bool:
    """Latest stats row: every measured gradient is 0 or <= dead_grad_ratio of its weight norm."""
    if view.stat_steps.size == 0:
        return False
    g = np.asarray(view.grad_norm, dtype=float)[-1]
    w = np.asarray(view.weight_norm, dtype=float)[-1]
    measured = np.isfinite(g)
    if not measured.any():
        return False
    rel = safe_ratio(g, w)
    tiny = (g == 0) | (np.nan_to_num(rel, nan=np.inf) <= cfg.dead_grad_ratio)
    return bool(np.all(tiny[measured]))


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_stagnation(view: RunView, config: StagnationConfig) -> Finding | None:
    """Report a loss that does not improve because the weights barely move.

    Not improving: over the last window_steps finite losses, with medians m1,
    m3 of the first and last thirds and sigma the noise from first
    differences, m1 - m3 <= max(min_improvement * sigma, rel_tolerance * |m1|).
    Barely moving (first that holds): every measured gradient is zero or
    <= dead_grad_ratio * weight norm (dead_gradients); >= skipped_fraction of
    the window's steps were skipped (all_steps_skipped); the latest sampled
    global update ratio < min_update_ratio (tiny_updates); or, with no update
    ratio ever sampled, the loss range <= frozen_rel_range * |median|
    (loss_frozen). A converged run, whose loss is flat but whose weights still
    move, stays silent.

    Silent during warmup (latest lr > warmup_lr_rise * lr at the window start)
    and in the tail of a decay schedule (latest lr < decay_tail_fraction * max lr
    in view), where small updates are intended. The step is the window's first step.
    """
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
    if lr_now > config.warmup_lr_rise * lr_start or lr_now < config.decay_tail_fraction * lr_max:
        return None

    skipped = np.asarray(view.skipped, dtype=bool)[in_window]
    u_all = global_update_ratio(view)
    sampled = np.flatnonzero(np.isfinite(u_all))
    u_now = u_all[sampled[-1]] if sampled.size else np.nan
    median = nanmedian(loss)
    if _dead(view, config):
        reason = "dead_gradients"
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
        "window_steps": int(loss.size),
    }
    return Finding(symptom="stagnation", step=int(steps[0]), evidence=evidence, advice=ADVICE[reason])
