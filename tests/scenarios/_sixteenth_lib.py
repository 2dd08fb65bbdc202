"""Set 16 helpers: data generators, small models and one generic training loop.

All data come from private ``torch.Generator`` objects seeded by (seed, step), and every model is built
right after ``torch.manual_seed(seed)``, so a run depends on its seed alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

Batch = tuple[torch.Tensor, torch.Tensor]


def _g(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7 + salt * 104_729)


# ----------------------------------------------------------------------------------------------------------------
# The loop: `train_step(step)` does zero_grad / forward / backward / optimizer.step and returns the loss tensor.
# ----------------------------------------------------------------------------------------------------------------


def run_loop(
    watch: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    train_step: Callable[[int], torch.Tensor],
    val_loss: Callable[[], float] | None = None,
    val_every: int = 10,
    after_val: Callable[[float], None] | None = None,
) -> None:
    mon = watch(model, optimizer)
    for step in range(steps):
        model.train()
        loss = train_step(step)
        val = None
        if val_loss is not None and step % val_every == val_every - 1:
            model.eval()
            with torch.no_grad():
                val = float(val_loss())
            model.train()
            if after_val is not None:
                after_val(val)
        mon.step(loss.detach(), val_loss=val)


def standard_step(model, optimizer, batch_at, loss_fn, forward=None, clip=None, clip_before_backward_from=None):
    """A train_step closure: zero_grad, forward, loss, backward, (clip), step."""
    forward = forward or (lambda s, x: model(x))

    def train_step(step: int) -> torch.Tensor:
        x, y = batch_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(step, x), y)
        buggy = clip_before_backward_from is not None and step >= clip_before_backward_from
        if clip is not None and buggy:
            nn.utils.clip_grad_norm_(model.parameters(), clip)  # refactor bug: clips the (empty) grads
        loss.backward()
        if clip is not None and not buggy:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss

    return train_step


def mean_val(model, val_at, loss_fn, n=4, forward=None):
    forward = forward or (lambda x: model(x))
    return lambda: sum(float(loss_fn(forward(vx), vy)) for vx, vy in (val_at(i) for i in range(n))) / n


def fixed_subset(batch_at: Callable[[int], Batch], n_batches: int) -> Callable[[int], Batch]:
    cache = [batch_at(i) for i in range(n_batches)]
    return lambda step: cache[step % n_batches]


# ----------------------------------------------------------------------------------------------------------------
# 1. Images in [0, 1] (bar orientation) and a small CNN without normalisation.
# ----------------------------------------------------------------------------------------------------------------


def bar_images(seed: int, batch: int = 32, size: int = 12, noise: float = 0.15) -> Callable[[int], Batch]:
    """Pixels in [0, 1]: dark noisy background; class = orientation of one bright bar (-, |, \\, /)."""
    idx = torch.arange(size)

    def batch_at(step: int) -> Batch:
        g = _g(seed, step, 1)
        y = torch.randint(0, 4, (batch,), generator=g)
        off = torch.randint(2, size - 2, (batch,), generator=g)
        x = 0.2 + noise * torch.randn(batch, 1, size, size, generator=g)
        r, c = idx.view(1, size, 1), idx.view(1, 1, size)
        o = off.view(batch, 1, 1)
        masks = torch.stack(
            [
                (r == o).expand(batch, size, size),
                (c == o).expand(batch, size, size),
                (r - c == o - size // 2),
                (r + c == o + size // 2),
            ],
            dim=1,
        )  # batch x 4 x size x size
        m = masks[torch.arange(batch), y].float()
        x[:, 0] += 0.6 * m
        return x.clamp(0.0, 1.0), y

    return batch_at


def small_cnn(classes: int = 4) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    )


# ----------------------------------------------------------------------------------------------------------------
# 2. Raw multichannel sensor signals (offsets ~1000 units) and 1-D conv nets.
# ----------------------------------------------------------------------------------------------------------------


def sensor_signals(
    seed: int,
    batch: int = 32,
    channels: int = 6,
    length: int = 48,
    label_noise: float = 0.0,
    amp: float = 1.0,
    stuck_at: int | None = None,
    stuck_rows: int = 8,
) -> Callable[[int], Batch]:
    """Raw readings: channel offsets ~U(900, 1100) and gains ~U(1, 2.5) (fixed per seed), unit noise, plus a
    sine burst whose frequency is the class (4 classes) at a random position, with a per-channel gain.

    From the batch at ``stuck_at`` on (if given), channel 2 of the first ``stuck_rows`` samples is a stuck sensor:
    its offset plus +-1e-3 dither, no signal.
    """
    gen = torch.Generator().manual_seed(seed + 11)
    offset = 900 + 200 * torch.rand(channels, 1, generator=gen)
    gain = 1.0 + 1.5 * torch.rand(channels, 1, generator=gen)
    mix = torch.randn(channels, 1, generator=gen)
    freqs = torch.tensor([0.08, 0.16, 0.26, 0.38])
    t = torch.arange(length).float()

    def batch_at(step: int) -> Batch:
        g = _g(seed, step, 2)
        y = torch.randint(0, 4, (batch,), generator=g)
        pos = torch.randint(0, length - 16, (batch,), generator=g)
        phase = 2 * math.pi * torch.rand(batch, 1, generator=g)
        window = ((t.view(1, -1) >= pos.view(-1, 1)) & (t.view(1, -1) < pos.view(-1, 1) + 16)).float()
        burst = amp * torch.sin(2 * math.pi * freqs[y].view(-1, 1) * t.view(1, -1) + phase) * window  # B x T
        x = torch.randn(batch, channels, length, generator=g) + mix.view(1, channels, 1) * burst.view(batch, 1, length)
        x = offset.view(1, channels, 1) + gain.view(1, channels, 1) * x
        if stuck_at is not None and step >= stuck_at:
            dither = 1e-3 * torch.randn(stuck_rows, length, generator=g)
            x[:stuck_rows, 2] = offset[2, 0] + dither
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, 4, (batch,), generator=g), y)
        return x, y

    return batch_at


class Standardise(nn.Module):
    """Per-sample, per-channel standardisation over time. ``one_pass``: var = E[x^2] - E[x]^2 (the bug)."""

    def __init__(self, one_pass: bool) -> None:
        super().__init__()
        self.one_pass = one_pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=-1, keepdim=True)
        if self.one_pass:
            var = (x * x).mean(dim=-1, keepdim=True) - mu * mu
        else:
            var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-5)


class GradMultiply(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (fairseq's feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class SensorNet(nn.Module):
    """Standardise -> conv feature extractor (3 layers) -> [grad multiplier] -> context conv -> pool -> head."""

    def __init__(self, channels: int = 6, one_pass: bool = False, feature_grad_mult: float = 1.0) -> None:
        super().__init__()
        self.norm = Standardise(one_pass)
        self.features = nn.Sequential(
            nn.Conv1d(channels, 16, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(16, 16, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(16, 24, 5, padding=4, dilation=2),
            nn.ReLU(),
        )
        self.context = nn.Sequential(nn.Conv1d(24, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 4)
        self.feature_grad_mult = feature_grad_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(self.norm(x))
        if self.feature_grad_mult != 1.0:
            f = GradMultiply.apply(f, self.feature_grad_mult)
        return self.head(self.context(f).mean(dim=-1))


# ----------------------------------------------------------------------------------------------------------------
# 3. A small pre-LN transformer sequence classifier with dropout.
# ----------------------------------------------------------------------------------------------------------------


class SeqTransformer(nn.Module):
    def __init__(self, dim=8, d_model=32, layers=2, classes=4, length=12, dropout=0.1, detach_encoder=False):
        super().__init__()
        self.embed = nn.Linear(dim, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(1, length, d_model))
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d_model, nhead=4, dim_feedforward=64, dropout=dropout, batch_first=True, norm_first=True
            ),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)
        self.detach_encoder = detach_encoder

    def forward(self, x):
        h = self.encoder(self.embed(x) + self.pos)
        if self.detach_encoder:
            h = h.detach()  # left over from a linear-probe experiment
        return self.head(self.norm(h).mean(dim=1))


def set_dropout(model: nn.Module, p: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def seq_teacher(
    seed: int, batch: int = 32, length: int = 12, dim: int = 8, label_noise: float = 0.0, signed: bool = False
):
    """Class = argmax of a fixed linear map of the time-sum (``signed``: first-half sum minus second-half sum)."""
    gen = torch.Generator().manual_seed(seed + 23)
    teacher = torch.randn(dim, 4, generator=gen)
    sign = torch.cat([torch.ones(length // 2), -torch.ones(length - length // 2)]).view(1, length, 1)
    if not signed:
        sign = torch.ones(1, length, 1)

    def batch_at(step: int) -> Batch:
        g = _g(seed, step, 3)
        x = torch.randn(batch, length, dim, generator=g)
        y = ((x * sign).sum(dim=1) @ teacher).argmax(dim=1)
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, 4, (batch,), generator=g), y)
        return x, y

    return batch_at


# ----------------------------------------------------------------------------------------------------------------
# 4. Graphs: a fresh stochastic-block-model graph per step; dense GCN for node classification.
# ----------------------------------------------------------------------------------------------------------------


def sbm_graphs(seed: int, nodes: int = 96, feat: int = 8, p_in: float = 0.12, p_out: float = 0.02, signal=0.6):
    """Returns batch_at(step) -> ((A_hat, X), y). Communities = classes (4); features = weak noisy class signal."""
    gen = torch.Generator().manual_seed(seed + 31)
    centers = torch.randn(4, feat, generator=gen)

    def batch_at(step: int):
        g = _g(seed, step, 4)
        y = torch.randint(0, 4, (nodes,), generator=g)
        same = y.view(-1, 1) == y.view(1, -1)
        prob = torch.where(same, torch.tensor(p_in), torch.tensor(p_out))
        upper = torch.triu((torch.rand(nodes, nodes, generator=g) < prob).float(), diagonal=1)
        a = upper + upper.T + torch.eye(nodes)
        dinv = a.sum(1).rsqrt()
        a_hat = dinv.view(-1, 1) * a * dinv.view(1, -1)
        x = signal * centers[y] + torch.randn(nodes, feat, generator=g)
        return (a_hat, x), y

    return batch_at


class GCN(nn.Module):
    def __init__(self, feat: int = 8, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.w1 = nn.Linear(feat, hidden)
        self.w2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)
        self.no_grad_propagation = False

    def propagate(self, a, x):
        h = torch.relu(a @ self.w1(x))
        return torch.relu(a @ self.w2(h))

    def forward(self, graph):
        a, x = graph
        if self.no_grad_propagation:
            with torch.no_grad():  # "cache the propagated features" refactor
                h = self.propagate(a, x)
        else:
            h = self.propagate(a, x)
        return self.out(a @ h)


# ----------------------------------------------------------------------------------------------------------------
# 5. Recommenders: implicit-feedback clicks with tag-based items; explicit ratings for matrix factorisation.
# ----------------------------------------------------------------------------------------------------------------


class ClickWorld:
    """Users with latent tastes, items described by 1-3 tags (tag vectors latent); click ~ Bernoulli(sigmoid(4 u.v)).

    From step ``cold_from`` on (if given) the first ``cold_rows`` examples of each batch are new items with no tags.
    """

    def __init__(
        self,
        seed: int,
        users: int = 200,
        items: int = 300,
        tags: int = 40,
        dim: int = 4,
        batch: int = 64,
        cold_from: int | None = None,
        cold_rows: int = 2,
    ) -> None:
        gen = torch.Generator().manual_seed(seed + 41)
        self.seed, self.batch, self.users, self.items, self.tags = seed, batch, users, items, tags
        self.user_vec = torch.randn(users, dim, generator=gen) / dim**0.5
        self.tag_vec = torch.randn(tags, dim, generator=gen) / dim**0.5
        n_tags = torch.randint(1, 4, (items,), generator=gen)
        self.item_tags = [torch.randint(0, tags, (int(k),), generator=gen) for k in n_tags]
        self.item_vec = torch.stack([self.tag_vec[t].mean(0) for t in self.item_tags])
        self.cold_from, self.cold_rows = cold_from, cold_rows

    def batch_at(self, step: int):
        g = _g(self.seed, step, 5)
        u = torch.randint(0, self.users, (self.batch,), generator=g)
        i = torch.randint(0, self.items, (self.batch,), generator=g)
        logits = 4 * (self.user_vec[u] * self.item_vec[i]).sum(1)
        click = (torch.rand(self.batch, generator=g) < torch.sigmoid(logits)).float()
        bags = [self.item_tags[int(k)] for k in i]
        if self.cold_from is not None and step >= self.cold_from:
            for r in range(self.cold_rows):
                bags[r] = torch.zeros(0, dtype=torch.long)  # a new item with no metadata yet
                click[r] = float(torch.rand(1, generator=g) < 0.5)
        offsets = torch.tensor([0] + [len(b) for b in bags[:-1]]).cumsum(0)
        return (u, torch.cat(bags), offsets), click


class TwoTower(nn.Module):
    def __init__(self, users: int = 200, tags: int = 40, dim: int = 16, scale: float = 5.0, safe_cosine=False):
        super().__init__()
        self.user = nn.Embedding(users, dim)
        self.user_proj = nn.Linear(dim, dim)
        self.item = nn.EmbeddingBag(tags, dim, mode="mean")
        self.scale = scale
        self.safe_cosine = safe_cosine

    def forward(self, batch):
        u_ids, tag_ids, offsets = batch
        u = self.user_proj(self.user(u_ids))
        v = self.item(tag_ids, offsets)
        if self.safe_cosine:
            cos = F.cosine_similarity(u, v, dim=-1)
        else:
            cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
        return self.scale * cos


def ratings(seed: int, users: int = 100, items: int = 150, dim: int = 4, batch: int = 256, noise: float = 0.3):
    gen = torch.Generator().manual_seed(seed + 43)
    uv = torch.randn(users, dim, generator=gen) / dim**0.25
    iv = torch.randn(items, dim, generator=gen) / dim**0.25

    def batch_at(step: int):
        g = _g(seed, step, 6)
        u = torch.randint(0, users, (batch,), generator=g)
        i = torch.randint(0, items, (batch,), generator=g)
        r = (uv[u] * iv[i]).sum(1) + noise * torch.randn(batch, generator=g)
        return (u, i), r

    return batch_at


class MF(nn.Module):
    def __init__(self, users: int = 100, items: int = 150, dim: int = 16) -> None:
        super().__init__()
        self.p = nn.Embedding(users, dim)
        self.q = nn.Embedding(items, dim)
        self.ub = nn.Embedding(users, 1)
        self.ib = nn.Embedding(items, 1)
        for e in (self.p, self.q):
            nn.init.normal_(e.weight, std=0.1)
        for e in (self.ub, self.ib):
            nn.init.zeros_(e.weight)

    def forward(self, batch):
        u, i = batch
        return (self.p(u) * self.q(i)).sum(1) + self.ub(u).squeeze(1) + self.ib(i).squeeze(1)


# ----------------------------------------------------------------------------------------------------------------
# 6. Contrastive learning on clustered data with two noisy views.
# ----------------------------------------------------------------------------------------------------------------


def two_views(seed: int, batch: int = 64, dim: int = 32, clusters: int = 16):
    gen = torch.Generator().manual_seed(seed + 53)
    centers = 1.5 * torch.randn(clusters, dim, generator=gen)

    def batch_at(step: int):
        g = _g(seed, step, 7)
        c = torch.randint(0, clusters, (batch,), generator=g)
        x = centers[c] + torch.randn(batch, dim, generator=g)

        def view():
            keep = (torch.rand(batch, dim, generator=g) > 0.2).float()
            return (x + 0.4 * torch.randn(batch, dim, generator=g)) * keep

        return view(), view()

    return batch_at


def encoder_mlp(dim: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))


def info_nce_naive(z1: torch.Tensor, z2: torch.Tensor, tau) -> torch.Tensor:
    """Hand-written InfoNCE: exp(sim / tau) without subtracting the row maximum."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    e = torch.exp(z1 @ z2.T / tau)
    return -torch.log(e.diagonal() / e.sum(dim=1)).mean()


