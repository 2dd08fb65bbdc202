"""The ``exploding_gradient`` rule's loss-ramp trigger: a loss that rises on every step, geometrically.

Past the stability edge a run with little batch noise (full-batch or large-batch regression, a linear
model) does not blow up at once: its loss grows by a few percent a step, for tens of steps, before it
reaches any multiple the divergence trigger waits for. What marks it is the shape, not the size: every
loss above the one before, and the growth per step not slowing down.
"""

from __future__ import annotations

import numpy as np

from .config import ExplodingGradientConfig
from .growth import Hit
from .robust import as_float, trailing_run
from .series import finite_loss
from .view import RunView


def loss_ramp(view: RunView, cfg: ExplodingGradientConfig) -> Hit | None:
    """At least ramp_rises consecutive every-step rises of a positive loss, >= ramp_factor over the run of
    them, with the mean log-increase of its second half >= ramp_rate_share x its first half's.

    Noise alone orders n + 1 losses increasingly once in (n + 1)! (10 rises: 1 in 4e7). A smooth healthy
    loss can climb for a while: an InfoNCE loss while its negatives' queue fills, a KL or penalty weight
    ramped up; those rises slow down (their log-rate falls as the ramp's linear growth adds less and
    less in proportion), where a divergence feeding on itself keeps its rate or speeds up. The onset
    is the first rising step. The ramp must also reach ramp_floor x the run's initial loss.
    """
    steps, loss = finite_loss(view)
    if loss.size <= cfg.ramp_rises:
        return None
    rises = trailing_run(np.r_[False, loss[1:] > loss[:-1]])
    if rises < cfg.ramp_rises:
        return None
    ramp = loss[-rises - 1 :]
    if not (ramp[0] > 0 and ramp[-1] >= cfg.ramp_factor * ramp[0]):
        return None
    # A run that has fitted its data (a memorised set at 1e-4, under Adam) may climb for a dozen steps and fall
    # back; while the loss stays under ramp_floor of where training started, it is nowhere near diverging.
    start = view.initial_loss
    if np.isfinite(start) and start > 0 and ramp[-1] < cfg.ramp_floor * start:
        return None
    increase = np.diff(np.log(ramp))
    half = increase.size // 2
    first, second = float(increase[:half].mean()), float(increase[-half:].mean())
    if second < cfg.ramp_rate_share * first:
        return None
    return Hit(
        onset=int(steps[-rises]),
        evidence={
            "loss_ramp_rises": rises,
            "loss_ramp_factor": as_float(ramp[-1] / ramp[0]),
            "loss_ramp_rate_change": as_float(second / first),
        },
    )
