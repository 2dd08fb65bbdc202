"""Set 17 helpers: data generators, small models and one generic training loop.

All data come from private ``torch.Generator`` objects seeded by (seed, step, salt), and every model is built
right after ``torch.manual_seed(seed)``, so a run depends on its seed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

Batch = tuple[Any, torch.Tensor]
VAL = 10**6  # validation batches come from steps >= VAL of the same generator (never trained on)


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 13 + salt * 7_919_111)


# ----------------------------------------------------------------------------------------------------------------
# The loop. `train_step(step)` does zero_grad / forward / backward / optimizer.step and returns the loss tensor,
# or (loss, grad_norm) when it clips (the norm clip_grad_norm_ returned, passed on to mon.step).
# `val_loss(step)` returns the held-out loss; it runs every `val_every` steps in eval mode without gradients.
# ----------------------------------------------------------------------------------------------------------------


def run_loop(
    watch: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    train_step: Callable[[int], Any],
    val_loss: Callable[[int], float] | None = None,
    val_every: int = 10,
) -> None:
    mon = watch(model, optimizer)
    for step in range(steps):
        model.train()
        out = train_step(step)
        loss, grad_norm = out if isinstance(out, tuple) else (out, None)
        val = None
        if val_loss is not None and step % val_every == val_every - 1:
            model.eval()
            with torch.no_grad():
                val = float(val_loss(step))
            model.train()
        mon.step(loss.detach(), val_loss=val, grad_norm=grad_norm)


def standard_step(model, optimizer, batch_at, loss_fn, forward=None, clip=None, before=None):
    """A train_step closure: (before(step)), zero_grad, forward, loss, backward, (clip), step."""
    forward = forward or (lambda s, x: model(x))

    def train_step(step: int):
        if before is not None:
            before(step)
        x, y = batch_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(step, x), y)
        loss.backward()
        norm = None
        if clip is not None:
            norm = nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss if norm is None else (loss, norm)

    return train_step


def mean_val(model, val_at, loss_fn, n=4, forward=None):
    """Held-out loss: mean over the fixed batches val_at(0..n-1)."""
    forward = forward or (lambda x: model(x))
    return lambda step: sum(float(loss_fn(forward(vx), vy)) for vx, vy in (val_at(i) for i in range(n))) / n


def pipeline_val(model, val_at_step, loss_fn, n=4):
    """Held-out loss through the data pipeline in force at the current step: val_at_step(step)(i) for i < n."""
    return lambda step: sum(float(loss_fn(model(vx), vy)) for vx, vy in (val_at_step(step)(i) for i in range(n))) / n


def lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ----------------------------------------------------------------------------------------------------------------
# 1. Colour images: a coloured square on a noisy grey background; the class is the square's colour.
#    Classes 0 (orange-red) and 1 (azure) trade places when the R and B channels are swapped; 2 (magenta) and
#    3 (green) are symmetric under the swap.
# ----------------------------------------------------------------------------------------------------------------

PALETTE = torch.tensor([[1.0, 0.35, 0.0], [0.0, 0.35, 1.0], [0.9, 0.0, 0.9], [0.0, 0.8, 0.1]])


def colour_squares(seed: int, batch: int = 32, size: int = 12, noise: float = 0.25, bgr_from: int | None = None):
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 1)
        y = torch.randint(0, 4, (batch,), generator=g)
        x = 0.35 + noise * torch.randn(batch, 3, size, size, generator=g)
        side = torch.randint(3, 7, (batch, 1, 1), generator=g)
        r0 = (torch.rand(batch, 1, 1, generator=g) * (size - side + 1)).long()
        c0 = (torch.rand(batch, 1, 1, generator=g) * (size - side + 1)).long()
        mask = ((rows >= r0) & (rows < r0 + side) & (cols >= c0) & (cols < c0 + side)).float()
        gain = 0.5 + 0.5 * torch.rand(batch, 1, 1, 1, generator=g)
        x = x * (1 - mask.unsqueeze(1)) + mask.unsqueeze(1) * PALETTE[y].view(batch, 3, 1, 1) * gain
        x = x + 0.1 * torch.randn(batch, 3, 1, 1, generator=g)  # per-image colour cast
        if bgr_from is not None and step >= bgr_from:
            x = x[:, [2, 1, 0]]
        return x, y

    return batch_at


def bn_cnn3(classes: int = 4, width: int = 16) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
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
# 2. Gratings: sinusoidal gratings; class = orientation (4) or orientation x frequency band (8).
# ----------------------------------------------------------------------------------------------------------------


def gratings(seed: int, batch: int = 32, size: int = 12, noise: float = 1.0, contrast: float = 1.0, classes: int = 4):
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 2)
        y = torch.randint(0, classes, (batch,), generator=g)
        theta = (y % 4).float() * math.pi / 4 + 0.15 * torch.randn(batch, generator=g)
        band = (y // 4).float()
        freq = 0.5 + 0.6 * band + 0.15 * torch.rand(batch, generator=g)
        phase = 2 * math.pi * torch.rand(batch, generator=g)
        proj = torch.cos(theta).view(-1, 1, 1) * xx + torch.sin(theta).view(-1, 1, 1) * yy
        img = contrast * torch.sin(freq.view(-1, 1, 1) * proj + phase.view(-1, 1, 1))
        img = img + noise * torch.randn(batch, size, size, generator=g)
        return img.unsqueeze(1), y

    return batch_at


def bn_cnn1(classes: int = 4, width: int = 16) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    )


# ----------------------------------------------------------------------------------------------------------------
# 3. Session events for a GRU: 4 event features plus a time column; class = argmax of a fixed linear map of the
#    time-sum of the features. The time column is "seconds since session start / session length" (0..1); with
#    `epoch_seconds_from` the upstream schema change makes it raw Unix epoch seconds (~1.7e9) from that step on.
# ----------------------------------------------------------------------------------------------------------------


def session_events(seed: int, batch: int = 32, length: int = 16, feat: int = 4, epoch_seconds_from: int | None = None):
    teacher = torch.randn(feat, 4, generator=torch.Generator().manual_seed(seed + 301))
    rel = (torch.arange(length).float() / length).view(1, length, 1)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 3)
        x = torch.randn(batch, length, feat, generator=g)
        y = (x.sum(1) @ teacher).argmax(1)
        if epoch_seconds_from is not None and step >= epoch_seconds_from:
            start = 1.7e9 + torch.randint(0, 10**7, (batch, 1, 1), generator=g).float()
            t = start + 30.0 * torch.arange(length).float().view(1, length, 1)
        else:
            t = rel.expand(batch, length, 1)
        return torch.cat([x, t], dim=-1), y

    return batch_at


class GRUReadout(nn.Module):
    def __init__(self, dim: int = 5, hidden: int = 48, classes: int = 4) -> None:
        super().__init__()
        self.rnn = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


# ----------------------------------------------------------------------------------------------------------------
# 4. Tabular: a fixed random nonlinear teacher (classification) and a builder for MLPs with LayerNorm or
#    BatchNorm and a configurable hidden activation.
# ----------------------------------------------------------------------------------------------------------------


def tabular_teacher(seed: int, dim: int = 16, classes: int = 4, batch: int = 64, label_noise: float = 0.0):
    gt = torch.Generator().manual_seed(seed + 401)
    w1 = torch.randn(dim, 32, generator=gt) / dim**0.5
    w2 = torch.randn(32, classes, generator=gt) / 32**0.5 * 3

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 4)
        x = torch.randn(batch, dim, generator=g)
        y = (torch.tanh(x @ w1 * 1.5) @ w2).argmax(1)
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, classes, (batch,), generator=g), y)
        return x, y

    return batch_at


def activation(name: str) -> nn.Module:
    return {
        "gelu": nn.GELU(),
        "relu": nn.ReLU(),
        "silu": nn.SiLU(),
        "tanh": nn.Tanh(),
        "softmax": nn.Softmax(dim=-1),
    }[name]


def norm_mlp(widths: list[int], act: str = "gelu", norm: str = "layer", dropout: float = 0.0) -> nn.Sequential:
    """Linear -> norm -> activation (-> dropout) for every hidden layer; a plain Linear head."""
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            if norm == "layer":
                layers.append(nn.LayerNorm(widths[i + 1]))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------------
# 5. Graphs: stochastic block model, 4 communities; node features = noisy community centre. Node classification.
#    Every node has degree >= 1 (a chain links each community). `drop_edges_from`: from that step on the sampler
#    returns neighbour-sampled subgraphs (each undirected edge kept with probability 1 - drop), which can leave
#    nodes with no neighbours.
# ----------------------------------------------------------------------------------------------------------------


def sbm(
    seed: int,
    nodes: int = 96,
    feat: int = 8,
    p_in: float = 0.25,
    p_out: float = 0.02,
    signal: float = 0.5,
    drop_edges_from: int | None = None,
    drop: float = 0.6,
):
    centres = torch.randn(4, feat, generator=torch.Generator().manual_seed(seed + 501))

    def batch_at(step: int):
        g = gen(seed, step, 5)
        y = torch.randint(0, 4, (nodes,), generator=g)
        same = y.view(-1, 1) == y.view(1, -1)
        p = torch.where(same, torch.tensor(p_in), torch.tensor(p_out))
        a = torch.triu((torch.rand(nodes, nodes, generator=g) < p).float(), 1)
        order = torch.argsort(y * nodes + torch.arange(nodes))
        ys = y[order]
        link = ys[1:] == ys[:-1]
        a[order[:-1][link], order[1:][link]] = 1.0
        a = torch.triu(a + a.T, 1).clamp(max=1.0)  # upper triangle of the union
        if drop_edges_from is not None and step >= drop_edges_from:
            a = a * (torch.rand(nodes, nodes, generator=g) >= drop).float()
        a = a + a.T
        x = signal * centres[y] + torch.randn(nodes, feat, generator=g)
        return (a, x), y

    return batch_at


class DeepGCN(nn.Module):
    """`layers` GCN layers (ReLU) and a linear head. norm="sym": D^-1/2 (A+I) D^-1/2 (Kipf & Welling);
    norm="inv": D^-1 (A+I) D^-1 (the bug: deg.pow(-1) where pow(-0.5) was meant)."""

    def __init__(self, feat: int = 8, hidden: int = 32, layers: int = 5, classes: int = 4, norm: str = "sym") -> None:
        super().__init__()
        dims = [feat] + [hidden] * layers
        self.convs = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(layers))
        self.head = nn.Linear(hidden, classes)
        self.norm = norm

    def forward(self, graph):
        a, x = graph
        a = a + torch.eye(a.shape[0])
        deg = a.sum(1)
        d = deg.pow(-0.5) if self.norm == "sym" else deg.pow(-1.0)
        an = d.view(-1, 1) * a * d.view(1, -1)
        h = x
        for conv in self.convs:
            h = F.relu(an @ conv(h))
        return self.head(h)


class DenseGATLayer(nn.Module):
    """Hand-written dense graph attention (GAT), `heads` heads concatenated. No self-loops are added."""

    def __init__(self, inp: int, out: int, heads: int = 2) -> None:
        super().__init__()
        self.w = nn.Linear(inp, out * heads, bias=False)
        self.att_src = nn.Parameter(torch.randn(heads, out) * 0.3)
        self.att_dst = nn.Parameter(torch.randn(heads, out) * 0.3)
        self.bias = nn.Parameter(torch.zeros(out * heads))
        self.heads, self.out = heads, out

    def forward(self, a, h):
        n = h.shape[0]
        z = self.w(h).view(n, self.heads, self.out)
        src = (z * self.att_src).sum(-1)  # (n, heads)
        dst = (z * self.att_dst).sum(-1)
        e = F.leaky_relu(dst.unsqueeze(1) + src.unsqueeze(0), 0.2)  # (i, j, heads)
        e = e.masked_fill(a.unsqueeze(-1) == 0, float("-inf"))
        att = torch.softmax(e, dim=1)
        return torch.einsum("ijh,jho->iho", att, z).reshape(n, -1) + self.bias


class GAT(nn.Module):
    def __init__(self, feat: int = 8, hidden: int = 16, heads: int = 2, classes: int = 4, self_loops: bool = False):
        super().__init__()
        self.l1 = DenseGATLayer(feat, hidden, heads)
        self.l2 = DenseGATLayer(hidden * heads, hidden, heads)
        self.head = nn.Linear(hidden * heads, classes)
        self.self_loops = self_loops

    def forward(self, graph):
        a, x = graph
        if self.self_loops:
            a = a + torch.eye(a.shape[0])
        h = F.elu(self.l1(a, x))
        h = F.elu(self.l2(a, h))
        return self.head(h)


# ----------------------------------------------------------------------------------------------------------------
# 6. Token sequences for a transformer classifier: 6-12 content tokens (ids 1..16), pad id 0, padded to 16.
#    Class = (first content token - 1) % 4 (`label_noise`: that fraction replaced at random). Right padding; `left_pad_from`: from that step the collator pads on
#    the left (content shifted to the end).
# ----------------------------------------------------------------------------------------------------------------


def first_token_task(
    seed: int,
    batch: int = 32,
    max_len: int = 16,
    vocab: int = 17,
    label_noise: float = 0.0,
    left_pad_from: int | None = None,
):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 6)
        lengths = torch.randint(6, 13, (batch,), generator=g)
        toks = torch.randint(1, vocab, (batch, max_len), generator=g)
        pos = torch.arange(max_len).view(1, -1)
        valid = pos < lengths.view(-1, 1)
        toks = toks * valid
        y = (toks[:, 0] - 1) % 4
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, 4, (batch,), generator=g), y)
        if left_pad_from is not None and step >= left_pad_from:
            shift = (max_len - lengths).view(-1, 1)
            idx = (pos - shift) % max_len
            toks = torch.gather(toks, 1, idx)
        return toks, y

    return batch_at


class TokenTransformer(nn.Module):
    """Token + learned position embeddings, a 2-layer post-LN encoder (masked), masked mean pool, linear head."""

    def __init__(self, vocab: int = 17, d: int = 32, max_len: int = 16, classes: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Embedding(max_len, d)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(d, classes)

    def forward(self, toks):
        pad = toks == 0
        h = self.tok(toks) + self.pos(torch.arange(toks.shape[1])).unsqueeze(0)
        h = self.encoder(h, src_key_padding_mask=pad)
        keep = (~pad).float().unsqueeze(-1)
        return self.head((h * keep).sum(1) / keep.sum(1))


# ----------------------------------------------------------------------------------------------------------------
# 7. Text for language models: a sparse Markov chain (each token has 3 likely successors).
# ----------------------------------------------------------------------------------------------------------------


def markov_tokens(seed: int, vocab: int = 24, batch: int = 16, length: int = 24):
    gm = torch.Generator().manual_seed(seed + 701)
    logits = torch.full((vocab, vocab), -4.0)
    for a in range(vocab):
        nxt = torch.randperm(vocab, generator=gm)[:3]
        logits[a, nxt] = torch.tensor([2.0, 1.0, 0.5])
    probs = torch.softmax(logits, dim=1)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 7)
        toks = torch.empty(batch, length + 1, dtype=torch.long)
        toks[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        for t in range(length):
            toks[:, t + 1] = torch.multinomial(probs[toks[:, t]], 1, generator=g).squeeze(1)
        return toks[:, :-1], toks[:, 1:]

    return batch_at


class TinyGPT(nn.Module):
    """Causal pre-LN transformer LM: token + position embeddings, 2 layers, final LayerNorm, linear head."""

    def __init__(self, vocab: int = 24, d: int = 32, max_len: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True, norm_first=True),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab)

    def forward(self, toks):
        n = toks.shape[1]
        h = self.tok(toks) + self.pos(torch.arange(n)).unsqueeze(0)
        mask = torch.triu(torch.full((n, n), float("-inf")), 1)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.out(self.ln(h))


class GRULanguageModel(nn.Module):
    def __init__(self, vocab: int = 24, emb: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = nn.GRU(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, toks):
        h, _ = self.rnn(self.emb(toks))
        return self.out(h)


# ----------------------------------------------------------------------------------------------------------------
# 8. Grey-level shapes for autoencoders: bright bars and squares on a dark background, values in [0, 1].
# ----------------------------------------------------------------------------------------------------------------


def shapes(seed: int, batch: int = 32, size: int = 16):
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)

    def batch_at(step: int):
        g = gen(seed, step, 8)
        h = torch.randint(2, 9, (batch, 1, 1), generator=g)
        w = torch.randint(2, 9, (batch, 1, 1), generator=g)
        r0 = (torch.rand(batch, 1, 1, generator=g) * (size - h + 1)).long()
        c0 = (torch.rand(batch, 1, 1, generator=g) * (size - w + 1)).long()
        m = ((rows >= r0) & (rows < r0 + h) & (cols >= c0) & (cols < c0 + w)).float()
        level = 0.6 + 0.4 * torch.rand(batch, 1, 1, generator=g)
        x = (m * level + 0.05 * torch.rand(batch, size, size, generator=g)).clamp(0, 1)
        return x.unsqueeze(1)

    return batch_at


class ConvAE(nn.Module):
    """Conv encoder (16x16 -> 4x4x16), transposed-conv decoder, tanh output in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.dec(self.enc(x))


