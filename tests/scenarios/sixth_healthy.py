"""Sixth set, healthy controls: realistic training setups no symptom should fire on.

Written apart from the rules and first run as a held-out set (2026-11-27): the GAN
discriminator's loss, drifting up step by step for a while, read as a loss spike;
docs/rules.md says what changed. Every run learns (or, for the GAN discriminator and the
REINFORCE surrogate, trains as intended) and stays finite.
"""

from __future__ import annotations

import random

import torch
from _common import (
    MeanPoolTransformer,
    bn_cnn,
    fit,
    mlp,
    quadrant_images,
    sequence_classification,
    teacher_classification,
)
from _sixth_lib import Seq2SeqGRU
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


# --- knowledge distillation: small student, temperature-softened teacher -------------------
def _kd(watch, seed: int) -> None:
    torch.manual_seed(seed + 11)
    teacher = mlp([16, 128, 128, 8])
    teacher.requires_grad_(False)
    torch.manual_seed(seed)
    student = mlp([16, 24, 8])
    T = 2.0

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(64, 16, generator=g)
        with torch.no_grad():
            t = teacher(x)
            t = 4.0 * t / t.std()  # a confident "pretrained" teacher
        return x, t

    def loss_fn(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kd = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="batchmean")
        return 0.7 * T * T * kd + 0.3 * F.cross_entropy(s, t.argmax(1))

    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    fit(watch, student, opt, steps=300, batch_at=batch_at, loss_fn=loss_fn)


# --- SimCLR-style contrastive learning (NT-Xent) ------------------------------------------
def _contrastive(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(mlp([32, 128, 64]), nn.ReLU(), nn.Linear(64, 32))
    gen = torch.Generator().manual_seed(seed + 5)
    mix = torch.randn(8, 32, generator=gen)  # data on an 8-dim subspace

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        z = torch.randn(64, 8, generator=g) @ mix
        views = []
        for _ in range(2):
            keep = (torch.rand(64, 32, generator=g) > 0.2).float()
            views.append(z * keep + 0.5 * torch.randn(64, 32, generator=g))
        return torch.cat(views), torch.zeros(128)

    def nt_xent(h: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        h = F.normalize(h, dim=1)
        sim = h @ h.t() / 0.2
        sim = sim - 1e9 * torch.eye(len(h))
        n = len(h) // 2
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
        return F.cross_entropy(sim, target)

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=nt_xent)


# --- GAN: two optimizers, only the discriminator is watched ----------------------------------
def _gan(watch, seed: int) -> None:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    D = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    centre = torch.tensor([2.0, -1.0])

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        real = centre + 0.5 * torch.randn(64, 2, generator=g)
        with torch.no_grad():
            fake = G(torch.randn(64, 4, generator=g))
        return torch.cat([real, fake]), torch.cat([torch.ones(64, 1), torch.zeros(64, 1)])

    def generator_step(step: int, _d: nn.Module, _opt) -> None:
        g = torch.Generator().manual_seed(seed * 7_777_777 + step)
        D.requires_grad_(False)
        loss_g = F.binary_cross_entropy_with_logits(D(G(torch.randn(64, 4, generator=g))), torch.ones(64, 1))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)

    fit(
        watch,
        D,
        opt_d,
        steps=300,
        batch_at=batch_at,
        loss_fn=F.binary_cross_entropy_with_logits,
        before_step=generator_step,
    )


# --- seq2seq GRU (reverse a token sequence) with teacher forcing -----------------------------
def _seq2seq(watch, seed: int) -> None:
    torch.manual_seed(seed)
    L, V = 6, 10
    model = Seq2SeqGRU(vocab=V, length=L)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        src = torch.randint(0, V, (32, L), generator=g)
        tgt = src.flip(1)
        tgt_in = torch.cat([torch.full((32, 1), V), tgt[:, :-1]], 1)
        return torch.cat([src, tgt_in], 1), tgt

    def loss_fn(out: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), tgt.reshape(-1))

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=loss_fn, clip=1.0)


# --- mixup + label smoothing on a BatchNorm CNN -------------------------------------------
def _mixup(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = bn_cnn(channels=16)
    base = quadrant_images(seed=seed, noise=2.0)

    def batch_at(step: int):
        x, y = base(step)
        g = torch.Generator().manual_seed(seed * 31 + step)
        lam = random.Random(seed * 31 + step).betavariate(0.4, 0.4)
        perm = torch.randperm(len(x), generator=g)
        y1 = F.one_hot(y, 4).float()
        return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=batch_at,
        loss_fn=lambda out, t: F.cross_entropy(out, t, label_smoothing=0.1),
    )


