"""Overfitting: the train loss keeps falling on a small dataset while the held-out loss rises.

Each run trains on ``fixed_dataset(...)`` (a few batches, cycled) and validates
every few steps on held-out batches from the same generator
(``batch_at(10**6 + i)``, never seen in training). The onset is each run's own
held-out minimum (``AT_VAL_MINIMUM``): it moves by a dozen steps from seed to
seed, so a fixed step would score label noise as detection delay. After it the
val loss rises well above its minimum by the end (the ranges in the descriptions
were measured on seeds 0-2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from _common import (
    Batch,
    LSTMClassifier,
    fit,
    fixed_dataset,
    held_out,
    mlp,
    quadrant_images,
    sequence_classification,
    teacher_classification,
    teacher_regression,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario


class SmallCNN(nn.Module):
    """No BatchNorm or dropout: nothing regularises the memorisation."""

    def __init__(self, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def _memorise(
    watch,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    base: Callable[[int], Batch],
    *,
    n_batches: int,
    steps: int,
    loss_fn=F.cross_entropy,
) -> None:
    """Train on the first ``n_batches`` batches of ``base`` (cycled); validate on held-out ones every 5 steps."""
    fit(
        watch,
        model,
        opt,
        steps=steps,
        batch_at=fixed_dataset(base, n_batches),
        loss_fn=loss_fn,
        val_at=held_out(base),
        val_every=5,
    )


def train_memorise_adam(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_classification(dim=32, classes=4, batch=32, seed=seed)
    model = mlp([32, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _memorise(watch, model, opt, base, n_batches=2, steps=400)


def train_noisy_labels_momentum(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_classification(dim=16, classes=4, batch=32, label_noise=0.4, seed=seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    _memorise(watch, model, opt, base, n_batches=4, steps=400)


def train_regression_few_points(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_regression(dim=3, batch=20, noise=0.4, seed=seed)
    model = mlp([3, 64, 64, 1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    _memorise(watch, model, opt, base, n_batches=1, steps=500, loss_fn=F.mse_loss)


def train_cnn_noisy_labels(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = quadrant_images(batch=32, noise=1.5, label_noise=0.4, seed=seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    _memorise(watch, model, opt, base, n_batches=2, steps=300)


def train_lstm_memorise(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = sequence_classification(label_noise=0.3, seed=seed)
    model = LSTMClassifier(hidden=32)
    # Adam 1e-3 at hidden 32: calm. At 1.5e-3 / hidden 64 the memorising LSTM has
    # real transient gradient bursts (40x) and loss jumps, which are other symptoms.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _memorise(watch, model, opt, base, n_batches=2, steps=400)


OF = frozenset({"overfitting"})

SCENARIOS: list[Scenario] = [
    Scenario(
        name="overfit_memorise_small_adam",
        description="A 32-64-64-4 MLP with Adam memorises 64 clean 32-dim examples (2 batches, cycled); held-out "
        "CE bottoms out near step 80-90 (seeds 0-2) and ends 25-40% above its minimum.",
        train=train_memorise_adam,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"mlp", "adam", "quick"}),
    ),
    Scenario(
        name="overfit_noisy_labels_momentum",
        description="SGD+momentum memorises 128 examples with 40% random labels; held-out CE bottoms out near "
        "step 110-135 and ends 55-120% above its minimum.",
        train=train_noisy_labels_momentum,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"mlp", "momentum"}),
    ),
    Scenario(
        name="overfit_regression_few_points",
        description="A 3-64-64-1 MLP fits 20 noisy points (3-dim inputs, noise 0.4) to ~0; held-out MSE bottoms "
        "out near step 85-110 and ends 35-80% above its minimum.",
        train=train_regression_few_points,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"mlp", "adam", "quick"}),
    ),
    Scenario(
        name="overfit_cnn_noisy_labels",
        description="A CNN without normalisation memorises 64 noisy 8x8 images with 40% random labels; held-out "
        "CE bottoms out near step 50-60 and ends 70-100% above its minimum.",
        train=train_cnn_noisy_labels,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"cnn", "adam"}),
    ),
    Scenario(
        name="overfit_lstm_memorise",
        description="An LSTM (hidden 32) memorises 64 sequences with 30% random labels; held-out CE bottoms out "
        "near step 70-110 and ends 85-115% above its minimum.",
        train=train_lstm_memorise,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"lstm", "rnn", "adam"}),
    ),
]
