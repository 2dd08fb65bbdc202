"""Table-driven tests of the loss-based rules (loss spike, overfitting) on synthetic runs; stagnation has its own file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from rule_views import check, decaying_loss, make_view, noisy_grads, rng

from gradwatch.service.rules import RunView
from gradwatch.service.rules.config import (
    LossSpikeConfig,
    OverfittingConfig,
)
from gradwatch.service.rules.overfitting import detect_overfitting
from gradwatch.service.rules.spike import detect_loss_spike

# --------------------------------------------------------------------------- loss_spike


def _spiked(at: int, height: float, length: int = 1, t: int = 500, noise: float = 0.01, **kw: Any) -> RunView:
    loss = decaying_loss(t, noise=noise)
    loss[at : at + length] *= height
    return make_view(loss, **kw)


def _spike_with_grads() -> RunView:
    g = noisy_grads(100, 4)
    g[58:61] *= 300  # grad norm leads the loss spike at step 300
    return _spiked(300, 3.0, length=3, grad=g, new_loss_from=295)


def _memorised_then_wrong_labels() -> RunView:
    """Trained from 1.65 down to a memorised set whose batches span 1e-4..0.15 (log-noise ~2.4 per sigma), then
    a batch of wrong labels lands at 14, 8.5x where training started: 3 sigmas in log units, but a spike."""
    loss = np.r_[np.linspace(1.65, 0.01, 100), np.exp(rng(7).uniform(np.log(1e-4), np.log(0.15), 200))]
    loss[250:252] = [14.1, 12.1]
    return make_view(loss, new_loss_from=245)


def _recovered_spike_then_level_shift() -> RunView:
    """A spike at 100 that recovered at once, then a level shift at 400 that did not: the finding is the shift."""
    loss = decaying_loss(500, noise=0.01)
    loss[100] *= 5.0
    loss[400:] *= 3.0
    return make_view(loss, new_loss_from=450)


def _heavy_tailed(spike_length: int, new_loss_from: int = 0, near_misses: bool = True, sigmas: float = 12) -> RunView:
    """Log-noise 0.03 where one batch in 25 lands 3.5 sigmas up (the data's own outliers), and ``sigmas`` up at 300
    (12: x1.43)."""
    loss = decaying_loss(400, noise=0.03, start=2.1)
    if near_misses:
        loss[np.arange(40, 400, 25)] *= np.exp(0.03 * 3.5)
    loss[300 : 300 + spike_length] *= np.exp(0.03 * sigmas)
    return make_view(loss, new_loss_from=new_loss_from)


def _mostly_zero(spike_at: int | None = None) -> RunView:
    """A margin-ranking loss near convergence (it started at 0.1): 0 on 80% of the steps, 0.001-0.04 on the rest."""
    g = rng(31)
    loss = np.where(g.random(300) < 0.8, 0.0, 0.001 + 0.04 * g.random(300))
    if spike_at is not None:
        loss[spike_at] = 0.1
    loss[:5] = 0.1
    return make_view(loss, new_loss_from=spike_at or 0)


LOSS_SPIKE_FIRES: list[tuple[str, Callable[[], RunView], int, bool]] = [
    ("heavy-tailed noise, a spike that holds for 5 steps", lambda: _heavy_tailed(5), 300, True),
    (
        "heavy-tailed noise: a spike confirmed by steps that are new now",
        lambda: _heavy_tailed(5, new_loss_from=302),
        300,
        True,
    ),
    (
        # 16 log sigmas, x1.62: a one-batch spike must take the loss to 1.5x its level.
        "a one-batch outlier without near misses before it",
        lambda: _heavy_tailed(1, near_misses=False, sigmas=16),
        300,
        True,
    ),
    ("a recovered old spike is not revived by a later shift", _recovered_spike_then_level_shift, 400, False),
    ("memorised set, then a batch of wrong labels far above the start", _memorised_then_wrong_labels, 250, True),
    ("single 3x outlier among new steps", lambda: _spiked(300, 3.0, new_loss_from=290), 300, True),
    ("level shift not recovered", lambda: _spiked(300, 1.5, length=200, new_loss_from=480), 300, False),
    ("late small-loss spike", lambda: _spiked(480, 1.3, length=20, new_loss_from=490), 480, False),
    ("spike in the newest step", lambda: _spiked(499, 2.0, new_loss_from=499), 499, False),
    (
        "a hinge loss mostly at exactly 0, then a batch at its starting level",
        lambda: _mostly_zero(spike_at=250),
        250,
        True,
    ),
]


@pytest.mark.parametrize(("name", "build", "step", "recovered"), LOSS_SPIKE_FIRES, ids=lambda x: x)
def test_loss_spike_fires(name: str, build: Callable[[], RunView], step: int, recovered: bool) -> None:
    f = check(detect_loss_spike(build(), LossSpikeConfig()), "loss_spike", step)
    ev = f.evidence
    assert ev["recovered"] is recovered
    assert ev["z"] > 10
    assert ev["loss_at_spike"] > ev["baseline"]


def test_loss_spike_grad_evidence() -> None:
    f = check(detect_loss_spike(_spike_with_grads(), LossSpikeConfig()), "loss_spike", 300)
    assert f.evidence["grad_norm_at_spike"] > 100 * f.evidence["grad_norm_before"]


def _lognormal_decay(seed: int) -> RunView:
    return make_view(decaying_loss(500, seed=seed, noise=0.3, start=6.0))


def _tiny_loss(seed: int) -> RunView:
    return make_view(1e-5 * np.abs(1 + 0.5 * rng(seed).standard_normal(500)))


def _warmup_cosine() -> RunView:
    t = np.arange(500)
    lr = np.where(t < 50, t / 50, 0.5 * (1 + np.cos(np.pi * (t - 50) / 450))) * 3e-4
    loss = 2.0 + 8.0 * np.exp(-np.cumsum(lr) / 0.01) + 0.02 * rng(1).standard_normal(500)
    return make_view(loss, lr=lr)


def _drift_up() -> RunView:
    """A GAN discriminator's loss: flat at 0.67 (noise 0.006 per step), then up 0.07 over 12 steps in steps of
    about 0.006 each, 11 sigmas above the baseline at its top, and back down."""
    level = np.r_[np.full(140, 0.67), np.linspace(0.67, 0.742, 12), np.linspace(0.742, 0.64, 20), np.full(28, 0.64)]
    return make_view(level + 0.004 * rng(11).standard_normal(200))


def _outlier_after_a_calm_start() -> RunView:
    """A flat loss whose first 15 steps are calmer (noise 0.01) than the rest (0.05), and a batch at +0.19 on step
    19: against those 15 calm steps it is 15 sigmas, against the run's real noise under 4."""
    noise = np.r_[0.01 * rng(12).standard_normal(15), 0.05 * rng(13).standard_normal(185)]
    loss = 1.38 + noise
    loss[19] = 1.57
    return make_view(loss)


def _low_noise_bump() -> RunView:
    """A loss at 0.37 with noise 0.01 (a large-batch bf16 CNN); one batch at 0.48: 11 sigmas, 30% up."""
    loss = 0.37 + 0.01 * rng(14).standard_normal(200)
    loss[150] = 0.48
    return make_view(loss)


LOSS_SPIKE_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    ("one batch 30% above a low-noise loss", _low_noise_bump),
    ("a level that drifts up step by step (a GAN discriminator)", _drift_up),
    ("a one-batch outlier on step 19, after a calm start", _outlier_after_a_calm_start),
    ("a hinge loss mostly at exactly 0, its nonzero batches small", _mostly_zero),
    *[(f"lognormal noise sigma 0.3 (seed {s})", lambda s=s: _lognormal_decay(s)) for s in range(5)],
    *[(f"tiny loss 1e-5 with 50% noise (seed {s})", lambda s=s: _tiny_loss(s)) for s in range(5)],
    ("fast early decrease", lambda: make_view(10 * np.exp(-np.arange(200) / 20) + 0.1 + 0.01 * rng().random(200))),
    ("warmup then cosine decay", _warmup_cosine),
    ("old spike, recovered and already seen", lambda: _spiked(200, 3.0, length=5, new_loss_from=400)),
    ("too little history", lambda: make_view(np.r_[np.ones(5), 100.0])),
    ("smooth loss without noise", lambda: make_view(np.linspace(3.0, 2.0, 300))),
    ("heavy-tailed noise: a one-batch outlier, back at once", lambda: _heavy_tailed(1, sigmas=16)),
    ("one batch x1.43 (12 log sigmas) without near misses", lambda: _heavy_tailed(1, near_misses=False)),
    ("heavy-tailed noise: a spike confirmed and seen long ago", lambda: _heavy_tailed(5, new_loss_from=350)),
]


