"""Set 22 fault helpers: synthetic data, small models and the loop shared by twentysecond_faults.py.

Every data generator draws from private ``torch.Generator`` objects seeded by (seed, step, salt); every model is built
right after ``torch.manual_seed(seed)`` by the scenario, so a run depends on its seed alone.
"""

from __future__ import annotations

import math

import torch
from _twentyfirst_faults_lib import loop, plain_step  # noqa: F401 - the same loop as set 21's, re-exported
from torch import nn
from torch.nn import functional as F

torch.set_num_threads(1)

VAL = 10**6  # held-out batches come from steps >= VAL of the same generator (never trained on)


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_037 + step * 53 + salt * 6_700_417 + 22)


def update(opt, loss):
    """zero_grad, backward, step; returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def lm_ce(logits, y):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def mean_val(model, data, loss_fn, n=4):
    return lambda: sum(float(loss_fn(model(x), y)) for x, y in (data(VAL + i) for i in range(n))) / n


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def teacher_mlp(seed, dim=16, classes=4, hidden=32, salt=0):
    g = torch.Generator().manual_seed(seed * 13 + 101 + salt)
    w1 = torch.randn(dim, hidden, generator=g) / dim**0.5
    w2 = torch.randn(hidden, classes, generator=g) / hidden**0.5
    return lambda x: (torch.tanh(2 * x @ w1) @ w2).argmax(1)


def classify_data(seed, dim=16, classes=4, batch=64, noise=0.0, salt=0):
    """x ~ N(0, 1); class from a fixed random tanh MLP teacher; ``noise`` = fraction of uniformly relabelled samples."""
    teacher = teacher_mlp(seed, dim, classes, salt=salt)

    def batch_at(step):
        gg = gen(seed, step, 1 + salt)
        x = torch.randn(batch, dim, generator=gg)
        y = teacher(x)
        if noise > 0:
            flip = torch.rand(batch, generator=gg) < noise
            y = torch.where(flip, torch.randint(0, classes, (batch,), generator=gg), y)
        return x, y

    return batch_at


def ring_gaussians(seed, batch=128, modes=8):
    """2-D points from 8 Gaussians on a circle of radius 2 (the classic WGAN toy)."""

    def batch_at(step):
        gg = gen(seed, step, 2)
        k = torch.randint(0, modes, (batch,), generator=gg).float()
        ang = 2 * math.pi * k / modes
        centre = 2 * torch.stack([ang.cos(), ang.sin()], 1)
        return centre + 0.05 * torch.randn(batch, 2, generator=gg)

    return batch_at


def regression_data(seed, dim=16, batch=64, hidden=32):
    """x ~ N(0, 1); y = a fixed random tanh MLP of x (scale ~3) plus a little noise."""
    g = torch.Generator().manual_seed(seed * 17 + 3)
    w1 = torch.randn(dim, hidden, generator=g) / dim**0.5
    w2 = torch.randn(hidden, 1, generator=g) * 3 / hidden**0.5

    def batch_at(step):
        gg = gen(seed, step, 3)
        x = torch.randn(batch, dim, generator=gg)
        return x, torch.tanh(2 * x @ w1) @ w2 + 0.1 * torch.randn(batch, 1, generator=gg)

    return batch_at


def chirp_audio(seed, batch=32, length=128, classes=4):
    """1-channel 'waveforms': a sine whose frequency band is the class, random phase and amplitude, in strong noise."""

    def batch_at(step):
        gg = gen(seed, step, 4)
        y = torch.randint(0, classes, (batch,), generator=gg)
        f = (0.03 + 0.05 * y.float() + 0.015 * torch.rand(batch, generator=gg))[:, None]
        ph = 2 * math.pi * torch.rand(batch, 1, generator=gg)
        amp = 0.5 + torch.rand(batch, 1, generator=gg)
        t = torch.arange(length).float()[None]
        x = amp * torch.sin(2 * math.pi * f * t + ph) + 2.0 * torch.randn(batch, length, generator=gg)
        return x.unsqueeze(1), y

    return batch_at


def templates_10(seed, size=8, classes=10):
    """Ten fixed 8x8 templates; an image is a template plus noise."""
    g = torch.Generator().manual_seed(seed + 59)
    return torch.randn(classes, 1, size, size, generator=g)


def copy_sequences(seed, vocab=16, period=4):
    """Sequences made of a random block of ``period`` tokens repeated: from position ``period`` on, each token is
    predictable by copying the token ``period`` positions back."""

    def batch_at(step, length, batch=16):
        gg = gen(seed, step, 6)
        block = torch.randint(0, vocab, (batch, period), generator=gg)
        seq = block.repeat(1, (length + 1) // period + 1)[:, : length + 1]
        return seq[:, :-1], seq[:, 1:]

    return batch_at


def motif_sequences(seed, n, length=48, classes=4, noise=0.15):
    """A fixed pool of ``n`` (+256 held-out) noisy 1-channel sequences with one of 4 motifs planted; labels noisy."""
    g = torch.Generator().manual_seed(seed + 71)
    motifs = torch.randn(classes, 7, generator=g) * 1.2
    total = n + 256
    y = torch.randint(0, classes, (total,), generator=g)
    x = torch.randn(total, length, generator=g)
    pos = torch.randint(0, length - 7, (total,), generator=g)
    for i in range(total):
        x[i, pos[i] : pos[i] + 7] += motifs[y[i]]
    flip = torch.rand(total, generator=g) < noise
    y_noisy = torch.where(flip, torch.randint(0, classes, (total,), generator=g), y)
    y_noisy[n:] = y[n:]  # held-out labels are clean
    return x.unsqueeze(1), y_noisy


def sensor_series(seed, batch=64, window=24, channels=4):
    """Multichannel AR series; target = the next value of channel 0 (standardised)."""
    g = torch.Generator().manual_seed(seed + 83)
    mix = torch.randn(channels, channels, generator=g) * 0.3

    def batch_at(step):
        gg = gen(seed, step, 7)
        x = torch.zeros(batch, window + 1, channels)
        x[:, 0] = torch.randn(batch, channels, generator=gg)
        for t in range(1, window + 1):
            x[:, t] = 0.8 * torch.tanh(x[:, t - 1] @ mix) + 0.6 * x[:, t - 1] * 0.5
            x[:, t] += 0.3 * torch.randn(batch, channels, generator=gg)
        return x[:, :window], x[:, window, 0] * 2.0

    return batch_at


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def mlp(widths, act, batchnorm=False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers += [nn.BatchNorm1d(b), act()] if batchnorm else [act()]
    return nn.Sequential(*layers)


def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)


class GradMultiply(torch.autograd.Function):
    """fairseq's GradMultiply: identity forward, gradient times ``scale`` backward."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.new(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class ConvFeatureEncoder(nn.Module):
    """wav2vec-style strided conv1d stack (GroupNorm on the first layer, GELU), mean pool, linear head.

    ``grad_mult`` is applied once to the encoder output (``in_loop=False``) or after every conv (``in_loop=True``)."""

    def __init__(self, layers=6, ch=32, classes=4, grad_mult=0.1, in_loop=False):
        super().__init__()
        convs = []
        for i in range(layers):
            convs.append(nn.Conv1d(1 if i == 0 else ch, ch, 3, stride=2 if i < 4 else 1, padding=1))
        self.convs = nn.ModuleList(convs)
        self.norm = nn.GroupNorm(ch, ch)
        self.head = nn.Linear(ch, classes)
        self.grad_mult, self.in_loop = grad_mult, in_loop

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i == 0:
                x = self.norm(x)
            x = F.gelu(x)
            if self.in_loop:
                x = GradMultiply.apply(x, self.grad_mult)
        if not self.in_loop:
            x = GradMultiply.apply(x, self.grad_mult)
        return self.head(x.mean(-1))


