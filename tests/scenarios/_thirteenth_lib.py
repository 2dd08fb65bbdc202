"""Set 13 helpers: graph nets, flows, diffusion, RL, metric learning, tabular, 1D conv audio, MDN, KD, Lion.

Every generator draws from private torch.Generator objects seeded from the
scenario seed and the step; models are built after torch.manual_seed(seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7 + salt * 100_000_007)


# ----------------------------------------------------------------------------- graphs
def sbm_graphs(
    nodes: int = 64,
    classes: int = 4,
    p_in: float = 0.3,
    p_out: float = 0.03,
    feat: int = 8,
    noise: float = 1.5,
    seed: int = 0,
) -> Callable[[int], tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """A fresh stochastic-block-model graph per step: node features are noisy class means; label = block."""
    means = torch.randn(classes, feat, generator=torch.Generator().manual_seed(seed + 11))

    def batch_at(step: int):
        g = gen(seed, step)
        y = torch.randint(0, classes, (nodes,), generator=g)
        same = y[:, None] == y[None, :]
        p = torch.where(same, torch.tensor(p_in), torch.tensor(p_out))
        upper = (torch.rand(nodes, nodes, generator=g) < p).float().triu(1)
        adj = upper + upper.T
        x = means[y] + noise * torch.randn(nodes, feat, generator=g)
        return (x, adj), y

    return batch_at


def sym_norm(adj: torch.Tensor) -> torch.Tensor:
    a = adj + torch.eye(adj.shape[0])
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


class GCN(nn.Module):
    """Dense-adjacency GCN. ``normalize=False`` propagates with the raw A + I (the bug)."""

    def __init__(
        self,
        feat: int,
        hidden: int,
        out: int,
        layers: int = 2,
        act: type[nn.Module] = nn.ReLU,
        normalize: bool = True,
        readout: str = "node",
    ) -> None:
        super().__init__()
        widths = [feat] + [hidden] * (layers - 1)
        self.convs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:] + [hidden], strict=True))
        self.act = act()
        self.head = nn.Linear(hidden, out)
        self.normalize = normalize
        self.readout = readout

    def forward(self, inp):
        x, adj = inp
        a = sym_norm(adj) if self.normalize else adj + torch.eye(adj.shape[-1])
        h = x
        for conv in self.convs:
            h = self.act(a @ conv(h))
        if self.readout == "graph":
            h = h.mean(dim=-2)
        return self.head(h)


def sbm_graph_classification(
    n_graphs: int,
    nodes: int = 24,
    feat: int = 6,
    label_noise: float = 0.3,
    seed: int = 0,
    offset: int = 0,
    batch: int = 16,
):
    """Graph label = whether the graph is 2-block assortative (p_in high) or Erdos-Renyi; noisy labels; features weak."""

    def one(i: int):
        g = gen(seed, offset + i, salt=3)
        label = int(torch.randint(0, 2, (1,), generator=g))
        blocks = torch.randint(0, 2, (nodes,), generator=g)
        same = blocks[:, None] == blocks[None, :]
        if label:
            p = torch.where(same, torch.tensor(0.45), torch.tensor(0.05))
        else:
            p = torch.full((nodes, nodes), 0.25)
        upper = (torch.rand(nodes, nodes, generator=g) < p).float().triu(1)
        adj = upper + upper.T
        x = torch.randn(nodes, feat, generator=g)
        x[:, 0] += 0.5 * blocks.float()
        x[:, 1] += 0.35 * label  # weak per-node signal, strong after pooling
        if torch.rand(1, generator=g) < label_noise:
            label = int(torch.randint(0, 2, (1,), generator=g))
        return x, adj, label

    graphs = [one(i) for i in range(n_graphs)]

    def batch_at(step: int):
        idx = [(step * batch + k) % n_graphs for k in range(batch)]
        x = torch.stack([graphs[i][0] for i in idx])
        adj = torch.stack([graphs[i][1] for i in idx])
        y = torch.tensor([graphs[i][2] for i in idx])
        return (x, adj), y

    return batch_at


class BatchedGCN(nn.Module):
    """GCN over a batch of dense adjacencies, mean-pool readout, MLP head."""

    def __init__(self, feat: int, hidden: int, out: int, layers: int = 3) -> None:
        super().__init__()
        widths = [feat] + [hidden] * layers
        self.convs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, inp):
        x, adj = inp
        a = adj + torch.eye(adj.shape[-1])
        d = a.sum(-1).rsqrt()
        a = d[..., :, None] * a * d[..., None, :]
        h = x
        for conv in self.convs:
            h = torch.relu(a @ conv(h))
        return self.head(h.mean(dim=1))


# ----------------------------------------------------------------------------- flows
def two_moons(batch: int = 128, scale: float = 0.5, noise: float = 0.05, seed: int = 0):
    def batch_at(step: int):
        g = gen(seed, step, salt=5)
        t = math.pi * torch.rand(batch, generator=g)
        which = torch.randint(0, 2, (batch,), generator=g)
        x = torch.where(which == 0, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(which == 0, torch.sin(t), 0.5 - torch.sin(t))
        pts = torch.stack([x - 0.5, y - 0.25], dim=1) + noise * torch.randn(batch, 2, generator=g)
        return scale * pts * 2, torch.zeros(batch)

    return batch_at


class Coupling(nn.Module):
    def __init__(self, mask: torch.Tensor, hidden: int = 32, tanh_scale: bool = True) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4)
        )
        self.tanh_scale = tanh_scale

    def forward(self, x):
        xm = x * self.mask
        s, t = self.net(xm).chunk(2, dim=1)
        if self.tanh_scale:
            s = torch.tanh(s)
        s = s * (1 - self.mask)
        t = t * (1 - self.mask)
        y = xm + (1 - self.mask) * (x * torch.exp(s) + t)
        return y, s.sum(dim=1)


class RealNVP(nn.Module):
    """Affine-coupling flow on 2-D points; forward returns per-sample negative log-likelihood."""

    def __init__(self, layers: int = 6, hidden: int = 32) -> None:
        super().__init__()
        masks = [torch.tensor([1.0, 0.0]) if i % 2 == 0 else torch.tensor([0.0, 1.0]) for i in range(layers)]
        self.layers = nn.ModuleList(Coupling(m, hidden) for m in masks)

    def forward(self, x):
        logdet = torch.zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        logp = -0.5 * (x**2).sum(1) - math.log(2 * math.pi)
        return -(logp + logdet)


def mean_of(out, _y):
    return out.mean()


# ----------------------------------------------------------------------------- diffusion
def diffusion_batches(batch: int = 128, T: int = 100, seed: int = 0):
    """(x_t, t/T) -> eps for a DDPM with a linear beta schedule on a 2-D 8-Gaussian ring."""
    betas = torch.linspace(1e-4, 0.05, T)
    abar = torch.cumprod(1 - betas, 0)

    def batch_at(step: int):
        g = gen(seed, step, salt=7)
        k = torch.randint(0, 8, (batch,), generator=g).float()
        ang = 2 * math.pi * k / 8
        x0 = torch.stack([torch.cos(ang), torch.sin(ang)], 1) * 2 + 0.1 * torch.randn(batch, 2, generator=g)
        t = torch.randint(0, T, (batch,), generator=g)
        eps = torch.randn(batch, 2, generator=g)
        a = abar[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return (xt, t.float() / T), eps

    return batch_at


class EpsNet(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.freqs = nn.Parameter(torch.arange(1, 9).float(), requires_grad=False)
        self.net = nn.Sequential(
            nn.Linear(2 + 16, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, inp):
        xt, t = inp
        emb = torch.cat([torch.sin(t[:, None] * self.freqs), torch.cos(t[:, None] * self.freqs)], 1)
        return self.net(torch.cat([xt, emb], 1))


# ----------------------------------------------------------------------------- tabular
def tabular_batches(
    batch: int = 64, numeric: int = 8, cards: tuple[int, ...] = (10, 20, 50), seed: int = 0, zipf_items: int = 0
):
    """Click-like binary labels from numeric features + per-category effects (+ optional Zipf item ids)."""
    tg = torch.Generator().manual_seed(seed + 101)
    w = torch.randn(numeric, generator=tg) / numeric**0.5 * 2
    effects = [torch.randn(c, generator=tg) for c in cards]
    item_effect = torch.randn(zipf_items, generator=tg) * 1.5 if zipf_items else None
    if zipf_items:
        probs = 1.0 / torch.arange(1, zipf_items + 1).float() ** 1.1
        probs = probs / probs.sum()

    def batch_at(step: int):
        g = gen(seed, step, salt=9)
        xn = torch.randn(batch, numeric, generator=g)
        cats = torch.stack([torch.randint(0, c, (batch,), generator=g) for c in cards], 1)
        logit = torch.tanh(xn @ w) * 2 + sum(e[cats[:, i]] for i, e in enumerate(effects))
        items = None
        if zipf_items:
            items = torch.multinomial(probs, batch, replacement=True, generator=g)
            logit = logit + item_effect[items]
        y = (torch.rand(batch, generator=g) < torch.sigmoid(logit)).float()
        if zipf_items:
            return (xn, cats, items), y
        return (xn, cats), y

    return batch_at


class TabularNet(nn.Module):
    def __init__(
        self,
        numeric: int = 8,
        cards: tuple[int, ...] = (10, 20, 50),
        emb: int = 8,
        hidden: int = 64,
        items: int = 0,
        item_dim: int = 16,
        numeric_act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.numeric = nn.Sequential(nn.Linear(numeric, hidden), numeric_act())
        self.embs = nn.ModuleList(nn.Embedding(c, emb) for c in cards)
        self.items = nn.Embedding(items, item_dim) if items else None
        width = hidden + emb * len(cards) + (item_dim if items else 0)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, inp):
        xn, cats = inp[0], inp[1]
        parts = [self.numeric(xn)] + [e(cats[:, i]) for i, e in enumerate(self.embs)]
        if self.items is not None:
            parts.append(self.items(inp[2]))
        return self.head(torch.cat(parts, 1)).squeeze(1)


def bce(out, y):
    return F.binary_cross_entropy_with_logits(out, y)


# ----------------------------------------------------------------------------- 1D conv audio
def tone_batches(
    batch: int = 32,
    length: int = 128,
    classes: int = 4,
    noise: float = 0.8,
    seed: int = 0,
    silent_at: int | None = None,
):
    """Noisy sinusoids; class = frequency band. ``silent_at``: from that step on, the first clip is silence."""

    def batch_at(step: int):
        g = gen(seed, step, salt=13)
        y = torch.randint(0, classes, (batch,), generator=g)
        f = (3 + 4 * y.float() + torch.rand(batch, generator=g) * 2)[:, None]
        ph = 2 * math.pi * torch.rand(batch, 1, generator=g)
        t = torch.arange(length).float()[None, :] / length
        amp = 0.5 + torch.rand(batch, 1, generator=g)
        x = amp * torch.sin(2 * math.pi * f * t + ph) + noise * torch.randn(batch, length, generator=g)
        x = x[:, None, :]
        if silent_at is not None and step >= silent_at and step % 7 == silent_at % 7:
            x[0] = 0.0
        return x, y

    return batch_at


def audio_net(channels: int = 16, classes: int = 4, norm: bool = False) -> nn.Sequential:
    def block(i, o):
        return [nn.Conv1d(i, o, 5, padding=2)] + ([nn.BatchNorm1d(o)] if norm else []) + [nn.ReLU(), nn.MaxPool1d(2)]

    return nn.Sequential(
        *block(1, channels),
        *block(channels, channels),
        *block(channels, channels),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    )


# ----------------------------------------------------------------------------- MDN
def inverse_sine(batch: int = 128, seed: int = 0, sentinel_at: int | None = None, sentinel: float = -999.0):
    """Bishop's inverse problem: x = y + 0.3 sin(2 pi y) + noise; predict y from x (multi-valued)."""

    def batch_at(step: int):
        g = gen(seed, step, salt=17)
        y = torch.rand(batch, 1, generator=g)
        x = y + 0.3 * torch.sin(2 * math.pi * y) + 0.05 * torch.randn(batch, 1, generator=g)
        if sentinel_at is not None and step == sentinel_at:
            y = y.clone()
            y[3] = sentinel  # missing-value code left in the target column
        return x, y

    return batch_at


