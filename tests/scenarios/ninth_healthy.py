"""Ninth held-out set, healthy controls: no symptom should fire on any of these."""

from __future__ import annotations

import torch
from _common import fit, mlp, quadrant_images, teacher_classification
from _ninth_lib import PlainCNN, TabularNet, gen, tabular
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


# --- Adadelta (lr=1.0, the classic default) on a CNN without normalisation --------------------
def _adadelta_cnn(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = PlainCNN()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    fit(watch, model, opt, steps=300, batch_at=quadrant_images(seed=seed, noise=0.8), loss_fn=F.cross_entropy)


# --- NAdam on tabular data with entity embeddings (noisy regression, converges to noise floor) ---
def _nadam_tabular(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = TabularNet()
    opt = torch.optim.NAdam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=tabular(seed), loss_fn=F.mse_loss)


# --- full-batch L-BFGS logistic regression (strong Wolfe), run for a fixed number of steps ----
def _lbfgs_logreg(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g = gen(seed, 0)
    x = torch.randn(512, 20, generator=g)
    w = torch.randn(20, generator=g)
    y = ((x @ w) / 20**0.5 + 0.5 * torch.randn(512, generator=g) > 0).float()  # noisy: not separable
    model = nn.Linear(20, 1)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=4, history_size=10, line_search_fn="strong_wolfe")
    mon = watch(model, opt)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x).squeeze(1), y) + 1e-3 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(80):
        loss = opt.step(closure)
        mon.step(loss.detach())