class FiLMNet(nn.Module):
    """6 FiLM-conditioned layers h = relu(gamma(c) * W h + beta(c)) on x, conditioned on c, linear head.

    The FiLM generators start near zero (std 0.01) so that, with the (1 + gamma) parametrisation, every layer starts
    as an unmodulated layer; ``plus_one=False`` uses gamma directly."""

    def __init__(self, dx=16, dc=8, width=64, layers=6, classes=4, plus_one=True):
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(dx if i == 0 else width, width) for i in range(layers))
        self.films = nn.ModuleList(nn.Linear(dc, 2 * width) for _ in range(layers))
        for f in self.films:
            nn.init.normal_(f.weight, std=0.01)
            nn.init.zeros_(f.bias)
        self.head = nn.Linear(width, classes)
        self.plus_one = plus_one

    def forward(self, xc):
        x, c = xc
        h = x
        for lin, film in zip(self.lins, self.films, strict=True):
            gamma, beta = film(c).chunk(2, -1)
            if self.plus_one:
                gamma = 1 + gamma
            h = F.relu(gamma * lin(h) + beta)
        return self.head(h)


class SmallCNN(nn.Module):
    def __init__(self, classes=10, ch=16):
        super().__init__()
        self.c1 = nn.Conv2d(1, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, 2 * ch, 3, padding=1)
        self.head = nn.Linear(2 * ch * 4 * 4, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        return self.head(F.relu(self.c2(x)).flatten(1))


class Coupling(nn.Module):
    def __init__(self, dim, hidden=64):
        super().__init__()
        self.half = dim // 2
        self.net = nn.Sequential(nn.Linear(self.half, hidden), nn.Tanh(), nn.Linear(hidden, 2 * (dim - self.half)))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x):
        a, b = x[:, : self.half], x[:, self.half :]
        s, t = self.net(a).chunk(2, -1)
        s = torch.tanh(s)
        return torch.cat([a, b * s.exp() + t], 1), s.sum(1)


