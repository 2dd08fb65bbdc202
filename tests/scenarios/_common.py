"""Building blocks shared by the scenario files: synthetic data, models and one training loop.

Everything is seeded and small enough to train on a CPU in seconds. Files
whose names start with "_" are not scenario files (the loader skips them).
``load_suite`` puts this folder on ``sys.path``, so scenario files simply
``from _common import ...``.

The data generators draw from private ``torch.Generator`` objects only (never
the global RNG), and the models create their parameters in a fixed order, so a
scenario's data, initial weights and training depend on its seed alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


def flip_labels(y: torch.Tensor, fraction: float, classes: int, g: torch.Generator) -> torch.Tensor:
    """Replace each label with a uniformly random class with probability ``fraction`` (draws from ``g``).

    Draws nothing when ``fraction`` is 0, so noiseless data does not depend on it.
    """
    if fraction <= 0:
        return y
    flip = torch.rand(len(y), generator=g) < fraction
    return torch.where(flip, torch.randint(0, classes, (len(y),), generator=g), y)


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
        return x, flip_labels(y, label_noise, classes, g)

    return batch_at


def teacher_regression(
    dim: int = 16, batch: int = 32, scale: float = 1.0, noise: float = 0.0, seed: int = 0
) -> Callable[[int], Batch]:
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


def held_out(batch_at: Callable[[int], Batch], offset: int = 10**6) -> Callable[[int], Batch]:
    """Validation batches from the same generator, far beyond any training step (``offset`` on)."""
    return lambda i: batch_at(offset + i)


def fixed_dataset(batch_at: Callable[[int], Batch], n_batches: int) -> Callable[[int], Batch]:
    """Cycle through the first ``n_batches`` batches (a small dataset to memorise)."""
    cache = [batch_at(i) for i in range(n_batches)]
    return lambda step: cache[step % n_batches]


def quadrant_images(
    batch: int = 32,
    size: int = 8,
    channels: int = 1,
    noise: float = 0.5,
    label_noise: float = 0.0,
    labels_first: bool = False,
    seed: int = 0,
) -> Callable[[int], Batch]:
    """Noisy ``size``x``size`` images; class = which quadrant (0-3) is bright.

    ``label_noise`` replaces that fraction of labels with random classes.
    ``labels_first`` draws the labels before the pixels (the other order gives
    different images for the same seed; each scenario keeps the order it was
    measured with).
    """
    half = size // 2

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if labels_first:
            y = torch.randint(0, 4, (batch,), generator=g)
            x = noise * torch.randn(batch, channels, size, size, generator=g)
        else:
            x = noise * torch.randn(batch, channels, size, size, generator=g)
            y = torch.randint(0, 4, (batch,), generator=g)
        for q in range(4):
            r, c = divmod(q, 2)
            x[y == q, :, r * half : (r + 1) * half, c * half : (c + 1) * half] += 1.0
        return x, flip_labels(y, label_noise, 4, g)

    return batch_at


def sequence_classification(
    batch: int = 32,
    length: int = 12,
    dim: int = 4,
    classes: int = 4,
    label_noise: float = 0.0,
    teacher_seed_offset: int = 7,
    shift_at: int | None = None,
    seed: int = 0,
) -> Callable[[int], Batch]:
    """Sequences of random vectors; class = argmax of a fixed linear map of their time-sum.

    The teacher is drawn from seed ``seed + teacher_seed_offset``. From step
    ``shift_at`` on (if given) a second teacher labels the data (a label
    shift). ``label_noise`` replaces that fraction of labels with random classes.
    """
    gen = torch.Generator().manual_seed(seed + teacher_seed_offset)
    teacher = torch.randn(dim, classes, generator=gen)
    other = torch.randn(dim, classes, generator=gen) if shift_at is not None else teacher

    def batch_at(step: int) -> Batch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, length, dim, generator=g)
        y = (x.sum(dim=1) @ (other if shift_at is not None and step >= shift_at else teacher)).argmax(dim=1)
        return x, flip_labels(y, label_noise, classes, g)

    return batch_at


def corrupt_at(
    batch_at: Callable[[int], Batch], step: int, corrupt: Callable[[torch.Tensor, torch.Tensor], Batch]
) -> Callable[[int], Batch]:
    """``batch_at``, except that the batch at ``step`` is replaced by ``corrupt(x, y)``."""
    return lambda s: corrupt(*batch_at(s)) if s == step else batch_at(s)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def warmup_cosine_lr(
    optimizer: torch.optim.Optimizer, *, start_factor: float, warmup: int, cosine_steps: int
) -> torch.optim.lr_scheduler.SequentialLR:
    """Linear warmup from ``start_factor`` x lr over ``warmup`` steps, then cosine decay over ``cosine_steps``."""
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cosine_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])


def mlp(
    widths: list[int], activation: type[nn.Module] = nn.ReLU, init_std: float | None = None, norm: bool = False
) -> nn.Sequential:
    """Linear layers of the given widths with ``activation`` between them (none after the last).

    ``init_std`` (if given) draws every weight from N(0, init_std^2) and zeroes the biases;
    ``norm`` puts a LayerNorm before each activation.
    """
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        linear = nn.Linear(widths[i], widths[i + 1])
        if init_std is not None:
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(widths) - 2:
            if norm:
                layers.append(nn.LayerNorm(widths[i + 1]))
            layers.append(activation())
    return nn.Sequential(*layers)


def bn_cnn(channels: int = 16, classes: int = 4, preprocess: nn.Module | None = None) -> nn.Sequential:
    """Two 3x3 conv + BatchNorm + ReLU layers on 1-channel images, 2x2 average pool, linear head.

    ``preprocess`` (if given) is the first module of the ``nn.Sequential``
    (and shifts the other layers' indices by one).
    """
    first = [] if preprocess is None else [preprocess]
    return nn.Sequential(
        *first,
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


class LSTMClassifier(nn.Module):
    """One-layer LSTM over the sequence; a linear head reads the last time step."""

    def __init__(self, dim: int = 4, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class MeanPoolTransformer(nn.Module):
    """Linear embedding, a post-LN transformer encoder (4 heads, no dropout), mean over time, linear head."""

    def __init__(self, dim: int = 8, d_model: int = 32, layers: int = 2, out: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, d_model)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(d_model, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


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
    accumulate: int = 1,
    plateau_scheduler: Any = None,
    **watch_options: Any,
) -> None:
    """The training loop every scenario shares: the way a user instruments one.

    ``before_step(step, model, optimizer)`` may change things mid-run (raise the
    learning rate, freeze a layer); ``corrupt_loss(step, loss)`` may poison it.
    Validation uses fixed held-out batches ``val_at(i)``, averaged over 4. With
    ``accumulate`` > 1 the gradients of that many micro-batches
    (``batch_at(step * accumulate + k)``) are summed before each optimizer step,
    and mon.step() still runs once per optimizer step. ``plateau_scheduler``
    (ReduceLROnPlateau) steps once per 20-step "epoch" on its mean train loss.
    """
    mon = watch(model, optimizer, **watch_options)
    epoch_losses: list[float] = []
    for step in range(steps):
        grad_norm = None
        if before_step is not None:
            before_step(step, model, optimizer)
        model.train()
        if accumulate > 1:
            if scaler is not None or clip is not None or corrupt_loss is not None:
                raise ValueError("fit(): accumulate > 1 takes no scaler, clip or corrupt_loss")
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for k in range(accumulate):
                x, y = batch_at(step * accumulate + k)
                micro = loss_fn(model(x), y) / accumulate
                micro.backward()
                loss = loss + micro.detach()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            mon.step(loss)
            continue
        x, y = batch_at(step)
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
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip is not None:
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if plateau_scheduler is not None:
            epoch_losses.append(float(loss.detach()))
            if len(epoch_losses) == 20:
                plateau_scheduler.step(sum(epoch_losses) / 20)
                epoch_losses.clear()
        val_loss = None
        if val_at is not None and val_every and step % val_every == val_every - 1:
            model.eval()
            with torch.no_grad():
                val_loss = sum(float(loss_fn(model(vx), vy)) for vx, vy in (val_at(i) for i in range(4))) / 4
        # A loop that clips passes the norm it already has (free for the agent).
        mon.step(loss.detach(), val_loss=val_loss, grad_norm=grad_norm)