# ----------------------------------------------------------------------------------------------------------------
# 9. Heteroscedastic regression: y = f(x) + s(x) * eps. `glitch_from`: from that step ~5% of the rows are
#    sensor glitches (+-1000) that an upstream `valid` filter no longer removes.
# ----------------------------------------------------------------------------------------------------------------


def hetero_regression(seed: int, batch: int = 64, dim: int = 8, glitch_from: int | None = None, frac: float = 0.05):
    gt = torch.Generator().manual_seed(seed + 901)
    w1 = torch.randn(dim, 32, generator=gt) / dim**0.5
    w2 = torch.randn(32, generator=gt) / 32**0.5
    ws = torch.randn(dim, generator=gt) / dim**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 9)
        x = torch.randn(batch, dim, generator=g)
        mu = torch.tanh(x @ w1) @ w2
        sd = 0.05 + 0.3 * torch.sigmoid(2 * x @ ws)
        y = mu + sd * torch.randn(batch, generator=g)
        if glitch_from is not None and step >= glitch_from:
            bad = torch.rand(batch, generator=g) < frac
            y = torch.where(bad, 1000.0 * torch.sign(torch.randn(batch, generator=g)), y)
        return x, y

    return batch_at


def gaussian_nll(out, y):
    mu, log_var = out[:, 0], out[:, 1]
    return 0.5 * (log_var + (y - mu) ** 2 * torch.exp(-log_var)).mean()


