"""Non-finite scenarios: a NaN/Inf enters the loss or the gradients at a known step.

The onset is the step whose loss or gradients first hold a non-finite value.
Each run trains healthily before it (the injection comes after the loss has
settled), so nothing else is expected. Once NaN reaches the weights, every
later loss is NaN too.
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
    teacher_classification,
    teacher_regression,
    warmup_cosine_lr,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

# --- NaN in the input: one sequence of one batch carries a NaN --------------------------------

NAN_INPUT_STEP = 200


def _nan_input_lstm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LSTMClassifier(dim=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def missing_reading(x: torch.Tensor, y: torch.Tensor):
        x = x.clone()
        x[5, 3, 2] = float("nan")  # one missing sensor reading
        return x, y

    clean = sequence_classification(dim=8, length=12, teacher_seed_offset=0, seed=seed)
    batch_at = corrupt_at(clean, NAN_INPUT_STEP, missing_reading)
    fit(watch, model, optimizer, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- NaN in the targets of a regression -----------------------------------------------------

NAN_TARGET_STEP = 150


def _nan_target_mlp(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def missing_label(x: torch.Tensor, y: torch.Tensor):
        y = y.clone()
        y[7] = float("nan")  # a missing label that slipped through
        return x, y

    batch_at = corrupt_at(teacher_regression(seed=seed), NAN_TARGET_STEP, missing_label)
    fit(watch, model, optimizer, steps=250, batch_at=batch_at, loss_fn=F.mse_loss)


# --- log(0): a hand-written binary cross-entropy meets a saturated sigmoid --------------------

LOG0_STEP = 173


def _naive_bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE written out by hand: sigmoid(z) rounds to exactly 1.0 in float32 once z > ~16.6, and
    then log(1 - p) = log(0) = -inf (and 0 * log(0) = NaN for the y = 1 rows)."""
    p = torch.sigmoid(z.squeeze(1))
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def _log0_bce_mlp(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 32, 32, 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    clean = teacher_classification(classes=2, label_noise=0.2, seed=seed)  # noisy labels keep logits moderate

    def batch_at(step: int):
        x, y = clean(step)
        if step == LOG0_STEP:
            x = x * 100.0  # one batch that skipped feature normalisation
        return x, y.float()

    fit(watch, model, optimizer, steps=250, batch_at=batch_at, loss_fn=_naive_bce)


# --- division by zero in a normaliser --------------------------------------------------------

DIV0_STEP = 160


class _Standardize(nn.Module):
    """Per-image standardisation written without an epsilon: a constant image gives 0/0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / std


def _div0_cnn(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = bn_cnn(preprocess=_Standardize())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.5)

    def blank_frame(x: torch.Tensor, y: torch.Tensor):
        x = x.clone()
        x[11] = 0.0  # a blank (all-black) frame
        return x, y

    batch_at = corrupt_at(quadrant_images(labels_first=True, seed=seed), DIV0_STEP, blank_frame)
    fit(
        watch,
        model,
        optimizer,
        steps=250,
        batch_at=batch_at,
        loss_fn=F.cross_entropy,
        scheduler=scheduler,
    )


# --- fp16 overflow: activations stored in half precision --------------------------------------

FP16_STEP = 190


class _HalfActTransformer(MeanPoolTransformer):
    """Small transformer whose embedding output is stored in float16 (as a memory saving)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).to(torch.float16).to(torch.float32)  # |h| > 65504 becomes inf
        return self.head(self.encoder(h).mean(dim=1))