# --- SAM (sharpness-aware minimisation, rho=0.05) around SGD momentum -------------------------
def _sam_mlp(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = teacher_classification(seed=seed, label_noise=0.1)
    mon = watch(model, opt)
    rho = 0.05
    params = [p for p in model.parameters()]
    for step in range(300):
        x, y = data(step)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with torch.no_grad():
            norm = torch.norm(torch.stack([p.grad.norm() for p in params])) + 1e-12
            eps = [rho * p.grad / norm for p in params]
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.sub_(e)
        opt.step()
        mon.step(loss.detach())


# --- physics-informed net: u' = cos(4t) - u on [0, 2], u(0) = 1; tanh MLP, Adam ----------------
def _pinn_ode(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([1, 32, 32, 1], activation=nn.Tanh)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    mon = watch(model, opt)
    t0 = torch.zeros(1, 1)
    for step in range(400):
        t = 2.0 * torch.rand(64, 1, generator=gen(seed, step)).requires_grad_(True)
        u = model(t)
        (du,) = torch.autograd.grad(u.sum(), t, create_graph=True)
        residual = du - (torch.cos(4 * t) - u)
        loss = residual.pow(2).mean() + 10.0 * (model(t0) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- heavily imbalanced classes, inverse-frequency weighted CE, Adam --------------------------
PRIORS = torch.tensor([0.80, 0.10, 0.05, 0.03, 0.02])


def _imbalanced(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 7)
    centers = 1.6 * torch.randn(5, 12, generator=g0)

    def batch_at(step: int):
        g = gen(seed, step)
        y = torch.multinomial(PRIORS, 32, replacement=True, generator=g)
        x = centers[y] + torch.randn(32, 12, generator=g)
        return x, y

    weights = (1.0 / PRIORS) / (1.0 / PRIORS).mean()
    model = mlp([12, 64, 64, 5])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=lambda o, y: F.cross_entropy(o, y, weight=weights))


# --- multi-label tagging: 40 tags, ~2 positive per sample, BCE with logits --------------------
def _multilabel(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 9)
    proj = torch.randn(24, 40, generator=g0)

    def batch_at(step: int):
        g = gen(seed, step)
        x = torch.randn(64, 24, generator=g)
        scores = x @ proj / 24**0.5
        y = (scores > 2.0).float()  # ~2.3% of tags on
        return x, y

    model = mlp([24, 128, 128, 40])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.binary_cross_entropy_with_logits)


# --- matrix factorisation with sparse embedding gradients and SparseAdam ----------------------
class MF(nn.Module):
    def __init__(self, users: int = 200, items: int = 150, k: int = 8):
        super().__init__()
        self.u = nn.Embedding(users, k, sparse=True)
        self.i = nn.Embedding(items, k, sparse=True)
        self.ub = nn.Embedding(users, 1, sparse=True)
        self.ib = nn.Embedding(items, 1, sparse=True)
        for e in (self.u, self.i):
            nn.init.normal_(e.weight, std=0.1)
        for e in (self.ub, self.ib):
            nn.init.zeros_(e.weight)

    def forward(self, pair):
        u, i = pair[:, 0], pair[:, 1]
        return (self.u(u) * self.i(i)).sum(1) + self.ub(u).squeeze(1) + self.ib(i).squeeze(1) + 3.5


def _sparse_mf(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 11)
    U, V = torch.randn(200, 4, generator=g0), torch.randn(150, 4, generator=g0)

    def batch_at(step: int):
        g = gen(seed, step)
        pair = torch.stack([torch.randint(0, 200, (256,), generator=g), torch.randint(0, 150, (256,), generator=g)], 1)
        r = 3.5 + 0.5 * (U[pair[:, 0]] * V[pair[:, 1]]).sum(1) + 0.3 * torch.randn(256, generator=g)
        return pair, r

    model = MF()
    opt = torch.optim.SparseAdam(list(model.parameters()), lr=1e-2)
    fit(watch, model, opt, steps=400, batch_at=batch_at, loss_fn=F.mse_loss)


SCENARIOS: list[Scenario] = [
    Scenario(
        "healthy9_adadelta_plain_cnn",
        "Two-layer CNN without normalisation on noisy quadrant images, Adadelta lr=1.0 (its classic default).",
        _adadelta_cnn,
        tags=frozenset({"healthy", "cnn", "adadelta", "ninth"}),
    ),
    Scenario(
        "healthy9_nadam_tabular_entity_embeddings",
        "Tabular regression (6 continuous + 3 categorical columns with entity embeddings), NAdam; "
        "converges to its noise floor (0.09) and sits there.",
        _nadam_tabular,
        tags=frozenset({"healthy", "tabular", "embedding", "nadam", "ninth"}),
    ),
    Scenario(
        "healthy9_lbfgs_fullbatch_logreg",
        "Full-batch L-BFGS (strong Wolfe, 4 inner iterations per step) on noisy logistic regression: "
        "converges in ~10 steps, then sits at the optimum for the rest of a fixed 80-step budget.",
        _lbfgs_logreg,
        tags=frozenset({"healthy", "linear", "lbfgs", "converged", "ninth"}),
    ),
    Scenario(
        "healthy9_sam_mlp_momentum",
        "Sharpness-aware minimisation (rho=0.05; two backward passes per step) around SGD momentum, MLP, "
        "10% label noise.",
        _sam_mlp,
        tags=frozenset({"healthy", "mlp", "sam", "momentum", "ninth"}),
    ),
    Scenario(
        "healthy9_pinn_ode_tanh",
        "Physics-informed tanh MLP solving u' = cos(4t) - u, u(0)=1 (loss through autograd.grad, Adam); "
        "the residual loss falls by orders of magnitude.",
        _pinn_ode,
        tags=frozenset({"healthy", "mlp", "pinn", "tanh", "adam", "ninth"}),
    ),
    Scenario(
        "healthy9_imbalanced_weighted_ce",
        "5 classes with priors 80/10/5/3/2%, inverse-frequency weighted CE (batches with rare samples weigh "
        "much more), Adam.",
        _imbalanced,
        tags=frozenset({"healthy", "mlp", "imbalanced", "adam", "ninth"}),
    ),
    Scenario(
        "healthy9_multilabel_sparse_tags_bce",
        "Multi-label tagging, 40 tags ~2% positive, BCE with logits (fast drop to the all-negative level, "
        "then slow improvement), Adam.",
        _multilabel,
        tags=frozenset({"healthy", "mlp", "multilabel", "adam", "ninth"}),
    ),
    Scenario(
        "healthy9_sparse_embedding_mf_sparseadam",
        "Matrix factorisation recommender with sparse embedding gradients (nn.Embedding(sparse=True)), "
        "SparseAdam, noisy ratings.",
        _sparse_mf,
        tags=frozenset({"healthy", "embedding", "recommender", "sparseadam", "ninth"}),
    ),
]
