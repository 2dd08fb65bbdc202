"""Set 13 healthy controls: unusual model families and training tricks that should raise nothing.

Each was checked offline with _thirteenth_measure.py (seeds 0/1/2): no NaN/Inf anywhere. Per 50-step loss means,
largest loss z-score vs the previous 20 steps (maxz) and loss/median(prev 20) ratio (maxratio), grad norms:
- gcn_normalized: 0.92->0.28 / 1.03->0.55 / 1.03->0.38; maxz 4.0/4.3/5.3, maxratio 2.2/1.8/2.1.
- flow_realnvp_negative_nll: NLL 0.63->-0.63 / 0.67->-0.58 / 0.55->-0.79 (crosses 0 near step 150);
  grad norm median 1.4-1.6 (first 50) -> 7.7-9.0 (last 50), max 28; maxz 4.1-4.8.
- diffusion_eps_mse: 0.77-0.80 -> 0.53-0.57, noisy; maxratio <= 1.5.
- reinforce_bandit: surrogate loss negative, noisy, sign-changing; mean reward per 50 steps 0.73->1.72,
  0.74->1.87, 0.56->1.56 (it learns).
- triplet_radam: ~0.9 for ~50 steps (RAdam warm-up), then 0.91->0.28 / 0.88->0.29 / 0.91->0.22; maxratio <= 1.75.
- infonce_low_temperature: 0.40->0.12 (per-50 means); step-0 grad norm 6.6-8.3, then ~0.4-0.9; maxratio <= 1.7.
- tabular_big_embedding_adagrad: 0.58->0.43 / 0.59->0.46 / 0.59->0.46; maxratio <= 1.9; grad norm ~0.3 flat.
- audio_sgdr: 0.72->0.20 / 0.73->0.22 / 0.72->0.19; maxratio 2.4-2.7 (an earlier batch-32/noise-0.8 version
  had single-batch 0.03->0.4 jumps of 11-15x, so batch and noise were raised).
- mdn_sharpening: NLL +0.16 -> -1.08 / -1.0 / -1.05; grad norm median 1.3-1.5 -> 22-24, max 58-67; maxz <= 6.1.
- distill_smoothing_ema: 0.88->0.34 / 0.75->0.36 / 0.91->0.34, flat floor from ~step 200; val min at 459/469/499.
- lion_multitask_accum: 1.64->1.08 / 1.59->1.10 / 1.54->1.01, steady; maxratio <= 1.1.
- focal_nadam_tiny_loss: 0.08 (first 50) -> 3e-5 (last 50); grad norm 0.02 -> 4e-4. Single batches reach
  15-60x the preceding median (e.g. 5e-5 -> 3e-3), all below 0.5% of the initial loss: not a real spike.
"""

from __future__ import annotations

import copy

import torch
from _common import fit
from _thirteenth_lib import (
    GCN,
    MDN,
    EpsNet,
    Lion,
    RealNVP,
    TabularNet,
    audio_net,
    bce,
    diffusion_batches,
    focal_loss,
    gen,
    inverse_sine,
    kd_batches,
    kd_loss,
    mdn_nll,
    mean_of,
    random_teacher,
    sbm_graphs,
    tabular_batches,
    tone_batches,
    two_moons,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

CE = nn.CrossEntropyLoss()


def train_gcn_normalized(watch, seed):
    # Four SBM graphs per step as one block-diagonal dense adjacency (one graph per step made the loss
    # jump 5-14x on single hard graphs).
    graphs = sbm_graphs(nodes=48, p_in=0.4, p_out=0.05, seed=seed)

    def data(step):
        parts = [graphs(4 * step + k) for k in range(4)]
        x = torch.cat([p[0][0] for p in parts])
        adj = torch.block_diag(*[p[0][1] for p in parts])
        return (x, adj), torch.cat([p[1] for p in parts])

    torch.manual_seed(seed)
    model = GCN(8, 32, 4, layers=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=CE)


def train_flow_realnvp(watch, seed):
    # NLL of a RealNVP on scaled two-moons: it falls through zero and ends negative.
    data = two_moons(seed=seed, scale=0.25)
    torch.manual_seed(seed)
    model = RealNVP()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=mean_of)


def train_diffusion(watch, seed):
    # DDPM noise-prediction MSE over uniformly random timesteps: noisy by construction.
    data = diffusion_batches(seed=seed)
    torch.manual_seed(seed)
    model = EpsNet()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    fit(watch, model, opt, steps=500, batch_at=data, loss_fn=F.mse_loss)


class Policy(nn.Module):
    def __init__(self, dim: int = 8, arms: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 32), nn.Tanh(), nn.Linear(32, arms))

    def forward(self, x):
        return self.net(x)


