"""Overfitting: the train loss keeps falling on a small dataset while the held-out loss rises.

Each run trains on ``fixed_dataset(...)`` (a few batches, cycled) and validates
every few steps on held-out batches from the same generator
(``batch_at(10**6 + i)``, never seen in training). The labelled onset is the
typical step of the held-out minimum over seeds 0-2, measured by running the
scenario; after it the val loss rises well above its minimum by the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit, fixed_dataset, mlp, teacher_classification, teacher_regression  # noqa: E402

from gradwatch.evaluation.scenario import Scenario  # noqa: E402


def held_out(batch_at):
    return lambda i: batch_at(10**6 + i)


def quadrant_images(batch: int = 32, size: int = 8, channels: int = 1, noise: float = 0.5, label_noise: float = 0.0, seed: int = 0):
    """Noisy ``size``x``size`` images; class = which quadrant (0-3) is bright, some labels flipped at random."""
    half = size // 2

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = noise * torch.randn(batch, channels, size, size, generator=g)
        y = torch.randint(0, 4, (batch,), generator=g)
        for q in range(4):
            r, c = divmod(q, 2)
            x[y == q, :, r * half : (r + 1) * half, c * half : (c + 1) * half] += 1.0
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, 4, (batch,), generator=g), y)
        return x, y

    return batch_at


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


def train_memorise_adam(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_classification(dim=32, classes=4, batch=32, seed=seed)
    model = mlp([32, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=fixed_dataset(base, 2),
        loss_fn=F.cross_entropy,
        val_at=held_out(base),
        val_every=5,
    )


def train_noisy_labels_momentum(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_classification(dim=16, classes=4, batch=32, label_noise=0.4, seed=seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=fixed_dataset(base, 4),
        loss_fn=F.cross_entropy,
        val_at=held_out(base),
        val_every=5,
    )


def train_regression_few_points(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_regression(dim=3, batch=20, noise=0.4, seed=seed)
    model = mlp([3, 64, 64, 1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    fit(
        watch,
        model,
        opt,
        steps=500,
        batch_at=fixed_dataset(base, 1),
        loss_fn=F.mse_loss,
        val_at=held_out(base),
        val_every=5,
    )


def train_cnn_noisy_labels(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = quadrant_images(batch=32, noise=1.5, label_noise=0.4, seed=seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=fixed_dataset(base, 2),
        loss_fn=F.cross_entropy,
        val_at=held_out(base),
        val_every=5,
    )


class LSTMClassifier(nn.Module):
    def __init__(self, dim: int = 4, hidden: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def sequence_classification(batch: int = 32, length: int = 12, dim: int = 4, classes: int = 4, label_noise: float = 0.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed + 7)
    teacher = torch.randn(dim, classes, generator=gen)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, length, dim, generator=g)
        y = (x.sum(dim=1) @ teacher).argmax(dim=1)
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, classes, (batch,), generator=g), y)
        return x, y

    return batch_at


def train_lstm_memorise(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = sequence_classification(label_noise=0.3, seed=seed)
    model = LSTMClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1.5e-3)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=fixed_dataset(base, 2),
        loss_fn=F.cross_entropy,
        val_at=held_out(base),
        val_every=5,
    )


OF = frozenset({"overfitting"})

SCENARIOS: list[Scenario] = [
    Scenario(
        name="overfit_memorise_small_adam",
        description="A 32-64-64-4 MLP with Adam memorises 64 clean 32-dim examples (2 batches, cycled); held-out "
        "CE bottoms out near step 80-90 (seeds 0-2) and ends 25-40% above its minimum.",
        train=train_memorise_adam,
        expect={"overfitting": 85},
        tags=frozenset({"mlp", "adam", "quick"}),
    ),
    Scenario(
        name="overfit_noisy_labels_momentum",
        description="SGD+momentum memorises 128 examples with 40% random labels; held-out CE bottoms out near "
        "step 110-135 and ends 55-120% above its minimum.",
        train=train_noisy_labels_momentum,
        expect={"overfitting": 120},
        tags=frozenset({"mlp", "momentum"}),
    ),
    Scenario(
        name="overfit_regression_few_points",
        description="A 3-64-64-1 MLP fits 20 noisy points (3-dim inputs, noise 0.4) to ~0; held-out MSE bottoms "
        "out near step 85-110 and ends 35-80% above its minimum.",
        train=train_regression_few_points,
        expect={"overfitting": 95},
        tags=frozenset({"mlp", "adam", "quick"}),
    ),
    Scenario(
        name="overfit_cnn_noisy_labels",
        description="A CNN without normalisation memorises 64 noisy 8x8 images with 40% random labels; held-out "
        "CE bottoms out near step 50-60 and ends 70-100% above its minimum.",
        train=train_cnn_noisy_labels,
        expect={"overfitting": 55},
        tags=frozenset({"cnn", "adam"}),
    ),
    Scenario(
        name="overfit_lstm_memorise",
        description="An LSTM (hidden 64) memorises 64 sequences with 30% random labels; held-out CE bottoms out "
        "near step 40-50 and ends 150-260% above its minimum.",
        train=train_lstm_memorise,
        expect={"overfitting": 45},
        tags=frozenset({"lstm", "rnn", "adam"}),
    ),
]