class MDN(nn.Module):
    def __init__(self, k: int = 5, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.pi = nn.Linear(hidden, k)
        self.mu = nn.Linear(hidden, k)
        self.log_sigma = nn.Linear(hidden, k)

    def forward(self, x):
        h = self.body(x)
        return self.pi(h), self.mu(h), self.log_sigma(h)


def mdn_nll(out, y):
    logits, mu, log_sigma = out
    logp = (
        torch.log_softmax(logits, 1) - 0.5 * ((y - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
    )
    return -torch.logsumexp(logp, 1).mean()


def mdn_nll_naive(out, y):
    """The textbook formula typed in directly: log of a sum of densities (underflows to log 0)."""
    logits, mu, log_sigma = out
    sigma = log_sigma.exp()
    pdf = torch.exp(-0.5 * ((y - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return -torch.log((torch.softmax(logits, 1) * pdf).sum(1)).mean()


# ----------------------------------------------------------------------------- KD
def kd_batches(
    teacher: nn.Module,
    dim: int = 16,
    batch: int = 64,
    seed: int = 0,
    bad_shard_at: int | None = None,
    bad_scale: float = 40.0,
):
    """Inputs with teacher logits; ``bad_shard_at``: that batch comes from a shard stored in other units."""

    def batch_at(step: int):
        g = gen(seed, step, salt=19)
        x = torch.randn(batch, dim, generator=g)
        if bad_shard_at is not None and step == bad_shard_at:
            x = x * bad_scale
        with torch.no_grad():
            t = teacher(x)
        return x, t

    return batch_at


def kd_loss(T: float = 2.0, alpha: float = 0.5, smoothing: float = 0.0):
    def loss(out, t):
        hard = t.argmax(1)
        soft = F.kl_div(F.log_softmax(out / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
        return alpha * soft + (1 - alpha) * F.cross_entropy(out, hard, label_smoothing=smoothing)

    return loss


def random_teacher(dim: int = 16, classes: int = 5, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed + 303)
    net = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / max(p.shape[-1], 1) ** 0.5))
    return net


# ----------------------------------------------------------------------------- Lion
class Lion(torch.optim.Optimizer):
    """Hand-written Lion (sign of interpolated momentum, decoupled weight decay)."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return None


def focal_loss(gamma: float = 2.0):
    def loss(logits, y):
        logp = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        return (-((1 - logp.exp()) ** gamma) * logp).mean()

    return loss


def focal_loss_from_probs(gamma: float = 2.0):
    """Focal loss typed from the paper: softmax, pick p_t, then log (no log-softmax)."""

    def loss(logits, y):
        pt = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        return (-((1 - pt) ** gamma) * torch.log(pt)).mean()

    return loss