# --- REINFORCE on a contextual bandit, gradient clipping every step --------------------------
def _reinforce(watch, seed: int) -> None:
    torch.manual_seed(seed)
    arms, dim = 8, 8
    policy = mlp([dim, 32, arms])
    gen = torch.Generator().manual_seed(seed + 3)
    payoff = torch.randn(dim, arms, generator=gen)
    sampler = torch.Generator().manual_seed(seed + 4)
    baseline = [0.0]

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(32, dim, generator=g)
        return x, x @ payoff  # expected reward of each arm

    def loss_fn(logits: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(logits, 1)
        a = torch.multinomial(probs.detach(), 1, generator=sampler).squeeze(1)
        r = means.gather(1, a[:, None]).squeeze(1) + torch.randn(len(a), generator=sampler)
        adv = r - baseline[0]
        baseline[0] = 0.9 * baseline[0] + 0.1 * float(r.mean())
        logp = F.log_softmax(logits, 1).gather(1, a[:, None]).squeeze(1)
        entropy = -(probs * F.log_softmax(logits, 1)).sum(1)
        return -(logp * adv).mean() - 0.01 * entropy.mean()

    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    fit(watch, policy, opt, steps=300, batch_at=batch_at, loss_fn=loss_fn, clip=0.5)


# --- learning-rate range test, stopped before divergence -----------------------------------
LR_START, LR_END, RANGE_STEPS = 1e-2, 0.15, 300


def _lr_range(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=LR_START, momentum=0.9)
    gamma = (LR_END / LR_START) ** (1 / RANGE_STEPS)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    fit(
        watch,
        model,
        opt,
        steps=RANGE_STEPS,
        batch_at=teacher_classification(seed=seed, label_noise=0.05),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


# --- resumed from a checkpoint without its optimizer state -----------------------------------
RESUME_STEP = 150


def _resume(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = MeanPoolTransformer(dim=4, d_model=32, layers=2, out=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def before_step(step: int, _m, optimizer) -> None:
        if step == RESUME_STEP:  # weights restored, optimizer state (moments, step count) lost
            optimizer.state.clear()

    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=sequence_classification(seed=seed),
        loss_fn=F.cross_entropy,
        before_step=before_step,
    )


# --- gradual unfreezing of a pretrained backbone (ULMFiT style) --------------------------
def _gradual_unfreeze(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 64, 4])
    # "pretraining" on the same task with other, noisier data (not watched)
    pre = teacher_classification(seed=seed, batch=64, label_noise=0.1)  # same task, other samples
    p_opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for s in range(150):
        x, y = pre(2 * 10**6 + s)
        p_opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        p_opt.step()
    model[-1].reset_parameters()  # new head for the new task
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for m in linears[:-1]:
        m.requires_grad_(False)
    opt = torch.optim.AdamW(
        [
            {"params": linears[0].parameters(), "lr": 2.5e-4},
            {"params": linears[1].parameters(), "lr": 5e-4},
            {"params": linears[2].parameters(), "lr": 1e-3},
            {"params": linears[3].parameters(), "lr": 2e-3},
        ],
        weight_decay=0.01,
    )

    def before_step(step: int, _m, _o) -> None:
        if step == 80:
            linears[2].requires_grad_(True)
        elif step == 160:
            linears[1].requires_grad_(True)
        elif step == 240:
            linears[0].requires_grad_(True)

    fit(
        watch,
        model,
        opt,
        steps=320,
        batch_at=teacher_classification(seed=seed, label_noise=0.05),
        loss_fn=F.cross_entropy,
        before_step=before_step,
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        "healthy_distillation_kd_T2",
        "Small MLP student distilled from a fixed confident teacher "
        "(0.7*T^2*KL at T=2 + 0.3*CE on teacher argmax), Adam.",
        _kd,
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        "healthy_simclr_ntxent",
        "SimCLR-style NT-Xent (tau 0.2, 2x64 views with masking+noise) on an MLP encoder+projection, Adam.",
        _contrastive,
        tags=frozenset({"mlp", "adam"}),
    ),
    Scenario(
        "healthy_gan_discriminator_watched",
        "2-D GAN with separate Adam optimizers; only D and its "
        "optimizer are watched (G steps in before_step with D frozen). D loss hovers near equilibrium.",
        _gan,
        tags=frozenset({"gan", "adam"}),
    ),
    Scenario(
        "healthy_seq2seq_gru_teacher_forcing",
        "GRU encoder-decoder reversing 6-token sequences, teacher forcing, Adam, clip 1.0.",
        _seq2seq,
        tags=frozenset({"rnn", "adam", "clip"}),
    ),
    Scenario(
        "healthy_mixup_label_smoothing_cnn",
        "BatchNorm CNN, mixup (Beta 0.4) + label smoothing 0.1, SGD momentum + wd: loss floors well above 0.",
        _mixup,
        tags=frozenset({"cnn", "momentum"}),
    ),
    Scenario(
        "healthy_reinforce_bandit_clipped",
        "REINFORCE with a running baseline on an 8-arm contextual "
        "bandit, surrogate loss around 0, clip 0.5 every step, Adam.",
        _reinforce,
        tags=frozenset({"rl", "adam", "clip"}),
    ),
    Scenario(
        "healthy_lr_range_test",
        "LR range test: SGD momentum, lr 1e-2 -> 0.15 exponentially over 300 steps, stopped before divergence.",
        _lr_range,
        tags=frozenset({"mlp", "momentum"}),
    ),
    Scenario(
        "healthy_resume_fresh_adamw_state",
        "Transformer classifier (AdamW); at step 150 the optimizer "
        "state is cleared (resumed without optimizer checkpoint).",
        _resume,
        tags=frozenset({"transformer", "adamw"}),
    ),
    Scenario(
        "healthy_gradual_unfreezing",
        "Pretrained MLP backbone with new head; layers unfrozen one by one "
        "at steps 80/160/240 with discriminative LRs (AdamW).",
        _gradual_unfreeze,
        tags=frozenset({"mlp", "adamw", "finetune"}),
    ),
]