# ----------------------------------------------------------------------------------------------------------------
# 10. Demand forecasting: 24 hourly log-demand values -> the next hour's log1p(demand). `raw_target_from`: from that
#     step the feature store serves the target without the log1p transform (raw demand, ~150..3000).
# ----------------------------------------------------------------------------------------------------------------


def demand_series(seed: int, batch: int = 32, window: int = 24, raw_target_from: int | None = None):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 11)
        level = 5.0 + 3.0 * torch.rand(batch, 1, generator=g)
        phase = 2 * math.pi * torch.rand(batch, 1, generator=g)
        t = torch.arange(window + 1).float().view(1, -1)
        logd = level + 0.5 * torch.sin(2 * math.pi * t / 24 + phase) + 0.1 * torch.randn(batch, window + 1, generator=g)
        y = logd[:, window]
        if raw_target_from is not None and step >= raw_target_from:
            y = torch.expm1(y)
        return logd[:, :window].unsqueeze(1), y

    return batch_at


class Conv1dForecaster(nn.Module):
    def __init__(self, window: int = 24, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.ReLU(), nn.Conv1d(width, width, 5, padding=2, stride=2), nn.ReLU()
        )
        self.head = nn.Linear(width * window // 2, 1)

    def forward(self, x):
        return self.head(self.body(x).flatten(1)).squeeze(1)


# ----------------------------------------------------------------------------------------------------------------
# 11. Healthy-control data and models.
# ----------------------------------------------------------------------------------------------------------------


def xor_marker_sequences(seed: int, batch: int = 64, length: int = 10, dim: int = 4, label_noise: float = 0.0):
    """Noise sequences; channel 0 of steps 0 and 1 carries a +-1 marker; class = XOR of the two markers' signs
    (`label_noise`: that fraction of labels flipped)."""

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 13)
        x = 0.5 * torch.randn(batch, length, dim, generator=g)
        bits = torch.randint(0, 2, (batch, 2), generator=g)
        x[:, 0, 0] = 2.0 * bits[:, 0] - 1
        x[:, 1, 0] = 2.0 * bits[:, 1] - 1
        y = bits[:, 0] ^ bits[:, 1]
        if label_noise > 0:
            y = torch.where(torch.rand(batch, generator=g) < label_noise, 1 - y, y)
        return x, y

    return batch_at


