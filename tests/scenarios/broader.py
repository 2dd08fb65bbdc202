"""Scenarios written apart from the rest of the suite, first run as a held-out set (2026-11-27):
architectures, data, optimizers and schedules the other files do not use.

As a held-out set they found two false alarms the rules then fixed (a regression
converging to float precision read as stagnation and vanishing gradients; a
one-step bias shift read as exploding weights and a diverging loss). They stay
here as regression cases.

Its own data generators (stripe-orientation images, temporal-pattern sequences,
Gaussian-mixture classes, low-rank vectors) and models (a small BN ResNet, a
1D-conv net, a GRU, an autoencoder); the loop and the MLP builder are _common's
(written apart, the set had its own; merged when it joined the suite). Every
generator draws from private torch.Generator objects, so a run depends on its
seed alone.

Onsets are known from construction (the step at which the fault is injected);
overfitting uses each run's own held-out minimum.
"""

from __future__ import annotations

import math

import torch
from _common import fit, mlp
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

Batch = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------- data


def _gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7_919_993 + step + 17)


def stripe_images(batch: int = 32, size: int = 12, channels: int = 3, noise: float = 0.8, seed: int = 0):
    """Class = orientation of a sinusoidal stripe pattern (0: rows, 1: columns, 2: diagonal, 3: anti-diagonal)."""
    r = torch.arange(size, dtype=torch.float32)
    ii, jj = torch.meshgrid(r, r, indexing="ij")
    freq = 2 * math.pi / 4.0
    patterns = torch.stack(
        [
            torch.sin(freq * ii),
            torch.sin(freq * jj),
            torch.sin(freq * (ii + jj) / 1.4),
            torch.sin(freq * (ii - jj) / 1.4),
        ]
    )

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        y = torch.randint(0, 4, (batch,), generator=g)
        phase = torch.randint(0, 4, (batch,), generator=g)
        base = patterns[y]
        base = torch.stack([torch.roll(b, int(p), dims=0) for b, p in zip(base, phase, strict=True)])
        x = base[:, None].expand(batch, channels, size, size) + noise * torch.randn(
            batch, channels, size, size, generator=g
        )
        return x.contiguous(), y

    return batch_at


def pattern_sequences(batch: int = 32, length: int = 16, dim: int = 6, classes: int = 3, seed: int = 0):
    """Sequences (B, T, D); class = argmax of a fixed map of (mean of first half - mean of second half)."""
    teacher = torch.randn(dim, classes, generator=torch.Generator().manual_seed(seed + 101))

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, length, dim, generator=g)
        h = length // 2
        y = ((x[:, :h].mean(1) - x[:, h:].mean(1)) @ teacher).argmax(1)
        return x, y

    return batch_at


def motif_sequences(batch: int = 32, length: int = 16, dim: int = 6, classes: int = 3, seed: int = 0):
    """Sequences (B, T, D); class = argmax of a fixed map of the time-mean of |x_t + x_{t+1}| (a local motif)."""
    teacher = torch.randn(dim, classes, generator=torch.Generator().manual_seed(seed + 111))
    centre = 2.0 / math.sqrt(math.pi)  # E|N(0, 2)|

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, length, dim, generator=g)
        feat = (x[:, 1:] + x[:, :-1]).abs().mean(1) - centre
        return x, (feat @ teacher).argmax(1)

    return batch_at


def gaussian_mixture(batch: int = 64, dim: int = 20, classes: int = 5, spread: float = 1.0, seed: int = 0):
    """Classes are Gaussian clusters around fixed random means (overlapping: the Bayes loss is > 0)."""
    means = 1.2 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed + 202))

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        y = torch.randint(0, classes, (batch,), generator=g)
        x = means[y] + spread * torch.randn(batch, dim, generator=g)
        return x, y

    return batch_at


def low_rank_vectors(batch: int = 64, dim: int = 32, rank: int = 4, seed: int = 0):
    """x = z @ A with z ~ N(0, I_rank): exactly reconstructible through a rank-4 bottleneck."""
    a = torch.randn(rank, dim, generator=torch.Generator().manual_seed(seed + 303)) / rank**0.5

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, rank, generator=g) @ a
        return x, x

    return batch_at


def sine_regression(batch: int = 64, dim: int = 8, seed: int = 0):
    """y = sum_k sin(x @ w_k) (a smooth nonlinear target) plus small noise."""
    w = torch.randn(dim, 3, generator=torch.Generator().manual_seed(seed + 404)) / dim**0.5

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, dim, generator=g)
        y = torch.sin(2 * x @ w).sum(1, keepdim=True) + 0.05 * torch.randn(batch, 1, generator=g)
        return x, y

    return batch_at


