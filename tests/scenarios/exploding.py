"""Exploding-gradient scenarios: gradient norms grow by orders of magnitude.

Causes built in: a learning rate past the stability edge (from the start, or
raised mid-run), a too-large initialisation, a recurrence with spectral radius
above 1. Most runs end in inf/NaN, and the loss jumps as they blow up, so
``nonfinite`` and ``loss_spike`` are allowed where that happens. One run grows
~100-1000x but stays finite to the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit, fixed_dataset, mlp, teacher_regression  # noqa: E402

from gradwatch.evaluation.scenario import Scenario  # noqa: E402

BLOWS_UP = frozenset({"nonfinite", "loss_spike"})


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _lr_too_high_sgd(watch, seed: int) -> None:
    """Regression MLP with plain SGD at a learning rate past the edge of stability from step 0."""
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1], activation=nn.Tanh)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR_TOO_HIGH)
    fit(watch, model, optimizer, steps=150, batch_at=teacher_regression(seed=seed), loss_fn=F.mse_loss)


LR_TOO_HIGH = 0.6  # stable up to ~0.58 for this model and data; NaN by step ~26
LR_RAISE_STEP = 150


def _lr_raised_midrun_momentum(watch, seed: int) -> None:
    """Tanh regression MLP trains well with SGD+momentum at 0.01; at step 150 the LR is set to 0.8.

    Gradient norm ~0.25 at step 150, ~1 at 155, ~5e3 at 160, ~1e22 at 170, NaN from ~173.
    """
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1], activation=nn.Tanh)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def before_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == LR_RAISE_STEP:
            _set_lr(optimizer, 0.8)

    fit(
        watch, model, optimizer, steps=250, batch_at=teacher_regression(seed=seed), loss_fn=F.mse_loss,
        before_step=before_step,
    )


def _large_init_relu_model() -> nn.Sequential:
    """10-layer ReLU MLP initialised with std 2x He.

    Forward activations grow ~2x per layer and back-propagated deltas ~2x per layer downwards, so every
    weight gradient (delta x activation) is huge, ~1e4-1e5 RMS where He init gives ~0.01-0.1, about
    uniformly across layers (a first/last ratio rule sees nothing).
    """
    model = mlp([16] + [32] * 9 + [1], activation=nn.ReLU)
    for module in model:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=2.0 * (2.0 / module.in_features) ** 0.5)
            nn.init.zeros_(module.bias)
    return model


def _large_init_relu_sgd(watch, seed: int) -> None:
    """Gradient norm ~2e6 at step 0; the first SGD steps overshoot and it is NaN within a few steps."""
    torch.manual_seed(seed)
    model = _large_init_relu_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    fit(watch, model, optimizer, steps=150, batch_at=teacher_regression(seed=seed), loss_fn=F.mse_loss)


def _large_init_relu_adam(watch, seed: int) -> None:
    """Adam's bounded steps keep it finite: gradient RMS ~1e4-1e5 at first, still ~1e3 at step 200."""
    torch.manual_seed(seed)
    model = _large_init_relu_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, optimizer, steps=200, batch_at=teacher_regression(seed=seed), loss_fn=F.mse_loss)


