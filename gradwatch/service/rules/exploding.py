"""The ``exploding_gradient`` rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import ExplodingGradientConfig
from .growth import Hit, baseline_rows, gradient_growth
from .loss_ramp import loss_ramp
from .robust import (
    as_float,
    nanmedian,
    run_lengths,
    safe_ratio,
    trailing_run,
    trend,
)
from .series import (
    clean_grad_norm,
    clean_layer_grads,
    clean_rms_quarters,
    finite_loss,
    global_update_ratio,
    global_weight_norm,
)
from .view import Finding, RunView

ADVICE = (
    "Gradients are exploding: lower the learning rate (or lengthen warmup) and clip gradients "
    "(e.g. clip_grad_norm_ at 1.0); if it starts at initialisation, check the weight init and add normalisation layers."
)
#: How many layers the evidence lists by growth.
TOP_LAYERS = 5


def _is_level_shift(log_values: np.ndarray, log_baseline: float, log_ceiling: float, max_share: float) -> bool:
    """One step of ``log_values`` makes more than ``max_share`` of their rise above ``log_baseline``.

    A divergence that feeds on itself spreads its rise over several steps, or
    accelerates: its largest step is the newest, taken from a value already
    above everything before the rise (``log_ceiling``), as in 1e5 -> 1e8 -> 7e25
    on the way to NaN. A level shift (bad data, every ReLU killed by a shifted
    bias) is one step, then a creep or a noise uptick.
    """
    total = log_values[-1] - log_baseline
    if log_values.size < 2 or not total > 0:
        return False
    jumps = np.diff(log_values)
    largest = int(np.argmax(jumps))
    if jumps[largest] <= max_share * total:
        return False  # spread over several steps
    accelerating = largest == jumps.size - 1 and log_values[-2] > log_ceiling
    return not accelerating


def _weight_growth(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """Global weight norm >= weight_growth_factor x its first rows, still rising, not decelerating.

    The global norm (not per layer) so that zero-initialised layers growing from
    0 do not count. Healthy growth under Adam is roughly linear in time, so its
    log-growth rate falls; divergence keeps or raises it. The loss must also not
    be improving: weights that grow while the loss falls are learning. A norm
    that overflowed to inf on finite weights always counts, for as long as it does.
    """
    bad = np.asarray(view.weight_nonfinite, dtype=bool).any(axis=1)
    w_all = np.where(bad, np.nan, global_weight_norm(view))
    overflowed = trailing_run(np.isposinf(w_all))
    if overflowed:
        # Finite weights whose norm overflows float32 (each sum of squares beyond 3.4e38): grown past
        # anything training reaches, however the loss looks. Dropping such rows as unmeasured would
        # clear the explosion and leave its wreck (zero gradients) to read as vanishing or stagnant.
        first = view.stat_steps[w_all.size - overflowed]
        finite = w_all[np.isfinite(w_all) & (w_all > 0)]
        base = nanmedian(finite[: baseline_rows(finite.size, cfg.baseline_rows)]) if finite.size else np.nan
        return Hit(
            onset=int(first),
            evidence={
                "weight_norm_now": as_float(np.inf),
                "weight_norm_baseline": as_float(base),
                "overflowed_at_step": int(first),
            },
        )
    rows = np.flatnonzero(np.isfinite(w_all) & (w_all > 0))
    w, t = w_all[rows], view.stat_steps[rows].astype(float)
    n = w.size
    if n < max(3, cfg.rise_rows + 1):
        return None
    base = nanmedian(w[: baseline_rows(n, cfg.baseline_rows)])
    growth = w[-1] / base
    runs = run_lengths(np.r_[False, w[1:] > w[:-1]])
    if growth < cfg.weight_growth_factor or runs[-1] < cfg.rise_rows:
        return None
    m = max(1, n // 3)
    lw = np.log(w)
    rate_first = safe_ratio(lw[m] - lw[0], t[m] - t[0])
    rate_last = safe_ratio(lw[-1] - lw[-1 - m], t[-1] - t[-1 - m])
    if not rate_last >= cfg.weight_accel_ratio * rate_first:
        return None
    if _decelerating_rise(lw, t, int(runs[-1])):
        return None
    _, loss = finite_loss(view, cfg.loss_window_steps)
    if not (loss.size >= 6 and trend(loss).rising(cfg.loss_noise_k)):
        # Weights that grow while the loss merely stalls are a small
        # initialisation being grown out of, not a divergence.
        return None
    # One row's jump (a bias shifted, weights reloaded) is a level change, not a divergence that
    # feeds on itself: the growth since the baseline rows must be spread over several rows.
    k = baseline_rows(n, cfg.baseline_rows)
    if _is_level_shift(lw[k - 1 :], np.log(base), np.max(lw[:k]), cfg.max_jump_share):
        return None
    onset = n - 1 - int(runs[-1]) + 1
    return Hit(
        onset=int(view.stat_steps[rows[onset]]),
        evidence={
            "weight_norm_now": as_float(w[-1]),
            "weight_norm_baseline": as_float(base),
            "weight_growth_factor": as_float(growth),
        },
    )


def _decelerating_rise(log_w: np.ndarray, t: np.ndarray, rising: int) -> bool:
    """Has the trailing rise slowed to under half its fastest row, over its two newest rows?

    One huge step that SGD's momentum carries on (an lr burst: 12 -> 38 -> 52 -> 70 -> 82 -> 89 -> 94)
    makes its biggest jump first and slows row by row; a divergence keeps or raises its rate, so its
    newest rows grow about as fast as its fastest. The window's thirds cannot see this when the
    window starts flat: any late growth then reads as acceleration. Judged from the fastest row on,
    once two rows follow it.
    """
    if rising < 3:
        return False
    rate = np.diff(log_w[-rising - 1 :]) / np.maximum(np.diff(t[-rising - 1 :]), 1.0)
    fastest = int(np.argmax(rate))
    after = rate[fastest + 1 :]
    return bool(after.size >= 2 and np.mean(after[-2:]) < 0.5 * rate[fastest])


def _grad_growing_or_loss_rising(view: RunView, cfg: ExplodingGradientConfig) -> bool:
    g = clean_grad_norm(view)
    g = g[~np.isnan(g)]
    if g.size >= 2 and g[-1] >= 2.0 * nanmedian(g[: baseline_rows(g.size, cfg.baseline_rows)]):
        return True
    _, loss = finite_loss(view, cfg.loss_window_steps)
    return bool(loss.size >= 6 and trend(loss).rising(cfg.loss_noise_k))


def _depth_profile(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """Lowest-quarter median RMS gradient >= depth_ratio x the top quarter's for the last depth_rows rows.

    Only with the gradient growing or the loss rising: a steep but stable
    profile that the optimiser copes with is not an explosion.
    """
    low, top, n_present = clean_rms_quarters(view)
    ratio = np.where(n_present >= cfg.min_layers, safe_ratio(low, top), np.nan)
    rows = np.flatnonzero(np.isfinite(ratio))
    r = ratio[rows]
    run = trailing_run(r >= cfg.depth_ratio)
    if run < cfg.depth_rows or not _grad_growing_or_loss_rising(view, cfg):
        return None
    return Hit(
        onset=int(view.stat_steps[rows[r.size - run]]),
        evidence={
            "depth_ratio": as_float(r[-1]),
            "low_quarter_rms": as_float(low[rows[-1]]),
            "top_quarter_rms": as_float(top[rows[-1]]),
        },
    )


def _update_ratio(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """Global update/weight ratio >= max_update_ratio at the latest sampled row.

    Not on the first sampled row alone when the loss fell across that step: the first update from
    initialisation may rewrite small initial weights by design, and a full-batch L-BFGS step with a
    line search jumps most of the way to the optimum of a convex problem (0.76 -> 0.42 in one step).
    A step past the edge of stability raises the loss instead. Until the next step's loss is known the
    first row waits; when the loss fell, the next sample decides.
    """
    u_all = global_update_ratio(view)
    rows = np.flatnonzero(np.isfinite(u_all))
    if rows.size == 0:
        return None
    run = trailing_run(u_all[rows] >= cfg.max_update_ratio)
    if run == 0 or (rows.size == 1 and _loss_fell_across(view, int(view.stat_steps[rows[0]])) is not False):
        return None
    return Hit(
        onset=int(view.stat_steps[rows[rows.size - run]]),
        evidence={"update_ratio": as_float(u_all[rows[-1]]), "update_ratio_step": int(view.stat_steps[rows[-1]])},
    )


def _loss_fell_across(view: RunView, step: int) -> bool | None:
    """Is the loss of the step after ``step`` below the loss of ``step``? None until both are known and finite."""
    steps, loss = view.loss_steps, np.asarray(view.loss, dtype=float)
    at, after = np.flatnonzero(steps == step), np.flatnonzero(steps == step + 1)
    if at.size == 0 or after.size == 0 or not np.isfinite(loss[at[0]]) or not np.isfinite(loss[after[0]]):
        return None
    return bool(loss[after[0]] < loss[at[0]])


def _gradient_scale(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """Global ||g|| / ||w|| >= max_grad_weight_ratio for depth_rows rows (or once at 10x that).

    Too large an initialisation or a recurrent matrix past spectral radius 1
    gives gradients thousands of times the size of the weights from the first
    step: there is no growth to see, only magnitude. Healthy training keeps
    this ratio around 1e-3..1 (an SGD step with ratio r moves the weights by
    lr * r of themselves); a ratio of 1e3 means any plain SGD step at a usual
    learning rate overwrites the weights.
    """
    g = clean_grad_norm(view)
    w = global_weight_norm(view)
    ratio = safe_ratio(g, w)
    rows = np.flatnonzero(np.isfinite(ratio))
    if rows.size == 0:
        return None
    r = ratio[rows]
    run = trailing_run(r >= cfg.max_grad_weight_ratio)
    if run < cfg.depth_rows and not (run >= 1 and r[-1] >= 10 * cfg.max_grad_weight_ratio):
        return None
    return Hit(
        onset=int(view.stat_steps[rows[r.size - run]]),
        evidence={"grad_weight_ratio": as_float(r[-1]), "grad_norm_now": as_float(g[rows[-1]])},
    )


def _through_time(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """A plain recurrence's first-step / last-step RMS gradient >= through_time_ratio on the newest depth_rows rows.

    A recurrent matrix past spectral radius 1 amplifies the gradient at every step back in time: an
    IRNN at 1.5 x identity over 20 steps carries 1,000-2,000x more gradient to its first step than
    its last, with weights of ordinary size and Adam keeping the steps bounded, so nothing grows
    from row to row. Unlike the magnitude of the gradient, this ratio has no units. A gated
    recurrence (LSTM, GRU) may learn to carry more gradient to an early step that matters (a
    delayed-recall LSTM reached 300), so only recurrences the agent reports as ungated are judged.
    """
    if view.recurrent_gated is not False:
        return None
    ratio = np.asarray(view.recurrent_ratio, dtype=float)
    rows = np.flatnonzero(np.isfinite(ratio))
    if rows.size < cfg.depth_rows:
        return None
    run = trailing_run(ratio[rows] >= cfg.through_time_ratio)
    if run < cfg.depth_rows:
        return None
    return Hit(
        onset=int(view.stat_steps[rows[rows.size - run]]),
        evidence={"through_time_ratio": as_float(ratio[rows[-1]]), "recurrent_module": view.recurrent_module},
    )


#: Share of the loss's log-growth over its baseline that the trailing rise must make itself.
RISE_SHARE = 0.5


def _loss_divergence(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """The every-step loss multiplied by >= divergence_factor through divergence_rises consecutive rises.

    Past the stability edge the loss grows geometrically, step after step,
    and often reaches NaN before two more statistics rows arrive; the
    every-step loss is then the earliest witness. A one-step jump (a spike)
    or a noisy rise does not qualify, and only positive losses are judged
    (a ratio means nothing across zero).
    """
    _, loss = finite_loss(view)
    # From the run's first loss on: a run that blows up from initialisation reaches NaN within a few steps
    # (2.8e5 -> 5.2e7 -> 1.2e22 -> NaN), and its first loss is all the baseline there will be.
    if loss.size < cfg.divergence_rises + 1:
        return None
    runs = run_lengths(np.r_[False, loss[1:] > loss[:-1]])
    rises = int(runs[-1])
    if rises < cfg.divergence_rises:
        return None
    start = loss.size - 1 - rises  # the last value before the rise
    before = loss[max(0, start - cfg.loss_window_steps) : start + 1]
    baseline = nanmedian(before)
    if not (baseline > 0 and loss[-1] >= cfg.divergence_factor * baseline):
        return None
    # The rise itself must have done most of that growth (half of it, in log units): a loss that
    # jumped to a new level some steps ago (every ReLU killed by a shifted bias: 0.0004 -> 1.66) and
    # now creeps up 1.61 -> 1.64 sits 4,000x over the median of a window that straddles the jump,
    # without multiplying at all.
    if np.log(loss[-1] / loss[start]) < RISE_SHARE * np.log(loss[-1] / baseline):
        return None
    # A loss that jumped once to a new level (bad data, a broken layer) and crept up after is not
    # a geometric divergence: no one step may make most of the rise.
    if _is_level_shift(np.log(loss[start:]), np.log(baseline), np.log(np.max(before)), cfg.max_jump_share):
        return None
    steps, _ = finite_loss(view)
    # Onset: the first rising step clearly above the old level (noise upticks
    # just before the divergence are not its start).
    clearly_up = start + 1 + int(np.argmax(loss[start + 1 :] >= 2.0 * baseline))
    return Hit(
        onset=int(steps[clearly_up]),
        evidence={
            "loss_growth_factor": as_float(loss[-1] / baseline),
            "loss_rises": rises,
            "loss_before_rise": as_float(baseline),
        },
    )


def _layer_growth(view: RunView, base_rows: np.ndarray | None) -> tuple[str | None, list[dict[str, Any]]]:
    """The lowest layer within 2x of the largest growth, and the top layers by growth."""
    grads = clean_layer_grads(view)
    valid = np.flatnonzero(~np.all(np.isnan(grads), axis=1))
    if valid.size == 0:
        return None, []
    base_idx = base_rows if base_rows is not None and base_rows.size else valid[:1]
    growth = safe_ratio(grads[valid[-1]], nanmedian(grads[base_idx], axis=0))
    ok = np.flatnonzero(~np.isnan(growth))
    if ok.size == 0:
        return None, []
    order = ok[np.argsort(-growth[ok], kind="stable")][:TOP_LAYERS]
    top = [{"layer": view.layers[int(i)], "growth": as_float(growth[i])} for i in order]
    best = growth[ok].max()
    # Prefer lower layers: the explosion usually starts where the chain of factors is longest.
    near_best = ok[growth[ok] >= best / 2.0]
    pick = near_best[0] if near_best.size else ok[np.argmax(growth[ok])]
    return view.layers[int(pick)], top


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_exploding_gradient(view: RunView, config: ExplodingGradientConfig) -> Finding | None:
    """Report gradients (or weights, or updates) that are blowing up now.

    Triggers (any one suffices; the onset is the earliest of those present):

    * growth: g_t = sqrt(sum_l grad_norm_{t,l}^2) >= growth_factor * baseline
      after rise_rows consecutive rises, or g_t = inf on finite gradients;
    * weight_growth: ||W||_t >= weight_growth_factor * ||W||_first, rising over
      the last rise_rows rows, log-rate not decelerating, loss not improving,
      and not a level shift (see loss_divergence);
    * depth_profile: median_{low quarter}(grad_norm/sqrt(numel)) >=
      depth_ratio * median_{top quarter}(...) for depth_rows rows, with the
      gradient growing (>= 2x) or the loss rising;
    * update_ratio: sqrt(sum u_l^2 w_l^2) / sqrt(sum w_l^2) >= max_update_ratio;
    * loss_divergence: loss_t >= divergence_factor * (median loss before the
      rise) after divergence_rises consecutive every-step rises, and not a
      level shift: one step making more than max_jump_share of the rise in
      log units, unless it is the newest step, taken from a loss already above
      everything before the rise (an accelerating blow-up);
    * loss_ramp: >= ramp_rises consecutive every-step loss rises, by >= ramp_factor,
      at a log-rate not slowing below ramp_rate_share (see loss_ramp);
    * gradient_scale: ||g|| / ||w|| >= max_grad_weight_ratio for depth_rows
      rows, or once at 10x that (off by default: the ratio has the loss's units);
    * through_time: a plain recurrence's first-step / last-step RMS gradient
      >= through_time_ratio for depth_rows rows.
    """
    hits = {
        name: hit
        for name, hit in (
            ("growth", gradient_growth(view, config)),
            ("weight_growth", _weight_growth(view, config)),
            ("depth_profile", _depth_profile(view, config)),
            ("update_ratio", _update_ratio(view, config)),
            ("loss_divergence", _loss_divergence(view, config)),
            ("loss_ramp", loss_ramp(view, config)),
            ("gradient_scale", _gradient_scale(view, config)),
            ("through_time", _through_time(view, config)),
        )
        if hit is not None
    }
    if not hits:
        return None
    onset = min(h.onset for h in hits.values())
    growth_hit = hits.get("growth")
    layer, top_layers = _layer_growth(view, growth_hit.layer_baseline_rows if growth_hit else None)
    loss_steps, loss = finite_loss(view)
    before = loss[loss_steps < onset][-50:]
    evidence: dict[str, Any] = {
        "triggers": list(hits),
        "top_layers": top_layers,
        "loss_now": as_float(loss[-1]) if loss.size else float("nan"),
        "loss_baseline": nanmedian(before),
    }
    for hit in hits.values():
        evidence.update(hit.evidence)
    return Finding(symptom="exploding_gradient", step=onset, evidence=evidence, advice=ADVICE, layer=layer)