# ------------------------------------------------------------------------- models


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    def __init__(self, channels: int = 3, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.block1 = BasicBlock(width)
        self.block2 = BasicBlock(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        h = self.block2(self.block1(h))
        return self.fc(h.mean((2, 3)))


class Conv1dNet(nn.Module):
    """(B, T, D) -> two Conv1d layers (optionally BatchNorm1d) -> global average over time -> linear head."""

    def __init__(self, dim: int = 6, width: int = 32, classes: int = 3, batchnorm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dim, width, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(width) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv1d(width, width, 5, padding=2)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x.transpose(1, 2))))
        h = F.relu(self.conv2(h))
        return self.head(h.mean(2))


class GRUNet(nn.Module):
    def __init__(self, dim: int = 6, hidden: int = 32, out: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)
        return self.head(h[:, -1])


# ------------------------------------------------------------- healthy controls


def train_resnet_step_decay(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = TinyResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[150, 250], gamma=0.1)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=stripe_images(noise=2.5, seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


def train_conv1d_warmup_linear_decay(watch, seed: int) -> None:
    torch.manual_seed(seed)
    steps, warm = 300, 30
    model = Conv1dNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def factor(s: int) -> float:  # linear warmup from 1%, then linear decay to exactly 0 at the last step
        if s < warm:
            return 0.01 + 0.99 * s / warm
        return max(0.0, (steps - s) / (steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    fit(watch, model, opt, steps=steps, batch_at=motif_sequences(seed=seed), loss_fn=F.cross_entropy, scheduler=sched)


def train_autoencoder_near_zero(watch, seed: int) -> None:
    torch.manual_seed(seed)
    # a linear (PCA-like) autoencoder 32-16-4-16-32: exactly realises rank-4 data, so the MSE has no floor
    model = nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 4), nn.Linear(4, 16), nn.Linear(16, 32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=400, batch_at=low_rank_vectors(seed=seed), loss_fn=F.mse_loss)


def train_label_smoothing_rmsprop_bigbatch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([20, 128, 128, 5])
    opt = torch.optim.RMSprop(model.parameters(), lr=5e-4)
    data = gaussian_mixture(batch=512, seed=seed)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=data,
        loss_fn=lambda out, y: F.cross_entropy(out, y, label_smoothing=0.2),
    )


def train_frozen_pretrained_backbone(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = gaussian_mixture(batch=64, dim=20, classes=5, spread=1.5, seed=seed)
    backbone = mlp([20, 256, 256], activation=nn.GELU)
    backbone.append(nn.GELU())
    # "Pretrain" the backbone (unmonitored) on a related 10-way proxy task, then freeze it.
    proxy_head = nn.Linear(256, 10)
    proxy_means = 1.2 * torch.randn(10, 20, generator=torch.Generator().manual_seed(seed + 505))
    pre = torch.optim.Adam(list(backbone.parameters()) + list(proxy_head.parameters()), lr=1e-3)
    for s in range(150):
        g = _gen(seed + 9, s)
        y = torch.randint(0, 10, (64,), generator=g)
        x = proxy_means[y] + torch.randn(64, 20, generator=g)
        pre.zero_grad()
        F.cross_entropy(proxy_head(backbone(x)), y).backward()
        pre.step()
    backbone.requires_grad_(False)
    model = nn.Sequential(backbone, nn.Linear(256, 5))  # a fresh linear probe
    opt = torch.optim.SGD(model[1].parameters(), lr=0.01, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=F.cross_entropy)


def train_grad_accum_adagrad(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([20, 64, 64, 64, 5], activation=nn.GELU, norm=True)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.03)
    data = gaussian_mixture(batch=16, spread=1.5, seed=seed)
    fit(watch, model, opt, steps=250, batch_at=data, loss_fn=F.cross_entropy, accumulate=4)


def train_gru_heavy_wd_adamw(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = GRUNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.5)
    fit(watch, model, opt, steps=300, batch_at=pattern_sequences(seed=seed), loss_fn=F.cross_entropy)


# ------------------------------------------------------------------ pathologies

GRU_JUMP_STEP = 150


def train_gru_lr_jump_adam(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = GRUNet(out=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # sequence regression: target = a fixed linear read-out of the temporal-pattern logits
    base = pattern_sequences(seed=seed)
    w = torch.randn(6, 1, generator=torch.Generator().manual_seed(seed + 606))

    def batch_at(step: int) -> Batch:
        x, _ = base(step)
        h = x.shape[1] // 2
        return x, (x[:, :h].mean(1) - x[:, h:].mean(1)) @ w

    def jump(step: int, _m: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step == GRU_JUMP_STEP:
            for group in optimizer.param_groups:
                group["lr"] = 1.0

    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.mse_loss, before_step=jump)


def train_deep_tanh_small_init_rmsprop(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16] + [48] * 11 + [1], activation=nn.Tanh)  # 12 linear layers
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.03)
            nn.init.zeros_(m.bias)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    fit(watch, model, opt, steps=250, batch_at=sine_regression(dim=16, seed=seed), loss_fn=F.mse_loss)


POISON_STEP = 130


def train_conv1d_inf_input(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = Conv1dNet(batchnorm=True)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    clean = motif_sequences(seed=seed)

    def batch_at(step: int) -> Batch:
        x, y = clean(step)
        if step == POISON_STEP:  # one corrupted sensor reading: +inf in a single element
            x = x.clone()
            x[3, 7, 2] = float("inf")
        return x, y

    fit(watch, model, opt, steps=220, batch_at=batch_at, loss_fn=F.cross_entropy)


SHUFFLE_STEP = 200


def train_mlp_shuffled_labels_momentum(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([20, 64, 64, 5])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    clean = gaussian_mixture(batch=64, seed=seed)

    def batch_at(step: int) -> Batch:
        x, y = clean(step)
        if SHUFFLE_STEP <= step < SHUFFLE_STEP + 3:  # labels joined to the wrong rows for 3 steps
            y = y[torch.randperm(len(y), generator=_gen(seed + 1, step))]
        return x, y

    fit(watch, model, opt, steps=320, batch_at=batch_at, loss_fn=F.cross_entropy)


def train_cnn_random_labels_64(watch, seed: int) -> None:
    torch.manual_seed(seed)

    def random_images(step: int) -> Batch:
        g = _gen(seed, step)
        return torch.randn(32, 3, 10, 10, generator=g), torch.randint(0, 4, (32,), generator=g)

    cache = [random_images(i) for i in range(2)]  # 64 images, random labels
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 25, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=lambda s: cache[s % 2],
        loss_fn=F.cross_entropy,
        val_at=lambda i: random_images(10**6 + i),
        val_every=5,
    )


def train_gru_lr_1e8(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = GRUNet()
    opt = torch.optim.SGD(model.parameters(), lr=1e-8, momentum=0.9, nesterov=True)
    fit(watch, model, opt, steps=250, batch_at=pattern_sequences(seed=seed), loss_fn=F.cross_entropy)


DEAD_STEP = 100


def train_dead_relu_bias_shift(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([20, 64, 64, 64, 5])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def kill(step: int, m: nn.Module, _o: torch.optim.Optimizer) -> None:
        if step == DEAD_STEP:  # a bad "weight surgery": every hidden bias shifted far negative
            with torch.no_grad():
                for layer in list(m)[:-1]:
                    if isinstance(layer, nn.Linear):
                        layer.bias.sub_(50.0)

    fit(watch, model, opt, steps=300, batch_at=gaussian_mixture(seed=seed), loss_fn=F.cross_entropy, before_step=kill)


H = frozenset({"healthy", "broader"})
P = frozenset({"broader"})

SCENARIOS: list[Scenario] = [
    Scenario(
        name="healthy_resnet_step_decay",
        description="BN ResNet (2 basic blocks) on 3-channel stripe-orientation images, SGD+momentum lr 0.1, "
        "wd 5e-4, MultiStepLR x0.1 at steps 150 and 250.",
        train=train_resnet_step_decay,
        tags=H | {"cnn", "resnet", "momentum", "decay"},
    ),
    Scenario(
        name="healthy_conv1d_warmup_linear_decay",
        description="1D-conv sequence classifier, Adam, linear warmup (30 steps from 1%) then linear decay to 0.",
        train=train_conv1d_warmup_linear_decay,
        tags=H | {"conv1d", "adam", "warmup", "decay"},
    ),
    Scenario(
        name="healthy_autoencoder_near_zero",
        description="Linear autoencoder 32-16-4-16-32 on exactly rank-4 data with Adam: MSE falls by orders of "
        "magnitude with no noise floor.",
        train=train_autoencoder_near_zero,
        tags=H | {"autoencoder", "adam"},
    ),
    Scenario(
        name="healthy_label_smoothing_rmsprop_bigbatch",
        description="MLP with label-smoothing 0.2 cross-entropy (loss floor > 0), RMSprop, batch 512 (smooth loss).",
        train=train_label_smoothing_rmsprop_bigbatch,
        tags=H | {"mlp", "rmsprop"},
    ),
    Scenario(
        name="healthy_frozen_pretrained_backbone",
        description="A pretrained (then frozen) 20-256-256 GELU backbone and a fresh linear probe trained with "
        "SGD+momentum: ~99% of the parameters are frozen, by design.",
        train=train_frozen_pretrained_backbone,
        tags=H | {"mlp", "frozen", "momentum"},
    ),
    Scenario(
        name="healthy_grad_accum_adagrad",
        description="LayerNorm+GELU MLP, Adagrad, gradient accumulation over 4 micro-batches of 16 per step.",
        train=train_grad_accum_adagrad,
        tags=H | {"mlp", "adagrad", "accumulation"},
    ),
    Scenario(
        name="healthy_gru_heavy_wd_adamw",
        description="GRU sequence classifier with AdamW lr 3e-3 and weight_decay 0.5 (heavy).",
        train=train_gru_heavy_wd_adamw,
        tags=H | {"gru", "rnn", "adamw"},
    ),
    Scenario(
        name="explode_gru_lr_jump_adam",
        description=f"GRU sequence regression with Adam lr 3e-3; lr set to 1.0 at step {GRU_JUMP_STEP}.",
        train=train_gru_lr_jump_adam,
        expect={"exploding_gradient": GRU_JUMP_STEP},
        allow=frozenset({"loss_spike", "nonfinite"}),
        tags=P | {"gru", "rnn", "adam"},
    ),
    Scenario(
        name="vanish_deep_tanh_small_init_rmsprop",
        description="12-layer width-48 tanh MLP, weights N(0, 0.03^2), RMSprop lr 1e-4 on a sine regression.",
        train=train_deep_tanh_small_init_rmsprop,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=P | {"mlp", "tanh", "rmsprop"},
    ),
    Scenario(
        name="nonfinite_inf_input_conv1d_bn",
        description=f"1D-conv + BatchNorm1d, Adam; one input element is +inf at step {POISON_STEP}.",
        train=train_conv1d_inf_input,
        expect={"nonfinite": POISON_STEP},
        tags=P | {"conv1d", "adam"},
    ),
    Scenario(
        name="spike_shuffled_labels_mlp_momentum",
        description=f"MLP, SGD+momentum, Gaussian-mixture classes; labels permuted within the batch for steps "
        f"{SHUFFLE_STEP}-{SHUFFLE_STEP + 2}, then clean again (loss ~1.4 for ~20 steps, back near 0 by ~250).",
        train=train_mlp_shuffled_labels_momentum,
        expect={"loss_spike": SHUFFLE_STEP},
        # the wrong labels knock the model off its solution: the gradient norm rises 20-1000x and stays
        # elevated for ~15 steps while it re-learns (the repo's spikes.py allows this co-occurrence too)
        allow=frozenset({"exploding_gradient"}),
        tags=P | {"mlp", "momentum"},
    ),
    Scenario(
        name="overfit_cnn_random_labels_64",
        description="Small CNN memorises 64 random-label noise images (Adam); held-out random-label images "
        "evaluated every 5 steps.",
        train=train_cnn_random_labels_64,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=P | {"cnn", "adam"},
    ),
    Scenario(
        name="stagnant_gru_lr_1e8",
        description="GRU classifier with SGD (Nesterov momentum) at lr 1e-8: the loss never moves.",
        train=train_gru_lr_1e8,
        expect={"stagnation": 0},
        tags=P | {"gru", "rnn", "sgd"},
    ),
    Scenario(
        name="stagnant_dead_relu_bias_shift",
        description=f"ReLU MLP trains normally with SGD+momentum; at step {DEAD_STEP} every hidden bias is shifted "
        "by -50: all ReLUs die, only the output bias still gets a gradient.",
        train=train_dead_relu_bias_shift,
        expect={"stagnation": DEAD_STEP},
        allow=frozenset({"loss_spike", "vanishing_gradient"}),
        tags=P | {"mlp", "momentum"},
    ),
]