class RNNReadout(nn.Module):
    def __init__(self, dim: int = 4, hidden: int = 32, classes: int = 2, cell: str = "gru") -> None:
        super().__init__()
        self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def house_prices(seed: int, batch: int = 64, dim: int = 12):
    """Prices in dollars: 3e5 + 1e5 * f(x) + 1.5e4 noise."""
    gt = torch.Generator().manual_seed(seed + 1201)
    w1 = torch.randn(dim, 24, generator=gt) / dim**0.5
    w2 = torch.randn(24, generator=gt) / 24**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 14)
        x = torch.randn(batch, dim, generator=g)
        y = 3e5 + 1e5 * (torch.tanh(x @ w1) @ w2) + 1.5e4 * torch.randn(batch, generator=g)
        return x, y

    return batch_at


class DollarRegressor(nn.Module):
    """BatchNorm MLP whose output is mapped to dollars by a fixed affine head (mean 3e5, scale 1e5)."""

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.net = norm_mlp([dim, 64, 64, 1], act="relu", norm="batch")

    def forward(self, x):
        return 3e5 + 1e5 * self.net(x).squeeze(1)


def eeg_volts(seed: int, batch: int = 16, length: int = 64, channels: int = 4, amp: float = 5e-5):
    """Multichannel signals in volts (tens of microvolts): a few shared oscillations mixed into each channel."""
    mix = torch.randn(3, channels, generator=torch.Generator().manual_seed(seed + 1301))
    t = torch.arange(length).float()

    def batch_at(step: int):
        g = gen(seed, step, 15)
        freq = torch.tensor([0.08, 0.21, 0.37]).view(1, 3, 1) * (1 + 0.1 * torch.randn(batch, 3, 1, generator=g))
        phase = 2 * math.pi * torch.rand(batch, 3, 1, generator=g)
        src = torch.sin(freq * t.view(1, 1, -1) + phase)  # (batch, 3, length)
        x = amp * (torch.einsum("bst,sc->bct", src, mix) + 0.1 * torch.randn(batch, channels, length, generator=g))
        return x, x

    return batch_at


