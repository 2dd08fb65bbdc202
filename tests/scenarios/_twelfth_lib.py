"""Helpers for the twelfth held-out set (not a scenario file): data, sequence models, an offline recorder.

Everything draws from private, seeded ``torch.Generator`` objects, so a scenario's data depend on its
seed alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def markov_chain(vocab: int, sharpness: float, seed: int) -> torch.Tensor:
    """A fixed random transition matrix (rows sum to 1); larger ``sharpness`` = more predictable."""
    g = torch.Generator().manual_seed(seed + 41)
    return torch.softmax(sharpness * torch.randn(vocab, vocab, generator=g), 1)


def sample_chain(trans: torch.Tensor, batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    vocab = trans.shape[0]
    seq = torch.empty(batch, length, dtype=torch.long)
    seq[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
    for t in range(1, length):
        seq[:, t] = torch.multinomial(trans[seq[:, t - 1]], 1, generator=g).squeeze(1)
    return seq


def markov_lm(vocab: int = 16, sharpness: float = 2.5, batch: int = 32, length: int = 25, seed: int = 0):
    """Next-token batches (inputs, targets) from a fixed peaked Markov chain."""
    trans = markov_chain(vocab, sharpness, seed)

    def batch_at(step: int):
        seq = sample_chain(trans, batch, length + 1, gen(seed, step))
        return seq[:, :-1], seq[:, 1:]

    return batch_at


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def blob_images(batch: int = 32, size: int = 16, noise: float = 0.05, seed: int = 0):
    """Images that are a random mix of 4 fixed smooth blobs plus pixel noise: (x, x) pairs for an autoencoder."""
    g0 = torch.Generator().manual_seed(seed + 13)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    blobs = []
    for _ in range(4):
        cy, cx = (torch.rand(2, generator=g0) * (size - 4) + 2).tolist()
        s = 1.5 + 2.0 * float(torch.rand(1, generator=g0))
        blobs.append(torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
    basis = torch.stack(blobs)  # (4, size, size)

    def batch_at(step: int):
        g = gen(seed, step)
        amp = torch.rand(batch, 4, generator=g)
        x = torch.einsum("bk,khw->bhw", amp, basis)[:, None]
        if noise > 0:
            x = x + noise * torch.randn(x.shape, generator=g)
        return x, x

    return batch_at


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
class RecurrentLM(nn.Module):
    """Embedding -> LSTM/GRU/RNN -> linear; forward(x, state) returns (logits, state)."""

    def __init__(self, vocab: int = 16, emb: int = 16, hidden: int = 64, cell: str = "lstm", layers: int = 1):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = rnn(emb, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        h, state = self.rnn(self.emb(x), state)
        return self.out(h), state


class LMWrapper(nn.Module):
    """Drops the recurrent state so ``fit`` can call the model on a batch."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, x):
        return self.lm(x)[0]


class CausalTransformerLM(nn.Module):
    """Token + learned position embedding, nn.TransformerEncoder with a causal mask, linear head."""

    def __init__(self, vocab=16, d=32, layers=2, length=32, norm_first=False, heads=4):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(length, d))
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=norm_first),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.norm = nn.LayerNorm(d) if norm_first else nn.Identity()
        self.out = nn.Linear(d, vocab)

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf")), 1)
        h = self.enc(self.tok(x) + self.pos[:t], mask=mask, is_causal=True)
        return self.out(self.norm(h))


class SelfAttention(nn.Module):
    """Hand-written multi-head self-attention: scores masked with -inf where ``allowed`` is False."""

    def __init__(self, d: int, heads: int = 4, scale: bool = True):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads
        self.scale = scale

    def forward(self, x, allowed=None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2)
        if self.scale:
            scores = scores / math.sqrt(d // self.heads)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        att = torch.softmax(scores, -1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int = 4, scale: bool = True):
        super().__init__()
        self.n1 = nn.LayerNorm(d)
        self.att = SelfAttention(d, heads, scale)
        self.n2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, allowed=None):
        x = x + self.att(self.n1(x), allowed)
        return x + self.ff(self.n2(x))


# --------------------------------------------------------------------------------------------------
# offline recorder (never used by gradwatch eval)
# --------------------------------------------------------------------------------------------------
class Recorder:
    """A stand-in for ``watch`` used only for the offline measurements documented in the scenario files."""

    def __init__(self):
        self.rows = []

    def __call__(self, model, optimizer=None, **options):
        self.model = model
        self.opt = optimizer
        return self

    def step(self, loss, val_loss=None, grad_norm=None):
        params = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
        norms = {n: float(p.grad.norm()) for n, p in params}
        total = math.sqrt(sum(v * v for v in norms.values())) if norms else 0.0
        pfin = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        self.rows.append(
            dict(
                loss=float(loss),
                val=val_loss,
                gn=total,
                norms=norms,
                pfin=pfin,
                clip=None if grad_norm is None else float(grad_norm),
                lr=self.opt.param_groups[0]["lr"] if self.opt is not None else None,
            )
        )

    def close(self):
        pass
