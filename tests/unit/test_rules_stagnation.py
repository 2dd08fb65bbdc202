"""Unit tests of the stagnation rule on synthetic views (what fires, with which reason, and what stays silent)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from rule_views import check, decaying_loss, hinge_with_exact_zeros, make_view, noisy_grads, rng, sampled

from gradwatch.service.rules import RunView
from gradwatch.service.rules.config import StagnationConfig
from gradwatch.service.rules.stagnation import detect_stagnation


def _flat(t: int = 300, seed: int = 0, level: float = 2.3) -> np.ndarray:
    return level * np.exp(0.01 * rng(seed).standard_normal(t))


def _stats(rows: int = 60) -> np.ndarray:
    return noisy_grads(rows, 4)


def _optimizer_holds_only_the_head() -> RunView:
    """Every layer gets a gradient, but only the small head is in the optimizer: the body's sampled update
    ratio is exactly 0, the head's lifts the global one to 6e-4, and the loss stays at chance."""
    u = np.full((60, 4), np.nan)
    u[::4] = [0.0, 0.0, 0.0, 6e-4]
    return make_view(_flat(level=1.386), grad=_stats(), update=u, numel=[5000, 5000, 5000, 260])


def _frozen_without_gradient(loss: np.ndarray) -> RunView:
    """97% of the parameters have no gradient (requires_grad=False); the head's updates are healthy."""
    return make_view(
        loss, grad=np.c_[np.full((60, 3), np.nan), np.ones(60)], numel=[5000, 5000, 5000, 450], update=sampled(5e-3, 60)
    )


def _slow_noisy_probe() -> RunView:
    """A linear probe on small noisy batches: the loss falls 1.6 -> 1.2 in 20 steps and then creeps down, with a
    per-step noise of 0.15 that keeps every 16-step window from showing improvement."""
    level = 1.2 + 0.4 * np.exp(-np.arange(300) / 8.0) - 0.1 * np.arange(300) / 300
    return _frozen_without_gradient(level + 0.15 * rng(5).standard_normal(300))


def _lora_slow_start() -> RunView:
    """LoRA's zero-initialised B: 24 steps in which the loss barely moves (7.65 -> 7.3 under noise of 0.35 per
    step) before it falls. A 16-step window reads that as never learned; the verdict waits for 32 steps."""
    level = np.interp(np.arange(24), [0, 10, 20, 24], [7.65, 7.55, 7.4, 7.3])
    return _frozen_without_gradient(level + 0.35 * rng(6).standard_normal(24))


def _full_batch(loss: np.ndarray, grad_norm: float, update: float = 1e-9) -> RunView:
    """Full-batch training on one layer of weight norm 3: per-step losses without noise, a gradient of
    ``grad_norm`` in every row, and a tiny update ratio (the weights have stopped moving)."""
    rows = loss.size // 5
    weight = np.full((rows, 1), 3.0)
    return make_view(loss, grad=np.full((rows, 1), grad_norm), weight=weight, update=sampled(update, rows, 1))


def _lbfgs_at_the_optimum() -> RunView:
    """L-BFGS on a logistic regression with noisy labels: 0.755 -> 0.419 in one step, then 0.418 for good, with a
    gradient of 1e-5 (a typical step would lower the loss by 3e-8, 7e-8 of itself)."""
    return _full_batch(np.r_[0.755, 0.419, np.full(298, 0.418)], 1e-5)


def _gradient_descent_lr_collapsed_after_learning() -> RunView:
    """The same loss curve, but the gradient is still 0.05 when the weights stop moving: not a minimum."""
    return _full_batch(np.r_[0.755, 0.419, np.full(298, 0.418)], 0.05)


def _regressed_then_stopped() -> RunView:
    """Learned to 0.42, then jumped to 1.39 (inputs zeroed) and stopped moving there, tiny gradient: not at its best."""
    return _full_batch(np.r_[np.linspace(0.755, 0.42, 100), np.full(200, 1.39)], 1e-5)


def _graph_cut(share_cut: float, from_row: int = 0, every: int = 1) -> RunView:
    """A falling loss (the head learns) while the first layer, ``share_cut`` of the trained parameters, gets no
    gradient although the optimizer holds it: from stats row ``from_row`` on, on every ``every``-th row."""
    cut = np.zeros((60, 2), dtype=bool)
    cut[from_row::every, 0] = True
    grad = np.where(cut, np.nan, 1.0)
    numel = [round(10_000 * share_cut), round(10_000 * (1 - share_cut))]
    return make_view(decaying_loss(300, start=1.5, end=1.0), grad=grad, missing=cut, numel=numel)


