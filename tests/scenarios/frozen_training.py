"""Frozen parameters on purpose and by mistake: linear probes, LoRA, and models that cannot train.

Freezing most of a network is normal (a linear probe on a pretrained backbone, LoRA adapters on a
frozen base) and must stay silent even while what trains learns slowly or noisily; freezing the
wrong parameters (leaving them out of the optimizer, or leaving only parts that cannot fit the task
trainable) is `stagnation` from step 0. Written after a held-out linear probe raised `stagnation`
(2026-11-27): every healthy run here did before the rule changed (docs/rules.md says how).

The "pretrained" models are trained in the same process just before, as a notebook would: their
frozen parameters still hold the last pretraining gradient in ``.grad``.
"""

from __future__ import annotations

import torch
from _common import fit, mlp, teacher_classification
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


def pretrained_mlp(seed: int, widths: list[int], steps: int = 150) -> nn.Sequential:
    """An MLP trained with Adam on its own teacher task (a different teacher from the probes' task)."""
    torch.manual_seed(seed)
    model = mlp(widths)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch_at = teacher_classification(dim=widths[0], classes=widths[-1], seed=seed + 100)
    for step in range(steps):
        x, y = batch_at(step)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def loaded_copy(model: nn.Sequential, widths: list[int]) -> nn.Sequential:
    """A fresh model with ``model``'s weights, as loaded from a checkpoint (no ``.grad`` anywhere)."""
    copy = mlp(widths)
    copy.load_state_dict(model.state_dict())
    return copy


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update B @ A, B zero-initialised (so it starts slowly)."""

    def __init__(self, base: nn.Linear, rank: int = 4) -> None:
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.a.t() @ self.b.t()


def with_lora(model: nn.Sequential) -> nn.Sequential:
    model.requires_grad_(False)
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            model[i] = LoRALinear(layer)
    return model


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------ healthy


def train_linear_probe_adam(watch, seed: int) -> None:
    widths = [16, 128, 128, 4]
    model = pretrained_mlp(seed, widths)
    model.requires_grad_(False)
    model[-1] = nn.Linear(128, 4)  # a fresh head for the new task
    opt = torch.optim.Adam(model[-1].parameters(), lr=1e-3)
    fit(watch, model, opt, steps=200, batch_at=teacher_classification(seed=seed + 7), loss_fn=F.cross_entropy)


def train_linear_probe_sgd_8_classes(watch, seed: int) -> None:
    widths = [16, 256, 256, 8]
    model = pretrained_mlp(seed, widths)
    model.requires_grad_(False)
    model[-1] = nn.Linear(256, 8)
    opt = torch.optim.SGD(model[-1].parameters(), lr=0.01, momentum=0.9)
    batch_at = teacher_classification(classes=8, seed=seed + 7)
    fit(watch, model, opt, steps=200, batch_at=batch_at, loss_fn=F.cross_entropy)


def train_linear_probe_loaded_large_batch(watch, seed: int) -> None:
    widths = [16, 128, 128, 4]
    model = loaded_copy(pretrained_mlp(seed, widths), widths)
    model.requires_grad_(False)
    model[-1] = nn.Linear(128, 4)
    opt = torch.optim.SGD(model[-1].parameters(), lr=0.02)
    batch_at = teacher_classification(batch=256, seed=seed + 7)
    fit(watch, model, opt, steps=200, batch_at=batch_at, loss_fn=F.cross_entropy)


def train_lora_noisy_labels(watch, seed: int) -> None:
    model = with_lora(pretrained_mlp(seed, [16, 128, 128, 4]))
    opt = torch.optim.AdamW(trainable(model), lr=2e-3)
    batch_at = teacher_classification(seed=seed + 7, label_noise=0.1)
    fit(watch, model, opt, steps=200, batch_at=batch_at, loss_fn=F.cross_entropy)


def train_lora_loaded_large_batch(watch, seed: int) -> None:
    widths = [16, 128, 128, 4]
    model = with_lora(loaded_copy(pretrained_mlp(seed, widths), widths))
    opt = torch.optim.AdamW(trainable(model), lr=1e-3)
    batch_at = teacher_classification(batch=256, seed=seed + 7)
    fit(watch, model, opt, steps=200, batch_at=batch_at, loss_fn=F.cross_entropy)


# ------------------------------------------------------------------------------------ faults


def train_optimizer_holds_only_head_bias(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.Adam([model[-1].bias], lr=1e-3)  # the rest still gets gradients that are never applied
    fit(watch, model, opt, steps=200, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def train_only_layernorms_trainable(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4], norm=True)
    model.requires_grad_(False)
    for layer in model:
        if isinstance(layer, nn.LayerNorm):
            layer.requires_grad_(True)
    opt = torch.optim.Adam(trainable(model), lr=1e-3)
    fit(watch, model, opt, steps=200, batch_at=teacher_classification(seed=seed), loss_fn=F.cross_entropy)


def train_only_head_bias_trainable_batch_8(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    model.requires_grad_(False)
    model[-1].bias.requires_grad_(True)
    opt = torch.optim.SGD([model[-1].bias], lr=0.05)
    fit(watch, model, opt, steps=200, batch_at=teacher_classification(batch=8, seed=seed), loss_fn=F.cross_entropy)


SCENARIOS: list[Scenario] = [
    Scenario(
        name="healthy_linear_probe_adam",
        description="A pretrained MLP frozen with requires_grad_(False) (97% of the parameters, stale .grad kept), "
        "a fresh linear head trained with Adam lr 1e-3 on a new teacher task: the loss falls 25% in 20 steps, "
        "then slowly, under batch noise of about 0.15.",
        train=train_linear_probe_adam,
        expect={},
        tags=frozenset({"mlp", "adam", "frozen", "quick"}),
    ),
    Scenario(
        name="healthy_linear_probe_sgd_8_classes",
        description="A frozen pretrained MLP with a fresh 8-class head (SGD momentum): the loss goes 2.1 -> 1.65 in "
        "30 steps under batch noise of about 0.3 per step, then on down.",
        train=train_linear_probe_sgd_8_classes,
        expect={},
        tags=frozenset({"mlp", "momentum", "frozen"}),
    ),
    Scenario(
        name="healthy_linear_probe_loaded_large_batch",
        description="A pretrained MLP loaded into a fresh model (no .grad anywhere), frozen, a fresh head trained "
        "with plain SGD on batches of 256.",
        train=train_linear_probe_loaded_large_batch,
        expect={},
        tags=frozenset({"mlp", "sgd", "frozen"}),
    ),
    Scenario(
        name="healthy_lora_noisy_labels",
        description="LoRA (rank 4, B zero-initialised) on every layer of a frozen pretrained MLP, AdamW, 10% label "
        "noise: the loss sits near its start for ~20 steps while B grows, then falls 7.4 -> 1.2.",
        train=train_lora_noisy_labels,
        expect={},
        tags=frozenset({"mlp", "adam", "frozen", "lora"}),
    ),
    Scenario(
        name="healthy_lora_loaded_large_batch",
        description="LoRA on a frozen pretrained MLP loaded from its weights, AdamW lr 1e-3, batches of 256: a slow "
        "start (7.6 -> 7.4 over 20 steps) that is too quiet to hide, then a fall to 1.2.",
        train=train_lora_loaded_large_batch,
        expect={},
        tags=frozenset({"mlp", "adam", "frozen", "lora"}),
    ),
    Scenario(
        name="stagnant_optimizer_holds_only_head_bias",
        description="Adam built on the output bias alone: every other parameter gets a gradient each step that is "
        "never applied.",
        train=train_optimizer_holds_only_head_bias,
        expect={"stagnation": 0},
        tags=frozenset({"mlp", "adam", "frozen", "quick"}),
    ),
    Scenario(
        name="stagnant_only_layernorms_trainable",
        description="requires_grad_(False) on a LayerNorm MLP, then only its LayerNorm scales and shifts unfrozen: "
        "they cannot fit the teacher, the loss stays at chance.",
        train=train_only_layernorms_trainable,
        expect={"stagnation": 0},
        tags=frozenset({"mlp", "adam", "frozen"}),
    ),
    Scenario(
        name="stagnant_only_head_bias_trainable_batch_8",
        description="Everything frozen but the output bias, SGD, batches of 8: a noisier twin of "
        "stagnant_frozen_all_but_bias.",
        train=train_only_head_bias_trainable_batch_8,
        expect={"stagnation": 0},
        tags=frozenset({"mlp", "sgd", "frozen"}),
    ),
]
