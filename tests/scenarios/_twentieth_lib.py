"""Set 20 helpers: synthetic data and small models for the set-20 faults and controls.

Every data generator draws from private ``torch.Generator`` objects seeded by (seed, step, salt); every model is
built right after ``torch.manual_seed(seed)``, so a run depends on its seed alone. The loop (run_loop / simple_step /
mean_val) is set 18's, shared. ``DIAG`` collects a few numbers a train function computes for the offline
measurement script (representation spread of the BYOL control, say); training never reads it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from _eighteenth_lib import mean_val, run_loop, simple_step  # noqa: F401  (re-exported for the scenario files)
from torch import nn
from torch.nn import functional as F

torch.set_num_threads(1)

Batch = tuple[Any, Any]
VAL = 10**6  # held-out batches come from steps >= VAL of the same generator (never trained on)
DIAG: dict[str, Any] = {}


def fit20(watch, model, opt, steps, data, loss_fn, val_data=None, **step_kw):
    """run_loop over simple_step(model, opt, data, loss_fn, **step_kw); val: mean loss on (val_data or data)(VAL+i)."""
    val_at = val_data or data
    train_step = simple_step(model, opt, data, loss_fn, **step_kw)
    run_loop(
        watch,
        model,
        opt,
        steps=steps,
        train_step=train_step,
        val_loss=mean_val(model, lambda i: val_at(VAL + i), loss_fn),
    )


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_037 + step * 29 + salt * 7_919_123 + 20)


# ----------------------------------------------------------------------------------------------------------------
# 1. Tone clips: 96 samples, class = frequency band (4 bands of 0.08 cycles/sample from 0.05), random phase and
#    amplitude, white noise. `factor_at(step)` multiplies every frequency (in cycles/sample): 0.5 = clips recorded at
#    twice the sample rate and fed without resampling.
# ----------------------------------------------------------------------------------------------------------------


def tone_clips(seed, batch=32, length=96, classes=4, noise=0.6, factor_at=None):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 1)
        y = torch.randint(0, classes, (batch,), generator=g)
        f = 0.05 + 0.08 * (y.float() + 0.8 * torch.rand(batch, generator=g))
        if factor_at is not None:
            f = f * factor_at(step)
        t = torch.arange(length).float().view(1, -1)
        p = 2 * math.pi * torch.rand(batch, 1, generator=g)
        a = 0.6 + 0.8 * torch.rand(batch, 1, generator=g)
        x = a * torch.sin(2 * math.pi * f.view(-1, 1) * t + p) + noise * torch.randn(batch, length, generator=g)
        return x.unsqueeze(1), y

    return batch_at


class ToneNet(nn.Module):
    """Conv1d(7)-BN-ReLU-maxpool, Conv1d(5)-BN-ReLU, global average pool, linear head."""

    def __init__(self, width=24, classes=4) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(1, width, 7, padding=3), nn.BatchNorm1d(width)
        self.c2, self.b2 = nn.Conv1d(width, width, 5, padding=2), nn.BatchNorm1d(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = F.max_pool1d(F.relu(self.b1(self.c1(x))), 2)
        return self.head(F.relu(self.b2(self.c2(h))).mean(-1))


class ResConv1d(nn.Module):
    """Stem conv, `blocks` residual blocks (conv-GN-ReLU-conv-GN + skip), global average pool, linear head."""

    def __init__(self, width=32, blocks=3, classes=4) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, width, 7, padding=3)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(width, width, 5, padding=2),
                nn.GroupNorm(4, width),
                nn.ReLU(),
                nn.Conv1d(width, width, 5, padding=2),
                nn.GroupNorm(4, width),
            )
            for _ in range(blocks)
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = F.relu(self.stem(x))
        for b in self.blocks:
            h = F.relu(h + b(h))
        return self.head(h.mean(-1))


# ----------------------------------------------------------------------------------------------------------------
# 2. Forecasting windows: each window is a fresh series (two sinusoids of random period 8-20 and phase + AR(1)
#    noise, std ~`noise`); input 24 values, target the next 4. `bank`: only that many windows are ever used for
#    training (cycled in full batches); held-out windows are always fresh.
# ----------------------------------------------------------------------------------------------------------------


def ar_windows(seed, batch=32, hist=24, horizon=4, noise=0.5, bank=None):
    def draw(g, n):
        length = hist + horizon
        t = torch.arange(length).float().view(1, -1)
        per = 8 + 12 * torch.rand(n, 2, generator=g)
        ph = 2 * math.pi * torch.rand(n, 2, generator=g)
        s = torch.sin(2 * math.pi * t / per[:, :1] + ph[:, :1]) + 0.5 * torch.sin(
            2 * math.pi * t / per[:, 1:] + ph[:, 1:]
        )
        e = noise * torch.randn(n, length, generator=g)
        ar = torch.zeros(n, length)
        ar[:, 0] = e[:, 0]
        for i in range(1, length):
            ar[:, i] = 0.5 * ar[:, i - 1] + 0.87 * e[:, i]
        s = s + ar
        return s[:, :hist].unsqueeze(-1), s[:, hist:]

    cached = draw(gen(seed, 0, 2), bank) if bank else None

    def batch_at(step: int) -> Batch:
        if cached is not None and step < VAL:
            return cached
        return draw(gen(seed, step, 3), batch)

    return batch_at


class GRUForecast(nn.Module):
    def __init__(self, hidden=96, horizon=4, layers=1) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


# ----------------------------------------------------------------------------------------------------------------
# 3. Diagonal linear recurrence (LRU-style, real-valued): h_t = lam * h_{t-1} + B x_t, y = head(C h_T). `radius`:
#    the initial lam are drawn uniformly from that range and used raw (no exp(-exp(nu)) reparametrisation).
# ----------------------------------------------------------------------------------------------------------------


class DiagLinearRNN(nn.Module):
    def __init__(self, dim=4, state=64, classes=4, radius=(0.5, 0.95)) -> None:
        super().__init__()
        self.B = nn.Linear(dim, state, bias=False)
        lo, hi = radius
        self.lam = nn.Parameter(lo + (hi - lo) * torch.rand(state))
        self.C = nn.Linear(state, 64)
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        u = self.B(x)
        h = torch.zeros(x.shape[0], u.shape[-1])
        for t in range(x.shape[1]):
            h = self.lam * h + u[:, t]
        return self.head(F.gelu(self.C(h)))


# ----------------------------------------------------------------------------------------------------------------
# 4. Plain CNNs on _common.quadrant_images: `PlainCNN` (no normalisation), `act_cnn` (depth x conv3x3 + act, He init).
# ----------------------------------------------------------------------------------------------------------------


class PlainCNN(nn.Module):
    def __init__(self, width=16, classes=4, act=F.relu) -> None:
        super().__init__()
        self.act = act
        self.c1 = nn.Conv2d(1, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.c3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width * 4, classes)

    def forward(self, x):
        h = self.act(self.c1(x))
        h = F.avg_pool2d(self.act(self.c2(h)), 2)
        h = F.adaptive_avg_pool2d(self.act(self.c3(h)), 2)
        return self.head(h.flatten(1))


def act_cnn(depth=8, width=16, classes=4, act=nn.ReLU) -> nn.Sequential:
    """`depth` conv3x3 + `act` layers (He-normal init, fan_in, zero bias), 2x2 average pool, linear head."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), act()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), act()]
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, classes)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------------
# 5. Lipschitz-constrained MLP: every hidden Linear's weight is divided by max(1, norm(W)) in the forward pass once
#    `constrain` is on. `ord_bug`: norm = torch.linalg.norm(W) (Frobenius for a matrix) instead of the spectral norm.
# ----------------------------------------------------------------------------------------------------------------