class _ReluRNN(nn.Module):
    """ReLU RNN whose recurrent matrix is an orthogonal matrix times ``radius``, fixed (echo-state style).

    Through the ReLU about half the units pass, so the backward gain is ~radius/sqrt(2) per time step:
    ~1.4^20 ~ 1000x over the sequence at radius 2. Because the recurrence is not trained, training cannot
    shrink it (a trainable one is shrunk by the first SGD step).
    """

    def __init__(self, dim: int = 8, hidden: int = 32, radius: float = 2.0) -> None:
        super().__init__()
        self.rnn = nn.RNN(dim, hidden, nonlinearity="relu", batch_first=True)
        with torch.no_grad():
            nn.init.orthogonal_(self.rnn.weight_hh_l0)
            self.rnn.weight_hh_l0.mul_(radius)
        self.rnn.weight_hh_l0.requires_grad_(False)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _sequence_regression(dim: int = 8, length: int = 20, batch: int = 32, seed: int = 0):
    """Target: a fixed linear read-out of the mean of the sequence."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=gen) / dim**0.5

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, length, dim, generator=g)
        return x, (x.mean(dim=1) @ w).unsqueeze(1)

    return batch_at


def _rnn_radius(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _ReluRNN(radius=2.0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    fit(watch, model, optimizer, steps=200, batch_at=_sequence_regression(seed=seed), loss_fn=F.mse_loss)


EDGE_MARGIN = 1.01  # the top mode's factor is |1 - 2 * 1.01| = 1.02 per step: ~380x over 300 steps


def _finite_growth_linear(watch, seed: int) -> None:
    """Full-batch linear regression with the LR 1% past 2/lambda_max: the top mode grows ~2% a step.

    The gradient norm grows by a few hundred times over the run but never overflows.
    """
    torch.manual_seed(seed)
    batch_at = fixed_dataset(teacher_regression(batch=64, seed=seed), 1)
    x, _ = batch_at(0)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    lambda_max = float(torch.linalg.eigvalsh(2.0 / len(x) * design.T @ design)[-1])
    model = nn.Sequential(nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=EDGE_MARGIN * 2.0 / lambda_max)
    fit(watch, model, optimizer, steps=300, batch_at=batch_at, loss_fn=F.mse_loss)


class _TinyTransformer(nn.Module):
    def __init__(self, dim: int = 8, d_model: int = 32, layers: int = 2, out: int = 1) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, d_model)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(d_model, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def _transformer_lr_raised(watch, seed: int) -> None:
    """Transformer regression, SGD+momentum with linear warmup; at step 200 the LR is raised 5x.

    Gradient norm ~0.3 at step 200, ~3 at 205, ~1e9 at 210, NaN from ~211.
    """
    torch.manual_seed(seed)
    model = _TinyTransformer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=50)

    def before_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == TRANSFORMER_RAISE_STEP:
            _set_lr(optimizer, 5 * 0.02)

    fit(
        watch, model, optimizer, steps=300, batch_at=_sequence_regression(length=10, seed=seed), loss_fn=F.mse_loss,
        scheduler=scheduler, before_step=before_step,
    )


TRANSFORMER_RAISE_STEP = 200


SCENARIOS = [
    Scenario(
        name="explode_lr_too_high_sgd",
        description="Tanh regression MLP, plain SGD with the LR past the stability edge from step 0; ends in NaN.",
        train=_lr_too_high_sgd,
        expect={"exploding_gradient": 0},
        allow=BLOWS_UP,
        tags=frozenset({"mlp", "sgd", "quick"}),
    ),
    Scenario(
        name="explode_lr_raised_midrun_momentum",
        description="Tanh regression MLP trains at LR 0.01 with momentum; the LR is set to 0.8 at step 150; NaN by ~173.",
        train=_lr_raised_midrun_momentum,
        expect={"exploding_gradient": LR_RAISE_STEP},
        allow=BLOWS_UP,
        tags=frozenset({"mlp", "momentum", "quick"}),
    ),
    Scenario(
        name="explode_large_init_deep_relu_sgd",
        description="10-layer ReLU MLP initialised at 2x He std (gradient RMS ~1e4-1e5 in every layer), SGD: NaN at step 4.",
        train=_large_init_relu_sgd,
        expect={"exploding_gradient": 0},
        allow=BLOWS_UP,
        tags=frozenset({"mlp", "sgd"}),
    ),
    Scenario(
        name="explode_large_init_deep_relu_adam",
        description="The same 2x-He ReLU MLP with Adam: gradients ~1e4-1e5x He-init's, decaying to ~1e3x by the end; never non-finite.",
        train=_large_init_relu_adam,
        expect={"exploding_gradient": 0},
        allow=frozenset({"loss_spike"}),
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        name="explode_rnn_fixed_recurrence_adam",
        description="ReLU RNN over 20 steps with a fixed recurrent matrix = 2 x orthogonal, Adam: gradient RMS ~2e3 at first (radius 1.5: ~0.5), ~20 by step 200.",
        train=_rnn_radius,
        expect={"exploding_gradient": 0},
        allow=frozenset({"loss_spike"}),
        tags=frozenset({"rnn", "adam"}),
    ),
    Scenario(
        name="explode_finite_past_edge_linear",
        description="Full-batch linear regression, LR 1% past 2/lambda_max: gradients grow a few hundred x, stay finite.",
        train=_finite_growth_linear,
        expect={"exploding_gradient": 0},
        allow=frozenset({"loss_spike"}),
        tags=frozenset({"mlp", "sgd"}),
    ),
    Scenario(
        name="explode_transformer_lr_raised",
        description="2-layer transformer regression, SGD+momentum with warmup; LR raised 5x at step 200; NaN by ~211.",
        train=_transformer_lr_raised,
        expect={"exploding_gradient": TRANSFORMER_RAISE_STEP},
        allow=BLOWS_UP,
        tags=frozenset({"transformer", "momentum", "warmup"}),
    ),
]
