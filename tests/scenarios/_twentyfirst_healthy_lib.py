"""Set 21 helpers for the healthy controls: synthetic data, small models, a hand-written Muon optimizer, DP-SGD
per-sample clipping and a batched grid-world for PPO.

Every data generator draws from private ``torch.Generator`` objects seeded by (seed, step, salt); every model is
built right after ``torch.manual_seed(seed)``, so a run depends on its seed alone. The loop (run_loop / simple_step /
mean_val) is set 18's, shared. ``DIAG`` (the set's ``_twentyfirst_lib.DIAG`` when that module exists) collects a few
numbers a train function computes for the offline measurement script; training never reads it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from _eighteenth_lib import mean_val, run_loop, simple_step  # noqa: F401  (re-exported for the scenario file)
from torch import nn
from torch.nn import functional as F

try:  # the set's shared DIAG dict, read by _measure.py; a private one when the set has no _twentyfirst_lib
    from _twentyfirst_lib import DIAG
except ImportError:  # pragma: no cover
    DIAG: dict[str, Any] = {}

torch.set_num_threads(1)

Batch = tuple[Any, Any]
VAL = 10**6  # held-out batches come from steps >= VAL of the same generator (never trained on)


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_039 + step * 31 + salt * 7_919_129 + 21)


# ----------------------------------------------------------------------------------------------------------------
# 1. Tabular data labelled by a fixed random tanh MLP teacher (classes = argmax of its logits); `soft_temp`: the
#    batch also carries the teacher's softmax(logits / soft_temp) (soft labels with a large entropy).
# ----------------------------------------------------------------------------------------------------------------


def teacher_mlp_data(seed, dim=16, classes=8, batch=64, hidden=16, soft_temp=None):
    g0 = torch.Generator().manual_seed(seed + 2101)
    w1 = torch.randn(dim, hidden, generator=g0) / dim**0.5
    w2 = torch.randn(hidden, classes, generator=g0) * 2.0 / hidden**0.5

    def logits_of(x):
        return torch.tanh(x @ w1) @ w2

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 1)
        x = torch.randn(batch, dim, generator=g)
        z = logits_of(x)
        if soft_temp is not None:
            return x, torch.softmax(z / soft_temp, -1)
        return x, z.argmax(-1)

    return batch_at


def soft_ce(logits, p):
    """Cross-entropy against soft targets: H(p) + KL(p || q), the textbook distillation / soft-label loss."""
    return -(p * F.log_softmax(logits, -1)).sum(-1).mean()


def entropy(p):
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


# ----------------------------------------------------------------------------------------------------------------
# 2. Hand-written Muon (momentum orthogonalised by a quintic Newton-Schulz iteration) for the hidden 2-D weights,
#    AdamW for everything else, in one optimizer (group 0 = Muon, group 1 = AdamW).
# ----------------------------------------------------------------------------------------------------------------


def newton_schulz(g, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, muon_params, adam_params, lr=0.02, momentum=0.95, adam_lr=3e-3, wd=0.01):
        groups = [
            {"params": list(muon_params), "lr": lr, "momentum": momentum, "muon": True},
            {"params": list(adam_params), "lr": adam_lr, "muon": False},
        ]
        super().__init__(groups, {"wd": wd})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if group["muon"]:
                    buf = st.setdefault("buf", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(p.grad)
                    u = newton_schulz(p.grad + group["momentum"] * buf)  # Nesterov
                    p.mul_(1 - group["lr"] * group["wd"])
                    p.add_(u, alpha=-group["lr"] * max(1.0, p.shape[0] / p.shape[1]) ** 0.5)
                else:
                    st["t"] = st.get("t", 0) + 1
                    m = st.setdefault("m", torch.zeros_like(p))
                    v = st.setdefault("v", torch.zeros_like(p))
                    m.mul_(0.9).add_(p.grad, alpha=0.1)
                    v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                    mh, vh = m / (1 - 0.9 ** st["t"]), v / (1 - 0.999 ** st["t"])
                    p.mul_(1 - group["lr"] * group["wd"])
                    p.addcdiv_(mh, vh.sqrt().add_(1e-8), value=-group["lr"])


class ResMLP(nn.Module):
    """Linear stem, `blocks` pre-LN residual blocks (LN, Linear, GELU, Linear), LN, linear head."""

    def __init__(self, dim=16, width=96, blocks=4, out=8) -> None:
        super().__init__()
        self.stem = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
            for _ in range(blocks)
        )
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, out)

    def forward(self, x):
        h = self.stem(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(self.norm(h))


# ----------------------------------------------------------------------------------------------------------------
# 3. DP-SGD: per-sample gradients (torch.func), each clipped to norm `clip`, summed, Gaussian noise of std
#    noise_mult * clip added, divided by the batch size; the result is written into .grad.
# ----------------------------------------------------------------------------------------------------------------


def dp_grads(model, loss_fn, x, y, clip, noise_mult, g):
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, xi, yi):
        return loss_fn(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    norms = torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in per.values()))
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    for k, p in model.named_parameters():
        t = (per[k] * factor.view(-1, *([1] * (per[k].dim() - 1)))).sum(0)
        p.grad = (t + noise_mult * clip * torch.randn(t.shape, generator=g)) / len(x)
    return float(norms.median())


# ----------------------------------------------------------------------------------------------------------------
# 4. Round-robin multi-task data: task 0 = teacher_mlp_data classes, task 1 = a small-amplitude regression on the
#    same inputs. SharedTrunk: one MLP trunk, one head per task.
# ----------------------------------------------------------------------------------------------------------------


def small_regression(seed, dim=16, batch=64, amp=0.2, noise=0.02):
    g0 = torch.Generator().manual_seed(seed + 2104)
    w = torch.randn(dim, 2, generator=g0) / dim**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 4)
        x = torch.randn(batch, dim, generator=g)
        y = amp * torch.tanh(x @ w) + noise * torch.randn(batch, 2, generator=g)
        return x, y

    return batch_at


class SharedTrunk(nn.Module):
    def __init__(self, dim=16, width=128, outs=(8, 2)) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(width, o) for o in outs)

    def forward(self, x, task=0):
        return self.heads[task](self.trunk(x))


# ----------------------------------------------------------------------------------------------------------------
# 5. Discrete latents: x = sum over `groups` groups of a codebook vector picked by a categorical code (`values`
#    values each), plus noise 0.3. GumbelVAE: encoder logits per group, Gumbel-softmax relaxation at temperature tau
#    (noise drawn from a private generator), MLP decoder; Gaussian NLL (sigma 0.3) + KL of the code posterior to the
#    uniform prior.
# ----------------------------------------------------------------------------------------------------------------


def discrete_codes(seed, batch=64, dim=24, groups=4, values=8):
    book = 0.5 * torch.randn(groups, values, dim, generator=torch.Generator().manual_seed(seed + 2105))

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 5)
        z = torch.randint(0, values, (batch, groups), generator=g)
        x = book[torch.arange(groups), z].sum(1) + 0.3 * torch.randn(batch, dim, generator=g)
        return x, x

    return batch_at


class GumbelVAE(nn.Module):
    def __init__(self, dim=24, hidden=128, groups=4, values=8) -> None:
        super().__init__()
        self.groups, self.values = groups, values
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, groups * values))
        self.dec = nn.Sequential(nn.Linear(groups * values, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def terms(self, x, tau=1.0, g=None):
        """(Gaussian NLL of the reconstruction, KL to uniform) per sample, batch means; g None = hard argmax codes."""
        logits = self.enc(x).view(-1, self.groups, self.values)
        if g is None:
            code = F.one_hot(logits.argmax(-1), self.values).float()
        else:
            u = torch.rand(logits.shape, generator=g).clamp(1e-9, 1 - 1e-9)
            code = torch.softmax((logits - torch.log(-torch.log(u))) / tau, -1)
        rec = (self.dec(code.flatten(1)) - x).pow(2).sum(-1).mean() / 0.18  # Gaussian NLL, sigma 0.3
        q = torch.softmax(logits, -1)
        kl = (q * (torch.log_softmax(logits, -1) + math.log(self.values))).sum((-1, -2)).mean()
        return rec, kl


# ----------------------------------------------------------------------------------------------------------------
# 6. VAE data: 24-dim observations from a 3-dim latent through a fixed random tanh map, plus noise 0.1.
# ----------------------------------------------------------------------------------------------------------------


def latent_manifold(seed, batch=64, dim=24, latent=3):
    g0 = torch.Generator().manual_seed(seed + 2106)
    a = torch.randn(latent, 32, generator=g0)
    b = torch.randn(32, dim, generator=g0) / 32**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 6)
        z = torch.randn(batch, latent, generator=g)
        x = torch.tanh(z @ a) @ b + 0.1 * torch.randn(batch, dim, generator=g)
        return x, x

    return batch_at


class VAE(nn.Module):
    def __init__(self, dim=24, hidden=128, latent=8) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def terms(self, x, g=None):
        """(sum of squares / (2 * 0.1^2), KL) per sample, batch means; z sampled with `g` (the mean if None)."""
        mu, logvar = self.enc(x).chunk(2, -1)
        z = mu if g is None else mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
        rec = (self.dec(z) - x).pow(2).sum(-1).mean() / 0.02
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        return rec, kl


# ----------------------------------------------------------------------------------------------------------------
# 7. Rare events: 20 features, positive iff a fixed nonlinear score exceeds its 99th percentile (~1% positives).
# ----------------------------------------------------------------------------------------------------------------


def rare_events(seed, batch=256, dim=20):
    g0 = torch.Generator().manual_seed(seed + 2107)
    w = torch.randn(dim, generator=g0) / dim**0.5
    v = torch.randn(dim, generator=g0) / dim**0.5

    def score(x):
        return x @ w + 0.5 * (x @ v) ** 2

    thr = float(torch.quantile(score(torch.randn(200_000, dim, generator=g0)), 0.99))

    def batch_at(step: int) -> Batch:
        x = torch.randn(batch, dim, generator=gen(seed, step, 7))
        return x, (score(x) > thr).float()

    return batch_at


# ----------------------------------------------------------------------------------------------------------------
# 8. Striped images for progressive resizing: class = stripe orientation (0/45/90/135 deg, +-0.1 rad), 1.5-3 cycles
#    per image at a random phase, rendered at `size_at(step)` pixels a side, plus pixel noise of std `noise`.
# ----------------------------------------------------------------------------------------------------------------


def stripes(seed, batch=32, noise=1.5, size_at=lambda step: 24):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 8)
        s = size_at(step)
        r = (torch.arange(s).float() + 0.5) / s
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        y = torch.randint(0, 4, (batch,), generator=g)
        ang = y.float() * math.pi / 4 + 0.2 * (torch.rand(batch, generator=g) - 0.5)
        freq = 1.5 + 1.5 * torch.rand(batch, generator=g)
        ph = 2 * math.pi * torch.rand(batch, generator=g)
        u = xx.view(1, s, s) * torch.cos(ang).view(-1, 1, 1) + yy.view(1, s, s) * torch.sin(ang).view(-1, 1, 1)
        img = torch.sin(2 * math.pi * freq.view(-1, 1, 1) * u + ph.view(-1, 1, 1))
        return (img + noise * torch.randn(batch, s, s, generator=g)).unsqueeze(1), y

    return batch_at


def gap_cnn(width=24, classes=4) -> nn.Sequential:
    """Resolution-agnostic CNN: three conv3x3-BN-ReLU (the second one strided), global average pool, linear head."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    )


