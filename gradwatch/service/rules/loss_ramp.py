"""The ``exploding_gradient`` rule's loss-ramp trigger: a loss that rises on every step, geometrically.

Past the stability edge a run with little batch noise (full-batch or large-batch regression, a linear
model) does not blow up at once: its loss grows by a few percent a step, for tens of steps, before it
reaches any multiple the divergence trigger waits for. What marks it is the shape, not the size: every
loss above the one before, and the growth per step not slowing down.

A loss that is not bounded below (a penalty whose sign was flipped, a likelihood maximised by mistake, a
variance learned to 0) diverges the other way: below zero, falling on every step, faster and faster.
"""

from __future__ import annotations

import numpy as np

from .config import ExplodingGradientConfig
from .growth import Hit
from .robust import as_float, trailing_run
from .series import finite_loss
from .view import RunView


def loss_ramp(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """A rising ramp (below), or the same towards minus infinity (:func:`_falling_ramp`)."""
    steps, loss = finite_loss(view)
    if loss.size <= cfg.ramp_rises:
        return None
    return _rising_ramp(steps, loss, view.initial_loss, cfg) or _falling_ramp(steps, loss, view.initial_loss, cfg)


def _rising_ramp(steps: np.ndarray, loss: np.ndarray, start: float, cfg: ExplodingGradientConfig) -> Hit | None:
    """At least ramp_rises consecutive every-step rises of a positive loss, >= ramp_factor over the run of
    them, with the mean log-increase of its second half >= ramp_rate_share x its first half's.

    Noise alone orders n + 1 losses increasingly once in (n + 1)! (10 rises: 1 in 4e7). A smooth healthy
    loss can climb for a while: an InfoNCE loss while its negatives' queue fills, a KL or penalty weight
    ramped up; those rises slow down (their log-rate falls as the ramp's linear growth adds less and
    less in proportion), where a divergence feeding on itself keeps its rate or speeds up. The onset
    is the first rising step. The ramp must also reach ramp_floor x the run's initial loss.
    """
    rises = trailing_run(np.r_[False, loss[1:] > loss[:-1]])
    if rises < cfg.ramp_rises:
        return None
    ramp = loss[-rises - 1 :]
    if not (ramp[0] > 0 and ramp[-1] >= cfg.ramp_factor * ramp[0]):
        return None
    # A run that has fitted its data (a memorised set at 1e-4, under Adam) may climb for a dozen steps and fall
    # back; while the loss stays under ramp_floor of where training started, it is nowhere near diverging.
    if np.isfinite(start) and start > 0 and ramp[-1] < cfg.ramp_floor * start:
        return None
    increase = np.diff(np.log(ramp))
    half = increase.size // 2
    first, second = float(increase[:half].mean()), float(increase[-half:].mean())
    if second < cfg.ramp_rate_share * first:
        return None
    return _ramp_hit(steps, rises, ramp, second / first, "rising")


def _falling_ramp(steps: np.ndarray, loss: np.ndarray, start: float, cfg: ExplodingGradientConfig) -> Hit | None:
    """At least ramp_rises consecutive every-step falls below zero, the magnitude >= ramp_factor over them and
    beyond the run's initial loss, each half of the falls steeper than the one before by ramp_speedup.

    Healthy losses go below zero too (a Gaussian negative log-likelihood, a critic's estimate), and fall
    steadily there while a learned variance shrinks at the optimizer's pace: a constant fall per step.
    A loss feeding on its own growth falls by more each step (x1.2 every 3 steps where an L2 penalty's
    sign was flipped); a healthy one slows down as it nears its floor. The onset is the first falling step.
    """
    # The falls counted are those from the first loss below zero on (a fall can cross zero in one step).
    falls = min(trailing_run(np.r_[False, loss[1:] < loss[:-1]]), trailing_run(loss < 0) - 1)
    if falls < cfg.ramp_rises:
        return None
    ramp = -loss[-falls - 1 :]
    if ramp[-1] < cfg.ramp_factor * ramp[0]:
        return None
    if np.isfinite(start) and ramp[-1] < abs(start):
        return None
    drop = np.diff(ramp)
    half = drop.size // 2
    first, second = float(drop[:half].mean()), float(drop[-half:].mean())
    if second < cfg.ramp_speedup * first:
        return None
    return _ramp_hit(steps, falls, ramp, second / first, "falling below zero")


def _ramp_hit(steps: np.ndarray, length: int, ramp: np.ndarray, rate_change: float, direction: str) -> Hit:
    """The finding of a ramp of ``length`` steps, at its first step."""
    return Hit(
        onset=int(steps[-length]),
        evidence={
            "loss_ramp_direction": direction,
            "loss_ramp_rises": length,
            "loss_ramp_factor": as_float(ramp[-1] / ramp[0]),
            "loss_ramp_rate_change": as_float(rate_change),
        },
    )
