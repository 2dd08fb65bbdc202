"""Table-driven tests of the exploding-gradient rule on synthetic runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from rule_views import STRIDE, check, decaying_loss, explode_after, make_view, noisy_grads, rng

from gradwatch.service.rules import RunView
from gradwatch.service.rules.config import ExplodingGradientConfig
from gradwatch.service.rules.exploding import detect_exploding_gradient

# --------------------------------------------------------------------------- exploding_gradient


def _plateau_after_explosion() -> np.ndarray:
    g = explode_after(64, 40, 3.0)
    g[47:] = g[46] * np.exp(0.1 * rng(3).standard_normal((17, 1)))
    return g


def _weight_explosion() -> RunView:
    w = np.full((64, 8), 10.0)
    w[34:] *= (1.12 ** np.arange(1, 31))[:, None]
    loss = decaying_loss(320, noise=0.02, start=2.0)
    loss[170:] *= 1.01 ** np.arange(1, 151)  # diverging weights drag the loss up
    return make_view(loss, grad=noisy_grads(64), weight=w)


def _depth_explosion() -> RunView:
    g = noisy_grads(64, 8, sigma=0.1)
    g[:, :2] *= 1e4
    g[-5:] *= (2.0 ** np.arange(1, 6))[:, None]
    return make_view(decaying_loss(320), grad=g)


def _update_too_big() -> RunView:
    u = np.full((64, 8), np.nan)
    u[::4] = 1e-3
    u[60] = 2.5
    return make_view(decaying_loss(320), grad=noisy_grads(64), update=u)


def _first_update_rewrites_the_weights(then: float, loss: tuple[float, ...] = (0.755, 0.419)) -> RunView:
    """L-BFGS's first step from a small initialisation moves the weights 3x their norm and lowers the loss
    0.755 -> 0.419; ``then`` is the next sample, 20 steps later (NaN: none yet)."""
    u = np.full((8, 1), np.nan)
    u[0] = 3.0
    if then == then:
        u[4] = then
    return make_view(np.r_[loss, np.full(40 - len(loss), loss[-1])], grad=np.full((8, 1), 1e-5), update=u)


def _spiked_loss(height: float, length: int = 1) -> np.ndarray:
    loss = decaying_loss(300)
    loss[250 : 250 + length] *= height ** (np.arange(1, length + 1) / length)
    return loss


def _diverging_loss() -> np.ndarray:
    """Healthy decay, then x30 per step from step 200 (an SGD past its stability edge)."""
    loss = decaying_loss(203)
    loss[200:] = loss[199] * 30.0 ** np.arange(1, 4)
    return loss


def _ramp(rises: int, per_step: float = 1.03, dip_at: int | None = None) -> np.ndarray:
    """Loss creeping down to 0.11 for 40 steps, then ``rises`` steps each ``per_step`` x the last (a linear model past
    its stability edge on full batches: +3% a step); ``dip_at``: that step of the ramp falls back instead."""
    loss = np.r_[np.linspace(0.12, 0.11, 40), 0.11 * per_step ** np.arange(1, rises + 1)]
    if dip_at is not None:
        loss[40 + dip_at] = loss[40 + dip_at - 1] * 0.99
    return loss


def _queue_filling_infonce(steps: int = 30) -> np.ndarray:
    """InfoNCE while its queue of negatives fills: about log(negatives), 64 more a step, rising ever more slowly."""
    return np.log(64.0 * np.arange(1, steps + 1)) + 0.1


def _blowing_up_loss() -> np.ndarray:
    """x1000 in one step, then to 7e25 in the next (a too-large init on its way to NaN): the last step is
    ~90% of the rise in log units, but the rise had already multiplied the loss by 1000 before it."""
    loss = decaying_loss(202)
    loss[200:] = [loss[199] * 1e3, 7e25]
    return loss


def _out_of_a_plateau(loss_after: np.ndarray) -> RunView:
    """An autoencoder outputting the mean: gradients ~0.03 for 80 steps, then 35x larger (clipped at 1.0) by step 180
    as it starts to learn; the loss is 0.53 on the plateau and ``loss_after`` (120 steps) from step 80 on."""
    g = np.r_[np.full(16, 0.03), np.geomspace(0.03, 1.0, 21)[1:]] * np.exp(0.2 * rng(3).standard_normal(36))
    g = np.r_[np.minimum(g, 1.0), np.ones(4)]  # the last rows pinned at the clipping norm
    loss = np.r_[np.full(80, 0.53), loss_after] * np.exp(0.08 * rng(4).standard_normal(200))
    return make_view(loss, grad=g[:, None] * np.ones((1, 3)) / np.sqrt(3))


def _recurrence(ratio: float, gated: bool | None) -> RunView:
    """A recurrent net whose layers look steady; the first-step / last-step gradient ratio is ``ratio``."""
    return make_view(
        decaying_loss(320, start=2.0, end=0.5), grad=noisy_grads(64, 3), recurrent=np.full(64, ratio), gated=gated
    )


def _large_units(factor: float = 1e9) -> RunView:
    """A regression in large units (prices in dollars): gradients ``factor`` x the weights, the loss falling."""
    return make_view(decaying_loss(320, start=8e9, end=4e8), grad=noisy_grads(64) * factor)


EXPLODING_FIRES: list[tuple[str, Callable[[], RunView], int | None, str]] = [
    # Twice the He init on a deep ReLU net under SGD: NaN at the fourth step; three finite losses are all there is.
    (
        "blowing up from the first loss",
        lambda: make_view(np.array([2.8e5, 5.2e7, 1.2e22, np.nan])),
        1,
        "loss_divergence",
    ),
    # An IRNN at 1.5 x identity: 1,000-2,000x more gradient reaches its first step than its last.
    ("plain recurrence amplifying the gradient back in time", lambda: _recurrence(1500.0, False), 0, "through_time"),
    ("loss blowing up, last step most of the rise", lambda: make_view(_blowing_up_loss()), 200, "loss_divergence"),
    ("uniform growth after a flat stretch", lambda: make_view(grad=explode_after(60, 54, 3.0)), 54 * STRIDE, "growth"),
    ("growth from step 0", lambda: make_view(grad=explode_after(10, 1, 4.0)), STRIDE, "growth"),
    ("plateau after a sustained rise", lambda: make_view(grad=_plateau_after_explosion()), 40 * STRIDE, "growth"),
    (
        "norm overflow on finite gradients",
        lambda: make_view(grad=np.r_[noisy_grads(20), [[np.inf] + [1.0] * 7]]),
        20 * STRIDE,
        "growth",
    ),
    ("step up that stays up", lambda: make_view(grad=_step_up_then_noise()), 50 * STRIDE, "growth"),
    ("exponential weight growth", _weight_explosion, 34 * STRIDE, "weight_growth"),
    (
        # After an lr bug the weights sit at 1e12-1e21, finite, but a layer's float32 norm overflowed;
        # the gradients are dead (0) and the loss is flat at chance: still the explosion, not a new symptom.
        "weight norm overflowed on finite weights, gradients dead",
        lambda: make_view(
            np.full(300, 1.386),
            grad=np.r_[noisy_grads(40), np.zeros((20, 8))],
            weight=np.r_[np.full((40, 8), 10.0), np.c_[np.full((20, 1), np.inf), np.full((20, 7), 1e15)]],
        ),
        40 * STRIDE,
        "weight_growth",
    ),
    ("lower layers 1e4x the top and growing", _depth_explosion, 0, "depth_profile"),
    # The same gradients as "gradients grow 35x out of a plateau while the loss falls", with the loss staying put.
    (
        "gradients grow 35x out of a plateau, the loss stays put",
        lambda: _out_of_a_plateau(np.full(120, 0.53)),
        150,
        "growth",
    ),
    (
        "gradients grow 35x out of a plateau, the loss rising",
        lambda: _out_of_a_plateau(np.linspace(0.53, 0.9, 120)),
        150,
        "growth",
    ),
    (
        # explode15_l2_penalty_sign_flipped: the same growth, the loss falling without a floor because the
        # objective rewards large weights (0.53 to -500 over 120 steps).
        "gradients grow 35x while the loss runs away below zero",
        lambda: _out_of_a_plateau(-np.geomspace(1.0, 500.0, 120) + 0.53 + 1.0),
        150,
        "growth",
    ),
    ("update as large as the weights", _update_too_big, 60 * STRIDE, "update_ratio"),
    (
        "the first update and the next rewrite the weights",
        lambda: _first_update_rewrites_the_weights(2.0),
        0,
        "update_ratio",
    ),
    (
        # Past the edge of stability the first step raises the loss: no need to wait for a second sample.
        "the first update rewrites the weights and raises the loss",
        lambda: _first_update_rewrites_the_weights(np.nan, loss=(0.755, 1.3, 2.4)),
        0,
        "update_ratio",
    ),
    ("loss multiplying step after step", lambda: make_view(_diverging_loss()), 200, "loss_divergence"),
    # explode_finite_past_edge_linear: +3% a step, far from any 100x, every loss above the one before.
    ("loss ramping up 3% a step for 12 steps", lambda: make_view(_ramp(12)), 40, "loss_ramp"),
]


@pytest.mark.parametrize(("name", "build", "step", "trigger"), EXPLODING_FIRES, ids=lambda x: x)
def test_exploding_fires(name: str, build: Callable[[], RunView], step: int | None, trigger: str) -> None:
    f = check(detect_exploding_gradient(build(), ExplodingGradientConfig()), "exploding_gradient", step)
    assert trigger in f.evidence["triggers"]


def test_exploding_evidence_names_growth_and_lowest_layer() -> None:
    g = explode_after(60, 54, 3.0)
    g[:, 5] *= np.r_[np.ones(54), 3.0 ** np.arange(1, 7)]  # layer5 grows 3**6 more than the rest
    f = check(detect_exploding_gradient(make_view(grad=g), ExplodingGradientConfig()), "exploding_gradient", 270)
    ev = f.evidence
    assert ev["growth_factor"] >= 30
    assert ev["grad_norm_now"] / ev["grad_norm_baseline"] == pytest.approx(ev["growth_factor"])
    assert ev["grew_from_step"] == 265 and ev["grew_to_step"] == 295
    assert ev["top_layers"][0]["layer"] == "layer5"
    assert f.layer == "layer5"
    uniform = check(
        detect_exploding_gradient(make_view(grad=explode_after(60, 54, 3.0)), ExplodingGradientConfig()),
        "exploding_gradient",
    )
    assert uniform.layer == "layer0"  # uniform growth: prefer the lowest layer


def _warmup_bump(seed: int) -> np.ndarray:
    rows = np.arange(64)
    shape = np.where(rows < 10, 1 + 7 * rows / 10, 8 * np.exp(-(rows - 10) / 8) + 1.5)
    return noisy_grads(64, 8, seed, sigma=0.3) * shape[:, None]


def _zero_init_layer() -> RunView:
    w = np.full((64, 8), 30.0)
    w[:, 7] = np.r_[0.0, np.linspace(0.5, 30.0, 63)]
    return make_view(decaying_loss(320), grad=noisy_grads(64), weight=w)


def _adam_linear_weights() -> RunView:
    w = np.linspace(1.0, 4.0, 64)[:, None] * np.ones((1, 8))
    return make_view(decaying_loss(320, start=6.0, end=3.0), grad=noisy_grads(64), weight=w)


def _isolated_spike(last: bool) -> np.ndarray:
    g = noisy_grads(64, 8, sigma=0.1)
    g[-1 if last else 40] *= 1000
    return g


def _step_up_then_noise() -> np.ndarray:
    g = noisy_grads(64, 8, sigma=0.3)
    g[50:] *= 100
    return g


def _two_row_spike() -> np.ndarray:
    g = noisy_grads(64, 8, sigma=0.3)
    g[55:57] *= 100
    return g


def _unfrozen_backbone() -> RunView:
    g = noisy_grads(64, 40, sigma=0.3)
    g[:50, :36] = np.nan  # backbone frozen (no gradient) until row 50
    return make_view(decaying_loss(320), grad=g)


def _biases_shifted_once() -> RunView:
    """A bias shift kills every ReLU at row 34: the weight norm jumps 80x in one row, then creeps up; the loss
    jumps from ~1e-4 to 1.66 in one step and creeps up (no divergence feeding on itself)."""
    w = np.full((64, 8), 10.0)
    w[34:] *= 80.0 * (1.001 ** np.arange(30))[:, None]
    loss = np.r_[np.logspace(0, -4, 170), 1.66 + 0.01 * np.arange(150)]
    return make_view(loss, grad=noisy_grads(64), weight=w)


def _momentum_carried_burst() -> RunView:
    """One step at a huge lr (step 165) that SGD's momentum carries on: the weight norm grows 12 -> 38 -> 52 ->
    70 -> 82 -> 89 -> 94, slowing row by row, while the dead network's loss sits a level higher (the loss
    window still straddles the jump, so the loss reads as rising)."""
    w = np.full((40, 8), 12.4 / 8**0.5)
    w[33:] *= (np.array([38.4, 51.6, 69.5, 81.8, 89.4, 93.9, 96.7]) / 12.4)[:, None]
    loss = np.r_[decaying_loss(165, start=1.4, end=0.6), np.full(35, 1.2) * np.exp(0.05 * rng(3).standard_normal(35))]
    return make_view(loss, grad=noisy_grads(40, 8), weight=w)


def _slow_steady_growth() -> RunView:
    """Gradients 40x larger over 320 steps, steadily, while the loss improves (a mixture density network
    whose predicted sigmas shrink): 4x over any 120 steps."""
    return make_view(decaying_loss(320), grad=noisy_grads(64, 8, sigma=0.1) * np.logspace(0, np.log10(40), 64)[:, None])


EXPLODING_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    ("loss ramping up for 9 steps only", lambda: make_view(_ramp(9))),
    # Set 20's memorising GRU forecaster: from 1e-4 (its start: 1.0) up 20x over 11 steps under Adam, then back.
    (
        "a memorised loss at 1e-4 climbing 20x",
        lambda: make_view(np.r_[np.geomspace(1.0, 1e-4, 40), np.full(20, 1e-4), 1e-4 * 1.3 ** np.arange(1, 12)]),
    ),
    ("loss ramp broken by one lower step", lambda: make_view(_ramp(14, dip_at=6))),
    ("loss ramping up 1% a step (x1.13 in 12)", lambda: make_view(_ramp(12, per_step=1.01))),
    ("InfoNCE climbing while its queue of negatives fills", lambda: make_view(_queue_filling_infonce())),
    # A gated recurrence may learn to carry more gradient to the early step that matters (delayed recall).
    ("LSTM carrying 300x more gradient to its first step", lambda: _recurrence(300.0, True)),
    ("plain recurrence, first step 30x its last", lambda: _recurrence(30.0, False)),
    ("recurrence of unknown kind (an older agent)", lambda: _recurrence(1500.0, None)),
    # ||g|| / ||w|| carries the loss's units: off unless a run sets max_grad_weight_ratio.
    ("a regression in dollars: gradients 1e9 x the weights", _large_units),
    (
        # Every ReLU killed by a shifted bias at step 100: the loss jumps 0.0004 -> 1.66 and stays; seven steps
        # later it creeps up twice (1.614 -> 1.638), 4,000x the median of a window that straddles the jump.
        "loss jumped to a new level, then two small rises",
        lambda: make_view(
            np.r_[
                4e-4 * np.exp(0.8 * rng(3).standard_normal(100)),
                [1.657, 1.742, 1.606, 1.666, 1.664, 1.686, 1.656, 1.614, 1.633, 1.638],
            ]
        ),
    ),
    (
        "the first update rewrites small initial weights, nothing after it yet",
        lambda: _first_update_rewrites_the_weights(np.nan),
    ),
    (
        "the first update rewrites small initial weights, the next is small",
        lambda: _first_update_rewrites_the_weights(1e-9),
    ),
    ("gradients grow 40x over 320 steps, steadily, while the loss improves", _slow_steady_growth),
    ("a one-row level shift of weights and loss (biases shifted)", _biases_shifted_once),
    ("a burst carried on by momentum, slowing row by row", _momentum_carried_burst),
    *[(f"warmup bump 8x then falling (seed {s})", lambda s=s: make_view(grad=_warmup_bump(s))) for s in range(3)],
    *[
        (f"small-batch lognormal noise sigma 0.5 (seed {s})", lambda s=s: make_view(grad=noisy_grads(64, 8, s, 0.5)))
        for s in range(5)
    ],
    (
        "weights grow 50% over 300 steps",
        lambda: make_view(
            decaying_loss(320), grad=noisy_grads(64), weight=np.linspace(10, 15, 64)[:, None] * np.ones((1, 8))
        ),
    ),
    ("zero-initialised layer grows from 0", _zero_init_layer),
    (
        "gradients grow 35x out of a plateau while the loss falls",
        lambda: _out_of_a_plateau(np.linspace(0.53, 0.35, 120)),
    ),
    (
        # A log-likelihood may go below zero as it learns (a learned variance shrinking): a few times its start.
        "gradients grow 35x out of a plateau while a likelihood loss falls below zero",
        lambda: _out_of_a_plateau(np.linspace(0.53, -1.5, 120)),
    ),
    ("Adam-like linear weight growth 4x while learning", _adam_linear_weights),
    ("backbone unfrozen mid-window", _unfrozen_backbone),
    ("a one-step 50x loss spike that recovers", lambda: make_view(_spiked_loss(50.0))),
    ("a loss rising 3x over two steps", lambda: make_view(_spiked_loss(3.0, length=2))),
    ("clipped: recorded norm large but flat", lambda: make_view(grad=noisy_grads(64, 8, 1, 0.3, scale=300.0))),
    ("isolated spike that went away", lambda: make_view(grad=_isolated_spike(last=False))),
    ("isolated spike at the newest row", lambda: make_view(grad=_isolated_spike(last=True))),
    ("spike lasting two rows", lambda: make_view(grad=_two_row_spike())),
    ("healthy run, deep profile ratio 10", lambda: make_view(grad=noisy_grads(64) * np.logspace(1, 0, 8))),
    ("empty view", lambda: make_view()),
]


@pytest.mark.parametrize(("name", "build"), EXPLODING_SILENT, ids=lambda x: x)
def test_exploding_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_exploding_gradient(build(), ExplodingGradientConfig()) is None


def test_gradient_scale_fires_once_a_run_sets_its_line() -> None:
    config = ExplodingGradientConfig(max_grad_weight_ratio=1e3)
    f = check(detect_exploding_gradient(_large_units(), config), "exploding_gradient", 0)
    assert f.evidence["triggers"] == ["gradient_scale"]
