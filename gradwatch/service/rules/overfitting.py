"""The ``overfitting`` rule."""

from __future__ import annotations

import numpy as np

from .config import OverfittingConfig
from .robust import as_float, diff2_sigma, diff_sigma, median3, median_gap_band, nanmedian, trailing_run
from .series import finite_loss
from .view import Finding, RunView

#: The val noise is also measured over the newest this many points, and the larger estimate taken: a run at
#: chance for 200 steps has a flat held-out loss (noise 1e-3), and once it learns on batches of 2 its held-out
#: loss jumps by 0.25 from one check to the next (held-out set 20); a whole-series estimate is the flat part's.
RECENT_VAL_POINTS = 12


def _train_near(steps: np.ndarray, loss: np.ndarray, at: int, width: int) -> tuple[float, int]:
    """Median of the last ``width`` finite train losses at or before step ``at``, and how many there were."""
    before = loss[steps <= at][-width:]
    return nanmedian(before), int(before.size)


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_overfitting(view: RunView, config: OverfittingConfig) -> Finding | None:
    """Report a held-out loss that keeps rising above its best while the train loss keeps falling.

    With v_j the finite val losses, m_j = min_{i<=j} med3(v)_i (running minimum
    of a centred 3-point median) and sigma_v = 1.4826 * MAD(second differences
    of v) / sqrt(6) (a sparse val series has curvature between points), over all
    of v or its newest RECENT_VAL_POINTS, whichever is larger, the line
    is m_j + max(rel_tolerance * |m_j|, noise_k * sigma_v). Present when the
    last ``patience`` val points all lie above their line (a one-off bump does
    not), or the last ``rise_points`` val points each rose and together rose by
    more than max(min_rel_rise * |m|, 1.5 * noise_k * sigma_v) from below the
    line (a steady rise, seen before it crosses the line), and the train loss
    near the current val step (median of the
    train_window_steps every-step losses at or before it) is lower than near
    the val minimum by more than noise_k standard errors: the model goes on
    fitting its training data while it generalises worse. (If train rises too,
    the run is diverging, a different symptom; if it stands still, nothing is
    being fitted and the held-out estimate is drifting.) And the current
    val loss is above that train loss: a held-out loss below the train loss
    shows no generalisation gap.

    The step is the first point of the trailing run above the line. If the
    val minimum predates the every-step window, the earliest train losses in
    the window stand in for the train loss then (it has usually only fallen
    since), and the evidence says so.
    """
    ok = np.isfinite(view.val_loss)
    vs, v = view.val_steps[ok], np.asarray(view.val_loss, dtype=float)[ok]
    if v.size < config.min_val_points:
        return None
    # The best level reached so far, from a 3-point median: the raw minimum of
    # n noisy points sits ~2 sigma below their mean and would put the line
    # inside a flat plateau's noise.
    smooth = median3(v)
    run_min = np.minimum.accumulate(smooth)
    sigma_v = np.nanmax([diff2_sigma(v), diff2_sigma(v[-RECENT_VAL_POINTS:]), 0.0])
    line = run_min + np.maximum(config.rel_tolerance * np.abs(run_min), config.noise_k * sigma_v)
    run = trailing_run(v > line)
    if run >= config.patience:
        trigger = "above_minimum"
        j0 = v.size - run
        j_min = int(np.argmin(smooth[:j0]))
    else:
        # A smooth, steady rise: consecutive increases from the minimum that add
        # up to more than the noise. Clean held-out sets rise like this long
        # before they cross a relative line.
        rises = trailing_run(np.r_[False, v[1:] > v[:-1]])
        start = v.size - 1 - rises
        total = v[-1] - v[start] if rises else 0.0
        # Five white-noise points in a row rise together by about 2.3 sigma;
        # 1.5 * noise_k sigmas (4.5 by default) is far beyond that.
        floor = max(config.min_rel_rise * abs(run_min[-1]), 1.5 * config.noise_k * sigma_v)
        if rises < config.rise_points or total <= floor or v[start] > line[start]:
            return None
        trigger = "steady_rise"
        j0 = start + 1
        j_min = start

    ls, lv = finite_loss(view)
    if lv.size == 0:
        return None
    train_now, n_now = _train_near(ls, lv, int(vs[-1]), config.train_window_steps)
    proxy = bool(ls[0] > vs[j_min])
    if proxy:
        train_then, n_then = nanmedian(lv[: config.train_window_steps]), min(lv.size, config.train_window_steps)
    else:
        train_then, n_then = _train_near(ls, lv, int(vs[j_min]), config.train_window_steps)
    sigma_t = diff_sigma(lv) if lv.size > 2 else 0.0
    sigma_t = sigma_t if np.isfinite(sigma_t) else 0.0
    tolerance = median_gap_band(sigma_t, n_now, n_then, config.noise_k)
    # Overfitting fits the training data better and better while generalising worse:
    # - the train loss has fallen beyond its noise since the val minimum. On a fresh data stream (nothing to
    #   memorise) a held-out loss on a few fixed batches drifts up and back by 1-25% over four checks while
    #   the train loss stands still or wanders within its noise (held-out sets 15 and 16: four runs);
    # - the held-out loss is above the train loss. One taken on a handful of samples wanders up and back
    #   (batch 2, dropout, label smoothing: 1.13 -> 1.29 over four points, then back) below the train loss.
    if not (np.isfinite(train_now) and np.isfinite(train_then)) or train_now > train_then - tolerance:
        return None
    if not v[-1] > train_now:
        return None

    evidence = {
        "trigger": trigger,
        "val_min": as_float(v[j_min]),
        "val_min_step": int(vs[j_min]),
        "val_now": as_float(v[-1]),
        "val_now_step": int(vs[-1]),
        "tolerance_line": as_float(line[-1]),
        "val_sigma": as_float(sigma_v),
        "rising_points": run,
        "train_then": as_float(train_then),
        "train_now": as_float(train_now),
        "train_then_is_proxy": proxy,
        "gap": as_float(v[-1] - train_now),
    }
    advice = (
        "Held-out loss is rising while training loss keeps falling: add regularisation (weight decay, dropout, "
        f"augmentation) or more data, or stop early and keep the checkpoint from step {int(vs[j_min])}."
    )
    return Finding(symptom="overfitting", step=int(vs[j0]), evidence=evidence, advice=advice)
