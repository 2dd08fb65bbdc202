"""Models and data for set 14 (held-out). Private generators only; models built after torch.manual_seed(seed)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


class PreLNBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class ReZeroBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * self.fc2(torch.relu(self.fc1(x)))


class ResMLP(nn.Module):
    """Input projection, ``depth`` residual blocks, (optional final LayerNorm), linear head."""

    def __init__(self, block: str, depth: int, dim: int, width: int, hidden: int, out: int) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        cls = PreLNBlock if block == "preln" else ReZeroBlock
        self.blocks = nn.Sequential(*[cls(width, hidden) for _ in range(depth)])
        self.final = nn.LayerNorm(width) if block == "preln" else nn.Identity()
        self.head = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final(self.blocks(self.inp(x))))


class FixupBlock(nn.Module):
    def __init__(self, ch: int, depth: int) -> None:
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias2b = nn.Parameter(torch.zeros(1))
        nn.init.kaiming_normal_(self.conv1.weight, nonlinearity="relu")
        self.conv1.weight.data.mul_(depth**-0.5)
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        return torch.relu(x + out)


class FixupCNN(nn.Module):
    def __init__(self, depth: int = 24, ch: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, ch, 3, padding=1)
        self.blocks = nn.Sequential(*[FixupBlock(ch, depth) for _ in range(depth)])
        self.head = nn.Linear(ch * 4, classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(torch.relu(self.stem(x)))
        return self.head(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))


class MatrixFactorization(nn.Module):
    """Sparse user/item embeddings and biases; prediction = <u, v> + b_u + b_i."""

    def __init__(self, users: int, items: int, rank: int) -> None:
        super().__init__()
        self.user = nn.Embedding(users, rank, sparse=True)
        self.item = nn.Embedding(items, rank, sparse=True)
        self.user_bias = nn.Embedding(users, 1, sparse=True)
        self.item_bias = nn.Embedding(items, 1, sparse=True)
        for e in (self.user, self.item):
            nn.init.normal_(e.weight, std=0.3)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, ui: torch.Tensor) -> torch.Tensor:
        u, i = ui[:, 0], ui[:, 1]
        dot = (self.user(u) * self.item(i)).sum(1, keepdim=True)
        return dot + self.user_bias(u) + self.item_bias(i)


def ratings(users: int, items: int, rank: int, batch: int, noise: float, seed: int) -> Callable[[int], Batch]:
    gen = torch.Generator().manual_seed(seed + 404)
    pu = torch.randn(users, rank, generator=gen) / rank**0.25
    qi = torch.randn(items, rank, generator=gen) / rank**0.25
    bu = 0.5 * torch.randn(users, generator=gen)
    bi = 0.5 * torch.randn(items, generator=gen)

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        u = torch.randint(0, users, (batch,), generator=g)
        i = torch.randint(0, items, (batch,), generator=g)
        y = (pu[u] * qi[i]).sum(1) + bu[u] + bi[i] + noise * torch.randn(batch, generator=g)
        return torch.stack([u, i], 1), y.unsqueeze(1)

    return batch_at


class FrozenFeatures(nn.Module):
    """A random conv feature extractor (frozen) and a trainable linear head."""

    def __init__(self, ch: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(ch * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EarlyExitMLP(nn.Module):
    def __init__(self, dim: int = 16, width: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.aux = nn.Linear(width, classes)
        self.block2 = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.block1(x)
        return self.head(self.block2(h)), self.aux(h)


def sparse_parity(n: int, k: int, batch: int, seed: int) -> Callable[[int], Batch]:
    gen = torch.Generator().manual_seed(seed + 77)
    idx = torch.randperm(n, generator=gen)[:k]

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randint(0, 2, (batch, n), generator=g).float() * 2 - 1
        y = (x[:, idx].prod(1) > 0).long()
        return x, y

    return batch_at


class MultiTask(nn.Module):
    def __init__(self, dim: int = 16, width: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.reg = nn.Linear(width, 1)
        self.cls = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.reg(h), self.cls(h)


def first_token_sequences(
    dim: int, classes: int, batch: int, length_at: Callable[[int], int], seed: int
) -> Callable[[int], Batch]:
    """Class = argmax of a fixed linear map of the FIRST vector; the rest is distractor noise."""
    gen = torch.Generator().manual_seed(seed + 11)
    teacher = torch.randn(dim, classes, generator=gen)

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, length_at(step), dim, generator=g)
        y = (x[:, 0] @ teacher).argmax(1)
        return x, y

    return batch_at


class LSTMForget1(nn.Module):
    """One-layer LSTM with forget-gate bias 1 (both bias vectors' forget slice sum to 1); head on last step."""

    def __init__(self, dim: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        with torch.no_grad():
            self.lstm.bias_ih_l0[hidden : 2 * hidden].fill_(1.0)
            self.lstm.bias_hh_l0[hidden : 2 * hidden].fill_(0.0)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def inverse_sqrt_lr(optimizer: torch.optim.Optimizer, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to 1 over ``warmup`` steps, then 1/sqrt(step/warmup) (the "Noam" schedule, normalised)."""

    def factor(s: int) -> float:
        s = s + 1
        return s / warmup if s < warmup else math.sqrt(warmup / s)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def bn_cnn3(ch: int = 16, classes: int = 4) -> nn.Sequential:
    """Three conv+BN+ReLU (no conv bias), pool, BatchNorm1d, linear head."""
    return nn.Sequential(
        nn.Conv2d(1, ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(ch),
        nn.ReLU(),
        nn.Conv2d(ch, ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(ch),
        nn.ReLU(),
        nn.Conv2d(ch, ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(ch),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(ch * 4, classes),
    )