def info_nce(z1: torch.Tensor, z2: torch.Tensor, tau) -> torch.Tensor:
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    logits = z1 @ z2.T / tau
    return F.cross_entropy(logits, torch.arange(len(z1)))


# ----------------------------------------------------------------------------------------------------------------
# 7. Highway network with a fake-quantised activation (quantisation-aware training, straight-through estimator).
# ----------------------------------------------------------------------------------------------------------------


def nonlinear_teacher(seed: int, dim: int = 16, batch: int = 64):
    gen = torch.Generator().manual_seed(seed + 61)
    a = torch.randn(dim, 32, generator=gen) / dim**0.5
    b = torch.randn(32, 4, generator=gen) / 32**0.5

    def batch_at(step: int):
        g = _g(seed, step, 8)
        x = torch.randn(batch, dim, generator=g)
        y = (torch.tanh(2.0 * x @ a) @ b).argmax(1)
        return x, y

    return batch_at


class FakeQuantSTE(torch.autograd.Function):
    """Round to a 1/16 grid clipped to [-4, 4]; the backward passes the gradient inside the range (STE)."""

    @staticmethod
    def forward(ctx, x, buggy_mask):
        ctx.save_for_backward(x)
        ctx.buggy = buggy_mask
        return torch.round(x.clamp(-4.0, 4.0) * 16) / 16

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.buggy:
            inside = (x < -4.0) & (x > 4.0)  # meant (x >= -4) & (x <= 4): never true
        else:
            inside = (x >= -4.0) & (x <= 4.0)
        return grad * inside.to(grad.dtype), None