def train_reinforce_bandit(watch, seed):
    # REINFORCE on a contextual bandit (6 arms, Gaussian reward noise sd 1) with a running-mean baseline.
    # The surrogate loss -(r - b) log pi is zero-mean noise that changes sign every few steps.
    tg = torch.Generator().manual_seed(seed + 41)
    arm_w = torch.randn(8, 6, generator=tg)
    torch.manual_seed(seed)
    model = Policy()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    mon = watch(model, opt)
    baseline = 0.0
    for step in range(400):
        g = gen(seed, step, salt=43)
        ctx = torch.randn(64, 8, generator=g)
        logits = model(ctx)
        probs = torch.softmax(logits, 1)
        action = torch.multinomial(probs.detach(), 1, generator=g).squeeze(1)
        mean_reward = (ctx @ arm_w).gather(1, action[:, None]).squeeze(1) / 2
        reward = mean_reward + torch.randn(64, generator=g)
        logp = torch.log_softmax(logits, 1).gather(1, action[:, None]).squeeze(1)
        adv = reward - baseline
        loss = -(adv * logp).mean() - 0.01 * -(probs * torch.log_softmax(logits, 1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        baseline = 0.9 * baseline + 0.1 * float(reward.mean())
        mon.step(loss.detach(), avg_reward=float(reward.mean()))


class Encoder(nn.Module):
    def __init__(self, dim: int = 16, out: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, out))

    def forward(self, x):
        if isinstance(x, (tuple, list)):
            return torch.stack([self.net(v) for v in x])
        return self.net(x)


def cluster_batches(seed, n_classes=8, dim=16, spread=1.4, batch=64):
    centers = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(seed + 53))

    def sample(g, labels):
        return centers[labels] + spread * torch.randn(len(labels), dim, generator=g)

    return centers, sample


def train_triplet(watch, seed):
    # Triplet margin loss on overlapping Gaussian clusters with random triplets: the loss gets small
    # (many triplets already satisfied) but stays positive.
    _, sample = cluster_batches(seed)

    def data(step):
        g = gen(seed, step, salt=59)
        a = torch.randint(0, 8, (64,), generator=g)
        n = (a + torch.randint(1, 8, (64,), generator=g)) % 8
        return (sample(g, a), sample(g, a), sample(g, n)), torch.zeros(64)

    torch.manual_seed(seed)
    model = Encoder()
    opt = torch.optim.RAdam(model.parameters(), lr=1e-3)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=data,
        loss_fn=lambda e, _y: F.triplet_margin_loss(e[0], e[1], e[2], margin=1.0),
    )


def train_infonce(watch, seed):
    # InfoNCE (SimCLR-style, temperature 0.07) between two noisy views; low temperature -> large but
    # stable gradients; SGD with momentum.
    _, sample = cluster_batches(seed, n_classes=32, spread=0.6)

    def data(step):
        g = gen(seed, step, salt=61)
        base = sample(g, torch.randint(0, 32, (128,), generator=g))
        v1 = base + 0.3 * torch.randn(base.shape, generator=g)
        v2 = base * (0.8 + 0.4 * torch.rand(128, 1, generator=g)) + 0.3 * torch.randn(base.shape, generator=g)
        return (v1, v2), torch.arange(128)

    def info_nce(e, labels):
        z1, z2 = F.normalize(e[0], dim=1), F.normalize(e[1], dim=1)
        logits = z1 @ z2.T / 0.07
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

    torch.manual_seed(seed)
    model = Encoder(out=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=info_nce)


def train_tabular_big_embedding(watch, seed):
    # 20k-row item embedding (Zipf item ids; each step touches <= 64 rows, most rows never) with Adagrad.
    data = tabular_batches(seed=seed, zipf_items=20_000)
    torch.manual_seed(seed)
    model = TabularNet(items=20_000, item_dim=16)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=bce)


def train_audio_sgdr(watch, seed):
    # 1D conv audio classifier with BatchNorm, SGD + cosine warm restarts every 100 steps (LR jumps back up).
    data = tone_batches(seed=seed, batch=64, noise=1.5)
    torch.manual_seed(seed)
    model = audio_net(norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=100)
    fit(watch, model, opt, steps=500, batch_at=data, loss_fn=CE, scheduler=sched)


def train_mdn_plateau(watch, seed):
    # MDN on the multi-valued inverse-sine problem (stable log-sum-exp NLL). As the component sigmas shrink
    # the NLL goes from +1.1 to about -1.05 and the gradient norm grows ~15x (large but stable).
    data = inverse_sine(seed=seed)
    torch.manual_seed(seed)
    model = MDN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=600, batch_at=data, loss_fn=mdn_nll)


def train_distill_smoothing_ema(watch, seed):
    # KD from a fixed teacher plus label-smoothed CE (floor well above 0), RAdam, and an EMA copy of the
    # student (the EMA is evaluated, never stepped). Loss flattens at its floor for the last ~300 steps.
    teacher = random_teacher(seed=seed)
    data = kd_batches(teacher, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.RAdam(model.parameters(), lr=3e-3)
    loss_fn = kd_loss(T=4.0, alpha=0.7, smoothing=0.2)

    def ema_update(step, m, o):
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), m.parameters(), strict=True):
                pe.mul_(0.99).add_(pm, alpha=0.01)

    val = lambda i: data(500_000 + i)  # noqa: E731
    fit(watch, model, opt, steps=500, batch_at=data, loss_fn=loss_fn, before_step=ema_update, val_at=val, val_every=10)


