"""The ``loss_spike`` rule."""

from __future__ import annotations

import numpy as np

from .config import LossSpikeConfig
from .robust import TINY_ABS, as_float, mad_sigma, nanmedian
from .series import clean_grad_norm
from .view import Finding, RunView

ADVICE = (
    "The loss spiked: if spikes recur, lower the learning rate or clip gradients and check the batches at "
    "this step for bad data; if it does not recover, restart from a checkpoint before the spike and skip those batches."
)
#: Grad-norm spikes lead loss spikes by a few steps (BLOOM: ~6 iterations), so
#: the evidence looks this many steps before the loss spike for the grad norm.
GRAD_LEAD_STEPS = 10
#: A near miss: a loss this many log sigmas above its baseline, short of a spike.
NEAR_MISS_Z = 2.5
#: How often Gaussian noise gives a near miss (upper tail of N(0, 1) at 2.5).
NEAR_MISS_GAUSSIAN_RATE = 0.0062
#: Near misses needed before any rate counts as heavy-tailed.
MIN_NEAR_MISSES = 3
#: Over a baseline of exactly 0, a spike is at least this multiple of the largest loss before it.
ZERO_BASELINE_MARGIN = 2.0
#: Share of z_threshold a jump needs when it is sustained: above every loss of its baseline window for
#: confirm_steps steps in a row.
SUSTAINED_Z_SHARE = 0.5