class Highway(nn.Module):
    def __init__(self, dim: int, gate_bias: float) -> None:
        super().__init__()
        self.h = nn.Linear(dim, dim)
        self.t = nn.Linear(dim, dim)
        nn.init.constant_(self.t.bias, gate_bias)

    def forward(self, x):
        t = torch.sigmoid(self.t(x))
        return t * torch.relu(self.h(x)) + (1 - t) * x


class QuantHighwayNet(nn.Module):
    def __init__(self, dim: int = 16, layers: int = 4, gate_bias: float = -2.0, quant_after: int = 3, buggy_ste=False):
        super().__init__()
        self.blocks = nn.ModuleList([Highway(dim, gate_bias) for _ in range(layers)])
        self.head = nn.Linear(dim, 4)
        self.quant_after, self.buggy_ste = quant_after, buggy_ste

    def forward(self, x):
        for k, block in enumerate(self.blocks):
            x = block(x)
            if k + 1 == self.quant_after:
                x = FakeQuantSTE.apply(x, self.buggy_ste)
        return self.head(x)


# ----------------------------------------------------------------------------------------------------------------
# 8. Hand-written GRU cell; sequence classifier and character LM.
# ----------------------------------------------------------------------------------------------------------------


class GRUCellHand(nn.Module):
    """h' = (1 - z) * n + z * h. ``scaled_init=False`` is the bug: weights from randn without 1/sqrt(fan_in)."""

    def __init__(self, inp: int, hidden: int, scaled_init: bool = True) -> None:
        super().__init__()
        s_in = 1 / inp**0.5 if scaled_init else 1.0
        s_h = 1 / hidden**0.5 if scaled_init else 1.0
        self.w = nn.Parameter(torch.randn(inp, 3 * hidden) * s_in)
        self.u = nn.Parameter(torch.randn(hidden, 3 * hidden) * s_h)
        self.b = nn.Parameter(torch.zeros(3 * hidden))
        self.hidden = hidden

    def forward(self, x_t, h):
        H = self.hidden
        gx = x_t @ self.w + self.b
        gh = h @ self.u
        z = torch.sigmoid(gx[:, :H] + gh[:, :H])
        r = torch.sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
        return (1 - z) * n + z * h


