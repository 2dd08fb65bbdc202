"""Tenth held-out set, healthy controls: realistic runs that should raise nothing."""

from __future__ import annotations

import torch
from _common import fit, held_out, mlp, quadrant_images, teacher_classification, teacher_regression
from _tenth_lib import gen
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


# --- clip_grad_value_ (element-wise clipping) with SGD momentum on a regression -------------------
def _clip_by_value(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = teacher_regression(seed=seed, noise=0.05, scale=2.0)
    mon = watch(model, opt)
    for step in range(250):
        x, y = data(step)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(model.parameters(), 0.01)
        opt.step()
        mon.step(loss.detach())


# --- CTC sequence labelling with a bidirectional GRU (blank plateau, then alignment) ---------------
CTC_VOCAB = 5  # labels 1..5, blank 0


def _ctc_batch(seed: int, step: int, batch: int = 16, frames: int = 30, dim: int = 8):
    g = gen(seed, step)
    protos = torch.randn(CTC_VOCAB + 1, dim, generator=torch.Generator().manual_seed(seed + 3)) * 1.5
    x = 0.5 * torch.randn(batch, frames, dim, generator=g)
    targets, lengths = [], []
    for b in range(batch):
        n = int(torch.randint(2, 5, (1,), generator=g))
        labels = torch.randint(1, CTC_VOCAB + 1, (n,), generator=g)
        t = int(torch.randint(0, 3, (1,), generator=g))
        for lab in labels.tolist():
            dur = int(torch.randint(2, 5, (1,), generator=g))
            x[b, t : t + dur] += protos[lab]
            t += dur + int(torch.randint(1, 3, (1,), generator=g))
        targets.append(labels)
        lengths.append(n)
    return x, (torch.cat(targets), torch.tensor(lengths))


class CTCTagger(nn.Module):
    def __init__(self, dim: int = 8, hidden: int = 32):
        super().__init__()
        self.rnn = nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, CTC_VOCAB + 1)

    def forward(self, x):
        return self.out(self.rnn(x)[0])


