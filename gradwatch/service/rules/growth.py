"""The ``exploding_gradient`` rule's growth trigger: the global gradient norm against its own earlier level.

Scale-free: a norm is only ever compared with the same run's norm some rows before, so the loss's units
and the model's size cancel. The other triggers live in :mod:`.exploding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ExplodingGradientConfig
from .robust import as_float, mad_sigma, median_gap_band, nanmedian, run_lengths, trailing_run, trend
from .series import clean_grad_norm, clean_layer_grads, finite_loss, global_norm
from .view import RunView


@dataclass
class Hit:
    """One trigger's verdict: its onset row step and what it measured."""

    onset: int
    evidence: dict[str, Any] = field(default_factory=dict)
    layer_baseline_rows: np.ndarray | None = None


def baseline_rows(n: int, wanted: int) -> int:
    """Rows for a baseline: ``wanted``, but at most a quarter of the window (at least one)."""
    return min(wanted, max(1, n // 4))


def gradient_growth(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """Global gradient norm >= growth_factor x baseline, and sustained.

    Baseline: the smaller of the median of the window's first rows and the
    median of the rows just before the trailing rising run (an explosion that
    starts at step 0 has only the first rows). Sustained: reached by rise_rows
    consecutive rises, or above the line for rise_rows + 1 rows in a row; it
    stays present while the norm stays above the line (a plateau after an
    explosion is still one). A single spike is not. Nor is slow growth: the norm
    must also be growth_factor x its level growth_steps before it reached the
    line, when the window reaches that far. An infinite norm on finite
    gradients (overflow) always counts. Only layers measured both in the first
    rows and now enter the sum: unfreezing layers adds terms, not growth.
    """
    grads = clean_layer_grads(view)
    valid = np.flatnonzero(~np.all(np.isnan(grads), axis=1))
    if valid.size < cfg.rise_rows + 1:
        return None
    # At least three rows in the first-rows baseline (when there are that
    # many): one anomalous first sample (a tiny gradient at initialisation)
    # must not become the yardstick.
    k = min(cfg.baseline_rows, max(3, valid.size // 4), max(valid.size - cfg.rise_rows, 1))
    cols = ~np.all(np.isnan(grads[valid[:k]]), axis=0) & ~np.isnan(grads[valid[-1]])
    g_all = global_norm(grads[:, cols]) if cols.any() and not cols.all() else clean_grad_norm(view)
    rows = valid[~np.isnan(g_all[valid])]
    g = g_all[rows]
    n = g.size
    if n < cfg.rise_rows + 1:
        return None
    runs = run_lengths(np.r_[False, g[1:] > g[:-1]])
    run_start = n - 1 - int(runs[-1])
    pre = np.arange(max(0, run_start - cfg.baseline_rows), run_start)
    candidates = [(nanmedian(g[:k]), np.arange(k))]
    if pre.size >= k:
        candidates.append((nanmedian(g[pre]), pre))
    candidates = [(b, r) for b, r in candidates if np.isfinite(b) and b > 0]
    if not candidates and not np.isposinf(g[-1]):
        return None
    baseline, base_rows = min(candidates, key=lambda c: c[0]) if candidates else (float("nan"), np.arange(k))

    if np.isposinf(g[-1]):
        i = n - trailing_run(np.isposinf(g))
    else:
        # Sustained: at least rise_rows rows in a row at or above the line. A
        # single elevated row (one bad batch) is a spike, not an explosion.
        elevated = trailing_run(g >= cfg.growth_factor * baseline)
        if elevated < cfg.rise_rows:
            return None
        i = n - elevated
        if _grew_slowly(view.stat_steps[rows], g, i, cfg):
            return None
    # Onset: the first row of the rise clearly above the baseline's own noise
    # (a noisy uptick just before the rise is not its start).
    rise = np.arange(max(i - max(int(runs[i]), 1), 0), i + 1)
    # Baseline rows that rise monotonically are the explosion itself (it began
    # at step 0): their spread is growth, not noise.
    monotone = base_rows.size > 1 and bool(np.all(np.diff(g[base_rows]) > 0))
    noise = float(mad_sigma(np.log(g[base_rows]))) if base_rows.size > 2 and not monotone else 0.0
    noise = noise if np.isfinite(noise) else 0.0
    ref = np.nanmin([baseline, g[rise[0]]])
    line = ref * np.exp(max(3.0 * noise, np.log(2.0)))
    above = rise[g[rise] > line]
    onset = int(above[0]) if above.size else int(rise[-1])
    steps = view.stat_steps[rows]
    if not np.isposinf(g[-1]) and _learned_while_growing(view, steps[base_rows], cfg):
        return None
    return Hit(
        onset=int(steps[onset]),
        evidence={
            "grad_norm_now": as_float(g[-1]),
            "grad_norm_baseline": as_float(baseline),
            "growth_factor": as_float(g[-1] / baseline),
            "grew_from_step": int(steps[max(onset - 1, 0)]),
            "grew_to_step": int(steps[-1]),
        },
        layer_baseline_rows=rows[base_rows],
    )


def _grew_slowly(steps: np.ndarray, g: np.ndarray, i: int, cfg: ExplodingGradientConfig) -> bool:
    """Was row ``i``'s norm already within growth_factor of its level growth_steps before it?

    That level is the median of the baseline_rows rows at or before that step; a window that does
    not reach so far back cannot tell, and the growth counts.
    """
    earlier = np.flatnonzero(steps <= steps[i] - cfg.growth_steps)[-cfg.baseline_rows :]
    if earlier.size == 0:
        return False
    level = nanmedian(g[earlier])
    return bool(np.isfinite(level) and level > 0 and g[i] < cfg.growth_factor * level)


#: The newest every-step losses compared with those over a growth's baseline rows.
GROWTH_LOSS_STEPS = 20
#: A loss that fell by this fraction of itself since the baseline rows has been learning through the growth.
GROWTH_LEARNED_FRACTION = 0.1
#: A loss this many times its own scale (its start, or its level over the baseline rows) below zero is an
#: objective running away to minus infinity, not learning.
RUNAWAY_LOSS_FACTOR = 10.0


def _learned_while_growing(view: RunView, base_steps: np.ndarray, cfg: ExplodingGradientConfig) -> bool:
    """Has the loss fallen clearly since the growth's baseline rows, and is it not rising now?

    Gradients that were tiny on a plateau (a network outputting the mean, a saddle) grow tens of times
    as it starts to learn, while the loss falls: escaping the plateau, not diverging. A divergence
    leaves the loss where it was, sends it up, or sends it far below zero (RUNAWAY_LOSS_FACTOR
    times its scale). Clearly: by GROWTH_LEARNED_FRACTION of itself and
    by loss_noise_k standard errors of the two medians (the losses over the baseline rows' steps, and
    the newest GROWTH_LOSS_STEPS).
    """
    steps, loss = finite_loss(view)
    then = loss[(steps >= base_steps.min()) & (steps <= base_steps.max())] if base_steps.size else loss[:0]
    now = loss[steps > base_steps.max()][-GROWTH_LOSS_STEPS:] if base_steps.size else loss[:0]
    if then.size < 6 or now.size < 6 or trend(now).rising(cfg.loss_noise_k):
        return False
    before, after = nanmedian(then), nanmedian(now)
    # A fall with no floor is not learning: an objective that rewards growing weights (a regulariser
    # with its sign flipped, a likelihood whose variance collapses) goes ever more negative as the
    # gradients grow (explode15_l2_penalty_sign_flipped: 0.4 to -46 in 45 steps, -1,400 by 100).
    # Losses that can go below zero legitimately (log-likelihoods) end within a few times their start.
    if after < -RUNAWAY_LOSS_FACTOR * max(abs(view.initial_loss), abs(before)):
        return False
    sigma = trend(loss[-cfg.loss_window_steps :]).sigma
    noise = median_gap_band(sigma, then.size, now.size, cfg.loss_noise_k)
    return bool(before - after > max(noise, GROWTH_LEARNED_FRACTION * abs(before)))
