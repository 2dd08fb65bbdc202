"""Set 19 helpers (part 1): synthetic data and small models for the set-19 faults and controls.

Every data generator draws from private ``torch.Generator`` objects seeded by (seed, step, salt); every model is
built right after ``torch.manual_seed(seed)`` (which also seeds dropout and any in-graph sampling), so a run depends
on its seed alone. The loop (run_loop / simple_step / mean_val) is set 18's, shared.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from _eighteenth_lib import mean_val, run_loop, simple_step  # noqa: F401  (re-exported for the scenario files)
from torch import nn
from torch.nn import functional as F

torch.set_num_threads(1)

Batch = tuple[Any, Any]
VAL = 10**6  # held-out batches come from steps >= VAL of the same generator (never trained on)


def gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_039 + step * 31 + salt * 7_919_121 + 19)


# ----------------------------------------------------------------------------------------------------------------
# 1. Token sequences for a small transformer built on nn.MultiheadAttention. Token 0 = PAD, 1..vocab-1 = words.
#    count_tokens: variable lengths in [min_len, max_len]; class = which of the words 1..4 occurs most often.
#    The collator pads to `pad_to` (fixed) or, from `longest_from` on, to the longest sequence in the batch.
# ----------------------------------------------------------------------------------------------------------------

PAD = 0


def count_tokens(seed, batch=32, vocab=16, min_len=8, max_len=28, pad_to=32, longest_from=None, classes=4):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 1)
        lens = torch.randint(min_len, max_len + 1, (batch,), generator=g)
        toks = torch.randint(1, vocab, (batch, max_len), generator=g)
        pos = torch.arange(max_len).view(1, -1)
        toks = torch.where(pos < lens.view(-1, 1), toks, torch.zeros_like(toks))
        counts = torch.stack([(toks == c + 1).sum(1) for c in range(classes)], 1).float()
        y = (counts + 0.01 * torch.arange(classes, 0, -1).float()).argmax(1)
        width = int(lens.max()) if longest_from is not None and step >= longest_from else pad_to
        out = torch.zeros(batch, width, dtype=torch.long)
        keep = min(width, max_len)
        out[:, :keep] = toks[:, :keep]
        return out, y

    return batch_at


class Block(nn.Module):
    """Pre-LN transformer block on nn.MultiheadAttention. `rezero`: h + alpha * branch with a learned scalar alpha
    (initialised to 0); `zero_out`: the last linear of each branch is zero-initialised (Fixup / GPT-style);
    `need_weights`: ask MultiheadAttention for the attention map too (as code that logs attention maps does; this
    takes the non-SDPA path)."""

    def __init__(self, d=32, heads=4, rezero=False, zero_out=False, dropout=0.0, need_weights=False) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.alpha = nn.Parameter(torch.zeros(())) if rezero else None
        self.need_weights = need_weights
        if zero_out:
            nn.init.zeros_(self.attn.out_proj.weight)
            nn.init.zeros_(self.attn.out_proj.bias)
            nn.init.zeros_(self.ff[2].weight)
            nn.init.zeros_(self.ff[2].bias)

    def forward(self, h, pad_mask=None):
        a = 1.0 if self.alpha is None else self.alpha
        q = self.ln1(h)
        h = h + a * self.attn(q, q, q, key_padding_mask=pad_mask, need_weights=self.need_weights)[0]
        return h + a * self.ff(self.ln2(h))


class TokenTransformer(nn.Module):
    """Embedding + learned positions, `layers` Blocks, final LN; `pool`: mean over non-PAD positions -> classes,
    else per-token logits. `mask_convention`: "torch" passes key_padding_mask = (tokens == PAD) (True = ignore, what
    nn.MultiheadAttention expects); "hf" passes the attention mask of the HF convention, tokens != PAD
    (True = keep), i.e. inverted; None passes no mask."""

    def __init__(self, vocab=16, d=32, layers=2, out=4, max_len=32, pool=True, mask_convention="torch", **block):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(1, max_len, d))
        self.blocks = nn.ModuleList(Block(d, **block) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, out)
        self.pool, self.mask_convention = pool, mask_convention

    def forward(self, toks):
        h = self.embed(toks) + self.pos[:, : toks.shape[1]]
        pad_mask = None
        if self.mask_convention == "torch":
            pad_mask = toks == PAD
        elif self.mask_convention == "hf":
            pad_mask = toks != PAD
        for b in self.blocks:
            h = b(h, pad_mask)
        h = self.ln(h)
        if not self.pool:
            return self.head(h)
        keep = (toks != PAD).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1))


# ----------------------------------------------------------------------------------------------------------------
# 2. Toy speech for CTC: 8 symbols (ids 1..8, 0 = blank), each with a fixed 12-d prototype frame; a symbol lasts 3-5
#    frames; frames = prototype + noise, silence between utterances. The collator crops/pads to 64 frames; the net
#    downsamples 4x (16 output frames). `long_from`: from that step the curriculum adds long utterances (up to
#    `long_max` symbols), whose frames are cropped to 64 while the transcripts are not.
# ----------------------------------------------------------------------------------------------------------------


def toy_speech(seed, batch=16, frames=64, short=(2, 5), long_max=24, long_from=None, noise=0.6):
    gt = torch.Generator().manual_seed(seed + 1903)
    protos = torch.randn(9, 12, generator=gt)
    protos[0] = 0.0

    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 4)
        hi = long_max if long_from is not None and step >= long_from else short[1]
        lens = torch.randint(short[0], hi + 1, (batch,), generator=g)
        x = torch.zeros(batch, frames, 12)
        tgts = []
        for b in range(batch):
            syms = torch.randint(1, 9, (int(lens[b]),), generator=g)
            dur = torch.randint(3, 6, (int(lens[b]),), generator=g)
            seq = protos[torch.repeat_interleave(syms, dur)][:frames]
            x[b, 2 : 2 + len(seq)] = seq[: frames - 2]
            tgts.append(syms)
        x = x + noise * torch.randn(x.shape, generator=g)
        return x, (torch.cat(tgts), lens)

    return batch_at


class CTCNet(nn.Module):
    """Two stride-2 conv layers (4x downsampling) + bidirectional GRU + linear -> (T/4, batch, 9) log-probs."""

    def __init__(self, hidden=48) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(12, hidden, 5, stride=2, padding=2), nn.ReLU(), nn.Conv1d(hidden, hidden, 5, stride=2, padding=2)
        )
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 9)

    def forward(self, x):
        h = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        h, _ = self.gru(h)
        return self.head(h).log_softmax(-1).transpose(0, 1)


def ctc_loss_fn(zero_infinity=False):
    ctc = nn.CTCLoss(blank=0, zero_infinity=zero_infinity)

    def loss(logp, target):
        flat, lens = target
        t = torch.full((logp.shape[1],), logp.shape[0], dtype=torch.long)
        return ctc(logp, flat, t, lens)

    return loss


# ----------------------------------------------------------------------------------------------------------------
# 3. DDPM-style denoiser on 2-D points (8 Gaussians on a circle of radius 2, std 0.15), T = 100 steps, linear betas
#    1e-4..0.02. A batch is (x0, t, eps) drawn together; the model predicts eps from (x_t, t / T).
# ----------------------------------------------------------------------------------------------------------------

T_DIFF = 100
_BETAS = torch.linspace(1e-4, 0.02, T_DIFF)
ALPHA_BAR = torch.cumprod(1 - _BETAS, 0)


def ring_points(seed, batch=128):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 5)
        k = torch.randint(0, 8, (batch,), generator=g).float()
        ang = 2 * math.pi * k / 8
        x0 = 2 * torch.stack([ang.cos(), ang.sin()], 1) + 0.15 * torch.randn(batch, 2, generator=g)
        t = torch.randint(0, T_DIFF, (batch,), generator=g)
        eps = torch.randn(batch, 2, generator=g)
        return x0, t, eps

    return batch_at


def noised(x0, t, eps):
    ab = ALPHA_BAR[t].unsqueeze(1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


class Denoiser(nn.Module):
    def __init__(self, hidden=128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.out = nn.Linear(hidden, 2)

    def forward(self, xt, tfeat):
        return self.out(self.net(torch.cat([xt, tfeat.float().unsqueeze(1)], 1)))


# ----------------------------------------------------------------------------------------------------------------
# 4. Temperature series (degrees C): level 20 + daily/weekly sinusoids (random phase/amplitude) + AR(1) noise.
#    Inputs: 32 past values; targets: the next 8. Both pass through the pipeline's scaler (x - mean) / std.
# ----------------------------------------------------------------------------------------------------------------

TEMP_MEAN, TEMP_STD = 20.0, 4.0


def temperature_windows(seed, batch=32, hist=32, horizon=8, scaler_at=lambda step: (TEMP_MEAN, TEMP_STD)):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 6)
        n = hist + horizon
        t = torch.arange(n).float().view(1, -1) + 1000 * torch.rand(batch, 1, generator=g)
        amp = 2 + 2 * torch.rand(batch, 2, generator=g)
        s = 20 + amp[:, :1] * torch.sin(2 * math.pi * t / 24) + amp[:, 1:] * torch.sin(2 * math.pi * t / 17 + 1)
        e = torch.randn(batch, n, generator=g) * 0.3
        ar = torch.zeros(batch, n)
        for i in range(1, n):
            ar[:, i] = 0.8 * ar[:, i - 1] + e[:, i]
        s = s + ar + 2 * torch.randn(batch, 1, generator=g)
        mean, std = scaler_at(step)
        z = (s - mean) / std
        return z[:, :hist].unsqueeze(-1), z[:, hist:]

    return batch_at


class GRUForecaster(nn.Module):
    def __init__(self, hidden=64, horizon=8) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])