class GRUClassifier(nn.Module):
    def __init__(self, dim: int = 4, hidden: int = 48, classes: int = 4, scaled_init: bool = True) -> None:
        super().__init__()
        self.cell = GRUCellHand(dim, hidden, scaled_init)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], self.cell.hidden)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h)


def markov_text(seed: int, vocab: int = 24, batch: int = 16, length: int = 24):
    """Token sequences from a fixed sparse Markov chain (each token has 3 likely successors)."""
    gen = torch.Generator().manual_seed(seed + 71)
    logits = torch.full((vocab, vocab), -4.0)
    for a in range(vocab):
        nxt = torch.randperm(vocab, generator=gen)[:3]
        logits[a, nxt] = torch.tensor([2.0, 1.0, 0.5])
    probs = torch.softmax(logits, dim=1)

    def batch_at(step: int):
        g = _g(seed, step, 9)
        toks = torch.empty(batch, length + 1, dtype=torch.long)
        toks[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        for t in range(length):
            toks[:, t + 1] = torch.multinomial(probs[toks[:, t]], 1, generator=g).squeeze(1)
        return toks[:, :-1], toks[:, 1:]

    return batch_at


class GRULM(nn.Module):
    def __init__(self, vocab: int = 24, emb: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.cell = GRUCellHand(emb, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, toks):
        e = self.emb(toks)
        h = e.new_zeros(toks.shape[0], self.cell.hidden)
        outs = []
        for t in range(toks.shape[1]):
            h = self.cell(e[:, t], h)
            outs.append(h)
        return self.out(torch.stack(outs, dim=1))


def right_padded_sequences(seed: int, batch: int = 32, dim: int = 4, max_len: int = 64):
    """Variable-length sequences (6-12 valid steps), right-padded with zeros to ``max_len``; class = argmax of a
    fixed linear map of the sum of the valid steps. Returns ((x, lengths), y)."""
    gen = torch.Generator().manual_seed(seed + 83)
    teacher = torch.randn(dim, 4, generator=gen)

    def batch_at(step: int):
        g = _g(seed, step, 10)
        lengths = torch.randint(6, 13, (batch,), generator=g)
        x = torch.randn(batch, max_len, dim, generator=g)
        x = x * (torch.arange(max_len).view(1, -1) < lengths.view(-1, 1)).float().unsqueeze(-1)
        return (x, lengths), (x.sum(1) @ teacher).argmax(1)

    return batch_at


class PaddedGRUClassifier(nn.Module):
    """nn.GRU over right-padded batches. ``last_valid=False`` is the bug: reads out[:, -1] (after the padding)."""

    def __init__(self, dim: int = 4, hidden: int = 48, last_valid: bool = True) -> None:
        super().__init__()
        self.rnn = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 4)
        self.last_valid = last_valid

    def forward(self, inp):
        x, lengths = inp
        out, _ = self.rnn(x)
        h = out[torch.arange(len(lengths)), lengths - 1] if self.last_valid else out[:, -1]
        return self.head(h)


def lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def quiet_scheduler_warnings() -> None:
    warnings.filterwarnings("ignore", message="The epoch parameter in `scheduler.step\\(\\)`")
