"""Models, data and loops for set 15 (held-out). Data draws from private generators only; models are built after
torch.manual_seed(seed), and training-time randomness (cutmix boxes, drop-path) uses private generators too."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
F = nn.functional


# ----------------------------------------------------------------------------------------------- loop
def loop(
    watch: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    train_step: Callable[[int], torch.Tensor],
    val: Callable[[], float] | None = None,
    val_every: int = 10,
    after_step: Callable[[int], None] | None = None,
    **watch_options: Any,
) -> None:
    """``train_step(step)`` does zero_grad/forward/backward/optimizer.step and returns the loss; then the
    monitor gets the loss (and the held-out loss every ``val_every`` steps)."""
    mon = watch(model, optimizer, **watch_options)
    for step in range(steps):
        model.train()
        loss = train_step(step)
        if after_step is not None:
            after_step(step)
        val_loss = None
        if val is not None and step % val_every == val_every - 1:
            model.eval()
            with torch.no_grad():
                val_loss = float(val())
        mon.step(loss.detach(), val_loss=val_loss)


def mean_val(model: nn.Module, val_at: Callable[[int], Batch], loss_fn, n: int = 4) -> float:
    return sum(float(loss_fn(model(x), y)) for x, y in (val_at(i) for i in range(n))) / n


# ----------------------------------------------------------------------------------------------- models
class PreLNBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class ResMLP(nn.Module):
    """Input projection, pre-LN residual GELU blocks, final LayerNorm, linear head.

    ``drop_max`` > 0 turns on stochastic depth (Huang et al. 2016): during training block i is skipped for the
    whole batch with probability drop_max * (i+1)/depth, drawn from a private generator; kept branches are scaled
    by 1/(1-p) so that eval needs no rescaling. A skipped block's parameters get no gradient on that step.
    """

    def __init__(self, dim: int, width: int, hidden: int, depth: int, out: int, drop_max: float = 0.0, seed: int = 0):
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList([PreLNBlock(width, hidden) for _ in range(depth)])
        self.final = nn.LayerNorm(width)
        self.head = nn.Linear(width, out)
        self.probs = [drop_max * (i + 1) / depth for i in range(depth)]
        self.gen = torch.Generator().manual_seed(10_007 + seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for p, block in zip(self.probs, self.blocks, strict=False):
            if self.training and p > 0:
                if float(torch.rand((), generator=self.gen)) < p:
                    continue
                h = h + block.branch(h) / (1 - p)
            else:
                h = h + block.branch(h)
        return self.head(self.final(h))


class GRUClassifier(nn.Module):
    def __init__(self, dim: int = 4, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1])


class SmallCNN(nn.Module):
    """Two 3x3 convs + ReLU (no normalisation), 2x2 average pool, linear head."""

    def __init__(self, ch: int = 16, classes: int = 4, in_ch: int = 1) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.head = nn.Linear(ch * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.head(F.adaptive_avg_pool2d(h, 2).flatten(1))


class TwoHeadWithUnusedBranch(nn.Module):
    """A multi-purpose model of which this training run uses one path only.

    ``trunk`` + ``cls_head`` are used. ``aux_head`` (a regression head for another task) and ``image_stem``
    (an encoder for a second modality, not fed in this run) are registered, require grad and are in the
    optimizer, but never take part in the forward pass: their .grad stays None throughout.
    """

    def __init__(self, dim: int = 16, width: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.cls_head = nn.Linear(width, classes)
        self.aux_head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))
        self.image_stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.trunk(x))


class OutputScale(nn.Module):
    """Multiplies its input by a fixed factor (target units folded into the model)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class TiedAutoencoder(nn.Module):
    """x -> tanh(x W^T + b) -> h W + c: the decoder is the encoder's transpose (one shared weight)."""

    def __init__(self, dim: int = 32, code: int = 8) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(code, dim) / dim**0.5)
        self.enc_bias = nn.Parameter(torch.zeros(code))
        self.dec_bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ self.weight.t() + self.enc_bias)
        return h @ self.weight + self.dec_bias


