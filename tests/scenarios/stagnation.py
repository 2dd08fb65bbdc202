"""Stagnation: the loss stops improving (or never starts) because the weights barely move.

Each model here learns fine with a normal setup (the same architectures train
in healthy.py); what stalls it is the learning rate, frozen parameters, dead
ReLUs or a schedule that drops the learning rate to ~0 while the loss is high.
Onset is 0 for runs stagnant from the start.
"""

from __future__ import annotations

import torch
from _common import LSTMClassifier, fit, mlp, sequence_classification, teacher_classification
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


def train_tiny_lr_sgd(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 32, 4])
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)  # learns well at 1e-2..1e-1
    fit(watch, model, opt, steps=300, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def train_tiny_lr_adam_lstm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LSTMClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-8)  # healthy_lstm_sequence learns at 3e-3
    fit(watch, model, opt, steps=300, batch_at=sequence_classification(seed=seed), loss_fn=F.cross_entropy)


def train_frozen_all_but_bias(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    model.requires_grad_(False)
    head_bias = model[-1].bias
    head_bias.requires_grad_(True)
    opt = torch.optim.Adam([head_bias], lr=1e-3)  # 4 of ~5,500 parameters train
    fit(watch, model, opt, steps=300, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def train_dead_relu(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 64, 4])
    with torch.no_grad():
        for layer in list(model)[:-1]:
            if isinstance(layer, nn.Linear):
                layer.bias.fill_(-5.0)  # every hidden pre-activation < 0: all ReLUs output 0
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def train_lr_collapse_early(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 32, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def collapse(step: int, _model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == 100:  # a misconfigured schedule: lr x 1e-4 while the loss is still high
            for group in optimizer.param_groups:
                group["lr"] *= 1e-4

    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=teacher_classification(seed=seed),
        loss_fn=F.cross_entropy,
        before_step=collapse,
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        name="stagnant_tiny_lr_sgd",
        description="SGD with lr 1e-6 on an MLP that learns well at 1e-2: the loss never moves.",
        train=train_tiny_lr_sgd,
        expect={"stagnation": 0},
        tags=frozenset({"mlp", "sgd", "quick"}),
    ),
    Scenario(
        name="stagnant_tiny_lr_adam_lstm",
        description="Adam with lr 1e-8 on an LSTM that learns well at 3e-3: the loss never moves.",
        train=train_tiny_lr_adam_lstm,
        expect={"stagnation": 0},
        tags=frozenset({"lstm", "rnn", "adam"}),
    ),
    Scenario(
        name="stagnant_frozen_all_but_bias",
        description="Everything frozen (requires_grad_(False)) except the 4-element output bias, which Adam "
        "trains at a healthy lr: on balanced classes the bias alone cannot lower the loss.",
        train=train_frozen_all_but_bias,
        expect={"stagnation": 0},
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        name="stagnant_dead_relu",
        description="All hidden biases initialised to -5: every ReLU outputs 0, every gradient below the output "
        "bias is exactly 0, and the net can only learn a constant (the class priors).",
        train=train_dead_relu,
        expect={"stagnation": 0},
        allow=frozenset({"vanishing_gradient"}),
        tags=frozenset({"mlp", "momentum", "quick"}),
    ),
    Scenario(
        name="stagnant_lr_collapse_early",
        description="SGD lr 0.1 multiplied by 1e-4 at step 100 while the loss is still falling steeply: "
        "it stays flat at its step-100 level for the remaining 300 steps.",
        train=train_lr_collapse_early,
        expect={"stagnation": 100},
        tags=frozenset({"mlp", "sgd", "decay"}),
    ),
]