class Conv1dAE(nn.Module):
    """Bias-free 1-D conv autoencoder (64 -> 16 steps, 8 channels), so its output scales with its input."""

    def __init__(self, channels: int = 4, width: int = 16) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv1d(channels, width, 5, stride=2, padding=2, bias=False),
            nn.GELU(),
            nn.Conv1d(width, 8, 5, stride=2, padding=2, bias=False),
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose1d(8, width, 4, stride=2, padding=1, bias=False),
            nn.GELU(),
            nn.ConvTranspose1d(width, channels, 4, stride=2, padding=1, bias=False),
        )

    def forward(self, x):
        return self.dec(self.enc(x))


def heavy_tailed_regression(seed: int, batch: int = 64, dim: int = 16, df: float = 2.0, scale: float = 0.2):
    gt = torch.Generator().manual_seed(seed + 1401)
    w1 = torch.randn(dim, 32, generator=gt) / dim**0.5
    w2 = torch.randn(32, generator=gt) / 32**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 16)
        x = torch.randn(batch, dim, generator=g)
        # Student-t noise via the ratio of a normal and a chi-square (drawn from g).
        z = torch.randn(batch, generator=g)
        chi2 = (torch.randn(batch, int(df), generator=g) ** 2).sum(1)
        noise = z / torch.sqrt(chi2 / df)
        return x, torch.tanh(x @ w1) @ w2 + scale * noise

    return batch_at