@pytest.mark.parametrize(("name", "build"), LOSS_SPIKE_SILENT, ids=lambda x: x)
def test_loss_spike_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_loss_spike(build(), LossSpikeConfig()) is None


def _near_zero_wide_noise(jump: list[float]) -> RunView:
    """Batches spanning 0.01..0.45 (log-uniform: wide multiplicative noise near 0), then ``jump`` from step 150."""
    loss = np.exp(rng(21).uniform(np.log(0.01), np.log(0.45), 200))
    loss[150 : 150 + len(jump)] = jump
    return make_view(loss, new_loss_from=140)


def test_loss_spike_fires_on_a_sustained_jump_the_log_noise_hides() -> None:
    # Weights reset mid-run: 0.04 -> 1.29, above 0.7 for 8 steps, then recovering. In log units the noise is so
    # wide that this reads as 2 sigmas; that it sits above every loss of the 50 before it, step after step, does not.
    view = _near_zero_wide_noise([1.29, 1.11, 1.27, 1.33, 0.92, 1.03, 0.97, 0.83])
    f = check(detect_loss_spike(view, LossSpikeConfig()), "loss_spike", 150)
    assert f.evidence["log_z"] < LossSpikeConfig().log_z_threshold
    assert f.evidence["peak_loss"] == 1.33 and f.evidence["recovered"]


