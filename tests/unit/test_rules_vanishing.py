"""Table-driven tests of the vanishing-gradient rule on synthetic runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from rule_views import STRIDE, check, decaying_loss, hinge_with_exact_zeros, make_view, noisy_grads, rng

from gradwatch.service.rules import RulesConfig, RunView, evaluate
from gradwatch.service.rules.config import VanishingGradientConfig
from gradwatch.service.rules.vanishing import detect_vanishing_gradient

# --------------------------------------------------------------------------- vanishing_gradient


def _depth_vanished(rows: int = 64, n_layers: int = 8, factor: float = 1e-5, start: int = 0) -> np.ndarray:
    g = noisy_grads(rows, n_layers)
    profile = np.logspace(np.log10(factor), 0, n_layers)
    g[start:] *= profile
    return g


def _frozen_lower_layers() -> RunView:
    g = noisy_grads(64, 8)
    g[:, :2] *= 1e-5
    u = np.full((64, 8), np.nan)
    u[::4] = 1e-3
    u[::4, :2] = 1e-8
    # Lower layers are tiny and the top ones huge, so RMS grads match: only "frozen" sees it.
    return make_view(decaying_loss(320), grad=g, update=u, numel=[2, 2] + [2 * 10**10] * 6)


def _frozen_at_first_sample_only() -> RunView:
    """A small conv autoencoder 15 steps in: its first layers' gradient and update, relative to their weights,
    9e-4 of the last layers' at its only sampled row (step 0); their RMS gradients are alike."""
    g = noisy_grads(4, 8, sigma=0.0)
    w = np.full((4, 8), 10.0)
    w[:, :2] /= 9e-4
    u = np.full((4, 8), np.nan)
    u[0] = 1e-3
    u[0, :2] *= 9e-4
    return make_view(np.full(16, 0.09), grad=g, weight=w, update=u)


def _collapse() -> RunView:
    g = noisy_grads(64, 8) * np.r_[np.ones(30), np.full(34, 1e-6)][:, None]
    loss = np.r_[decaying_loss(150), np.full(170, 2.6) * np.exp(0.01 * rng(2).standard_normal(170))]
    return make_view(loss, grad=g)


def _stuck_loss(t: int = 320) -> np.ndarray:
    """A classifier at chance: log(2) with noise, never improving."""
    return np.log(2) * np.exp(0.03 * rng(7).standard_normal(t))


def _through_time(ratio: np.ndarray | float, loss: np.ndarray | None = None) -> RunView:
    """A 3-layer RNN-like model whose layers look healthy; only the through-time ratio says otherwise."""
    ratios = np.broadcast_to(np.asarray(ratio, dtype=float), (64,))
    return make_view(_stuck_loss() if loss is None else loss, grad=noisy_grads(64, 3), recurrent=ratios)


def _young_recurrence(ratio: np.ndarray, gated: bool) -> RunView:
    """A run len(ratio) statistics rows old, its loss at chance, with this through-time ratio per row."""
    rows = ratio.size
    return make_view(_stuck_loss(rows * STRIDE), grad=noisy_grads(rows, 3), recurrent=ratio, gated=gated)


def _starved_bulk(body_grad: float = 1e-4, body_update: float = 1e-6, loss: np.ndarray | None = None) -> RunView:
    """Twenty body layers alike and a head; grads relative to weights of 10: the head's 1, the body's
    ``body_grad``; sampled update ratios: the head's 1e-2, the body's ``body_update``. The top quarter of the
    layers is mostly body, so the depth profile is flat. The loss at chance unless given."""
    g = np.c_[np.full((64, 20), 10.0 * body_grad), np.full(64, 10.0)] * np.exp(0.1 * rng(3).standard_normal((64, 21)))
    u = np.full((64, 21), np.nan)
    u[::4] = [body_update] * 20 + [1e-2]
    return make_view(_stuck_loss() if loss is None else loss, grad=g, update=u, numel=[2000] * 20 + [325])


def _two_layers(lower: float) -> RunView:
    """A recurrence and its head; from row 30 the recurrence's gradient is ``lower`` x what it was."""
    g = noisy_grads(64, 2)
    g[30:, 0] *= lower
    return make_view(grad=g, numel=[7920, 196])