class LipLinear(nn.Linear):
    constrain = False
    ord_bug = True

    def forward(self, x):
        w = self.weight
        if self.constrain:
            n = torch.linalg.norm(w) if self.ord_bug else torch.linalg.matrix_norm(w, ord=2)
            w = w / torch.clamp(n, min=1.0)
        return F.linear(x, w, self.bias)


def lip_mlp(widths, act=nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        last = i == len(widths) - 2
        layers.append(nn.Linear(widths[i], widths[i + 1]) if last else LipLinear(widths[i], widths[i + 1]))
        if not last:
            layers.append(act())
    return nn.Sequential(*layers)


def set_constraint(model: nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, LipLinear):
            m.constrain = on


# ----------------------------------------------------------------------------------------------------------------
# 6. Focal loss from probabilities, gamma a float (as in many hand-written versions): (1 - p_t)^gamma * -log(p_t).
# ----------------------------------------------------------------------------------------------------------------


def focal_from_probs(logits, y, gamma):
    p = torch.softmax(logits, -1).gather(1, y.view(-1, 1)).squeeze(1)
    return ((1 - p).pow(gamma) * -torch.log(p)).mean()


def blob_classes(seed, batch=64, dim=8, classes=4, spread=0.6):
    """Well-separated Gaussian blobs (centres N(0, 4 I)): an easy task on which a classifier becomes very confident."""
    centres = 2 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed + 2006))

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 6)
        y = torch.randint(0, classes, (batch,), generator=g)
        return centres[y] + spread * torch.randn(batch, dim, generator=g), y

    return batch_at
