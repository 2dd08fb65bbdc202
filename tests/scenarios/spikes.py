"""Loss-spike scenarios: the training loss jumps abruptly after it has settled.

Some spikes recover within a few steps (one bad batch, a 3-step LR bump); some
do not (the LR raised for good, the task changing under the model). The onset
is the step of the injection. Only where the gradients genuinely blow up with
the loss (the LR bump: grad norm ~0.5 -> ~8 over three steps) is
``exploding_gradient`` allowed too; in the others the gradient norm rises only
2-8x at the spike.
"""

from __future__ import annotations

import torch
from _common import (
    LSTMClassifier,
    MeanPoolTransformer,
    bn_cnn,
    corrupt_at,
    fit,
    mlp,
    quadrant_images,
    sequence_classification,
    set_lr,
    teacher_classification,
    teacher_regression,
    warmup_cosine_lr,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

GRADS_JUMP_TOO = frozenset({"exploding_gradient"})


# --- one batch with 30x-scaled inputs (recovers) ----------------------------------------------

SCALED_BATCH_STEP = 200


def _scaled_batch_mlp(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    clean = teacher_classification(label_noise=0.05, seed=seed)
    batch_at = corrupt_at(clean, SCALED_BATCH_STEP, lambda x, y: (x * 30.0, y))
    fit(watch, model, optimizer, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- one batch with shuffled labels (recovers) -------------------------------------------------

SHUFFLED_STEP = 180


def _shuffled_labels_cnn(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = bn_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    clean = quadrant_images(label_noise=0.1, labels_first=True, seed=seed)
    # a batch whose labels were joined to the wrong rows
    batch_at = corrupt_at(clean, SHUFFLED_STEP, lambda x, y: (x, (y + 1 + torch.arange(len(y)) % 3) % 4))
    fit(watch, model, optimizer, steps=260, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- a 3-step LR bump (recovers) ---------------------------------------------------------------

BUMP_STEP = 220


class _ResidualMLP(nn.Module):
    """Pre-LayerNorm residual MLP."""

    def __init__(self, dim: int = 16, width: int = 32, blocks: int = 6, out: int = 1) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.norm(h))


def _lr_bump_residual(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _ResidualMLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = warmup_cosine_lr(optimizer, start_factor=0.05, warmup=30, cosine_steps=300)
    saved: list[float] = []

    def before_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        # A bad config reload multiplies the LR by 100 for three steps, then the schedule resumes.
        if step == BUMP_STEP:
            saved[:] = [g["lr"] for g in optimizer.param_groups]
            for g in optimizer.param_groups:
                g["lr"] *= 100
        if step == BUMP_STEP + 3:
            for g, lr in zip(optimizer.param_groups, saved, strict=True):
                g["lr"] = lr

    fit(
        watch,
        model,
        optimizer,
        steps=330,
        batch_at=teacher_regression(noise=0.05, seed=seed),
        loss_fn=F.mse_loss,
        scheduler=scheduler,
        before_step=before_step,
    )


# --- LR raised 30x for good (does not recover) --------------------------------------------------

RAISE_STEP = 200


def _lr_raised_transformer(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = MeanPoolTransformer()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def before_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == RAISE_STEP:
            set_lr(optimizer, 3e-2)

    fit(
        watch,
        model,
        optimizer,
        steps=300,
        batch_at=sequence_classification(dim=8, length=10, teacher_seed_offset=0, seed=seed),
        loss_fn=F.cross_entropy,
        before_step=before_step,
    )


# --- the labelling changes abruptly (does not recover at once; relearns) -----------------------

SHIFT_STEP = 200


def _label_shift_lstm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LSTMClassifier(dim=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        watch,
        model,
        optimizer,
        steps=300,
        batch_at=sequence_classification(dim=8, length=12, teacher_seed_offset=0, shift_at=SHIFT_STEP, seed=seed),
        loss_fn=F.cross_entropy,
    )


SCENARIOS = [
    Scenario(
        name="spike_scaled_batch_mlp_adam",
        description="ReLU classifier (Adam); the batch at step 200 has 30x-scaled inputs: loss ~0.4 -> ~3-10 (grad ~20x for that one step), recovered the next step.",
        train=_scaled_batch_mlp,
        expect={"loss_spike": SCALED_BATCH_STEP},
        tags=frozenset({"mlp", "adam", "quick"}),
    ),
    Scenario(
        name="spike_shuffled_labels_cnn_bn",
        description="BatchNorm CNN (SGD+momentum); every label of the batch at step 180 is wrong: loss ~0.4 -> 3.6, recovered the next step.",
        train=_shuffled_labels_cnn,
        expect={"loss_spike": SHUFFLED_STEP},
        tags=frozenset({"cnn", "momentum"}),
    ),
    Scenario(
        name="spike_lr_bump_residual_adamw",
        description="Residual+LayerNorm MLP (AdamW, warmup+cosine); LR x100 for steps 220-222: loss ~0.03 -> ~1 within 3 steps, then (partly, seed-dependent) recovers.",
        train=_lr_bump_residual,
        expect={"loss_spike": BUMP_STEP},
        allow=GRADS_JUMP_TOO,
        tags=frozenset({"residual", "adamw", "warmup", "decay", "quick"}),
    ),
    Scenario(
        name="spike_lr_raised_transformer_adam",
        description="Transformer classifier (Adam 1e-3); LR raised 30x at step 200 for good: loss ~0.17 -> ~1.2 within 6 steps and stays there.",
        train=_lr_raised_transformer,
        expect={"loss_spike": RAISE_STEP},
        # At LR 3e-2 it then sits near chance (~1.3 vs ln 4 = 1.39) for the last 100 steps: a real plateau.
        # And the high LR collapses the lower layers: by step ~235-285 the embedding / first attention
        # gradients are 1e4-1e5x below the head's (measured, seeds 0 and 1): genuinely vanishing.
        allow=frozenset({"stagnation", "vanishing_gradient"}),
        tags=frozenset({"transformer", "adam"}),
    ),
    Scenario(
        name="spike_label_shift_lstm",
        description="LSTM sequence classifier (Adam); at step 200 a different teacher labels the data: loss ~0.3 -> ~3, then relearns slowly.",
        train=_label_shift_lstm,
        expect={"loss_spike": SHIFT_STEP},
        tags=frozenset({"lstm", "adam"}),
    ),
]
