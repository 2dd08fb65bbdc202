"""Reading a run's learning-rate schedule: where a small lr is intended, and where it is a mistake.

Warmup and a decay's tail make small updates on purpose; a collapse, a tail reached early and
outstayed, do not, unless the run had converged at its peak lr before a plateau scheduler cut it.
Used by the stagnation rule.
"""

from __future__ import annotations

import numpy as np

from .config import StagnationConfig
from .progress import FromStart, sloping_down
from .robust import median_gap_band, nanmedian, trend
from .view import RunView

#: The lr counts as at its peak down to this share of its maximum in view (see plateaued_at_full_lr).
FULL_LR_SHARE = 0.5
#: Windows of losses at the peak lr that must be flat to call a run converged before its lr was cut.
PLATEAU_WINDOWS = 3


def lr_collapsed(lr: np.ndarray, factor: float, substantial: float) -> bool:
    """Did the lr fall by more than ``factor`` in one step from a substantial level (a collapse, not a decay)?

    A schedule's last steps to exactly 0 start from an lr that is already tiny
    (below ``substantial``), so they do not count.
    """
    finite = lr[np.isfinite(lr)]
    if finite.size < 2:
        return False
    before, after = finite[:-1], finite[1:]
    return bool(np.any((before >= substantial) & (before > 0) & (after < before / factor)))


def tail_outstayed(lr: np.ndarray, lr_steps: np.ndarray, tail: float, max_share: float) -> bool:
    """Has the lr been below ``tail`` for more than ``max_share`` x the steps it took to get there?

    Steps count from 0, so a resumed run's steps before the tail include the earlier runs'. When
    the tail began before the oldest step in view, it is taken to begin there: the tail's length
    is then underestimated, which keeps the exemption rather than lifting it early.
    """
    finite = np.isfinite(lr)
    above = np.flatnonzero(finite & (lr >= tail))
    if above.size == 0 or above[-1] + 1 >= lr.size:
        return False
    entered, now = float(lr_steps[above[-1] + 1]), float(lr_steps[-1])
    return now - entered > max_share * max(entered, 1.0)


def plateaued_at_full_lr(
    view: RunView,
    config: StagnationConfig,
    lr: np.ndarray,
    lr_steps: np.ndarray,
    finite: tuple[np.ndarray, np.ndarray],
) -> bool:
    """Had the loss learned and then stopped improving while the lr was still at its peak?

    ReduceLROnPlateau cuts the lr because the loss stopped improving: a run that reached its noise
    floor (label noise) at its full lr sees the lr cut again and again, into the tail, where it
    stays. That run converged before its lr fell. A scheduler that cuts while the loss still falls
    (one stepped per batch, or ``mode="max"`` on a loss) took the lr from a run that was learning,
    and a loss that flattens only once the lr is already cut may flatten because of the cut. Judged
    on the PLATEAU_WINDOWS x window_steps finite losses up to the last step with the lr at
    FULL_LR_SHARE of its maximum or more: still falling if the medians of the first and last
    window_steps differ by more than their noise, or the least-squares slope is significantly
    negative (a slow fall under per-step noise shows in the slope first); False when the view
    does not hold that many losses.
    """
    full = np.flatnonzero(np.isfinite(lr) & (lr >= FULL_LR_SHARE * np.nanmax(lr)))
    if full.size == 0:
        return False
    steps, loss = finite
    span = PLATEAU_WINDOWS * config.window_steps
    at_full = loss[steps <= lr_steps[full[-1]]][-span:]
    if at_full.size < span:
        return False
    third = config.window_steps
    sigma = trend(at_full).sigma
    drop = nanmedian(at_full[:third]) - nanmedian(at_full[-third:])
    noise_band = median_gap_band(sigma, third, third)
    still_falling = drop > max(noise_band, config.rel_tolerance * abs(nanmedian(at_full[:third]))) or sloping_down(
        at_full, sigma, config.min_improvement
    )
    learned = not FromStart.of(view.initial_loss, at_full[-third:], sigma).never_learned(config.no_progress_rel)
    return bool(learned and not still_falling)


def small_lr_intended(
    view: RunView, config: StagnationConfig, window_start: int, finite: tuple[np.ndarray, np.ndarray]
) -> bool:
    """Is a small update from the window starting at step ``window_start`` on what the schedule intends?

    In warmup (latest lr > warmup_lr_rise x lr at the window start), and in the tail of a decay (latest
    lr < decay_tail_fraction x max lr in view) unless the lr collapsed or the run outstayed its tail
    without having converged at its peak lr first. ``finite``: the run's (steps, losses) with finite
    losses. False when the lr is missing (NaN).
    """
    lr = np.asarray(view.lr, dtype=float)
    in_window = np.flatnonzero(view.loss_steps >= window_start)
    lr_now = lr[-1] if lr.size else np.nan
    lr_start = lr[in_window[0]] if in_window.size and lr.size else np.nan
    lr_max = np.nanmax(lr) if np.isfinite(lr).any() else np.nan
    if lr_now > config.warmup_lr_rise * lr_start:
        return True
    tail = config.decay_tail_fraction * lr_max
    lr_steps = view.loss_steps[-lr.size :] if lr.size else view.loss_steps
    return bool(
        lr_now < tail
        and not lr_collapsed(lr, config.collapse_factor, tail)
        and (
            not tail_outstayed(lr, lr_steps, tail, config.tail_max_share)
            or plateaued_at_full_lr(view, config, lr, lr_steps, finite)
        )
    )
