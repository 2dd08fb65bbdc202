"""Models the agent-overhead benchmark trains: a residual MLP for CPUs, a GPT for GPUs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class MLPBlock(nn.Module):
    """x + fc2(gelu(fc1(ln(x)))): 6 parameter tensors."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))


class ResidualMLP(nn.Module):
    """Residual MLP blocks between an input and an output layer (52 parameter tensors at 8 blocks)."""

    def __init__(self, width: int = 256, hidden: int = 512, blocks: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.inp = nn.Linear(width, width)
        self.blocks = nn.Sequential(*(MLPBlock(width, hidden) for _ in range(blocks)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.inp(x)))


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 50304
    seq: int = 1024
    layers: int = 12
    width: int = 768
    heads: int = 12


GPT_SIZES = {
    # name: (config, sequences per step) -- 8,192 tokens per step for the GPU sizes
    "gpt-124m": (GPTConfig(layers=12, width=768, heads=12), 8),
    "gpt-1.3b": (GPTConfig(layers=24, width=2048, heads=16), 8),
    "gpt-tiny": (GPTConfig(vocab=512, seq=64, layers=2, width=64, heads=4), 4),  # a quick check of the code path
}


class Block(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.heads = c.heads
        self.ln1 = nn.LayerNorm(c.width)
        self.qkv = nn.Linear(c.width, 3 * c.width)
        self.proj = nn.Linear(c.width, c.width)
        self.ln2 = nn.LayerNorm(c.width)
        self.fc = nn.Linear(c.width, 4 * c.width)
        self.out = nn.Linear(4 * c.width, c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """A GPT-2-style decoder (learned positions, pre-LayerNorm, tied embedding)."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(c.vocab, c.width)
        self.pos = nn.Embedding(c.seq, c.width)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.ln = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


@dataclass
class Workload:
    """A model, its optimizer and one training step (forward, backward, optimizer step, zero_grad)."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    #: Runs forward and backward and returns the loss tensor (never read on the host).
    forward_backward: Callable[[], torch.Tensor]

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def tensors(self) -> int:
        return sum(1 for _ in self.model.parameters())


def make_workload(name: str, device: str) -> Workload:
    """``mlp`` (CPU sizes) or a GPT size from :data:`GPT_SIZES`, with AdamW."""
    torch.manual_seed(0)
    model: nn.Module
    if name == "mlp":
        model = ResidualMLP().to(device)
        x = torch.randn(128, 256, device=device)
        y = torch.randint(0, 10, (128,), device=device)

        def mlp_step() -> torch.Tensor:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        return Workload(name, model, torch.optim.AdamW(model.parameters(), lr=1e-3), mlp_step)
    config, batch = GPT_SIZES[name]
    with torch.device(device):  # initialised where it trains: a 1.3B model's CPU init alone takes a while
        model = GPT(config)
    idx = torch.randint(0, config.vocab, (batch, config.seq + 1), device=device)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)

    def gpt_step() -> torch.Tensor:
        with autocast:
            logits = model(idx[:, :-1])
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))
        loss.backward()
        return loss

    return Workload(name, model, torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1), gpt_step)