def _one_tower_per_step() -> RunView:
    """Multi-task training that samples one of twenty large towers per step over a small shared trunk: on every
    row nineteen towers, 94% of the trained parameters, get no gradient, different ones each row."""
    rows, towers = 60, 20
    trained = np.zeros((rows, towers), dtype=bool)
    trained[np.arange(rows), np.arange(rows) % towers] = True
    missing = np.c_[np.zeros(rows, dtype=bool), ~trained]
    grad = np.where(missing, np.nan, 1.0)
    return make_view(decaying_loss(300, start=1.5, end=1.0), grad=grad, missing=missing, numel=[200] + [1000] * towers)


STAGNATION_FIRES: list[tuple[str, Callable[[], RunView], str]] = [
    # Saturated units: gradients of 1e-12 (weights of norm 10) under a loss of 2.3 at chance.
    ("gradients 1e-12 of a loss at chance", lambda: make_view(_flat(), grad=np.full((60, 4), 1e-12)), "dead_gradients"),
    # A .detach() left on an encoder's output: only the head (2%) learns, so the loss still falls.
    ("encoder detached, the head still lowers the loss", lambda: _graph_cut(0.98), "graph_cut"),
    # torch.no_grad() around the bulk of the model from stats row 30 (step 150) on.
    ("graph cut mid-run, the head still lowers the loss", lambda: _graph_cut(0.92, from_row=30), "graph_cut"),
    ("optimizer holds only the head", _optimizer_holds_only_the_head, "frozen_parameters"),
    ("tiny updates, flat loss", lambda: make_view(_flat(), grad=_stats(), update=sampled(1e-7, 60)), "tiny_updates"),
    ("dead network", lambda: make_view(_flat(), grad=np.zeros((60, 4))), "dead_gradients"),
    (
        "dead ReLUs, only a tiny output bias learns",
        lambda: make_view(_flat(), grad=np.c_[np.zeros((60, 3)), np.ones(60)], numel=[5000, 5000, 5000, 4]),
        "dead_gradients",
    ),
    (
        "all but a bias frozen, loss where it started",
        lambda: make_view(_flat(), grad=np.c_[np.full((60, 3), np.nan), np.ones(60)], numel=[5000, 5000, 5000, 4]),
        "frozen_parameters",
    ),
    (
        "lr collapsed 1e4x, tiny updates",
        lambda: make_view(
            _flat(), lr=np.r_[np.full(200, 1e-2), np.full(100, 1e-6)], grad=_stats(), update=sampled(1e-8, 60)
        ),
        "tiny_updates",
    ),
    (
        "all but a bias frozen, loss where it started, small noisy batches",
        lambda: _frozen_without_gradient(_flat(level=1.386) * np.exp(0.03 * rng(7).standard_normal(300))),
        "frozen_parameters",
    ),
    ("frozen loss, no update ratio sampled", lambda: make_view(np.full(300, 2.3)), "loss_frozen"),
    ("full-batch descent, lr collapsed after learning", _gradient_descent_lr_collapsed_after_learning, "tiny_updates"),
    ("full-batch descent, regressed and stopped with a tiny gradient", _regressed_then_stopped, "tiny_updates"),
    ("every step skipped by GradScaler", lambda: make_view(_flat(), skipped=True), "all_steps_skipped"),
    (
        # The loss came down while steps were applied; since GradScaler began skipping every one, it has not.
        "every step skipped by GradScaler since step 150, after learning",
        lambda: make_view(
            np.r_[decaying_loss(150, start=4.0, end=2.3), _flat()[150:]], skipped=np.r_[np.zeros(150), np.ones(150)]
        ),
        "all_steps_skipped",
    ),
    (
        # As above, but every 20th step is applied, the newest among them: there is no trailing streak, and the
        # skipping is judged from the skipped-steps window's start, not from the run's.
        "GradScaler skipping 95% of the steps since step 150, the newest applied, after learning",
        lambda: make_view(
            np.r_[decaying_loss(150, start=4.0, end=2.3), _flat()[150:]],
            skipped=np.r_[np.zeros(150), np.arange(150) % 20 != 149 % 20],
        ),
        "all_steps_skipped",
    ),
    (
        # A scheduler stepped per batch instead of per epoch: lr / 10 every 30 steps. Each drop is a
        # decay, not a collapse; the lr reaches its tail (5% of max) at step 60 and stays there.
        "StepLR stepped per batch: tail reached early and outstayed",
        lambda: make_view(_flat(), lr=3e-3 * 0.1 ** (np.arange(300) // 30), grad=_stats(), update=sampled(5e-7, 60)),
        "tiny_updates",
    ),
    (
        # ReduceLROnPlateau(mode="max") on a loss: it cuts the lr 100x (not more) while the loss still falls.
        "lr cut into the tail while the loss still fell, then flat",
        lambda: make_view(
            np.r_[np.linspace(1.38, 0.95, 100), np.full(200, 0.85)] * np.exp(0.05 * rng(11).standard_normal(300)),
            lr=np.r_[np.full(100, 1e-3), np.full(80, 1e-5), np.full(120, 1e-7)],
            grad=_stats(),
            update=sampled(1e-8, 60),
        ),
        "tiny_updates",
    ),
    (
        "lr set to ~0 by mistake (no schedule)",
        lambda: make_view(_flat(), lr=1e-12, grad=_stats(), update=sampled(1e-9, 60)),
        "tiny_updates",
    ),
]


#: Parameters frozen without a gradient are judged on a longer record (see _frozen_evidence).
LONGER_RECORD = {
    "all but a bias frozen, loss where it started",
    "all but a bias frozen, loss where it started, small noisy batches",
}


@pytest.mark.parametrize(("name", "build", "reason"), STAGNATION_FIRES, ids=lambda x: x)
def test_stagnation_fires(name: str, build: Callable[[], RunView], reason: str) -> None:
    config = StagnationConfig()
    window = config.frozen_window_steps if name in LONGER_RECORD else config.window_steps
    f = check(detect_stagnation(build(), config), "stagnation", 300 - window)
    assert f.evidence["reason"] == reason
    assert f.evidence["window_steps"] == window


def _cosine_to_zero() -> RunView:
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(300) / 299))
    return make_view(_flat(), lr=lr, grad=_stats(), update=sampled(1e-8, 60))


