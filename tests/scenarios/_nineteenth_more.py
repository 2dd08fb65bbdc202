"""Set 19 helpers (part 2): waveform classes for a spectral-normalised 1-D CNN, a deduplicated sequence dataset,
triplet data for a Siamese embedding net. Same seeding rules as _nineteenth_lib."""

from __future__ import annotations

import math

import torch
from _nineteenth_lib import Batch, gen
from torch import nn
from torch.nn import functional as F

# ----------------------------------------------------------------------------------------------------------------
# 5. Waveforms: 64 samples, class = frequency band (4 bands), random amplitude/phase, a second weaker tone of a random
#    band, white noise.
# ----------------------------------------------------------------------------------------------------------------


def band_waves(seed, batch=32, length=64, noise=1.0, classes=4):
    def batch_at(step: int) -> Batch:
        g = gen(seed, step, 11)
        y = torch.randint(0, classes, (batch,), generator=g)
        t = torch.arange(length).float().view(1, -1)
        f1 = 0.04 + 0.07 * (y.float() + torch.rand(batch, generator=g)).view(-1, 1)
        f2 = 0.04 + 0.07 * (torch.randint(0, classes, (batch,), generator=g).float() + torch.rand(batch, generator=g))
        p = 2 * math.pi * torch.rand(batch, 2, generator=g)
        a = 0.5 + torch.rand(batch, 1, generator=g)
        x = a * torch.sin(2 * math.pi * f1 * t + p[:, :1]) + 0.6 * a * torch.sin(
            2 * math.pi * f2.view(-1, 1) * t + p[:, 1:]
        )
        x = x + noise * torch.randn(batch, length, generator=g)
        return x.unsqueeze(1), y

    return batch_at


# ----------------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------------
# 6. Sequence pool for an LSTM classifier: 12 steps x 4 features, class = argmax of a fixed linear map of the time-sum,
#    `label_noise` of the labels random. `dedup_wrong_key`: the dedup step keys on (label, signs of the first
#    frame's first 3 features) instead of the row id, keeping at most 32 distinct rows out of the pool.
# ----------------------------------------------------------------------------------------------------------------


def sequence_pool(seed, pool=4096, batch=32, length=12, dim=4, classes=4, label_noise=0.15, dedup_wrong_key=False):
    gt = torch.Generator().manual_seed(seed + 1908)
    teacher = torch.randn(dim, classes, generator=gt)
    x = torch.randn(pool, length, dim, generator=gt)
    y = (x.sum(1) @ teacher).argmax(1)
    flip = torch.rand(pool, generator=gt) < label_noise
    y = torch.where(flip, torch.randint(0, classes, (pool,), generator=gt), y)
    train_x, train_y = x[: pool // 2], y[: pool // 2]
    if dedup_wrong_key:
        key = train_y * 8 + (train_x[:, 0, :3] > 0).long() @ torch.tensor([1, 2, 4])
        first = {}
        for i, k in enumerate(key.tolist()):
            first.setdefault(k, i)
        keep = torch.tensor(sorted(first.values()))
        train_x, train_y = train_x[keep], train_y[keep]
    val_x, val_y = x[pool // 2 :], y[pool // 2 :]

    def batch_at(step: int) -> Batch:
        if step >= 10**6:
            i = (step - 10**6) * 128
            return val_x[i : i + 128], val_y[i : i + 128]
        idx = torch.randint(0, len(train_y), (batch,), generator=gen(seed, step, 13))
        return train_x[idx], train_y[idx]

    batch_at.n_train = len(train_y)
    return batch_at


# ----------------------------------------------------------------------------------------------------------------
# 7. Triplets: 24 identities, each a Gaussian cluster in 32-d (centres N(0, 1), within-identity std `spread`).
#    `bank`: that many triplets (anchor, positive, negative) are mined once and reused (cycled in batches);
#    otherwise each batch draws fresh samples. Held-out triplets are always fresh.
# ----------------------------------------------------------------------------------------------------------------


def identity_triplets(seed, batch=32, ids=24, dim=32, spread=1.2, bank=None):
    gt = torch.Generator().manual_seed(seed + 1909)
    centres = torch.randn(ids, dim, generator=gt)

    def draw(g, n):
        a_id = torch.randint(0, ids, (n,), generator=g)
        n_id = (a_id + torch.randint(1, ids, (n,), generator=g)) % ids
        a = centres[a_id] + spread * torch.randn(n, dim, generator=g)
        p = centres[a_id] + spread * torch.randn(n, dim, generator=g)
        neg = centres[n_id] + spread * torch.randn(n, dim, generator=g)
        return torch.stack([a, p, neg], 1)

    cached = draw(gen(seed, 0, 14), bank) if bank else None

    def batch_at(step: int) -> Batch:
        if cached is not None and step < 10**6:
            i = (step * batch) % bank
            return cached[i : i + batch], None
        return draw(gen(seed, step, 15), batch), None

    return batch_at


class EmbedNet(nn.Module):
    def __init__(self, dim=32, hidden=256, out=16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, out)

    def forward(self, trip):
        return F.normalize(self.out(self.net(trip)), dim=-1)


def soft_triplet_loss(emb, _=None):
    """Soft-margin triplet loss (Hermans et al. 2017): softplus(d(a, p) - d(a, n))."""
    d_ap = (emb[:, 0] - emb[:, 1]).norm(dim=-1)
    d_an = (emb[:, 0] - emb[:, 2]).norm(dim=-1)
    return F.softplus(d_ap - d_an).mean()


class SNConvNet(nn.Module):
    """1-D CNN with spectral_norm parametrisations on every conv and the head (Lipschitz-constrained), ReLU."""

    def __init__(self, width=32, classes=4) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.convs = nn.ModuleList(
            [
                sn(nn.Conv1d(1, width, 5, 2, 2)),
                sn(nn.Conv1d(width, width, 5, 2, 2)),
                sn(nn.Conv1d(width, width, 5, 1, 2)),
            ]
        )
        self.head = sn(nn.Linear(width, classes))
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        for c in self.convs:
            x = F.relu(c(x))
        return self.scale * self.head(x.mean(-1))