class GlowVector(nn.Module):
    """Glow on vectors: K steps of (invertible linear mixing W, initialised as a random rotation by QR, then an
    affine coupling). log|det W| computed with torch.logdet (``use_logdet``) or torch.slogdet."""

    def __init__(self, dim=8, steps=4, use_logdet=True):
        super().__init__()
        ws = []
        for _ in range(steps):
            q, _ = torch.linalg.qr(torch.randn(dim, dim))
            ws.append(nn.Parameter(q))
        self.ws = nn.ParameterList(ws)
        self.couplings = nn.ModuleList(Coupling(dim) for _ in range(steps))
        self.use_logdet, self.dim = use_logdet, dim

    def forward(self, x):
        logdet = torch.zeros(x.shape[0])
        for w, coupling in zip(self.ws, self.couplings, strict=True):
            x = x @ w.T
            logdet = logdet + (torch.logdet(w) if self.use_logdet else torch.slogdet(w)[1])
            x, ld = coupling(x)
            logdet = logdet + ld
        logp = -0.5 * (x**2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)
        return -(logp + logdet).mean() / self.dim


class PosTransformerLM(nn.Module):
    """Causal 2-layer transformer LM with learned absolute position embeddings (max 64 positions)."""

    def __init__(self, vocab=16, d=32, max_len=64, layers=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        n = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(n))[None]
        mask = nn.Transformer.generate_square_subsequent_mask(n)
        return self.head(self.enc(h, mask=mask, is_causal=True))


class Conv1dClassifier(nn.Module):
    def __init__(self, ch=32, classes=4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, ch, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(ch, ch, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveMaxPool1d(1),
            nn.Flatten(),
            nn.Linear(ch, ch),
            nn.ReLU(),
            nn.Linear(ch, classes),
        )

    def forward(self, x):
        return self.net(x)


class LSTMForecaster(nn.Module):
    def __init__(self, channels=4, hidden=48):
        super().__init__()
        self.rnn = nn.LSTM(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])  # (B, 1)


class ResBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class ResEncoderNet(nn.Module):
    """Stem + 4 pre-norm residual MLP blocks (the encoder) and a fixed-prototype cosine classifier (NormFace-style:
    class prototypes are a fixed random orthonormal buffer, only the logit scale s is learned); ``ckpt`` wraps the
    encoder in torch.utils.checkpoint (reentrant) during training."""

    def __init__(self, dim=16, d=64, blocks=4, classes=10):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, d), *[ResBlock(d) for _ in range(blocks)], nn.LayerNorm(d))
        self.register_buffer("prototypes", torch.linalg.qr(torch.randn(d, classes))[0].T.contiguous())
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.ckpt = False

    def forward(self, x):
        if self.ckpt and self.training:
            h = torch.utils.checkpoint.checkpoint(self.encoder, x, use_reentrant=True)
        else:
            h = self.encoder(x)
        return self.log_scale.exp() * F.normalize(h, dim=-1) @ self.prototypes.T