def zipf_documents(
    seed: int,
    batch: int = 32,
    vocab: int = 2000,
    length: int = 24,
    classes: int = 4,
    keywords_per_doc: int = 1,
    label_noise: float = 0.1,
):
    """Bags of Zipf-distributed tokens; each class has 25 keywords (ranks 100..), `keywords_per_doc` per document;
    `label_noise` of the labels replaced at random."""
    gt = torch.Generator().manual_seed(seed + 1501)
    probs = 1.0 / torch.arange(1, vocab + 1).float()
    probs = probs / probs.sum()
    keywords = (100 + torch.randperm(vocab - 100, generator=gt)[: classes * 25]).view(classes, 25)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 17)
        y = torch.randint(0, classes, (batch,), generator=g)
        toks = torch.multinomial(probs, batch * length, replacement=True, generator=g).view(batch, length)
        k = keywords_per_doc
        kw = keywords[y][torch.arange(batch).view(-1, 1), torch.randint(0, 25, (batch, k), generator=g)]
        toks[:, :k] = kw
        flip = torch.rand(batch, generator=g) < label_noise
        return toks, torch.where(flip, torch.randint(0, classes, (batch,), generator=g), y)

    return batch_at


class BagClassifier(nn.Module):
    def __init__(self, vocab: int = 2000, dim: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, toks):
        return self.mlp(self.emb(toks))


