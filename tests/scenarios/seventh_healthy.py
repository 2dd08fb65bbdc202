"""Seventh set, healthy controls: realistic setups that should raise no symptom.

Written apart from the rules and first run as a held-out set (2026-11-27): the margin-ranking
loss (exactly 0 on many steps near convergence) read as stagnation and vanishing gradients, and
the mixture density network's gradients, growing 30x over 200 steps as its sigmas shrink, as an
explosion; docs/rules.md says what changed. The pinball loss on Student-t(2) noise still raises
a loss spike on seed 0 in its first 70 steps, before the run has shown its tail (a known miss).
"""

from __future__ import annotations

import math

import torch
from _common import fit, mlp, teacher_classification, warmup_cosine_lr
from _seventh_lib import TinyCausalLM
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


# --- causal transformer LM on a copy task: loss drops in a step when induction forms ---------
def _induction_lm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    V, HALF = 16, 10
    model = TinyCausalLM(vocab=V, length=2 * HALF - 1, d_model=32, layers=2)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        first = torch.randint(0, V, (32, HALF), generator=g)
        seq = torch.cat([first, first], 1)  # the second half repeats the first
        return seq[:, :-1], seq[:, 1:]

    def loss_fn(logits, y):
        return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98))
    sched = warmup_cosine_lr(opt, start_factor=0.02, warmup=40, cosine_steps=260)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=loss_fn, scheduler=sched, clip=1.0)


# --- WGAN critic with weight clipping (RMSprop, 5 critic steps per generator step) -----------
def _wgan_critic(watch, seed: int) -> None:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    D = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    opt_g = torch.optim.RMSprop(G.parameters(), lr=5e-4)
    opt_d = torch.optim.RMSprop(D.parameters(), lr=5e-4)
    centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [0.0, -2.0]])

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        real = centres[torch.randint(0, 3, (64,), generator=g)] + 0.3 * torch.randn(64, 2, generator=g)
        with torch.no_grad():
            fake = G(torch.randn(64, 4, generator=g))
        return torch.cat([real, fake]), torch.cat([torch.ones(64, 1), -torch.ones(64, 1)])

    def critic_loss(out, sign):  # -(E[D(real)] - E[D(fake)])
        return -(out * sign).sum() / 64

    def before_step(step: int, _d, _opt) -> None:
        with torch.no_grad():  # weight clipping (applied after the previous critic update)
            for p in D.parameters():
                p.clamp_(-0.05, 0.05)
        if step % 5 == 4:
            g = torch.Generator().manual_seed(seed * 7_777_777 + step)
            D.requires_grad_(False)
            loss_g = -D(G(torch.randn(64, 4, generator=g))).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            D.requires_grad_(True)

    fit(watch, D, opt_d, steps=400, batch_at=batch_at, loss_fn=critic_loss, before_step=before_step)


# --- multi-task: regression in raw units (loss ~1e3) + classification (loss ~1), summed -----
def _multitask_scales(watch, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 21)
    w_reg = torch.randn(16, 1, generator=gen)
    w_cls = torch.randn(16, 5, generator=gen)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(64, 16, generator=g)
        price = 40.0 * torch.tanh(x @ w_reg / 3) + 5.0 * torch.randn(64, 1, generator=g)  # e.g. a price in $
        cls = (x @ w_cls).argmax(1, keepdim=True).float()
        return x, torch.cat([price, cls], 1)

    model = mlp([16, 128, 128, 6])

    def loss_fn(out, y):
        return F.mse_loss(out[:, :1], y[:, :1]) + F.cross_entropy(out[:, 1:], y[:, 1].long())

    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=loss_fn)


# --- pairwise margin ranking: the hinge is exactly 0 on most batches once learned ------------
def _margin_ranking(watch, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 9)
    w = torch.randn(12, generator=gen)
    scorer = mlp([12, 32, 1])

    class PairScorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scorer = scorer

        def forward(self, x):  # (B, 2, D) -> (B, 2)
            return self.scorer(x).squeeze(-1)

    model = PairScorer()

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(16, 2, 12, generator=g)
        rel = x @ w  # true relevance
        keep = (rel[:, 0] - rel[:, 1]).abs() > 1.0  # labellers only compare clearly different items
        x = x[keep]
        rel = rel[keep]
        return x, torch.sign(rel[:, 0] - rel[:, 1])

    def loss_fn(s, y):
        return F.margin_ranking_loss(s[:, 0], s[:, 1], y, margin=0.1)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=loss_fn)


# --- heavy dropout, batch 8: a very noisy loss that still falls -------------------------------
def _dropout_heavy(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Dropout(0.2),
        nn.Linear(16, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 4),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, nesterov=True)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=teacher_classification(seed=seed, batch=8, label_noise=0.1),
        loss_fn=F.cross_entropy,
    )


# --- quantile regression (pinball loss) with heavy-tailed Student-t(2) noise -----------------
QUANTILES = torch.tensor([0.1, 0.5, 0.9])


def _pinball(watch, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 13)
    w = torch.randn(8, 1, generator=gen) / 8**0.5

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(32, 8, generator=g)
        z = torch.randn(32, 1, generator=g)
        chi2 = -2.0 * torch.log(torch.rand(32, 1, generator=g))  # chi-square, 2 dof
        t = z / torch.sqrt(chi2 / 2.0)  # Student-t, 2 dof: infinite variance
        scale = 0.5 + 0.5 * x[:, :1].abs()
        return x, torch.sin(2 * x @ w) + scale * t

    def pinball(q_pred, y):
        r = y - q_pred  # (B, 3)
        return torch.maximum(QUANTILES * r, (QUANTILES - 1) * r).mean()

    model = mlp([8, 64, 64, 3])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=pinball)