class CopySeq2Seq(nn.Module):
    """GRU encoder over the input, GRU decoder with teacher forcing (previous target token fed in)."""

    def __init__(self, vocab: int, hidden: int = 64, emb: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab + 3, emb)  # 0 blank, 1..vocab symbols, vocab+1 go, vocab+2 start
        self.enc = nn.GRU(emb, hidden, batch_first=True)
        self.dec = nn.GRU(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, src: torch.Tensor, dec_in: torch.Tensor) -> torch.Tensor:
        _, h = self.enc(self.embed(src))
        out, _ = self.dec(self.embed(dec_in), h)
        return self.out(out)


class DeepConv1d(nn.Module):
    """``depth`` same-length Conv1d layers with GELU, mean over time, linear head (input [B, T, C])."""

    def __init__(self, in_ch: int = 4, ch: int = 32, depth: int = 12, classes: int = 4) -> None:
        super().__init__()
        convs = [nn.Conv1d(in_ch, ch, 3, padding=1)] + [nn.Conv1d(ch, ch, 3, padding=1) for _ in range(depth - 1)]
        self.convs = nn.ModuleList(convs)
        self.head = nn.Linear(ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        for conv in self.convs:
            h = F.gelu(conv(h))
        return self.head(h.mean(dim=2))


# ----------------------------------------------------------------------------------------------- optimizers
class LAMB(torch.optim.Optimizer):
    """LAMB (You et al. 2019), hand-written: Adam direction + decoupled weight decay, rescaled per tensor by the
    trust ratio ||w|| / ||update|| (1 where either norm is 0); biases/norm params excluded via weight_decay=0."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["t"] += 1
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                mhat = st["m"] / (1 - b1 ** st["t"])
                vhat = st["v"] / (1 - b2 ** st["t"])
                upd = mhat / (vhat.sqrt() + group["eps"]) + group["weight_decay"] * p
                wn, un = float(p.norm()), float(upd.norm())
                trust = wn / un if wn > 0 and un > 0 else 1.0
                p.add_(upd, alpha=-group["lr"] * trust)


# ----------------------------------------------------------------------------------------------- data
def binary_logistic(dim: int = 20, batch: int = 64, seed: int = 0) -> Callable[[int], Batch]:
    """Bernoulli labels from a logistic teacher sigmoid(x.w), |w| = 4 (Bayes loss ~0.29)."""
    gen = torch.Generator().manual_seed(seed + 11)
    w = torch.randn(dim, generator=gen)
    w = 4.0 * w / w.norm()

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=g)
        y = (torch.rand(batch, generator=g) < torch.sigmoid(x @ w)).float()
        return x, y[:, None]

    return batch_at


def low_rank_vectors(dim: int = 32, rank: int = 6, batch: int = 64, noise: float = 0.05, seed: int = 0):
    """Vectors on a random rank-``rank`` subspace plus isotropic noise (target = input)."""
    gen = torch.Generator().manual_seed(seed + 13)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=gen))[0] * 2.0

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        z = torch.randn(batch, rank, generator=g)
        x = z @ basis.t() + noise * torch.randn(batch, dim, generator=g)
        return x, x

    return batch_at


def delayed_copy(length: int = 5, vocab: int = 6, gap: int = 10, batch: int = 32, seed: int = 0):
    """src = length symbols (1..vocab), gap blanks, a go marker; decoder input = start + targets[:-1];
    targets = the symbols (0-based classes)."""
    go, start = vocab + 1, vocab + 2

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        sym = torch.randint(1, vocab + 1, (batch, length), generator=g)
        src = torch.cat([sym, torch.zeros(batch, gap, dtype=torch.long), torch.full((batch, 1), go)], dim=1)
        dec_in = torch.cat([torch.full((batch, 1), start), sym[:, :-1]], dim=1)
        return (src, dec_in), sym - 1

    return batch_at


def heavy_tailed_regression(dim: int = 16, batch: int = 64, scale: float = 0.1, seed: int = 0):
    """Targets of a fixed tanh teacher plus Cauchy(0, scale) noise (infinite variance, median 0)."""
    gen = torch.Generator().manual_seed(seed + 17)
    w1 = torch.randn(dim, 32, generator=gen) / dim**0.5
    w2 = torch.randn(32, 1, generator=gen) / 32**0.5

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=g)
        u = torch.rand(batch, 1, generator=g)
        noise = scale * torch.tan(math.pi * (u - 0.5))
        return x, torch.tanh(x @ w1) @ w2 + noise

    return batch_at


def tabular(dim: int = 12, batch: int = 64, seed: int = 0):
    """Standardised tabular features (columns with different roles); 3-class label from a fixed nonlinear rule."""
    gen = torch.Generator().manual_seed(seed + 19)
    w1 = torch.randn(dim, 24, generator=gen) / dim**0.5
    w2 = torch.randn(24, 3, generator=gen)
    shift = torch.linspace(-1.5, 1.5, dim)

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=g) + shift
        y = (torch.tanh((x - shift) @ w1) @ w2).argmax(dim=1)
        return x, y

    return batch_at


def polynomial_points(n: int, degree: int = 15, noise: float = 0.3, seed: int = 0, offset: int = 0):
    """n points x ~ U(-1, 1), y = sin(3x) + noise; features = Legendre polynomials P1..P_degree of x."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 555 + offset)
    x = torch.rand(n, generator=g) * 2 - 1
    y = torch.sin(3 * x) + noise * torch.randn(n, generator=g)
    feats = [torch.ones_like(x), x]
    for k in range(1, degree):
        feats.append(((2 * k + 1) * x * feats[k] - k * feats[k - 1]) / (k + 1))
    phi = torch.stack(feats[1:], dim=1) * math.sqrt(3)  # P_k has RMS ~1/sqrt(2k+1) on U(-1,1); keep O(1)
    return phi, y[:, None]


def pair_embeddings(dim: int = 16, classes: int = 8, batch: int = 32, seed: int = 0):
    """Anchor/positive pairs from the same class (class means + noise), negatives from another class."""
    gen = torch.Generator().manual_seed(seed + 23)
    means = torch.randn(classes, dim, generator=gen) * 1.5

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        c = torch.randint(0, classes, (batch,), generator=g)
        cn = (c + torch.randint(1, classes, (batch,), generator=g)) % classes
        a = means[c] + torch.randn(batch, dim, generator=g)
        p = means[c] + torch.randn(batch, dim, generator=g)
        n = means[cn] + torch.randn(batch, dim, generator=g)
        return a, p, n

    return batch_at


class UncertaintyMultiTask(nn.Module):
    """Shared trunk, a regression head and a classification head, plus one learned log-variance per task
    (Kendall, Gal & Cipolla 2018): loss = sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i, which goes negative once
    the task losses are small (s_i -> log L_i < 0)."""

    def __init__(self, dim: int = 16, width: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.reg_head = nn.Linear(width, 1)
        self.cls_head = nn.Linear(width, classes)
        self.log_vars = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor):
        h = self.trunk(x)
        return self.reg_head(h), self.cls_head(h)

    def loss(self, out, y_reg: torch.Tensor, y_cls: torch.Tensor) -> torch.Tensor:
        reg, logits = out
        losses = torch.stack([F.mse_loss(reg, y_reg), F.cross_entropy(logits, y_cls)])
        return (0.5 * torch.exp(-self.log_vars) * losses + 0.5 * self.log_vars).sum()


def two_task(dim: int = 16, classes: int = 4, batch: int = 64, noise: float = 0.05, seed: int = 0):
    """x -> (regression target from a tanh teacher + noise, class from a linear teacher)."""
    gen = torch.Generator().manual_seed(seed + 29)
    w1 = torch.randn(dim, 32, generator=gen) / dim**0.5
    w2 = torch.randn(32, 1, generator=gen) / 32**0.5
    wc = torch.randn(dim, classes, generator=gen)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=g)
        y_reg = torch.tanh(x @ w1) @ w2 + noise * torch.randn(batch, 1, generator=g)
        return x, (y_reg, (x @ wc).argmax(dim=1))

    return batch_at