def _fp16_transformer(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _HalfActTransformer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = warmup_cosine_lr(optimizer, start_factor=0.1, warmup=40, cosine_steps=260)
    clean = sequence_classification(dim=8, length=10, teacher_seed_offset=0, seed=seed)
    batch_at = corrupt_at(clean, FP16_STEP, lambda x, y: (x * 1e5, y))  # a batch in raw units (e.g. Pa, not normalised)
    fit(watch, model, optimizer, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy, scheduler=scheduler)


# --- non-finite only in the gradient: sqrt(0) --------------------------------------------------

SQRT0_STEP = 207


class _GatedResidualMLP(nn.Module):
    """Pre-LayerNorm residual MLP; each block's output is scaled per unit by sqrt(gate), gate >= 0.

    sqrt(0) = 0 is harmless forward, but its derivative 1/(2 sqrt(0)) is inf: once a gate is exactly
    0, that gate's gradient is +-inf (or NaN) while the loss stays finite.
    """

    def __init__(self, dim: int = 16, width: int = 32, blocks: int = 6, out: int = 1) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.fcs = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.gates = nn.ParameterList(nn.Parameter(torch.full((width,), 0.25)) for _ in range(blocks))
        self.out = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for norm, fc, gate in zip(self.norms, self.fcs, self.gates, strict=True):
            h = h + torch.sqrt(gate.clamp(min=0)) * F.gelu(fc(norm(h)))
        return self.out(h)


def _sqrt0_residual(watch, seed: int, clip: float | None = None) -> None:
    torch.manual_seed(seed)
    model = _GatedResidualMLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def before_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == SQRT0_STEP:  # magnitude pruning zeroes the 8 smallest gates of the first block
            with torch.no_grad():
                gate = model.gates[0]
                gate[gate.abs().argsort()[:8]] = 0.0

    fit(
        watch,
        model,
        optimizer,
        steps=260,
        batch_at=teacher_regression(seed=seed),
        loss_fn=F.mse_loss,
        before_step=before_step,
        clip=clip,
    )


def _sqrt0_residual_clipped(watch, seed: int) -> None:
    _sqrt0_residual(watch, seed, clip=5.0)


SCENARIOS = [
    Scenario(
        name="nonfinite_nan_input_lstm",
        description="LSTM sequence classifier (Adam); at step 200 one reading of one sequence is NaN.",
        train=_nan_input_lstm,
        expect={"nonfinite": NAN_INPUT_STEP},
        tags=frozenset({"lstm", "adam", "quick"}),
    ),
    Scenario(
        name="nonfinite_nan_target_mlp",
        description="ReLU regression MLP (SGD); at step 150 one target is NaN.",
        train=_nan_target_mlp,
        expect={"nonfinite": NAN_TARGET_STEP},
        tags=frozenset({"mlp", "sgd"}),
    ),
    Scenario(
        name="nonfinite_log0_naive_bce_mlp",
        description="Binary classifier (20% label noise keeps |logit| < ~8) with hand-written BCE; an unnormalised batch at step 173 saturates sigmoid to 1.0: log(0).",
        train=_log0_bce_mlp,
        expect={"nonfinite": LOG0_STEP},
        tags=frozenset({"mlp", "momentum"}),
    ),
    Scenario(
        name="nonfinite_div0_standardize_cnn_bn",
        description="CNN with BatchNorm whose input standardisation has no epsilon; a blank image at step 160 gives 0/0.",
        train=_div0_cnn,
        expect={"nonfinite": DIV0_STEP},
        tags=frozenset({"cnn", "momentum", "decay"}),
    ),
    Scenario(
        name="nonfinite_fp16_overflow_transformer",
        description="Transformer storing embeddings in float16 (AdamW, warmup+cosine); a raw-unit batch at step 190 overflows to inf.",
        train=_fp16_transformer,
        expect={"nonfinite": FP16_STEP},
        tags=frozenset({"transformer", "adamw", "warmup", "decay"}),
    ),
    Scenario(
        name="nonfinite_sqrt0_grad_only_residual",
        description="Residual+LayerNorm MLP with sqrt(gate) unit scales; pruning zeroes gates at step 207: inf/NaN gradient, finite loss; NaN loss from 208.",
        train=_sqrt0_residual,
        expect={"nonfinite": SQRT0_STEP},
        tags=frozenset({"residual", "adamw", "quick"}),
    ),
    Scenario(
        name="nonfinite_sqrt0_grad_only_clipped",
        description="As nonfinite_sqrt0_grad_only_residual, in a loop that clips gradients (max norm 5) and passes clip_grad_norm_'s result to mon.step: the Inf norm shows on step 207 itself.",
        train=_sqrt0_residual_clipped,
        expect={"nonfinite": SQRT0_STEP},
        tags=frozenset({"residual", "adamw", "clipping"}),
    ),
]
