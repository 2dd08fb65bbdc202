"""Small real trainings for the integration tests, instrumented as a user would."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import gradwatch


def mlp(widths: list[int], activation: type[nn.Module], init_std: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=False)):
        linear = nn.Linear(fan_in, fan_out)
        if init_std is not None:
            nn.init.normal_(linear.weight, std=init_std)
        layers.append(linear)
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def train(
    run: str,
    endpoint: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    task: str = "classify",
    loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    **options,
) -> gradwatch.Monitor:
    """Train ``steps`` steps on a synthetic task; returns the closed monitor."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(16, 1, generator=gen)
    with gradwatch.watch(model, optimizer, run=run, endpoint=endpoint, flush_interval=0.1, **options) as mon:
        for step in range(steps):
            x = torch.randn(32, 16, generator=gen)
            if task == "classify":
                loss = nn.functional.cross_entropy(model(x), (x @ teacher > 0).long().squeeze(1))
            else:
                loss = nn.functional.mse_loss(model(x), 5.0 * (x @ teacher))
            if loss_hook is not None:
                loss = loss_hook(step, loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mon.step(loss)
        mon.flush(10)
    return mon