def test_loss_spike_silent_on_one_batch_in_wide_noise_near_zero() -> None:
    assert detect_loss_spike(_near_zero_wide_noise([1.29]), LossSpikeConfig()) is None


# --------------------------------------------------------------------------- overfitting

VAL_STEPS = np.arange(1, 21) * 25  # every 25 steps up to 500


def _val(curve: np.ndarray, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return VAL_STEPS, curve * (1 + noise * rng(seed).standard_normal(curve.size))


def _u_shaped(rise_from: int = 14) -> np.ndarray:
    v = 3.0 * np.exp(-np.arange(20) / 6) + 1.5
    v[rise_from:] = v[rise_from - 1] * (1 + 0.1 * np.arange(1, 21 - rise_from))
    return v


OVERFITTING_FIRES: list[tuple[str, Callable[[], RunView], int]] = [
    ("val rises while train falls", lambda: make_view(decaying_loss(), val=_val(_u_shaped())), VAL_STEPS[14]),
]


def test_overfitting_sees_a_smooth_steady_rise_before_it_crosses_the_line() -> None:
    # A clean held-out set: the val loss bottoms out at point 9 and then rises by 0.8% per point.
    curve = np.r_[1.2 - 0.01 * np.arange(10), 1.11 * (1 + 0.008 * np.arange(1, 11))]
    rises = OverfittingConfig().rise_points
    train = decaying_loss(start=1.5, end=0.6)
    view = make_view(train, val=(VAL_STEPS[: 10 + rises], curve[: 10 + rises]))
    f = check(detect_overfitting(view, OverfittingConfig()), "overfitting", int(VAL_STEPS[10]))
    assert f.evidence["trigger"] == "steady_rise"
    assert f.evidence["val_min_step"] == VAL_STEPS[9]
    # Fewer rises than rise_points: not yet.
    short = make_view(train, val=(VAL_STEPS[: 9 + rises], curve[: 9 + rises]))
    assert detect_overfitting(short, OverfittingConfig()) is None


@pytest.mark.parametrize(("name", "build", "step"), OVERFITTING_FIRES, ids=lambda x: x)
def test_overfitting_fires(name: str, build: Callable[[], RunView], step: int) -> None:
    f = check(detect_overfitting(build(), OverfittingConfig()), "overfitting", int(step))
    ev = f.evidence
    assert ev["val_now"] > ev["val_min"] * 1.05
    assert ev["val_min_step"] < step
    assert ev["train_now"] < ev["train_then"]


def test_overfitting_minimum_before_loss_window_uses_proxy() -> None:
    loss = decaying_loss(200)
    steps = np.arange(300, 500)
    view = make_view(loss, val=(VAL_STEPS, _u_shaped(6)))
    view = RunView(**{**view.__dict__, "loss_steps": steps})
    # The V's bottom is judged from a 3-point median, so the first rising point is not yet clearly above it.
    f = check(detect_overfitting(view, OverfittingConfig()), "overfitting", int(VAL_STEPS[7]))
    assert f.evidence["train_then_is_proxy"] is True


OVERFITTING_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    ("val tracks train", lambda: make_view(decaying_loss(), val=_val(decaying_loss()[VAL_STEPS - 1] + 0.3, 0.02))),
    *[
        (f"flat noisy plateau (seed {s})", lambda s=s: make_view(decaying_loss(), val=_val(np.full(20, 2.5), 0.03, s)))
        for s in range(5)
    ],
    (
        "one-off bump",
        lambda: make_view(
            decaying_loss(), val=_val(np.r_[3.0 * np.exp(-np.arange(20) / 6) + 1.5] * np.r_[[1] * 15, 1.3, [1] * 4])
        ),
    ),
    (
        "val and train both rise (divergence, not overfitting)",
        lambda: make_view(np.r_[np.full(350, 2.0), np.linspace(2.0, 3.0, 150)], val=_val(_u_shaped())),
    ),
    ("too few val points", lambda: make_view(decaying_loss(), val=(VAL_STEPS[:3], np.array([2.0, 2.5, 3.0])))),
    (
        # Batch 2 with dropout and label smoothing, validated on 8 samples: the held-out loss rises steadily over
        # five points below a train loss that stays flat at 1.3 (measured on healthy14_batch2_dropout_smoothing).
        "held-out loss on a handful of samples wanders up below a flat train loss",
        lambda: make_view(
            1.3 * np.exp(0.3 * rng(13).standard_normal(500)),
            val=(VAL_STEPS[:12], np.r_[np.linspace(1.4, 1.13, 7), 1.15, 1.185, 1.233, 1.286, 1.29]),
        ),
    ),
    ("rise shorter than patience", lambda: make_view(decaying_loss(), val=_val(_u_shaped(18)))),
    (
        # healthy20_batch2_plain_cnn, seed 0: at chance for 200 steps (val flat to 1e-3), then learning on
        # batches of 2, the held-out loss jumping 0.35 -> 0.60 for five checks and back; a whole-series noise
        # estimate is the flat stretch's.
        "noisy held-out loss once learning starts, after a flat start",
        lambda: make_view(
            np.r_[np.full(300, 1.38), np.geomspace(1.2, 0.07, 200)],
            val=(
                np.arange(1, 33) * 15,
                np.r_[
                    1.386 + 1e-3 * rng(3).standard_normal(20),
                    0.83,
                    0.63,
                    0.50,
                    0.62,
                    0.44,
                    0.37,
                    0.36,
                    0.35,
                    0.60,
                    0.61,
                    0.43,
                    0.46,
                ],
            ),
        ),
    ),
    (
        # Nothing is being fitted better: a held-out estimate drifting up over a flat train loss is the held-out
        # set's own noise (set 16: a fresh data stream, which cannot be overfitted, read as overfitting on 4 runs).
        "val rises, train flat",
        lambda: make_view(2.0 * np.exp(0.02 * rng().standard_normal(500)), val=_val(_u_shaped(16))),
    ),
    (
        # healthy16_quant_highway_gate_bias_minus2, seed 1: a fresh stream whose held-out loss rose 0.60 -> 0.65
        # over four checks while the train loss fell by less than its own noise (0.59 -> 0.52, band 0.075).
        "val drifts up while train falls by less than its noise",
        lambda: make_view(
            np.linspace(0.6, 0.54, 500) * np.exp(0.2 * rng(7).standard_normal(500)),
            val=(VAL_STEPS, np.r_[np.linspace(0.75, 0.62, 14), 0.603, 0.609, 0.628, 0.654, 0.66, 0.67]),
        ),
    ),
]


@pytest.mark.parametrize(("name", "build"), OVERFITTING_SILENT, ids=lambda x: x)
def test_overfitting_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_overfitting(build(), OverfittingConfig()) is None