# ----------------------------------------------------------------------------------------------------------------
# 9. Batched size x size grid-world for PPO: the agent starts at the centre, a goal is drawn per episode (not the
#    centre), 4 actions (up/down/left/right, walls clamp), reward 1 on reaching the goal (the episode ends), -0.02 per
#    step otherwise, at most `horizon` steps. Observation: agent (x, y), goal (x, y) scaled to [-1, 1], time left.
# ----------------------------------------------------------------------------------------------------------------

MOVES = torch.tensor([[0, 1], [0, -1], [-1, 0], [1, 0]])


def grid_goals(g, n, size):
    goal = torch.randint(0, size, (n, 2), generator=g)
    goal[(goal == size // 2).all(-1)] = size - 1
    return goal


def grid_obs(pos, goal, t, horizon, size):
    c = size // 2
    left = torch.full((len(pos), 1), 1 - t / horizon)
    return torch.cat([(pos.float() - c) / c, (goal.float() - c) / c, left], -1)


class ActorCritic(nn.Module):
    def __init__(self, hidden=64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.pi, self.v = nn.Linear(hidden, 4), nn.Linear(hidden, 1)
        nn.init.normal_(self.pi.weight, std=0.01)
        nn.init.zeros_(self.pi.bias)

    def forward(self, obs):
        h = self.body(obs)
        return self.pi(h), self.v(h).squeeze(-1)


@torch.no_grad()
def rollout(model, g, n=128, size=7, horizon=12, greedy=False, gamma=0.99, lam=0.95):
    """n episodes in parallel. Returns (obs, actions, old log-probs, advantages, returns, mask) flattened over the
    valid (not yet finished) steps, and the mean episode return."""
    goal = grid_goals(g, n, size)
    pos = torch.full((n, 2), size // 2)
    alive = torch.ones(n, dtype=torch.bool)
    obs_l, act_l, logp_l, rew_l, val_l, alive_l = [], [], [], [], [], []
    ret = torch.zeros(n)
    for t in range(horizon):
        obs = grid_obs(pos, goal, t, horizon, size)
        logits, v = model(obs)
        if greedy:
            a = logits.argmax(-1)
        else:
            a = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(-1)
        pos = torch.where(alive.view(-1, 1), (pos + MOVES[a]).clamp(0, size - 1), pos)
        hit = (pos == goal).all(-1) & alive
        r = torch.where(hit, torch.ones(n), torch.full((n,), -0.02)) * alive.float()
        ret += r
        obs_l.append(obs)
        act_l.append(a)
        logp_l.append(torch.log_softmax(logits, -1).gather(1, a.view(-1, 1)).squeeze(1))
        rew_l.append(r)
        val_l.append(v)
        alive_l.append(alive.clone())
        alive = alive & ~hit
    # GAE over the time axis; a finished episode contributes nothing after its terminal step.
    adv = torch.zeros(horizon, n)
    last = torch.zeros(n)
    for t in reversed(range(horizon)):
        nxt_alive = alive_l[t + 1] if t + 1 < horizon else torch.zeros(n, dtype=torch.bool)
        nxt_v = val_l[t + 1] * nxt_alive.float() if t + 1 < horizon else torch.zeros(n)
        delta = rew_l[t] + gamma * nxt_v - val_l[t]
        last = delta + gamma * lam * nxt_alive.float() * last
        adv[t] = last * alive_l[t].float()
    mask = torch.stack(alive_l)
    vals = torch.stack(val_l)
    flat = (
        torch.stack(obs_l)[mask],
        torch.stack(act_l)[mask],
        torch.stack(logp_l)[mask],
        adv[mask],
        (adv + vals)[mask],
    )
    return flat, float(ret.mean())
