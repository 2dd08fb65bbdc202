"""Sixth set, pathologies: each run has one labelled symptom at a known onset.

Written apart from the rules and first run as a held-out set (2026-11-27): a 20-layer plain
ReLU net's calm first steps made a normal outlier read as a loss spike, and the stuck loader's
held-out loss rose for three points on seed 0 long before its minimum (an early overfitting
alarm, left visible). One more fault of that set is not here: a weight decay of 0.5 that
pins the weights near 0, labelled stagnation, is diagnosed as vanishing_gradient (its weights
still move 17-40% a step while they collapse); either label is defensible and a scenario can
only expect one.
"""

from __future__ import annotations

import torch
from _common import fit, fixed_dataset, held_out, mlp, teacher_classification, teacher_regression
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

# --- exploding: hand-rolled static loss scaling switched on mid-run, never unscaled ----------
SCALE_ON_STEP = 150
LOSS_SCALE = 32.0


class ForgetfulLossScaler:
    """A home-made stand-in for GradScaler: scales the loss but steps without unscaling the grads."""

    def __init__(self) -> None:
        self.step_no = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * (LOSS_SCALE if self.step_no >= SCALE_ON_STEP else 1.0)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()  # BUG: p.grad is still multiplied by LOSS_SCALE

    def update(self) -> None:
        self.step_no += 1


def _loss_scale_no_unscale(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=teacher_regression(seed=seed),
        loss_fn=F.mse_loss,
        scaler=ForgetfulLossScaler(),
    )


# --- nonfinite: masked (ignore_index) cross-entropy on a batch with no labelled sample -------
EMPTY_BATCH_STEP = 180


def _all_ignored_batch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_classification(seed=seed, batch=32)

    def batch_at(step: int):
        x, y = base(step)
        g = torch.Generator().manual_seed(seed * 17 + step)
        unlabelled = torch.rand(len(y), generator=g) < 0.6  # semi-supervised: 60% have no label
        if step == EMPTY_BATCH_STEP:
            unlabelled[:] = True  # a shard of purely unlabelled data
        return x, torch.where(unlabelled, torch.full_like(y, -100), y)

    model = mlp([16, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=lambda o, y: F.cross_entropy(o, y, ignore_index=-100))


# --- vanishing: deep plain ReLU MLP with PyTorch's default Linear init, no normalisation ------
def _deep_default_init(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16] + [64] * 20 + [4])  # default init: activations shrink ~sqrt(6)x per layer
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


# --- loss spike: one batch of regression targets in the wrong units -------------------------
UNITS_STEP = 200


def _units_bug(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_regression(seed=seed, noise=0.05)

    def batch_at(step: int):
        x, y = base(step)
        return (x, 20.0 * y) if step == UNITS_STEP else (x, y)  # e.g. one shard stored in cm, not dm

    model = mlp([16, 64, 64, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=320, batch_at=batch_at, loss_fn=F.mse_loss)


# --- overfitting: the loader gets stuck on two cached batches from step 150 ------------------
STUCK_STEP = 150


def _loader_stuck(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_classification(seed=seed, label_noise=0.25)
    stuck = fixed_dataset(lambda s: base(STUCK_STEP + s), 2)

    def batch_at(step: int):
        return base(step) if step < STUCK_STEP else stuck(step)

    model = mlp([16, 256, 256, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=batch_at,
        loss_fn=F.cross_entropy,
        val_at=held_out(base),
        val_every=5,
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        "explode_loss_scale_never_unscaled",
        f"Regression MLP, SGD momentum; from step {SCALE_ON_STEP} a "
        f"home-made loss scaler multiplies the loss by {LOSS_SCALE:g} and never unscales the gradients.",
        _loss_scale_no_unscale,
        expect={"exploding_gradient": SCALE_ON_STEP},
        # The explosion kills the second ReLU layer some 60 steps on: every hidden gradient 0 from then.
        allow=frozenset({"nonfinite", "loss_spike", "stagnation", "vanishing_gradient"}),
        tags=frozenset({"mlp", "momentum"}),
    ),
    Scenario(
        "nonfinite_all_ignored_batch",
        f"Semi-supervised classifier with ignore_index=-100 targets; the "
        f"batch at step {EMPTY_BATCH_STEP} has no labelled sample, so cross_entropy returns NaN (grads 0).",
        _all_ignored_batch,
        expect={"nonfinite": EMPTY_BATCH_STEP},
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        "vanish_deep_plain_relu_default_init",
        "20-hidden-layer plain ReLU MLP with PyTorch default "
        "Linear init and no normalisation, SGD momentum: early-layer gradients vanish.",
        _deep_default_init,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=frozenset({"mlp", "momentum"}),
    ),
    Scenario(
        "spike_units_bug_batch",
        f"Regression MLP (Adam); the batch at step {UNITS_STEP} has targets "
        "20x too large (wrong units): loss jumps by orders of magnitude, then recovers.",
        _units_bug,
        expect={"loss_spike": UNITS_STEP},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        "overfit_loader_stuck_two_batches",
        f"Wide MLP (Adam), 25% label noise; from step {STUCK_STEP} "
        "the loader repeats the same 2 batches: train loss -> 0, held-out loss rises.",
        _loader_stuck,
        # The fault's own step: the held-out minimum before it is noise (seed 2's is at step 99).
        expect={"overfitting": STUCK_STEP},
        tags=frozenset({"mlp", "adam"}),
    ),
]
