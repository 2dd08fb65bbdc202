"""Set 18 helpers: synthetic data, small models and a generic training loop.

Every data generator draws from private ``torch.Generator`` objects seeded by (seed, step, salt); every model is
built right after ``torch.manual_seed(seed)`` (which also seeds dropout), so a run depends on its seed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# One CPU thread, as every scenario was measured with (the runs are tiny; this also keeps them off other cores).
torch.set_num_threads(1)

Batch = tuple[Any, Any]
VAL = 10**6  # held-out batches come from steps >= VAL of the same generator (never trained on)


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_033 + step * 17 + salt * 7_919_117 + 18)


# ----------------------------------------------------------------------------------------------------------------
# The loop. `train_step(step)` zeroes the grads, runs forward/backward and the optimizer step(s), and returns the
# loss tensor, or (loss, grad_norm) when it clips. `val_loss(step)` runs every `val_every` steps in eval mode.
# ----------------------------------------------------------------------------------------------------------------


def run_loop(
    watch: Any,
    model: nn.Module,
    optimizer: Any,
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


def simple_step(model, optimizer, batch_at, loss_fn, clip=None, before=None, scheduler=None):
    """A train_step: (before(step)), zero_grad, forward, loss, backward, (clip), step, (scheduler.step())."""

    def train_step(step: int):
        if before is not None:
            before(step)
        x, y = batch_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        norm = None
        if clip is not None:
            norm = nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss if norm is None else (loss.detach(), norm)

    return train_step


def mean_val(model, val_at, loss_fn, n=4):
    """Held-out loss: mean over the fixed batches val_at(0..n-1)."""
    return lambda step: sum(float(loss_fn(model(vx), vy)) for vx, vy in (val_at(i) for i in range(n))) / n


def seq_ce(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ----------------------------------------------------------------------------------------------------------------
# 1. Glyph images (ViT): 16x16 grey images of one of 6 glyphs (horizontal bar, vertical bar, diagonal, anti-diagonal,
#    plus, hollow square) at a random offset and stroke intensity, on a noisy background; pixel values ~[0, 1].
#    The dataloader standardises with the dataset mean/std (GLYPH_MEAN, GLYPH_STD); `raw_from`: from that step on the
#    Normalize transform is missing (raw [0, 1] pixels).
# ----------------------------------------------------------------------------------------------------------------

GLYPH_MEAN, GLYPH_STD = 0.32, 0.24


def _glyph_masks(size: int = 10) -> torch.Tensor:
    m = torch.zeros(6, size, size)
    c = size // 2
    m[0, c - 1 : c + 1, :] = 1
    m[1, :, c - 1 : c + 1] = 1
    idx = torch.arange(size)
    m[2, idx, idx] = 1
    m[2, idx[1:], idx[:-1]] = 1
    m[3, idx, size - 1 - idx] = 1
    m[3, idx[1:], size - idx[1:]] = 1
    m[4, c - 1 : c + 1, 1:-1] = 1
    m[4, 1:-1, c - 1 : c + 1] = 1
    m[5, 1:-1, 1:-1] = 1
    m[5, 3:-3, 3:-3] = 0
    return m


def glyphs(
    seed: int,
    batch: int = 32,
    size: int = 16,
    noise: float = 0.35,
    classes: int = 6,
    raw_from=None,
    label_noise: float = 0.0,
):
    """`label_noise`: that fraction of labels replaced at random (drawn after everything else, only when > 0)."""
    masks = _glyph_masks(10)

    def raw(step: int) -> Batch:
        g = gen(seed, step, 1)
        y = torch.randint(0, classes, (batch,), generator=g)
        x = 0.15 + noise * torch.rand(batch, size, size, generator=g) - noise / 2 + 0.1
        off = torch.randint(0, size - 10 + 1, (batch, 2), generator=g)
        level = 0.5 + 0.5 * torch.rand(batch, generator=g)
        ar = torch.arange(10)
        rows = (off[:, 0].view(-1, 1, 1) + ar.view(1, -1, 1)).expand(batch, 10, 10)
        cols = (off[:, 1].view(-1, 1, 1) + ar.view(1, 1, -1)).expand(batch, 10, 10)
        b = torch.arange(batch).view(-1, 1, 1).expand(batch, 10, 10)
        x[b, rows, cols] += level.view(-1, 1, 1) * masks[y]
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, classes, (batch,), generator=g), y)
        return x.clamp(0, 1.2).unsqueeze(1), y

    def batch_at(step: int) -> Batch:
        x, y = raw(step)
        if raw_from is not None and step >= raw_from:
            return x, y
        return (x - GLYPH_MEAN) / GLYPH_STD, y

    return batch_at


class TinyViT(nn.Module):
    """Patch embedding (conv, stride = patch), CLS token, learned positions, pre-LN encoder, LN, linear head."""

    def __init__(self, size=16, patch=4, d=32, depth=2, heads=4, classes=6, dropout=0.0) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, d, patch, stride=patch)
        n = (size // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n + 1, d))
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d, nhead=heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True, norm_first=True
            ),
            num_layers=depth,
            enable_nested_tensor=False,
        )
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1) + self.pos
        h = self.blocks(h)
        return self.head(self.ln(h[:, 0]))


# ----------------------------------------------------------------------------------------------------------------
# 2. 1-D denoising: clean signals = a few sinusoids + a piecewise-constant part; input = clean + sigma * noise.
#    `length_at(step)` gives the crop length (progressive resizing). `fixed_noise`: the noisy inputs are generated
#    once per clean signal (index = step % n_signals), as when the noisy dataset is cached to disk.
# ----------------------------------------------------------------------------------------------------------------


def clean_waves(g: torch.Generator, batch: int, length: int) -> torch.Tensor:
    t = torch.arange(length).float().view(1, 1, -1)
    freq = 0.02 + 0.15 * torch.rand(batch, 3, 1, generator=g)
    phase = 2 * math.pi * torch.rand(batch, 3, 1, generator=g)
    amp = 0.3 + 0.4 * torch.rand(batch, 3, 1, generator=g)
    s = (amp * torch.sin(freq * t + phase)).sum(1, keepdim=True)
    jumps = torch.rand(batch, 1, length, generator=g) < 0.02
    level = torch.cumsum(jumps.float() * torch.randn(batch, 1, length, generator=g), dim=-1)
    return s + 0.5 * level


def denoise_data(seed: int, batch: int = 16, sigma: float = 0.5, length_at=lambda step: 64, scale: float = 1.0):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 2)
        n = length_at(step)
        y = scale * clean_waves(g, batch, n)
        x = y + scale * sigma * torch.randn(y.shape, generator=g)
        return x, y

    return batch_at


def cached_noisy_dataset(seed: int, signals: int = 32, batch: int = 16, sigma: float = 0.5, length: int = 64):
    """A fixed set of `signals` (clean, noisy) pairs (noise drawn once), served in shuffled batches."""
    g = gen(seed, 0, 3)
    y = clean_waves(g, signals, length)
    x = y + sigma * torch.randn(y.shape, generator=g)

    def batch_at(step: int) -> Batch:
        idx = torch.randint(0, signals, (batch,), generator=gen(seed, step, 4))
        return x[idx], y[idx]

    return batch_at


class UNet1d(nn.Module):
    """Two-level 1-D U-Net: conv blocks, max-pool down, linear upsample, skip concatenation, 1x1 output conv."""

    def __init__(self, width: int = 16, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv1d(i, o, 5, padding=2), act(), nn.Conv1d(o, o, 5, padding=2), act())

        self.enc1 = block(1, width)
        self.enc2 = block(width, 2 * width)
        self.mid = block(2 * width, 2 * width)
        self.dec2 = block(4 * width, width)
        self.dec1 = block(2 * width, width)
        self.out = nn.Conv1d(width, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool1d(e1, 2))
        m = self.mid(F.max_pool1d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=2.0, mode="linear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="linear"), e1], 1))
        return x + self.out(d1)


# ----------------------------------------------------------------------------------------------------------------
# 3. Regime tabular data for a mixture of experts: 4 regimes (cluster of the first 2 features); inside each regime a
#    different nonlinear teacher labels the point (4 classes).
# ----------------------------------------------------------------------------------------------------------------


def regime_tabular(seed: int, batch: int = 64, dim: int = 12, classes: int = 4, label_noise: float = 0.0):
    gt = torch.Generator().manual_seed(seed + 1801)
    centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    w1 = torch.randn(4, dim, 24, generator=gt) / dim**0.5
    w2 = torch.randn(4, 24, classes, generator=gt) / 24**0.5 * 3

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 5)
        r = torch.randint(0, 4, (batch,), generator=g)
        x = torch.randn(batch, dim, generator=g)
        x[:, :2] = x[:, :2] * 0.7 + centres[r]
        logits = torch.einsum("bh,bhc->bc", torch.tanh(torch.einsum("bd,bdh->bh", x, w1[r]) * 1.5), w2[r])
        y = logits.argmax(1)
        if label_noise > 0:
            flip = torch.rand(batch, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, classes, (batch,), generator=g), y)
        return x, y

    return batch_at


class MoEClassifier(nn.Module):
    """Input projection, a top-k softmax router over `experts` two-layer MLP experts, a linear head.
    `self.aux` holds the Switch-style load-balancing loss of the last forward."""

    def __init__(self, dim: int = 12, d: int = 32, experts: int = 4, k: int = 1, classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, d)
        self.router = nn.Linear(d, experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d)) for _ in range(experts)
        )
        self.head = nn.Linear(d, classes)
        self.k, self.n = k, experts
        self.aux = torch.zeros(())

    def forward(self, x):
        h = F.relu(self.inp(x))
        probs = torch.softmax(self.router(h), dim=-1)
        top, idx = probs.topk(self.k, dim=-1)
        top = top / top.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            sel = (idx == e).any(-1)
            if sel.any():
                w = (top * (idx == e)).sum(-1, keepdim=True)[sel]
                out = out.index_add(0, sel.nonzero().squeeze(1), w * expert(h[sel]))
        frac = F.one_hot(idx[:, 0], self.n).float().mean(0)
        self.aux = self.n * (frac * probs.mean(0)).sum()
        return self.head(h + out)


# ----------------------------------------------------------------------------------------------------------------
# 4. Quantisation-aware training: fake-quantisers (symmetric int8 / int4, scale from the running max) on weights and
#    activations. `ste=True` is the straight-through estimator x + (q(x) - x).detach(); `ste=False` is q(x) with
#    torch.round inside, whose gradient is zero almost everywhere.
# ----------------------------------------------------------------------------------------------------------------


class FakeQuant(nn.Module):
    def __init__(self, bits: int = 8, ste: bool = True) -> None:
        super().__init__()
        self.levels = 2 ** (bits - 1) - 1
        self.ste = ste
        self.enabled = False
        self.register_buffer("amax", torch.zeros(()))

    def forward(self, x):
        if not self.enabled:
            return x
        with torch.no_grad():
            cur = x.detach().abs().max()
            self.amax.copy_(torch.where(self.amax > 0, 0.9 * self.amax + 0.1 * cur, cur))
        scale = self.amax.clamp(min=1e-8) / self.levels
        q = torch.round(x / scale).clamp(-self.levels, self.levels) * scale
        return x + (q - x).detach() if self.ste else q


class QLinear(nn.Linear):
    def __init__(self, i: int, o: int, bits: int = 8, ste: bool = True) -> None:
        super().__init__(i, o)
        self.wq = FakeQuant(bits, ste)

    def forward(self, x):
        return F.linear(x, self.wq(self.weight), self.bias)


class QATMLP(nn.Module):
    """Image classifier on flattened glyphs: QLinear -> ReLU -> FakeQuant (activations) x3, a float head."""

    def __init__(self, inp: int = 256, width: int = 128, classes: int = 6, bits: int = 8, ste: bool = True):
        super().__init__()
        dims = [inp, width, width, width]
        self.layers = nn.ModuleList(QLinear(dims[i], dims[i + 1], bits, ste) for i in range(3))
        self.acts = nn.ModuleList(FakeQuant(bits, ste) for _ in range(3))
        self.head = nn.Linear(width, classes)

    def enable_quant(self) -> None:
        for m in self.modules():
            if isinstance(m, FakeQuant):
                m.enabled = True

    def forward(self, x):
        h = x.flatten(1)
        for lin, act in zip(self.layers, self.acts, strict=True):
            h = act(F.relu(lin(h)))
        return self.head(h)


# ----------------------------------------------------------------------------------------------------------------
# 5. Audio-like 1-D signals (128 samples): class = which of 5 frequency bands carries a tone burst, over pink-ish
#    noise. A deep plain 1-D CNN (no norm layers) classifies them.
# ----------------------------------------------------------------------------------------------------------------


def tone_bursts(seed: int, batch: int = 32, length: int = 128, classes: int = 5):
    t = torch.arange(length).float().view(1, -1)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 6)
        y = torch.randint(0, classes, (batch,), generator=g)
        f = (0.08 + 0.12 * y.float() + 0.03 * torch.rand(batch, generator=g)).view(-1, 1)
        start = torch.randint(0, length // 2, (batch, 1), generator=g)
        env = ((t >= start) & (t < start + length // 2)).float()
        x = env * torch.sin(f * t + 2 * math.pi * torch.rand(batch, 1, generator=g))
        x = x + 0.5 * torch.cumsum(0.3 * torch.randn(batch, length, generator=g), 1).tanh()
        return x.unsqueeze(1), y

    return batch_at


def deep_conv1d(depth: int = 8, width: int = 32, classes: int = 5, init_std: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 1
    for i in range(depth):
        conv = nn.Conv1d(c, width, 3, padding=1, stride=2 if i % 2 == 1 else 1)
        if init_std is not None:
            nn.init.normal_(conv.weight, std=init_std)
            nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
        c = width
    head = nn.Linear(width, classes)
    if init_std is not None:
        nn.init.normal_(head.weight, std=init_std)
        nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), head)


# ----------------------------------------------------------------------------------------------------------------
# 6. Marketplace listings: numeric features + the listing price; target = log(1 + sales) from a fixed teacher.
#    The model's input pipeline takes log(price). `free_from`: from that step the catalogue includes free listings
#    (price exactly 0) in ~10% of the rows.
# ----------------------------------------------------------------------------------------------------------------


def listings(seed: int, batch: int = 64, dim: int = 7, free_from: int | None = None):
    gt = torch.Generator().manual_seed(seed + 1806)
    w = torch.randn(dim + 1, 24, generator=gt) / (dim + 1) ** 0.5
    v = torch.randn(24, generator=gt) / 24**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 7)
        x = torch.randn(batch, dim, generator=g)
        price = torch.exp(3.0 + 0.8 * torch.randn(batch, generator=g))
        logp = (torch.log(price) - 3.0) / 0.8
        y = 2.0 + torch.tanh(torch.cat([x, logp.unsqueeze(1)], 1) @ w) @ v - 0.5 * logp
        y = y + 0.1 * torch.randn(batch, generator=g)
        if free_from is not None and step >= free_from:
            free = torch.rand(batch, generator=g) < 0.1
            price = torch.where(free, torch.zeros(()), price)
        return (x, price), y

    return batch_at


class ListingRegressor(nn.Module):
    """log(price) standardised with the training statistics (mean 3, std 0.8), concatenated to the features."""

    def __init__(self, dim: int = 7) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, inp):
        x, price = inp
        logp = (torch.log(price) - 3.0) / 0.8
        return self.net(torch.cat([x, logp.unsqueeze(1)], 1)).squeeze(1)


# ----------------------------------------------------------------------------------------------------------------
# 7. Knowledge distillation: a fixed, very confident teacher (large logits) over 10 classes; a student MLP.
# ----------------------------------------------------------------------------------------------------------------


def kd_data(seed: int, batch: int = 64, dim: int = 16, classes: int = 10, logit_scale: float = 40.0):
    gt = torch.Generator().manual_seed(seed + 1807)
    w1 = torch.randn(dim, 48, generator=gt) / dim**0.5
    w2 = torch.randn(48, classes, generator=gt) / 48**0.5

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 8)
        x = torch.randn(batch, dim, generator=g)
        teacher_logits = logit_scale * torch.tanh(x @ w1) @ w2
        return x, teacher_logits

    return batch_at


def kd_loss_manual(student_logits, teacher_logits, temperature: float):
    """KL(p_teacher || p_student) at temperature T, written out by hand (x T^2)."""
    p_t = torch.softmax(teacher_logits / temperature, dim=-1)
    log_p_s = torch.log_softmax(student_logits / temperature, dim=-1)
    return (p_t * (torch.log(p_t) - log_p_s)).sum(-1).mean() * temperature**2


def kd_loss_torch(student_logits, teacher_logits, temperature: float):
    """The same KL with F.kl_div on log-probabilities (log_target=True): safe when teacher probabilities underflow."""
    log_p_t = torch.log_softmax(teacher_logits / temperature, dim=-1)
    log_p_s = torch.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


# ----------------------------------------------------------------------------------------------------------------
# 8. Seq2seq: source = 8 tokens from a vocabulary of 12 (ids 2..13); target = the source reversed, each token mapped
#    through a fixed substitution cipher. BOS = 1. A GRU encoder-decoder (no attention) with optional teacher forcing.
# ----------------------------------------------------------------------------------------------------------------

BOS = 1


def reverse_cipher(seed: int, batch: int = 32, length: int = 6, vocab: int = 14, remap_from: int | None = None):
    """`remap_from`: from that step the ids come from a rebuilt tokenizer whose vocabulary order differs (a fixed
    permutation of ids 2..vocab-1 applied to source and target alike)."""
    gt = torch.Generator().manual_seed(seed + 1808)
    perm = torch.randperm(vocab - 2, generator=gt) + 2
    table = torch.cat([torch.tensor([0, 1]), perm])
    remap = torch.cat([torch.tensor([0, 1]), torch.randperm(vocab - 2, generator=gt) + 2])

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 9)
        src = torch.randint(2, vocab, (batch, length), generator=g)
        tgt = table[src.flip(1)]
        if remap_from is not None and step >= remap_from:
            return remap[src], remap[tgt]
        return src, tgt

    return batch_at


class Seq2SeqGRU(nn.Module):
    def __init__(self, vocab: int = 14, emb: int = 32, hidden: int = 96) -> None:
        super().__init__()
        self.src_emb = nn.Embedding(vocab, emb)
        self.tgt_emb = nn.Embedding(vocab, emb)
        self.enc = nn.GRU(emb, hidden, batch_first=True)
        self.dec = nn.GRUCell(emb, hidden)
        self.out = nn.Linear(hidden, vocab)
        self.teacher_forcing = 1.0
        self._gen: torch.Generator | None = None

    def forward(self, src_tgt):
        src, tgt = src_tgt
        _, h = self.enc(self.src_emb(src))
        h = h[0]
        inp = torch.full((len(src),), BOS, dtype=torch.long)
        logits = []
        for t in range(tgt.shape[1]):
            h = self.dec(self.tgt_emb(inp), h)
            o = self.out(h)
            logits.append(o)
            if self.teacher_forcing >= 1.0:
                inp = tgt[:, t]
            elif self.teacher_forcing <= 0.0:
                inp = o.argmax(-1)
            else:
                use = torch.rand(len(src), generator=self._gen) < self.teacher_forcing
                inp = torch.where(use, tgt[:, t], o.argmax(-1))
        return torch.stack(logits, 1)


# ----------------------------------------------------------------------------------------------------------------
# 9. Language modelling with weight tying: a word-level "grammar" (a random sparse bigram chain over 48 tokens with
#    4 likely successors each) and a GRU LM whose output projection is the embedding matrix.
# ----------------------------------------------------------------------------------------------------------------


def bigram_text(seed: int, vocab: int = 48, batch: int = 16, length: int = 32, succ: int = 4, temp: float = 1.0):
    gm = torch.Generator().manual_seed(seed + 1809)
    logits = torch.full((vocab, vocab), -6.0)
    for a in range(vocab):
        nxt = torch.randperm(vocab, generator=gm)[:succ]
        logits[a, nxt] = torch.linspace(2.0, 0.0, succ) / temp
    probs = torch.softmax(logits, 1)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 10)
        toks = torch.empty(batch, length + 1, dtype=torch.long)
        toks[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        for t in range(length):
            toks[:, t + 1] = torch.multinomial(probs[toks[:, t]], 1, generator=g).squeeze(1)
        return toks[:, :-1], toks[:, 1:]

    return batch_at


class TiedGRULM(nn.Module):
    def __init__(self, vocab: int = 48, d: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.GRU(d, d, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(d, d)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, toks):
        h, _ = self.rnn(self.drop(self.emb(toks)))
        return F.linear(torch.tanh(self.proj(self.drop(h))), self.emb.weight, self.bias)


# ----------------------------------------------------------------------------------------------------------------
# 10. Contrastive learning: a latent z (16-d) seen through two random "augmentations" (a per-sample random
#     rotation of a few coordinates + noise + a fixed random 32-d mixing); an MLP encoder maps views to unit vectors.
# ----------------------------------------------------------------------------------------------------------------


def two_views(seed: int, batch: int = 64, latent: int = 16, dim: int = 32, noise: float = 0.6):
    mix = torch.randn(latent, dim, generator=torch.Generator().manual_seed(seed + 1810)) / latent**0.5

    def view(z, g):
        mask = (torch.rand(z.shape, generator=g) > 0.2).float()
        return (z * mask) @ mix + noise * torch.randn(len(z), dim, generator=g)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 11)
        z = torch.randn(batch, latent, generator=g)
        return (view(z, g), view(z, g)), None

    return batch_at


class ViewEncoder(nn.Module):
    def __init__(self, dim: int = 32, d: int = 64, out: int = 32, learn_temp: str = "none", init_temp=0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, out))
        if learn_temp == "log":  # CLIP: logit_scale = log(1 / T)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temp)))
        elif learn_temp == "direct":  # T itself is the parameter
            self.temp = nn.Parameter(torch.tensor(float(init_temp)))

    def forward(self, x):
        return F.normalize(self.net(x), dim=-1)


def info_nce(a, b, scale):
    """Symmetric InfoNCE with similarity logits `scale * a @ b.T` (scale = 1 / temperature)."""
    logits = scale * a @ b.T
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# ----------------------------------------------------------------------------------------------------------------
# 11. Contextual bandit (policy gradient): 8-d contexts, 5 arms; expected reward of arm a = sigmoid(3 x.w_a);
#     rewards are Bernoulli.
# ----------------------------------------------------------------------------------------------------------------


def bandit(seed: int, dim: int = 8, arms: int = 5):
    w = torch.randn(arms, dim, generator=torch.Generator().manual_seed(seed + 1811)) / dim**0.5

    def context(step: int, batch: int = 64):
        return torch.randn(batch, dim, generator=gen(seed, step, 12))

    def reward(step: int, x, a):
        p = torch.sigmoid(3.0 * (x @ w.T))[torch.arange(len(x)), a]
        return (torch.rand(len(x), generator=gen(seed, step, 13)) < p).float(), p

    def best(x):
        return torch.sigmoid(3.0 * (x @ w.T)).max(1).values

    return context, reward, best


# ----------------------------------------------------------------------------------------------------------------
# 12. Ratings for sparse matrix factorisation: 400 users x 300 items, rank-4 preferences, ratings 1..5 + noise.
# ----------------------------------------------------------------------------------------------------------------


def ratings(seed: int, users: int = 400, items: int = 300, rank: int = 4, batch: int = 256):
    gt = torch.Generator().manual_seed(seed + 1812)
    u = torch.randn(users, rank, generator=gt)
    v = torch.randn(items, rank, generator=gt)
    ub = 0.5 * torch.randn(users, generator=gt)
    ib = 0.5 * torch.randn(items, generator=gt)

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 14)
        i = torch.randint(0, users, (batch,), generator=g)
        j = torch.randint(0, items, (batch,), generator=g)
        r = 3.0 + ub[i] + ib[j] + 0.5 * (u[i] * v[j]).sum(1) + 0.3 * torch.randn(batch, generator=g)
        return (i, j), r.clamp(1, 5)

    return batch_at


class SparseMF(nn.Module):
    def __init__(self, users: int = 400, items: int = 300, rank: int = 8) -> None:
        super().__init__()
        self.u = nn.Embedding(users, rank, sparse=True)
        self.v = nn.Embedding(items, rank, sparse=True)
        self.ub = nn.Embedding(users, 1, sparse=True)
        self.ib = nn.Embedding(items, 1, sparse=True)
        for e in (self.u, self.v):
            nn.init.normal_(e.weight, std=0.1)
        for e in (self.ub, self.ib):
            nn.init.zeros_(e.weight)
        self.mu = nn.Parameter(torch.tensor(3.0))

    def forward(self, ij):
        i, j = ij
        return self.mu + self.ub(i).squeeze(1) + self.ib(j).squeeze(1) + (self.u(i) * self.v(j)).sum(1)


# ----------------------------------------------------------------------------------------------------------------
# 13. Copy task for a tiny causal transformer: [a b c d e f SEP a b c d e f]; loss on the copied half only. It sits on
#     a plateau at ln(vocab) until it forms an induction-like lookup, then drops.
# ----------------------------------------------------------------------------------------------------------------


def copy_task(seed: int, batch: int = 32, n: int = 6, vocab: int = 10):
    sep = vocab

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 15)
        a = torch.randint(0, vocab, (batch, n), generator=g)
        seq = torch.cat([a, torch.full((batch, 1), sep), a], 1)
        return seq[:, :-1], seq[:, 1:]

    return batch_at


class CausalLM(nn.Module):
    def __init__(self, vocab: int = 11, d: int = 32, max_len: int = 16, layers: int = 2, heads: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, dim_feedforward=64, dropout=0.0, batch_first=True, norm_first=True),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab)

    def forward(self, toks):
        n = toks.shape[1]
        h = self.tok(toks) + self.pos(torch.arange(n)).unsqueeze(0)
        mask = torch.triu(torch.full((n, n), float("-inf")), 1)
        return self.out(self.ln(self.blocks(h, mask=mask, is_causal=True)))


def copy_loss(n: int = 6):
    """Cross-entropy on the positions that predict the copied half (after SEP)."""

    def loss(logits, target):
        return seq_ce(logits[:, n:], target[:, n:])

    return loss


# ----------------------------------------------------------------------------------------------------------------
# 14. A very deep pre-LN residual MLP (tabular).
# ----------------------------------------------------------------------------------------------------------------


class ResidualMLP(nn.Module):
    def __init__(self, dim: int = 12, d: int = 32, depth: int = 48, classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d)) for _ in range(depth)
        )
        for b in self.blocks:
            nn.init.normal_(b[3].weight, std=0.02 / depth**0.5)
            nn.init.zeros_(b[3].bias)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(self.ln(h))