VANISHING_FIRES: list[tuple[str, Callable[[], RunView], int, str, str]] = [
    # A GRU whose gates a raw Unix-seconds input column saturated: exactly 0 from then on, under its head.
    ("two layers, the lower one's gradient exactly 0", lambda: _two_layers(0.0), 30 * STRIDE, "depth", "layer0"),
    # BatchNorm1d(w, 0.99): the 0.99 taken as eps shrinks every hidden layer's gradient alike; only the head learns.
    (
        "the whole body starved alike, only the head moves, loss at chance",
        _starved_bulk,
        56 * STRIDE,
        "stalled_bulk",
        "layer0",
    ),
    ("lower layers 1e-5 of the top", lambda: make_view(grad=_depth_vanished()), 0, "depth", "layer0"),
    ("vanishing sets in at row 40", lambda: make_view(grad=_depth_vanished(start=40)), 200, "depth", "layer0"),
    # The onset is the older of the two newest sampled rows (every 4th), both frozen.
    ("lower layers frozen by tiny gradients", _frozen_lower_layers, 56 * STRIDE, "frozen", "layer0"),
    ("all-layer collapse with a stuck loss", _collapse, 30 * STRIDE, "collapse", "layer0"),
    (
        "through time: 3e-14 reaches the first step, loss at chance",
        lambda: _through_time(3e-14),
        0,
        "through_time",
        "rnn",
    ),
    ("through time: the ratio underflowed to 0", lambda: _through_time(0.0), 0, "through_time", "rnn"),
    # A plain RNN's gradient cannot learn to reach back: three rows decide, as for any vanishing.
    (
        "through time: a young plain RNN, 3 rows underflowed",
        lambda: _young_recurrence(np.zeros(3), False),
        0,
        "through_time",
        "rnn",
    ),
    # A gated recurrence is judged once its loss has had a whole window (40 steps, 8 rows) to improve.
    ("through time: a GRU, 8 rows underflowed", lambda: _young_recurrence(np.zeros(8), True), 0, "through_time", "rnn"),
    (
        "through time: an LSTM stuck at 1e-9 for 64 rows",
        lambda: make_view(_stuck_loss(), grad=noisy_grads(64, 3), recurrent=np.full(64, 1e-9), gated=True),
        0,
        "through_time",
        "rnn",
    ),
    (
        "through time from row 40 (after learning stopped)",
        lambda: _through_time(np.r_[np.full(40, 0.5), np.full(24, 1e-9)]),
        40 * STRIDE,
        "through_time",
        "rnn",
    ),
]


@pytest.mark.parametrize(("name", "build", "step", "trigger", "layer"), VANISHING_FIRES, ids=lambda x: x)
def test_vanishing_fires(name: str, build: Callable[[], RunView], step: int, trigger: str, layer: str) -> None:
    f = check(detect_vanishing_gradient(build(), VanishingGradientConfig()), "vanishing_gradient", step)
    assert trigger in f.evidence["triggers"]
    assert f.layer == layer


def test_vanishing_depth_evidence() -> None:
    f = check(
        detect_vanishing_gradient(make_view(grad=_depth_vanished()), VanishingGradientConfig()), "vanishing_gradient"
    )
    ev = f.evidence
    assert ev["depth_ratio"] < 1e-3
    assert ev["low_quarter_rms"] / ev["top_quarter_rms"] < 1e-3
    assert [d["layer"] for d in ev["lowest_layers"]] == [f"layer{i}" for i in range(5)]


def _embedding_first() -> np.ndarray:
    g = noisy_grads(64, 12) * np.exp(rng(5).uniform(-1.5, 1.5, 12))  # residual net: ratios ~0.05..20
    g[:, 0] *= 1e-4  # an embedding's RMS gradient is much smaller than a dense layer's
    return g


def _clamped_temperature_first() -> RunView:
    """CLIP: the learned logit scale, one number on the model itself (first in model order), clamped at its
    ceiling, so its gradient is exactly 0 on every step; three Linear layers under it learn."""
    g = noisy_grads(64, 4)
    g[:, 0] = 0.0
    return make_view(grad=g, numel=[1, 2112, 4160, 2080])