def _baselines(
    view: RunView, steps: np.ndarray, f: np.ndarray, width: int, rel_floor: float, log: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per index t: (median, noise sigma) of the previous ``width`` values of ``f`` (at ``steps``).

    With ``log`` the values are log-losses: there the floor is rel_floor itself,
    since a change of d in log is a relative change of about d.

    An index's result depends only on the ``width`` values before it, so the
    previous evaluation's results are reused (``view.memo``) wherever that
    window is the same, checked value by value: a steady run recomputes only
    its new steps and the first ``width`` (whose windows lost their oldest
    values), ~55 of 512.
    """
    key = "loss_spike.log" if log else "loss_spike.linear"
    base, sigma = np.empty(f.size), np.empty(f.size)
    todo = np.arange(f.size)
    previous = view.memo.get(key)
    if previous is not None and previous[0] == (width, rel_floor) and f.size and previous[1].size:
        _, p_steps, p_f, p_base, p_sigma = previous
        start = np.flatnonzero(p_steps == steps[0])
        o = int(start[-1]) if start.size else -1
        m = min(p_steps.size - o, f.size) if o >= 0 else 0
        if m > width and np.array_equal(p_steps[o : o + m], steps[:m]) and np.array_equal(p_f[o : o + m], f[:m]):
            base[width:m], sigma[width:m] = p_base[o + width : o + m], p_sigma[o + width : o + m]
            todo = np.r_[np.arange(width), np.arange(m, f.size)]
    if todo.size:
        base[todo], sigma[todo] = _window_baselines(_before(f, todo, width, np.nan), rel_floor, log)
    view.memo[key] = ((width, rel_floor), steps.copy(), f.copy(), base, sigma)
    return base, sigma


def _window_baselines(win: np.ndarray, rel_floor: float, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """(median, noise sigma) of each row of ``win`` (NaN-padded windows of earlier values)."""
    base = nanmedian(win, axis=1)
    if log:
        # Upper-side spread only: batches with a loss near 0 make a long
        # *lower* tail in log units, which says nothing about how far up a
        # healthy batch goes. For symmetric noise this equals the MAD.
        above = np.where(win > base[:, None], win - base[:, None], np.nan)
        sigma = 1.4826 * nanmedian(above, axis=1)
    else:
        sigma = mad_sigma(np.diff(win, axis=1), axis=1) / np.sqrt(2.0)
    floor = (rel_floor if log else rel_floor * np.abs(base)) + TINY_ABS
    sigma = np.where(np.isfinite(sigma), np.maximum(sigma, floor), floor)
    return base, sigma


def _before(f: np.ndarray, at: np.ndarray, steps: int, pad: float) -> np.ndarray:
    """(len(at), steps): row i holds the ``steps`` values of ``f`` just before index at[i], ``pad`` before 0.

    Only the candidate steps of a rule are gathered, not every step of the window.
    """
    padded = np.concatenate([np.full(steps, pad), f])
    return padded[at[:, None] + np.arange(steps)[None, :]]


def _heavy_tailed(log_z: np.ndarray, min_history: int, excess: float) -> np.ndarray:
    """Per index: the near misses before it are too many for Gaussian log-noise (outliers are the data's own)."""
    near = np.nan_to_num(log_z, nan=0.0) > NEAR_MISS_Z
    near[:min_history] = False
    before = np.r_[0, np.cumsum(near)[:-1]]
    judged = np.maximum(np.arange(log_z.size) - min_history, 0)
    return (before >= MIN_NEAR_MISSES) & (before >= excess * NEAR_MISS_GAUSSIAN_RATE * judged)


def _above_window_max(f: np.ndarray, width: int, steps: int) -> np.ndarray:
    """Per index t: f[t .. t+steps-1] all exist and each exceeds the max of the ``width`` values before t."""
    n = f.size
    out = np.zeros(n, dtype=bool)
    if n < steps:
        return out
    at = np.arange(n - steps + 1)
    ceiling = _before(f, at, width, -np.inf).max(axis=1)
    run = np.lib.stride_tricks.sliding_window_view(f, steps).min(axis=1)  # row t = min of f[t : t+steps]
    out[at] = run > ceiling
    return out


def _after_effect(lf: np.ndarray, lbase: np.ndarray, lsigma: np.ndarray, steps: int) -> np.ndarray:
    """Per index t: median of the next ``steps`` log-losses in units of t's log sigma above t's baseline.

    NaN while fewer than ``steps`` losses have followed (not known yet).
    """
    n = lf.size
    out = np.full(n, np.nan)
    if n > steps:
        after = np.lib.stride_tricks.sliding_window_view(lf[1:], steps)  # row t = lf[t+1 : t+1+steps]
        t = np.arange(after.shape[0])
        out[t] = (np.median(after, axis=1) - lbase[t]) / lsigma[t]
    return out


def _grad_evidence(view: RunView, spike_step: int) -> dict[str, float]:
    g = clean_grad_norm(view)
    ok = ~np.isnan(g)
    steps, g = view.stat_steps[ok], g[ok]
    near = g[(steps >= spike_step - GRAD_LEAD_STEPS) & (steps <= spike_step + GRAD_LEAD_STEPS // 2)]
    before = g[steps < spike_step - GRAD_LEAD_STEPS][-8:]
    if near.size == 0 or before.size == 0:
        return {}
    return {"grad_norm_at_spike": as_float(near.max()), "grad_norm_before": nanmedian(before)}


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_loss_spike(view: RunView, config: LossSpikeConfig) -> Finding | None:
    """Report a loss spike among the new steps, or one the loss has not recovered from.

    For each finite loss x_t with at least min_history finite predecessors:
    b_t = median of the previous baseline_steps finite losses,
    sigma_t = max(1.4826 * MAD(first differences of those) / sqrt(2),
    rel_noise_floor * |b_t|, tiny). Differences cancel a falling trend, and
    MAD ignores earlier outliers. x_t is a spike when
    x_t - b_t > z_threshold * sigma_t and x_t - b_t > min_rel_jump * max(|b_t|, sigma_t)
    (the relative clause keeps a smooth large-batch loss from flagging wobbles of a batch: a spike
    takes the loss to 1.5x its level), and the
    rise is abrupt: x_t - r_t > abrupt_share * (x_t - b_t), with r_t the median of the
    abrupt_steps losses before t (a level reached by drifting up step by step is a trend).
    Where b_t is exactly 0 (most of a hinge loss's batches meet every margin), x_t must
    also be twice every loss of its baseline window.
    For a positive loss the same z test must also hold on log(loss), with the
    noise floor rel_noise_floor in log units: multiplicative heavy-tailed noise
    (lognormal) is then Gaussian and its outliers are not spikes, unless the
    run had learned (b_t < initial / above_initial) and x_t lands above
    above_initial times the initial loss: near a memorised set the log-noise
    spans orders of magnitude, and a healthy batch does not land far above
    where training started. A sustained jump, above every loss of its baseline
    window for confirm_steps steps in a row, needs only SUSTAINED_Z_SHARE of the
    linear line, sustained_rel_jump instead of min_rel_jump, and not the log test.
    Where the log-noise is heavy-tailed (near misses, log z > 2.5, at least 3 and
    at least heavy_tail_excess times the Gaussian rate so far), a spike must also
    be followed by confirm_steps losses whose
    median stays confirm_z log sigmas above its baseline: there one-batch
    outliers are the data's own.

    Present if a spike is among the new steps, or the loss has stayed above
    b_s + recovery_fraction * z_threshold * sigma_s ever since a spike s in the
    window; the step is the first such spike.
    """
    loss = np.asarray(view.loss, dtype=float)
    idx = np.flatnonzero(np.isfinite(loss))
    f = loss[idx]
    if f.size <= config.min_history:
        return None
    history = np.minimum(np.arange(f.size), config.baseline_steps)
    steps = view.loss_steps[idx]
    base, sigma = _baselines(view, steps, f, config.baseline_steps, config.rel_noise_floor, log=False)
    jump = f - base
    scale = np.maximum(np.abs(base), sigma)
    # The full lines (z and relative) for a spike of a batch or two; a sustained one needs less (see below).
    strong = (jump > config.z_threshold * sigma) & (jump > config.min_rel_jump * scale)
    spike = (
        (history >= config.min_history)
        # Half the line here; the full line below unless the spike is sustained (see there).
        & (jump > SUSTAINED_Z_SHARE * config.z_threshold * sigma)
        & (jump > config.sustained_rel_jump * scale)
        # A run whose loss has fallen to ~0 (a memorised set) has batches at
        # 30x the median that are still nothing: jumps under 1% of where the
        # run started are not spikes, however large relative to the median.
        & ~(jump < config.initial_floor * np.abs(view.initial_loss))
    )
    # Abrupt: most of the jump happened within the last abrupt_steps (a level reached by drifting up
    # step by step is a trend).
    at = np.flatnonzero(spike)
    recent = nanmedian(_before(f, at, config.abrupt_steps, np.nan), axis=1)
    spike[at] = f[at] - recent > config.abrupt_share * jump[at]
    # A baseline of exactly 0 (a hinge or ranking loss with most margins met) says nothing about how
    # large a normal nonzero batch is, and its difference noise is ~0: there a spike must also be
    # ZERO_BASELINE_MARGIN times every loss before it in the window (a new largest batch is not one).
    at = np.flatnonzero(spike & (base == 0))
    spike[at] = f[at] > ZERO_BASELINE_MARGIN * _before(f, at, config.baseline_steps, -np.inf).max(axis=1)
    log_z = np.full(f.size, np.nan)
    # Where in the loss array each step's verdict became known (later for a spike that needs confirming).
    decided = idx
    if np.all(f > 0):
        # Small-batch noise on a positive loss is closer to multiplicative
        # (lognormal) than additive: its upper tail is long in linear units but
        # Gaussian in log units. A spike must stand out in both.
        lf = np.log(f)
        lbase, lsigma = _baselines(view, steps, lf, config.baseline_steps, config.rel_noise_floor, log=True)
        log_z = (lf - lbase) / lsigma
        # Near a memorised set the batches span orders of magnitude and the log test's sigma with them
        # (a jump of 1660x read as 3 sigmas); a run that had learned (baseline under 1/k of where it
        # started) and lands above k times its start is spiking anyway.
        start = view.initial_loss
        above_start = (start > 0) & (f > config.above_initial * start) & (base < start / config.above_initial)
        # Both sigmas are as wide as the batches' spread, which near 0 spans orders of magnitude
        # (0.009 .. 0.45): a jump from 0.04 to 1.29 that stayed above 0.7 for 8 steps read as 9.8 linear
        # and 2 log sigmas. A loss above every one of the baseline_steps losses before it, confirm_steps
        # times in a row, is as unlikely for noise of any shape (about 1 in baseline_steps **
        # confirm_steps): such a sustained jump needs only half the linear line, and not the log test.
        sustained = _above_window_max(f, config.baseline_steps, config.confirm_steps)
        by_log = strong & ((log_z > config.log_z_threshold) | above_start)
        spike &= by_log | sustained
        # A spike seen only as sustained is known once its confirm_steps losses are.
        decided = np.where(
            spike & ~by_log, idx[np.minimum(np.arange(f.size) + config.confirm_steps - 1, f.size - 1)], idx
        )
        # Heavy-tailed data (Student-t targets, say) makes one-batch outliers far beyond any Gaussian
        # sigma, and the robust sigma ignores them by design. Where the run's own near misses show such a
        # tail, a spike must also disturb training: the losses after it stay up.
        heavy = _heavy_tailed(log_z, config.min_history, config.heavy_tail_excess)
        if heavy.any():
            after = _after_effect(lf, lbase, lsigma, config.confirm_steps)
            spike &= ~heavy | (after > config.confirm_z)
            confirmed_at = idx[np.minimum(np.arange(f.size) + config.confirm_steps, f.size - 1)]
            decided = np.where(heavy, confirmed_at, decided)
    else:
        spike &= strong
    # Unrecovered: the loss has stayed above the spike's recovery line ever since (the suffix minimum
    # from the spike on). Judging only the newest loss would revive every recovered spike in the
    # window once the loss rises for another reason, and name the oldest as the onset.
    since = np.minimum.accumulate(f[::-1])[::-1]
    unrecovered = since > base + config.recovery_fraction * config.z_threshold * sigma
    active = np.flatnonzero(spike & ((decided >= view.new_loss_from) | unrecovered))
    if active.size == 0:
        return None
    s = int(active[0])
    step = int(view.loss_steps[idx[s]])
    peak = s + int(np.argmax(f[s:]))
    evidence = {
        "loss_at_spike": as_float(f[s]),
        "baseline": as_float(base[s]),
        "sigma": as_float(sigma[s]),
        "z": as_float(jump[s] / sigma[s]),
        "log_z": as_float(log_z[s]),
        "jump_ratio": as_float(jump[s] / max(abs(base[s]), sigma[s])),
        "peak_loss": as_float(f[peak]),
        "peak_step": int(view.loss_steps[idx[peak]]),
        "loss_now": as_float(f[-1]),
        "recovered": not bool(unrecovered[s]),
        "spiking_steps": int(np.sum(spike[s:])),
    }
    evidence.update(_grad_evidence(view, step))
    rank = int(view.loss_rank[idx[s]]) if view.loss_rank.size == loss.size else None
    return Finding(symptom="loss_spike", step=step, evidence=evidence, advice=ADVICE, rank=rank)