def _ctc(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = CTCTagger()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def ctc_loss(out, target):
        labels, lengths = target
        logp = out.log_softmax(-1).transpose(0, 1)  # (T, N, C)
        in_len = torch.full((out.shape[0],), out.shape[1], dtype=torch.long)
        return F.ctc_loss(logp, labels, in_len, lengths, blank=0)

    fit(watch, model, opt, steps=250, batch_at=lambda s: _ctc_batch(seed, s), loss_fn=ctc_loss)


# --- triplet-margin metric learning on clustered data -----------------------------------------------
def _triplet(watch, seed: int) -> None:
    torch.manual_seed(seed)
    centers = torch.randn(10, 32, generator=torch.Generator().manual_seed(seed + 11))
    model = mlp([32, 64, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = watch(model, opt)
    for step in range(250):
        g = gen(seed, step)
        ca = torch.randint(0, 10, (64,), generator=g)
        cn = (ca + torch.randint(1, 10, (64,), generator=g)) % 10
        a = centers[ca] + 0.8 * torch.randn(64, 32, generator=g)
        p = centers[ca] + 0.8 * torch.randn(64, 32, generator=g)
        n = centers[cn] + 0.8 * torch.randn(64, 32, generator=g)
        loss = F.triplet_margin_loss(model(a), model(p), model(n), margin=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- ordinal regression with cumulative logits (CORAL-style) ----------------------------------------
class Ordinal(nn.Module):
    def __init__(self, dim: int = 12, levels: int = 5):
        super().__init__()
        self.score = mlp([dim, 32, 1])
        self.cut = nn.Parameter(torch.linspace(-1.5, 1.5, levels - 1))

    def forward(self, x):
        return self.score(x) - self.cut  # logits of P(y > k), k = 0..levels-2


def _ordinal(watch, seed: int) -> None:
    torch.manual_seed(seed)
    w = torch.randn(12, generator=torch.Generator().manual_seed(seed + 5)) / 12**0.5

    def batch_at(step: int):
        g = gen(seed, step)
        x = torch.randn(48, 12, generator=g)
        z = 2.0 * torch.tanh(x @ w * 1.5) + 0.4 * torch.randn(48, generator=g)
        y = torch.bucketize(z, torch.tensor([-1.2, -0.4, 0.4, 1.2]))
        return x, y

    def loss_fn(out, y):
        target = (y[:, None] > torch.arange(4)[None, :]).float()
        return F.binary_cross_entropy_with_logits(out, target)

    model = Ordinal()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=250, batch_at=batch_at, loss_fn=loss_fn)


# --- GroupNorm CNN with batches of 4 ----------------------------------------------------------------
def _groupnorm_small_batch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=300, batch_at=quadrant_images(batch=4, noise=0.8, seed=seed), loss_fn=F.cross_entropy)


# --- EMA of weights; validation on the EMA copy -----------------------------------------------------
def _ema_validation(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = teacher_classification(dim=20, classes=5, batch=32, label_noise=0.1, seed=seed)
    val = held_out(data)
    model = mlp([20, 128, 128, 5])
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.98))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    mon = watch(model, opt)
    for step in range(300):
        x, y = data(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(model)
        val_loss = None
        if step % 10 == 9:
            with torch.no_grad():
                val_loss = sum(float(F.cross_entropy(ema(vx), vy)) for vx, vy in (val(i) for i in range(4))) / 4
        mon.step(loss.detach(), val_loss=val_loss)


# --- resumed from a full checkpoint (model, optimizer, scheduler) late in a cosine schedule ---------
def _resumed(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = teacher_classification(dim=16, classes=4, batch=32, label_noise=0.05, seed=seed)

    def build():
        m = mlp([16, 64, 64, 4])
        o = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        return m, o, torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=500)

    model, opt, sched = build()
    for step in range(300):  # the earlier job (not monitored)
        x, y = data(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    ckpt = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    model, opt, sched = build()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    fit(watch, model, opt, steps=200, batch_at=lambda s: data(300 + s), loss_fn=F.cross_entropy, scheduler=sched)


# --- negative-binomial count regression with learned dispersion ------------------------------------
def _negbin(watch, seed: int) -> None:
    torch.manual_seed(seed)
    w = torch.randn(8, generator=torch.Generator().manual_seed(seed + 9)) / 8**0.5

    def batch_at(step: int):
        g = gen(seed, step)
        x = torch.randn(64, 8, generator=g)
        mu = torch.exp(1.5 + 0.8 * torch.tanh(x @ w * 1.5) + 0.3 * x[:, 0])
        rate = torch._standard_gamma(torch.full((64,), 2.0), generator=g) / 2.0 * mu  # gamma-Poisson, r = 2
        return x, torch.poisson(rate, generator=g)

    def nll(out, y):
        log_mu, log_r = out[:, 0], out[:, 1]
        r = F.softplus(log_r) + 1e-3
        dist = torch.distributions.NegativeBinomial(total_count=r, logits=log_mu - torch.log(r))
        return -dist.log_prob(y).mean()

    model = mlp([8, 32, 32, 2])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=nll)


SCENARIOS: list[Scenario] = [
    Scenario(
        "healthy10_clip_grad_value_sgd",
        "Regression MLP, SGD momentum 0.05, clip_grad_value_(0.01) every step (element-wise clipping; norm not passed).",
        _clip_by_value,
        tags=frozenset({"mlp", "momentum", "clipping", "healthy", "tenth"}),
    ),
    Scenario(
        "healthy10_ctc_bigru",
        "Bidirectional GRU + CTC loss aligning 2-4 labels to 30 noisy frames, Adam 3e-3: blank plateau, then learns.",
        _ctc,
        tags=frozenset({"rnn", "gru", "ctc", "adam", "healthy", "tenth"}),
    ),
    Scenario(
        "healthy10_triplet_margin",
        "MLP embedding trained with triplet margin loss (margin 1) on 10 Gaussian clusters, Adam: loss -> near 0.",
        _triplet,
        tags=frozenset({"mlp", "metric", "adam", "healthy", "tenth"}),
    ),
    Scenario(
        "healthy10_ordinal_cumulative_logits",
        "Ordinal regression (5 levels) with a scalar score minus learned cut-points, BCE on cumulative targets, SGD momentum.",
        _ordinal,
        tags=frozenset({"mlp", "ordinal", "momentum", "healthy", "tenth"}),
    ),
    Scenario(
        "healthy10_groupnorm_cnn_batch4",
        "CNN with GroupNorm(4 groups) on noisy quadrant images, batch 4, Adam 1e-3: very noisy, falling loss.",
        _groupnorm_small_batch,
        tags=frozenset({"cnn", "groupnorm", "adam", "healthy", "tenth"}),
    ),
    Scenario(
        "healthy10_ema_weights_validation",
        "AdamW MLP with 10% label noise; an EMA (0.98) copy of the weights is what validation evaluates every 10 steps.",
        _ema_validation,
        tags=frozenset({"mlp", "adamw", "ema", "healthy", "tenth"}),
    ),
    Scenario(
        "healthy10_resumed_full_checkpoint",
        "MLP trained 300 steps unmonitored, resumed from a full checkpoint (model+optimizer+cosine scheduler): "
        "the monitored run starts at a low, noisy loss (5% label noise) that stays roughly flat as the lr decays.",
        _resumed,
        tags=frozenset({"mlp", "momentum", "resume", "healthy", "tenth"}),
    ),
    Scenario(
        "healthy10_negative_binomial_counts",
        "Overdispersed count regression, negative-binomial NLL with learned dispersion, Adam: heavy-tailed batch losses.",
        _negbin,
        tags=frozenset({"mlp", "counts", "adam", "healthy", "tenth"}),
    ),
]