VANISHING_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    ("a clamped temperature (exactly 0) alone in the first layer", _clamped_temperature_first),
    ("two layers, the lower one's gradient 1e-5 of what it was", lambda: _two_layers(1e-5)),
    # A tiny learning rate stalls the body too, but its gradient is level with the head's: stagnation's to report.
    ("body not moving under a tiny lr, its gradient normal", lambda: _starved_bulk(body_grad=0.3, body_update=1e-7)),
    ("body starved but still moving", lambda: _starved_bulk(body_update=1e-4)),
    ("body starved, loss falling", lambda: _starved_bulk(loss=decaying_loss(320, start=1.6, end=0.8))),
    ("a hinge loss with exact zeros: zero gradients on zero-loss steps", hinge_with_exact_zeros),
    (
        "solved to float precision: gradients fell 1e6x with the loss (1e-14 of its start)",
        lambda: make_view(
            np.r_[np.logspace(0, -14, 200), np.full(120, 1e-14)],
            grad=noisy_grads(64) * np.r_[np.ones(8), np.full(56, 1e-6)][:, None],
        ),
    ),
    ("healthy run", lambda: make_view(decaying_loss(320), grad=noisy_grads(64))),
    (
        "deep residual net with norms, ratios 0.05..20",
        lambda: make_view(grad=noisy_grads(64, 24) * np.logspace(np.log10(0.05), np.log10(20), 24)),
    ),
    ("embedding as the first layer", lambda: make_view(grad=_embedding_first())),
    ("lower layers just under the frozen lines at the first sampled row only", _frozen_at_first_sample_only),
    ("only 2 layers", lambda: make_view(grad=_depth_vanished(n_layers=2, factor=1e-6))),
    (
        "converging: all layers shrink 100x together",
        lambda: make_view(decaying_loss(320), grad=noisy_grads(64) * np.logspace(0, -2, 64)[:, None]),
    ),
    (
        "all layers shrink 1e5x but the loss still improves",
        lambda: make_view(decaying_loss(320, start=8.0), grad=noisy_grads(64) * np.logspace(0, -5, 64)[:, None]),
    ),
    ("one noisy row below the line", lambda: make_view(grad=np.r_[noisy_grads(63), _depth_vanished(1)])),
    ("empty view", lambda: make_view()),
    ("through time: an LSTM's ratio 0.3, loss at chance", lambda: _through_time(0.3)),
    (
        # Still falling steadily over the newest losses: whatever reaches the first time steps, it learns.
        "through time: 1e-9 but the loss improves (it learns from recent steps)",
        lambda: _through_time(1e-9, decaying_loss(320, end=0.0)),
    ),
    (
        "through time: 1e-9, then rising 10x per row (forget gates opening)",
        lambda: _through_time(np.r_[np.full(61, 1e-9), 1e-8, 1e-7, 1e-6]),
    ),
    ("through time: no ratio measured (nan)", lambda: _through_time(np.nan)),
    (
        "through time: 1e-9 on a run solved to 1e-5 of its start",
        lambda: _through_time(1e-9, np.r_[np.logspace(0, -5, 200), np.full(120, 1e-5)]),
    ),
    # A GRU on 100-step sequences: its half-shut gates underflow the ratio at first, then it learns to open them.
    ("through time: a young GRU, 4 rows underflowed", lambda: _young_recurrence(np.zeros(4), gated=True)),
    # Set 19's GRU forecaster: 5e-7 from initialisation, the loss flat for 25 steps before it began to fall.
    (
        "through time: a GRU at 5e-7 for 5 rows, the loss flat 25 steps",
        lambda: _young_recurrence(np.full(5, 5e-7), True),
    ),
    (
        "through time: a GRU's ratio underflowed, then rising",
        lambda: _young_recurrence(np.r_[np.zeros(4), 5e-20], True),
    ),
    (
        # Seed 2 of the same GRU: the rise pauses and dips for 20 steps on its way from 0 to 0.1.
        "through time: a GRU's ratio rising with a dip",
        lambda: _young_recurrence(
            np.array([0, 9.5e-20, 9.6e-19, 5.4e-18, 3.8e-17, 1.5e-15, 7.4e-15, 2.6e-14, 1.1e-15, 1.2e-16]), True
        ),
    ),
]


@pytest.mark.parametrize(("name", "build"), VANISHING_SILENT, ids=lambda x: x)
def test_vanishing_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_vanishing_gradient(build(), VanishingGradientConfig()) is None


@pytest.mark.parametrize(
    ("active", "masked"),
    [
        ((), False),
        (("loss_spike",), False),
        # An explosion no longer found leaves a network whose dead units deserve their own diagnosis.
        (("exploding_gradient",), False),
        # A NaN incident not cleared yet: the units its overflow killed read as vanishing until it clears.
        (("nonfinite",), True),
    ],
)
def test_an_active_nonfinite_incident_masks_vanishing_even_when_not_found_again(
    active: tuple[str, ...], masked: bool
) -> None:
    findings = evaluate(make_view(grad=_depth_vanished()), RulesConfig(), active=active)
    assert findings["exploding_gradient"] is None and findings["nonfinite"] is None
    assert (findings["vanishing_gradient"] is None) == masked


def test_the_row_summaries_made_at_ingest_leave_a_one_element_layer_out_of_the_quarters() -> None:
    from gradwatch.service.rules.series import row_summaries

    grads = np.array([[0.0, 0.5, 1.0, 2.0]])  # a clamped temperature first, exactly 0
    summary = row_summaries(grads, np.ones_like(grads), np.array([1, 100, 100, 100]))
    low, top, n_present = summary[0, 2:5]
    assert n_present == 3 and low == pytest.approx(0.05) and top == pytest.approx(0.2)
