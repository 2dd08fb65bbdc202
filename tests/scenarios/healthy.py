"""Healthy controls that stress the rules: none of these may raise any symptom.

Each run learns (its loss falls well below where it starts) or, for the
converged control, sits at its noise floor with weights that still move at a
healthy learning rate. They are built to sit where naive rules misfire: very
deep nets, normalisation layers, recurrent and attention models, schedules
with warmup from 0 and a decay tail, small noisy batches, losses near 1e-5,
heavy gradient clipping and AMP loss scaling that skips steps.
"""

from __future__ import annotations

import math

import torch
from _common import (
    LSTMClassifier,
    fit,
    mlp,
    quadrant_images,
    sequence_classification,
    teacher_classification,
    teacher_regression,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

# --------------------------------------------------------------------- helpers


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(2 * width * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


class PreLNBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(self.norm(x))))


class DeepResidual(nn.Module):
    def __init__(self, dim: int = 16, width: int = 32, blocks: int = 24, classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.Sequential(*[PreLNBlock(width) for _ in range(blocks)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.inp(x))))


class TinyTransformer(nn.Module):
    def __init__(self, dim: int = 4, d_model: int = 32, layers: int = 2, classes: int = 4, length: int = 12) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(1, length, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.inp(x) + self.pos)
        return self.head(self.norm(h.mean(dim=1)))