def _warmup_from_zero() -> RunView:
    return make_view(_flat(), lr=np.linspace(0, 1e-3, 300) ** 2, grad=_stats(), update=sampled(0.0, 60))


def _solved_to_float_precision() -> RunView:
    """A realisable regression: the loss falls from 1 to 1e-14 and stays there; Adam's updates shrink to ~1e-9."""
    loss = np.r_[np.logspace(0, -14, 200), np.full(100, 1e-14) * (1 + 0.1 * rng(4).standard_normal(100))]
    return make_view(loss, grad=_stats() * 1e-7, update=sampled(2e-9, 60))


STAGNATION_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    # An autoencoder on signals in volts: a loss of 2.5e-9 and gradients of 1e-10, in the loss's own units.
    (
        "a loss of 1e-9 with gradients of 1e-10, Adam moving the weights",
        lambda: make_view(_flat(level=2.5e-9), grad=np.full((60, 4), 1e-10), update=sampled(1e-2, 60)),
    ),
    # An auxiliary head and a second modality's stem registered in the optimizer but never used: 55% of the
    # trained parameters never get a gradient while the rest train normally.
    ("unused branch, half the parameters without a gradient", lambda: _graph_cut(0.55)),
    # Stochastic depth dropping the bulk of the network on every other statistics row: never dead_rows in a row.
    ("stochastic depth: the bulk skipped on every other row", lambda: _graph_cut(0.95, every=2)),
    ("one of twenty large task towers trained per step", _one_tower_per_step),
    ("full-batch L-BFGS at the optimum of a noisy problem", _lbfgs_at_the_optimum),
    (
        # The optimizer passed to watch() never steps (it only zeroes the gradients); a hand-written LARS
        # update trains the model, so every step reads as skipped while the loss falls.
        "every step flagged skipped, a hand-written update lowers the loss",
        lambda: make_view(decaying_loss(300, noise=0.25, start=2.5, end=0.3), skipped=True),
    ),
    (
        # Its line search finds no better point and leaves the weights exactly as they were: an update ratio of
        # exactly 0 with a gradient present, which otherwise reads as parameters the optimizer does not hold.
        "full-batch L-BFGS at the optimum, weights left exactly as they were",
        lambda: _full_batch(np.r_[0.755, 0.419, np.full(298, 0.418)], 1e-5, update=0.0),
    ),
    ("solved to float precision: loss 1e-14 of its start, tiny updates", _solved_to_float_precision),
    *[
        (
            f"converged run, updates 1e-4 (seed {s})",
            lambda s=s: make_view(_flat(seed=s), grad=_stats(), update=sampled(1e-4, 60)),
        )
        for s in range(3)
    ],
    ("cosine decay to 0 at the end", _cosine_to_zero),
    (
        # x0.1 at 50% and 75% of the run: the final quarter sits in the tail, a third of the steps before it.
        "step decay, final quarter in the tail",
        lambda: make_view(
            _flat(),
            lr=np.r_[np.full(150, 1e-3), np.full(75, 1e-4), np.full(75, 1e-5)],
            grad=_stats(),
            update=sampled(1e-8, 60),
        ),
    ),
    ("warmup from lr=0", _warmup_from_zero),
    (
        # ReZero: every residual gate starts at 0, so the blocks' gradients, and their first (sampled) update,
        # are exactly 0 at step 0; from the next row on they get gradients. A zero update after a zero gradient
        # says nothing about what the optimizer holds.
        "ReZero at its start: zero gradients and a zero first update in the blocks",
        lambda: make_view(
            _flat(20, level=1.42),
            grad=np.r_[[[0.0, 0.0, 0.0, 0.1]], np.full((3, 4), 1e-3)],
            update=np.r_[[[0.0, 0.0, 0.0, 5e-3]], np.full((3, 4), np.nan)],
            numel=[5000, 5000, 5000, 260],
        ),
    ),
    (
        # Learned to its noise floor (label noise) by step 80; ReduceLROnPlateau then cut the lr x0.3 every 30
        # steps from 120, into the tail (5% of max) at 180, where it stayed longer than tail_max_share allows.
        "converged, then ReduceLROnPlateau cut the lr into the tail and kept it there",
        lambda: make_view(
            np.r_[np.linspace(1.4, 0.87, 80), np.full(220, 0.87)] * np.exp(0.05 * rng(12).standard_normal(300)),
            lr=3e-3 * 0.3 ** np.clip((np.arange(300) - 90) // 30, 0, None),
            grad=_stats(),
            update=sampled(4e-6, 60),
        ),
    ),
    (
        "improving with tiny updates",
        lambda: make_view(decaying_loss(300, noise=0.005, start=8.0, end=0.5), grad=_stats(), update=sampled(1e-7, 60)),
    ),
    ("flat noisy loss, no update ratio sampled", lambda: make_view(_flat(), grad=_stats())),
    ("window not full", lambda: make_view(np.full(StagnationConfig().window_steps - 1, 2.3))),
    (
        "frozen backbone, head has learned and converged",
        lambda: make_view(
            np.r_[decaying_loss(100, start=4.0, end=0.3), _flat(200, level=0.3)],
            grad=np.c_[np.full((60, 3), np.nan), np.ones(60)],
            numel=[5000, 5000, 5000, 400],
            update=sampled(1e-3, 60),
        ),
    ),
    ("linear probe, slow and noisy after a quick first fall", _slow_noisy_probe),
    ("a hinge loss with exact zeros: zero gradients and updates on zero-loss steps", hinge_with_exact_zeros),
    ("LoRA, zero-initialised adapters still starting", _lora_slow_start),
    (
        # A head on a frozen, randomly initialised encoder: 8% down in 36 steps under per-step noise of 0.06,
        # several standard errors of the least-squares slope, while the thirds' medians differ by about 2 sigma.
        "head on frozen random features, a slow steady fall",
        lambda: _frozen_without_gradient(1.39 - 0.003 * np.arange(36) + 0.06 * rng(10).standard_normal(36)),
    ),
    (
        # Frozen without a gradient, a flat loss, but per-step noise of 40% of the loss: a drop of a tenth
        # would not show in 32 steps, so "never learned" cannot be told from "learning slowly".
        "frozen without gradient, too noisy to judge",
        lambda: _frozen_without_gradient(1.386 * np.exp(0.4 * rng(8).standard_normal(300))),
    ),
]


