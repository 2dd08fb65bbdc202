"""Non-finite scenarios: a NaN/Inf enters the loss or the gradients at a known step.

The onset is the step whose loss or gradients first hold a non-finite value.
Each run trains healthily before it (the injection comes after the loss has
settled), so nothing else is expected. Once NaN reaches the weights, every
later loss is NaN too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit, teacher_classification, teacher_regression  # noqa: E402

from gradwatch.evaluation.scenario import Scenario  # noqa: E402

# --- NaN in the input: one sequence of one batch carries a NaN --------------------------------

NAN_INPUT_STEP = 200


class _LSTMClassifier(nn.Module):
    def __init__(self, dim: int = 8, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _sequence_classification(dim: int = 8, length: int = 12, batch: int = 32, classes: int = 4, seed: int = 0):
    """Class = argmax of a fixed linear read-out of the sequence's sum."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(dim, classes, generator=gen)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, length, dim, generator=g)
        return x, (x.sum(dim=1) @ teacher).argmax(dim=1)

    return batch_at


def _nan_input_lstm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _LSTMClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    clean = _sequence_classification(seed=seed)

    def batch_at(step: int):
        x, y = clean(step)
        if step == NAN_INPUT_STEP:
            x = x.clone()
            x[5, 3, 2] = float("nan")  # one missing sensor reading
        return x, y

    fit(watch, model, optimizer, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- NaN in the targets of a regression -----------------------------------------------------

NAN_TARGET_STEP = 150


def _nan_target_mlp(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    clean = teacher_regression(seed=seed)

    def batch_at(step: int):
        x, y = clean(step)
        if step == NAN_TARGET_STEP:
            y = y.clone()
            y[7] = float("nan")  # a missing label that slipped through
        return x, y

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
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    clean = teacher_classification(classes=2, seed=seed)

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


def _bn_cnn(channels: int = 16, classes: int = 4) -> nn.Sequential:
    return nn.Sequential(
        _Standardize(),
        nn.Conv2d(1, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * 4, classes),
    )


def _quadrant_images(batch: int = 32, classes: int = 4, seed: int = 0):
    """8x8 single-channel images labelled by which quadrant is brightest."""

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        y = torch.randint(0, classes, (batch,), generator=g)
        x = 0.5 * torch.randn(batch, 1, 8, 8, generator=g)
        for q in range(classes):
            r, c = divmod(q, 2)
            x[y == q, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
        return x, y

    return batch_at


def _div0_cnn(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _bn_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.5)
    clean = _quadrant_images(seed=seed)

    def batch_at(step: int):
        x, y = clean(step)
        if step == DIV0_STEP:
            x = x.clone()
            x[11] = 0.0  # a blank (all-black) frame
        return x, y

    fit(
        watch, model, optimizer, steps=250, batch_at=batch_at, loss_fn=F.cross_entropy, scheduler=scheduler,
    )


# --- fp16 overflow: activations stored in half precision --------------------------------------

FP16_STEP = 190


class _HalfActTransformer(nn.Module):
    """Small transformer whose embedding output is stored in float16 (as a memory saving)."""

    def __init__(self, dim: int = 8, d_model: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, d_model)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True),
            num_layers=2,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).to(torch.float16).to(torch.float32)  # |h| > 65504 becomes inf
        return self.head(self.encoder(h).mean(dim=1))


def _fp16_transformer(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _HalfActTransformer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=40)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=260)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, decay], milestones=[40])
    clean = _sequence_classification(length=10, seed=seed)

    def batch_at(step: int):
        x, y = clean(step)
        if step == FP16_STEP:
            x = x * 1e5  # a batch in raw units (e.g. Pa instead of normalised)
        return x, y

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
        for norm, fc, gate in zip(self.norms, self.fcs, self.gates):
            h = h + torch.sqrt(gate.clamp(min=0)) * F.gelu(fc(norm(h)))
        return self.out(h)


def _sqrt0_residual(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = _GatedResidualMLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def before_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == SQRT0_STEP:  # magnitude pruning zeroes the 8 smallest gates of the first block
            with torch.no_grad():
                gate = model.gates[0]
                gate[gate.abs().argsort()[:8]] = 0.0

    fit(
        watch, model, optimizer, steps=260, batch_at=teacher_regression(seed=seed), loss_fn=F.mse_loss,
        before_step=before_step,
    )


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
        description="Binary classifier with hand-written BCE; an unnormalised batch at step 173 saturates sigmoid to 1.0: log(0).",
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
]
