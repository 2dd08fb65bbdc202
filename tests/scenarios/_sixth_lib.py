"""Models and data the sixth set's scenario files share (not a scenario file)."""

from __future__ import annotations

import torch
from torch import nn


class Seq2SeqGRU(nn.Module):
    """GRU encoder-decoder; input is cat(src, decoder_input) along time (teacher forcing)."""

    def __init__(self, vocab: int = 10, emb: int = 32, hidden: int = 64, length: int = 6) -> None:
        super().__init__()
        self.length = length
        self.emb = nn.Embedding(vocab + 1, emb)  # +1: BOS
        self.enc = nn.GRU(emb, hidden, batch_first=True)
        self.dec = nn.GRU(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src, tgt_in = x[:, : self.length], x[:, self.length :]
        _, h = self.enc(self.emb(src))
        dec, _ = self.dec(self.emb(tgt_in), h)
        return self.out(dec)  # (B, L, vocab)
