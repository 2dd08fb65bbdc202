"""Exploding-gradient scenarios: gradient norms grow by orders of magnitude.

Causes built in: a learning rate past the stability edge (from the start, or
raised mid-run), a too-large initialisation, a recurrence with spectral radius
above 1. Most runs end in inf/NaN, and the loss jumps as they blow up, so
``nonfinite`` and ``loss_spike`` are allowed where that happens. One run grows
~100-1000x but stays finite to the end.
"""

from __future__ import annotations

import torch
from _common import MeanPoolTransformer, fit, fixed_dataset, mlp, set_lr, teacher_regression
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

BLOWS_UP = frozenset({"nonfinite", "loss_spike"})


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
            set_lr(optimizer, 0.8)

    fit(
        watch,
        model,
        optimizer,
        steps=250,
        batch_at=teacher_regression(seed=seed),
        loss_fn=F.mse_loss,
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
    """Gradient norm ~3e5-6e7 at step 0 (seed-dependent); each SGD step overshoots further: NaN by step 2-6."""
    torch.manual_seed(seed)
    model = _large_init_relu_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=3e-6)
    fit(watch, model, optimizer, steps=150, batch_at=teacher_regression(seed=seed), loss_fn=F.mse_loss)


def _large_init_relu_adam(watch, seed: int) -> None:
    """Adam's bounded steps keep it finite: gradient RMS ~1e4-1e5 at first, still ~1e3 at step 200."""
    torch.manual_seed(seed)
    model = _large_init_relu_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, optimizer, steps=200, batch_at=teacher_regression(seed=seed), loss_fn=F.mse_loss)


class _IRNN(nn.Module):
    """ReLU RNN with the recurrent matrix initialised to ``radius`` x identity (IRNN with 1.5 instead of 1).

    Units that are positive keep growing by ``radius`` each time step, so back-propagated gradients grow
    ~1.5^20 ~ 3000x over the sequence: gradient norms ~1e5-1e7, where 1.0 x identity gives ~1-10.
    Adam's steps (~1e-3 per entry) would need ~500 steps to pull the diagonal back to 1.
    """

    def __init__(self, dim: int = 8, hidden: int = 32, radius: float = 1.5) -> None:
        super().__init__()
        self.rnn = nn.RNN(dim, hidden, nonlinearity="relu", batch_first=True)
        with torch.no_grad():
            self.rnn.weight_hh_l0.copy_(radius * torch.eye(hidden))
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
    model = _IRNN(radius=1.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
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


def _transformer_lr_raised(watch, seed: int) -> None:
    """Transformer regression, SGD+momentum with linear warmup; at step 200 the LR is raised 20x.

    Gradient norm ~0.05-0.2 before, ~1 at 201-202, ~1e3-1e4 at 203-204, NaN by 206-208 (5x or 10x
    is not enough for every seed).
    """
    torch.manual_seed(seed)
    model = MeanPoolTransformer(out=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=50)

    def before_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == TRANSFORMER_RAISE_STEP:
            set_lr(optimizer, 20 * 0.02)

    fit(
        watch,
        model,
        optimizer,
        steps=300,
        batch_at=_sequence_regression(length=10, seed=seed),
        loss_fn=F.mse_loss,
        scheduler=scheduler,
        before_step=before_step,
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
        description="10-layer ReLU MLP initialised at 2x He std (gradient RMS ~1e4-1e5 in every layer), SGD: NaN by step 2-6.",
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
        name="explode_irnn_radius_adam",
        description="ReLU RNN over 20 steps, recurrent matrix initialised to 1.5 x identity, Adam: gradient norm ~1e7 at first, ~1e5 at step 200 (1.0 x identity: ~1).",
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
        description="2-layer transformer regression, SGD+momentum with warmup; LR raised 20x at step 200; NaN by ~206-208.",
        train=_transformer_lr_raised,
        expect={"exploding_gradient": TRANSFORMER_RAISE_STEP},
        allow=BLOWS_UP,
        tags=frozenset({"transformer", "momentum", "warmup"}),
    ),
]