# --- VAE with KL annealing: the total loss rises while beta ramps 0 -> 1 ---------------------
class VAE(nn.Module):
    def __init__(self, dim: int = 32, latent: int = 4) -> None:
        super().__init__()
        self.enc = mlp([dim, 64, 2 * latent])
        self.dec = mlp([latent, 64, dim])
        self.latent = latent

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return torch.cat([self.dec(z), mu, logvar], 1)


def _vae_kl_anneal(watch, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 17)
    mix = torch.randn(3, 32, generator=gen)
    model = VAE()
    state = {"step": 0}

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        z = torch.randn(64, 3, generator=g)
        x = torch.tanh(z @ mix) + 0.1 * torch.randn(64, 32, generator=g)
        return x, x

    def loss_fn(out, x):
        recon, mu, logvar = out[:, :32], out[:, 32:36], out[:, 36:]
        rec = F.mse_loss(recon, x, reduction="sum") / len(x)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / len(x)
        beta = min(1.0, state["step"] / 200)  # linear KL warm-up over 200 steps
        return rec + beta * kl

    def before_step(step, _m, _o):
        state["step"] = step

    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=350, batch_at=batch_at, loss_fn=loss_fn, before_step=before_step)


# --- mixture density network on a multi-valued inverse problem: NLL goes negative -----------
K = 5


def _mdn(watch, seed: int) -> None:
    torch.manual_seed(seed)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        y = torch.rand(64, 1, generator=g)
        x = y + 0.3 * torch.sin(2 * math.pi * y) + 0.05 * torch.randn(64, 1, generator=g)
        return x, y  # predict y from x: up to 3 branches

    model = mlp([1, 64, 64, 3 * K], activation=nn.Tanh)

    def nll(out, y):
        logit_pi, mu, log_sigma = out.split(K, dim=1)
        log_sigma = log_sigma.clamp(min=-6.0)
        log_p = (-0.5 * ((y - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)) + F.log_softmax(
            logit_pi, 1
        )
        return -torch.logsumexp(log_p, 1).mean()

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=400, batch_at=batch_at, loss_fn=nll)


# --- stochastic weight averaging: constant SWA lr after step 180, averaging every 5 steps ---
def _swa(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 128, 128, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    swa_model = torch.optim.swa_utils.AveragedModel(model)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=180)
    swa_sched = torch.optim.swa_utils.SWALR(opt, swa_lr=0.03, anneal_epochs=10)

    class Sched:
        n = 0

        def step(self):
            self.n += 1
            if self.n < 180:
                cosine.step()
            else:
                swa_sched.step()
                if self.n % 5 == 0:
                    swa_model.update_parameters(model)

    fit(
        watch,
        model,
        opt,
        steps=350,
        batch_at=teacher_classification(seed=seed, label_noise=0.15),
        loss_fn=F.cross_entropy,
        scheduler=Sched(),
    )


H = {}
SCENARIOS: list[Scenario] = [
    Scenario(
        "healthy_induction_copy_lm_warmup_adamw",
        "2-layer pre-LN causal transformer LM (AdamW, 40-step warmup, cosine, clip 1) on 10 random tokens "
        "repeated twice: the loss falls in a step once copying (induction) forms.",
        _induction_lm,
        tags=frozenset({"transformer", "adamw", "warmup"}),
    ),
    Scenario(
        "healthy_wgan_critic_weight_clipping",
        "WGAN critic (RMSprop, weights clipped to +-0.05) on a 3-blob mixture; generator updated every 5th "
        "step; the critic loss is a negative Wasserstein estimate that drifts with the generator.",
        _wgan_critic,
        tags=frozenset({"gan", "rmsprop"}),
    ),
    Scenario(
        "healthy_multitask_mixed_scales",
        "Shared MLP trunk (Adam), MSE on a raw-unit target (~1e3 at start) plus 5-class CE summed.",
        _multitask_scales,
        tags=frozenset({"mlp", "adam", "multitask"}),
    ),
    Scenario(
        "healthy_margin_ranking_exact_zero",
        "Pairwise margin-ranking scorer (plain SGD) on clearly-ordered pairs: the hinge loss and all "
        "gradients are exactly 0 on most batches once learned.",
        _margin_ranking,
        tags=frozenset({"mlp", "sgd", "ranking"}),
    ),
    Scenario(
        "healthy_heavy_dropout_batch8",
        "MLP with dropout 0.2/0.5/0.5, batch 8, 10% label noise, Nesterov SGD: very noisy but falling loss.",
        _dropout_heavy,
        tags=frozenset({"mlp", "momentum", "dropout"}),
    ),
    Scenario(
        "healthy_pinball_student_t",
        "Quantile regression (0.1/0.5/0.9 pinball loss, Adam) with heteroscedastic Student-t(2) noise: "
        "heavy-tailed batch losses.",
        _pinball,
        tags=frozenset({"mlp", "adam", "regression"}),
    ),
    Scenario(
        "healthy_vae_kl_annealing",
        "MLP VAE (Adam) with KL weight ramped linearly 0->1 over 200 steps: total loss rises during the ramp.",
        _vae_kl_anneal,
        tags=frozenset({"vae", "adam"}),
    ),
    Scenario(
        "healthy_mdn_negative_nll",
        "Mixture density network (5 Gaussians, tanh MLP, Adam) on a multi-valued inverse problem; NLL goes "
        "well below 0.",
        _mdn,
        tags=frozenset({"mlp", "adam", "mdn"}),
    ),
    Scenario(
        "healthy_swa_constant_lr_tail",
        "MLP, SGD momentum, cosine to step 180 then SWALR back up to a constant 0.03 with weight averaging: "
        "the loss rises a little and stays flat-noisy for 170 steps.",
        _swa,
        tags=frozenset({"mlp", "momentum", "swa"}),
    ),
]