@pytest.mark.parametrize(("name", "build"), STAGNATION_SILENT, ids=lambda x: x)
def test_stagnation_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_stagnation(build(), StagnationConfig()) is None


def _optimizer_replaced(steps_since: int) -> RunView:
    """Trained for 100 steps; then the optimizer passed to watch() was replaced by one that holds none of the
    trained parameters: no step is applied and the loss stays where it was."""
    loss = np.r_[decaying_loss(100, start=4.0, end=2.3), _flat(steps_since)]
    return make_view(loss, skipped=np.r_[np.zeros(100), np.ones(steps_since)])


def test_stagnation_fires_once_a_whole_window_of_steps_is_skipped_after_training() -> None:
    config = StagnationConfig()
    assert detect_stagnation(_optimizer_replaced(config.window_steps - 1), config) is None
    f = check(detect_stagnation(_optimizer_replaced(config.window_steps), config), "stagnation", 100)
    assert f.evidence["reason"] == "all_steps_skipped"
    assert "optimizer passed to watch()" in f.advice


def test_stagnation_silent_while_a_gradscaler_calibrates_from_the_first_step() -> None:
    # init_scale=2**40: the first ~25 backward passes overflow and every one is skipped, from step 0.
    assert detect_stagnation(make_view(_flat(25), skipped=True), StagnationConfig()) is None