class MultiTask(nn.Module):
    """Shared trunk, a tied-weight autoencoder head (decoder = encoder.T), a classifier and a regressor."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.enc = nn.Linear(dim, 32)
        self.trunk = nn.Sequential(nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.cls = nn.Linear(32, 4)
        self.reg = nn.Linear(32, 1)

    def forward(self, x):
        h = self.enc(x)
        recon = torch.tanh(h) @ self.enc.weight  # weight tying
        z = self.trunk(h)
        return self.cls(z), self.reg(z).squeeze(1), recon, x


def train_lion_multitask_accum(watch, seed):
    # Hand-written Lion, 3 weighted losses (1.0 CE + 0.5 MSE + 0.1 tied-AE recon), 4-way gradient accumulation.
    tg = torch.Generator().manual_seed(seed + 71)
    wc, wr = torch.randn(16, 4, generator=tg), torch.randn(16, generator=tg) / 4

    def data(i):
        g = gen(seed, i, salt=73)
        x = torch.randn(32, 16, generator=g)
        return x, torch.stack([(x @ wc).argmax(1).float(), torch.sin(x @ wr)], 1)

    def loss_fn(out, y):
        logits, reg, recon, x = out
        return F.cross_entropy(logits, y[:, 0].long()) + 0.5 * F.mse_loss(reg, y[:, 1]) + 0.1 * F.mse_loss(recon, x)

    torch.manual_seed(seed)
    model = MultiTask()
    opt = Lion(model.parameters(), lr=3e-4, weight_decay=0.1)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=loss_fn, accumulate=4)


def train_focal_nadam(watch, seed):
    # Focal loss (gamma 2, log-softmax form) on an easy quadrant-image task with NAdam: the loss gets very
    # small (easy examples are down-weighted by (1-pt)^2) while accuracy stays at 100%.
    def data(step):
        g = gen(seed, step, salt=79)
        y = torch.randint(0, 4, (32,), generator=g)
        x = 0.5 * torch.randn(32, 1, 8, 8, generator=g)
        for q in range(4):
            r, c = divmod(q, 2)
            x[y == q, :, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4] += 1.0
        return x, y

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    opt = torch.optim.NAdam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=focal_loss(2.0))


def _h(name, desc, fn, tags, allow=frozenset()):
    return Scenario(f"healthy13_{name}", desc, fn, allow=allow, tags=frozenset(tags))


SCENARIOS = [
    _h(
        "gcn_normalized",
        "3-layer GCN, symmetric-normalised dense adjacency, Adam",
        train_gcn_normalized,
        {"gnn", "adam"},
    ),
    _h("flow_realnvp_negative_nll", "RealNVP on two-moons; NLL crosses zero", train_flow_realnvp, {"flow", "adam"}),
    _h(
        "diffusion_eps_mse",
        "tiny DDPM noise-prediction MSE over random timesteps",
        train_diffusion,
        {"diffusion", "adamw"},
    ),
    _h(
        "reinforce_bandit",
        "REINFORCE with baseline on a noisy contextual bandit",
        train_reinforce_bandit,
        {"rl", "adam"},
    ),
    _h("triplet_radam", "triplet margin loss, random triplets, RAdam", train_triplet, {"metric", "radam"}),
    _h(
        "infonce_low_temperature",
        "InfoNCE at temperature 0.07 with SGD momentum",
        train_infonce,
        {"contrastive", "sgd"},
    ),
    _h(
        "tabular_big_embedding_adagrad",
        "20k-row Zipf item embedding with Adagrad",
        train_tabular_big_embedding,
        {"tabular", "embeddings", "adagrad"},
    ),
    _h("audio_sgdr", "1D conv + BN with cosine warm restarts", train_audio_sgdr, {"conv1d", "sgd", "schedule"}),
    _h(
        "mdn_sharpening",
        "MDN on inverse sine; NLL goes negative, grad norm grows ~15x as sigmas shrink",
        train_mdn_plateau,
        {"mdn", "adam"},
    ),
    _h(
        "distill_smoothing_ema",
        "KD + label smoothing + EMA copy, RAdam; flat loss floor",
        train_distill_smoothing_ema,
        {"distillation", "radam", "ema"},
    ),
    _h(
        "lion_multitask_accum",
        "hand-written Lion, weighted multi-task with tied AE, grad accumulation 4",
        train_lion_multitask_accum,
        {"lion", "multitask", "accumulation"},
    ),
    _h(
        "focal_nadam_tiny_loss",
        "focal loss on an easy task with NAdam; loss becomes tiny",
        train_focal_nadam,
        {"focal", "nadam"},
    ),
]
