"""Vanishing-gradient scenarios: the lower layers get (almost) no gradient from the start.

Each pathology is built in from step 0 (saturating activations stacked deep,
a too-small initialisation, a long recurrence whose signal enters at the first
time step), so every label's onset is 0. A net whose lower layers cannot learn
usually learns slowly or not at all, so ``stagnation`` is allowed throughout.
"""

from __future__ import annotations

import torch
from _common import fit, mlp, quadrant_images, teacher_classification, teacher_regression
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

ALSO_STAGNATES = frozenset({"stagnation"})


def _deep_sigmoid_sgd(watch, seed: int) -> None:
    """12 sigmoid layers, default init: each layer multiplies the gradient by <= 0.25 x |W|."""
    torch.manual_seed(seed)
    model = mlp([16] + [32] * 11 + [4], activation=nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(watch, model, optimizer, steps=300, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def _deep_sigmoid_adam(watch, seed: int) -> None:
    """16 sigmoid layers with Adam: Adam rescales the tiny updates, but the gradients stay tiny."""
    torch.manual_seed(seed)
    model = mlp([16] + [32] * 15 + [4], activation=nn.Sigmoid)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, optimizer, steps=300, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def _small_init_tanh_momentum(watch, seed: int) -> None:
    """10 tanh layers initialised with std 1e-2 (He would be ~0.18): ~0.06x per layer."""
    torch.manual_seed(seed)
    model = mlp([16] + [32] * 9 + [1], activation=nn.Tanh, init_std=1e-2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.5)
    fit(
        watch,
        model,
        optimizer,
        steps=300,
        batch_at=teacher_regression(seed=seed),
        loss_fn=F.mse_loss,
        scheduler=scheduler,
    )


def _tiny_init_tanh_adam(watch, seed: int) -> None:
    """10 tanh layers at std 1e-3: the lower gradients sit far below Adam's eps, so Adam cannot rescue them."""
    torch.manual_seed(seed)
    model = mlp([16] + [32] * 9 + [4], activation=nn.Tanh, init_std=1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    # Adam does climb out eventually (the lower gradients reach ~1e-5 by step ~250);
    # 200 steps keeps the whole run inside the vanishing regime.
    fit(watch, model, optimizer, steps=200, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


class _FirstStepRNN(nn.Module):
    """Vanilla tanh RNN over a 24-step sequence whose only signal is at t=0 (the rest is blank padding)."""

    def __init__(self, dim: int = 8, hidden: int = 32, recurrent_std: float = 0.05) -> None:
        super().__init__()
        self.encode = nn.Linear(dim, hidden, bias=False)
        self.rnn = nn.RNN(hidden, hidden, nonlinearity="tanh", bias=False, batch_first=True)
        nn.init.normal_(self.rnn.weight_hh_l0, std=recurrent_std)  # spectral radius ~0.3
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.encode(x))
        return self.head(out[:, -1])


def _rnn_first_input_batches(dim: int = 8, length: int = 24, batch: int = 32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=gen) / dim**0.5

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        first = torch.randn(batch, dim, generator=g)
        x = torch.zeros(batch, length, dim)
        x[:, 0] = first
        y = torch.tanh(first @ w).unsqueeze(1)  # depends only on the first input
        return x, y

    return batch_at


def _rnn_long_sgd(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _FirstStepRNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    fit(watch, model, optimizer, steps=300, batch_at=_rnn_first_input_batches(seed=seed), loss_fn=F.mse_loss)


def _sigmoid_cnn(depth: int = 8, channels: int = 8, classes: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.Sigmoid()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid()]
    layers += [nn.Flatten(), nn.Linear(channels * 8 * 8, classes)]
    return nn.Sequential(*layers)


def _sigmoid_cnn_sgd(watch, seed: int) -> None:
    """8 conv layers with sigmoid and no normalisation."""
    torch.manual_seed(seed)
    model = _sigmoid_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(
        watch,
        model,
        optimizer,
        steps=200,
        batch_at=quadrant_images(labels_first=True, seed=seed),
        loss_fn=F.cross_entropy,
    )


SCENARIOS = [
    Scenario(
        name="vanish_deep_sigmoid_mlp_sgd",
        description="12-layer sigmoid MLP, default init, plain SGD: the first layers' gradients are >1000x below the top's.",
        train=_deep_sigmoid_sgd,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"mlp", "sgd", "quick"}),
    ),
    Scenario(
        name="vanish_deep_sigmoid_mlp_adam",
        description="16-layer sigmoid MLP with Adam: Adam's normalised steps move the lower layers, but their gradients stay vanishing.",
        train=_deep_sigmoid_adam,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        name="vanish_small_init_tanh_momentum",
        description="10-layer tanh regression MLP initialised with std 1e-2, SGD+momentum with step decay.",
        train=_small_init_tanh_momentum,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"mlp", "momentum", "decay", "quick"}),
    ),
    Scenario(
        name="vanish_tiny_init_tanh_adam",
        description="10-layer tanh MLP initialised with std 1e-3 and Adam (lr 1e-4): lower gradients far below eps stay frozen.",
        train=_tiny_init_tanh_adam,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        name="vanish_rnn_long_sequence_sgd",
        description="Vanilla tanh RNN (recurrent radius ~0.3) over 24 steps; the target depends only on the first input.",
        train=_rnn_long_sgd,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"rnn", "sgd"}),
    ),
    Scenario(
        name="vanish_deep_sigmoid_cnn_momentum",
        description="8 sigmoid conv layers without normalisation, SGD+momentum.",
        train=_sigmoid_cnn_sgd,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"cnn", "momentum"}),
    ),
]