def homophily_graphs(seed: int, graphs: int = 2, nodes: int = 16, label_noise: float = 0.0):
    """Graph classification. Class 1: two communities (p_in 0.5, p_out 0.05), node feature = community sign + noise;
    class 0: Erdos-Renyi graph with the same mean degree and random signs. Returns a list of (adj, x) and labels
    (`label_noise`: that fraction of labels flipped)."""

    def batch_at(step: int):
        g = gen(seed, step, 18)
        items, ys = [], []
        for _ in range(graphs):
            y = int(torch.randint(0, 2, (1,), generator=g))
            side = torch.randint(0, 2, (nodes,), generator=g)
            if y == 1:
                same = side.view(-1, 1) == side.view(1, -1)
                p = torch.where(same, torch.tensor(0.5), torch.tensor(0.05))
            else:
                p = torch.full((nodes, nodes), 0.27)
            a = torch.triu((torch.rand(nodes, nodes, generator=g) < p).float(), 1)
            a = a + a.T
            x = (2.0 * side - 1).view(-1, 1) + 0.5 * torch.randn(nodes, 1, generator=g)
            items.append((a, torch.cat([x, torch.ones(nodes, 1)], 1)))
            flip = bool(torch.rand(1, generator=g) < label_noise)
            ys.append(1 - y if flip else y)
        return items, torch.tensor(ys)

    return batch_at


class GIN(nn.Module):
    def __init__(self, feat: int = 2, hidden: int = 32, layers: int = 2, classes: int = 2) -> None:
        super().__init__()
        dims = [feat] + [hidden] * layers
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dims[i], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            for i in range(layers)
        )
        self.head = nn.Linear(hidden, classes)

    def forward(self, items):
        outs = []
        for a, x in items:
            h = x
            for mlp in self.mlps:
                h = mlp(h + a @ h)
            outs.append(h.sum(0) / a.shape[0])
        return self.head(torch.stack(outs))


def raw_counts(seed: int, batch: int = 64, dim: int = 8):
    """Raw count features (0..~1000) and a target (~1..10) linear in them plus noise."""
    gt = torch.Generator().manual_seed(seed + 1601)
    rates = 50 + 950 * torch.rand(dim, generator=gt)
    w = torch.rand(dim, generator=gt) / rates * 2

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 19)
        x = torch.poisson(rates.expand(batch, dim) * (0.5 + torch.rand(batch, dim, generator=g)), generator=g)
        return x, x @ w + 0.3 * torch.randn(batch, generator=g)

    return batch_at


def margin_curriculum(seed: int, batch: int = 32, length: int = 12, start: float = 0.25, full_at: int = 150):
    """session_events features (no time column) with a difficulty curriculum: at step s the batch is drawn from
    the easiest fraction q(s) = min(1, start + (1 - start) * s / full_at) of 4 x batch candidates, ranked by the
    teacher's margin (top-1 minus top-2 score). Returns (batch_at, full_at_step) where the second draws from the
    full distribution (for validation)."""
    base = session_events(seed, batch=4 * batch, length=length)
    teacher = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed + 301))

    def draw(step: int, q: float) -> Batch:
        x, y = base(step)
        x = x[:, :, :4]
        top2 = torch.topk(x.sum(1) @ teacher, 2, dim=1).values
        order = torch.argsort(top2[:, 0] - top2[:, 1], descending=True)
        pool = order[: max(batch, int(q * len(order)))]
        pick = pool[torch.randperm(len(pool), generator=gen(seed, step, 20))[:batch]]
        return x[pick], y[pick]

    def batch_at(step: int) -> Batch:
        return draw(step, min(1.0, start + (1 - start) * step / full_at))

    def full(step: int) -> Batch:
        return draw(step, 1.0)

    return batch_at, full
