"""Building blocks shared by the scenario files: synthetic data and one training loop.

Everything is seeded and small enough to train on a CPU in seconds. Files
whose names start with "_" are not scenario files (the loader skips them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


def teacher_classification(
    dim: int = 16, classes: int = 4, batch: int = 32, label_noise: float = 0.0, seed: int = 0
) -> Callable[[int], Batch]:
    """Batches labelled by a fixed random linear teacher (learnable, not trivially)."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(dim, classes, generator=gen)

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=g)
        y = (x @ teacher).argmax(dim=1)
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, classes, (batch,), generator=g), y)
        return x, y

    return batch_at


def teacher_regression(dim: int = 16, batch: int = 32, scale: float = 1.0, noise: float = 0.0, seed: int = 0) -> Callable[[int], Batch]:
    """Batches with targets from a fixed random nonlinear teacher."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(dim, 32, generator=gen) / dim**0.5
    w2 = torch.randn(32, 1, generator=gen) / 32**0.5

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=g)
        y = scale * torch.tanh(x @ w1) @ w2
        if noise > 0:
            y = y + noise * torch.randn(y.shape, generator=g)
        return x, y

    return batch_at


def fixed_dataset(batch_at: Callable[[int], Batch], n_batches: int) -> Callable[[int], Batch]:
    """Cycle through the first ``n_batches`` batches (a small dataset to memorise)."""
    cache = [batch_at(i) for i in range(n_batches)]
    return lambda step: cache[step % n_batches]


def mlp(widths: list[int], activation: type[nn.Module] = nn.ReLU, init_std: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        linear = nn.Linear(widths[i], widths[i + 1])
        if init_std is not None:
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def fit(
    watch: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch_at: Callable[[int], Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    val_at: Callable[[int], Batch] | None = None,
    val_every: int = 0,
    scheduler: Any = None,
    clip: float | None = None,
    scaler: Any = None,
    autocast_dtype: torch.dtype | None = None,
    before_step: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
    corrupt_loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    **watch_options: Any,
) -> None:
    """The training loop every scenario shares: the way a user instruments one.

    ``before_step(step, model, optimizer)`` may change things mid-run (raise the
    learning rate, freeze a layer); ``corrupt_loss(step, loss)`` may poison it.
    Validation uses fixed held-out batches ``val_at(i)``, averaged over 4.
    """
    mon = watch(model, optimizer, **watch_options)
    for step in range(steps):
        if before_step is not None:
            before_step(step, model, optimizer)
        x, y = batch_at(step)
        model.train()
        if autocast_dtype is not None:
            with torch.autocast("cpu", dtype=autocast_dtype):
                out = model(x)
            loss = loss_fn(out.float(), y)
        else:
            loss = loss_fn(model(x), y)
        if corrupt_loss is not None:
            loss = corrupt_loss(step, loss)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        val_loss = None
        if val_at is not None and val_every and step % val_every == val_every - 1:
            model.eval()
            with torch.no_grad():
                val_loss = sum(float(loss_fn(model(vx), vy)) for vx, vy in (val_at(i) for i in range(4))) / 4
        mon.step(loss.detach(), val_loss=val_loss)