def warmup_cosine(warmup: int, total: int):
    """Linear warmup from ~0 to 1 over ``warmup`` steps, then cosine to exactly 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ------------------------------------------------------------------- scenarios


def train_tiny_mlp(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 16, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(watch, model, opt, steps=300, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def train_deep_residual(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = DeepResidual(blocks=24)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=250, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def train_cnn_batchnorm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = SmallCNN(channels=1, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    fit(watch, model, opt, steps=250, batch_at=quadrant_images(seed=seed, noise=1.5), loss_fn=F.cross_entropy)


def train_lstm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LSTMClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=sequence_classification(seed=seed), loss_fn=F.cross_entropy)


def train_transformer_warmup_cosine(watch, seed: int) -> None:
    torch.manual_seed(seed)
    steps = 300
    model = TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(40, steps))
    fit(
        watch,
        model,
        opt,
        steps=steps,
        batch_at=sequence_classification(seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


def train_noisy_small_batch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = teacher_classification(batch=4, label_noise=0.3, seed=seed)
    fit(watch, model, opt, steps=500, batch_at=data, loss_fn=F.cross_entropy)


def linear_teacher(dim: int = 16, batch: int = 32, noise: float = 3e-3, seed: int = 0):
    """y = x @ w + noise: realisable by a linear network down to an MSE of noise**2."""
    w = torch.randn(dim, 1, generator=torch.Generator().manual_seed(seed + 11)) / dim**0.5

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=g)
        return x, x @ w + noise * torch.randn(batch, 1, generator=g)

    return batch_at


def train_tiny_loss_regression(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 1], activation=nn.Identity)  # a two-layer linear network: realises the teacher
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = linear_teacher(noise=3e-3, seed=seed)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=F.mse_loss)


def train_warmup_from_zero(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 32, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 100))  # lr is exactly 0 at step 0
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=teacher_classification(seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


def train_clipped(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 32, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=teacher_classification(seed=seed),
        loss_fn=F.cross_entropy,
        clip=0.25,  # below the typical gradient norm for the whole run: most steps are clipped
    )


def train_amp_gradscaler(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 32, 4])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    # fp16 autocast with an absurd initial scale: the first ~25 backward passes
    # overflow in fp16, the scaler finds inf gradients, skips optimizer.step()
    # and halves the scale until it fits. Routine AMP, not a NaN incident.
    # The loop also clips (loosely) and passes the norm, which is Inf on every
    # skipped step: still not an incident.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=50)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=teacher_classification(seed=seed),
        loss_fn=F.cross_entropy,
        scaler=scaler,
        autocast_dtype=torch.float16,
        clip=100.0,
    )


def train_converged_flat(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 1])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    # Targets carry unit noise: the loss reaches its floor (~1.0) within ~100
    # steps and then stays flat for 500 more while Adam keeps moving the weights.
    data = teacher_regression(dim=16, batch=32, noise=1.0, seed=seed)
    fit(watch, model, opt, steps=600, batch_at=data, loss_fn=F.mse_loss)


H = frozenset({"healthy"})

SCENARIOS: list[Scenario] = [
    Scenario(
        name="healthy_tiny_mlp",
        description="A 2-layer 16-16-4 MLP with plain SGD on a linear-teacher classification task.",
        train=train_tiny_mlp,
        tags=H | {"mlp", "sgd"},
    ),
    Scenario(
        name="healthy_deep_residual_preln",
        description="24 pre-LayerNorm residual MLP blocks (50 linear layers) with Adam: deep but well conditioned.",
        train=train_deep_residual,
        tags=H | {"residual", "mlp", "adam"},
    ),
    Scenario(
        name="healthy_cnn_batchnorm",
        description="A 3-conv CNN with BatchNorm and SGD+momentum on noisy 8x8 images (class = bright quadrant).",
        train=train_cnn_batchnorm,
        tags=H | {"cnn", "momentum", "quick"},
    ),
    Scenario(
        name="healthy_lstm_sequence",
        description="An LSTM (hidden 32) with Adam classifying length-12 sequences by a linear map of their sum.",
        train=train_lstm,
        tags=H | {"lstm", "rnn", "adam"},
    ),
    Scenario(
        name="healthy_transformer_warmup_cosine",
        description="A 2-layer pre-LN transformer encoder (d_model 32) with AdamW, 40-step linear warmup, "
        "then cosine decay to exactly 0 at the last step (a long decay tail of tiny updates).",
        train=train_transformer_warmup_cosine,
        tags=H | {"transformer", "adamw", "warmup", "decay"},
    ),
    Scenario(
        name="healthy_noisy_small_batch",
        description="Batch size 4 with 30% label noise and SGD: a very noisy per-step loss that still falls.",
        train=train_noisy_small_batch,
        tags=H | {"mlp", "sgd"},
    ),
    Scenario(
        name="healthy_tiny_loss_regression",
        description="Adam on a realisable linear-teacher regression (two-layer linear net, target noise 3e-3): "
        "the MSE falls from ~0.5 to its ~1e-5 floor by step ~150 and jitters there (relative jumps are large, "
        "absolute ones tiny).",
        train=train_tiny_loss_regression,
        tags=H | {"mlp", "adam", "quick"},
    ),
    Scenario(
        name="healthy_warmup_from_zero",
        description="SGD+momentum with a linear LR warmup starting at exactly 0 (first update is zero).",
        train=train_warmup_from_zero,
        tags=H | {"mlp", "momentum", "warmup"},
    ),
    Scenario(
        name="healthy_clipped_gradients",
        description="SGD lr 0.2 with clip_grad_norm_ at 0.25: nearly every step is clipped, training is fine.",
        train=train_clipped,
        tags=H | {"mlp", "sgd"},
    ),
    Scenario(
        name="healthy_amp_gradscaler_skips",
        description="fp16 autocast with GradScaler(init_scale=2**40): the first ~25 steps overflow and are "
        "skipped by the scaler (scale halves each time), then training proceeds; the loop clips loosely and passes the (then Inf) norm. Skips are not NaN incidents.",
        train=train_amp_gradscaler,
        tags=H | {"mlp", "adam", "quick"},
    ),
    Scenario(
        name="healthy_converged_flat",
        description="Adam on a regression with unit target noise: converged to the noise floor by ~step 100, "
        "then 500 steps at a flat loss with healthy updates (converged, not stagnant).",
        train=train_converged_flat,
        tags=H | {"mlp", "adam"},
    ),
]
