"""Models the seventh set's scenario files share (not a scenario file)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCausalLM(nn.Module):
    """Token + learned position embeddings, pre-LN causal transformer, untied head."""

    def __init__(self, vocab: int, length: int, d_model: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(length, d_model)
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d_model, nhead=heads, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True, norm_first=True
            ),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.register_buffer("mask", torch.triu(torch.full((length, length), float("-inf")), diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t))[None]
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


class AttentionPoolClassifier(nn.Module):
    """Embedding, one hand-written masked self-attention layer, masked attention pooling, linear head.

    Padding positions (token 0) are masked with -inf before each softmax, the textbook way.
    """

    def __init__(self, vocab: int, d: int = 32, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.score = nn.Linear(d, 1)
        self.head = nn.Linear(d, classes)
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = x == 0  # (B, T)
        h = self.emb(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        att = (q @ k.transpose(1, 2)) / self.d**0.5
        att = att.masked_fill(pad[:, None, :], float("-inf")).softmax(-1)
        h = h + self.proj(att @ v)
        s = self.score(torch.tanh(h)).squeeze(-1).masked_fill(pad, float("-inf")).softmax(-1)
        return self.head((s[..., None] * h).sum(1))
