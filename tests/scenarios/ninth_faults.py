"""Ninth held-out set, pathologies: each run has one labelled symptom at a known onset."""

from __future__ import annotations

import torch
from _common import fit, fixed_dataset, mlp, quadrant_images, teacher_classification, teacher_regression
from _ninth_lib import PlainCNN, TabularNet, gen, tabular
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

BLOWS_UP = frozenset({"loss_spike", "nonfinite"})


# --- exploding: a refactor drops optimizer.zero_grad() from step 120 on: gradients accumulate ---
ZERO_GRAD_LOST = 120


def _zero_grad_forgotten(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    data = teacher_regression(seed=seed, noise=0.1)
    mon = watch(model, opt)
    for step in range(220):
        x, y = data(step)
        loss = F.mse_loss(model(x), y)
        if step < ZERO_GRAD_LOST:  # from here the "accumulate every N" branch never zeroes
            opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- exploding: progressive batch size 16 -> 512 at step 100 with a reduction="sum" loss ----------
BATCH_GROWS = 100


def _sum_loss_batch_growth(watch, seed: int) -> None:
    torch.manual_seed(seed)
    small = teacher_classification(seed=seed, batch=16, dim=16)
    big = teacher_classification(seed=seed, batch=512, dim=16)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)  # tuned for batch 16 with sum

    def batch_at(step: int):
        return big(step) if step >= BATCH_GROWS else small(step)

    fit(watch, model, opt, steps=220, batch_at=batch_at, loss_fn=lambda o, y: F.cross_entropy(o, y, reduction="sum"))


# --- nonfinite: hand-written LARS without the zero-grad-norm guard; a head gets no samples --------
EMPTY_TASK_STEP = 160


class TwoHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = mlp([16, 64, 64])
        self.head_a = nn.Linear(64, 4)
        self.head_b = nn.Linear(64, 3)

    def forward(self, x):
        h = F.relu(self.trunk(x))
        return self.head_a(h), self.head_b(h)


def _lars_zero_grad(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 5)
    ta, tb = torch.randn(16, 4, generator=g0), torch.randn(16, 3, generator=g0)
    model = TwoHead()
    params = list(model.parameters())
    momentum = [torch.zeros_like(p) for p in params]
    opt = torch.optim.SGD(params, lr=0.0)  # only holds the params (and zero_grad); LARS below
    mon = watch(model, opt)
    for step in range(300):
        g = gen(seed, step)
        x = torch.randn(32, 16, generator=g)
        task = torch.rand(32, generator=g) < 0.5
        if step == EMPTY_TASK_STEP:
            task[:] = True  # the sampler returned a batch with no task-B examples
        oa, ob = model(x)
        loss = torch.zeros(())
        if task.any():
            loss = loss + F.cross_entropy(oa[task], (x[task] @ ta).argmax(1))
        if (~task).any():
            loss = loss + F.cross_entropy(ob[~task], (x[~task] @ tb).argmax(1))
        opt.zero_grad(set_to_none=False)
        loss.backward()
        with torch.no_grad():
            for p, m in zip(params, momentum, strict=True):
                trust = 0.02 * p.norm() / p.grad.norm()  # missing "if g_norm > 0" guard
                m.mul_(0.9).add_(trust * p.grad)
                p.sub_(0.5 * m)
        mon.step(loss.detach())


# --- overfitting: linear model, 200 features, 192 noisy training rows, no weight decay -------------
def _highdim_logreg(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 13)
    w = torch.zeros(200)
    w[:5] = 2.5 * torch.randn(5, generator=g0)

    def base(step: int):
        g = gen(seed, step)
        x = torch.randn(32, 200, generator=g)
        y = (x @ w + torch.randn(32, generator=g) > 0).long()
        flip = torch.rand(32, generator=g) < 0.1
        return x, torch.where(flip, 1 - y, y)

    model = nn.Linear(200, 2)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=fixed_dataset(base, 6),
        loss_fn=F.cross_entropy,
        val_at=lambda i: base(10**6 + i),
        val_every=5,
    )


# --- overfitting: augmentation switched off on resume (step 120), small image set ----------------
AUG_OFF = 40


def _aug_disabled(watch, seed: int) -> None:
    torch.manual_seed(seed)
    raw = quadrant_images(seed=seed, size=8, noise=1.2, label_noise=0.2)
    train = fixed_dataset(raw, 6)

    def batch_at(step: int):
        x, y = train(step)
        if step < AUG_OFF:  # random shifts + pixel noise, until the resumed config drops them
            g = gen(seed + 77, step)
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
            x = torch.roll(x, shifts=(dx, dy), dims=(2, 3)) + 1.0 * torch.randn(x.shape, generator=g)
        return x, y

    model = PlainCNN(channels=32)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(
        watch,
        model,
        opt,
        steps=360,
        batch_at=batch_at,
        loss_fn=F.cross_entropy,
        val_at=lambda i: raw(10**6 + i),
        val_every=5,
    )


# --- stagnation: the loader starts returning all-zero inputs (normaliser std became inf) ----------
ZERO_INPUT_STEP = 150


def _zero_inputs(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_classification(seed=seed, dim=16, classes=4)

    def batch_at(step: int):
        x, y = base(step)
        if step >= ZERO_INPUT_STEP:
            x = x / float("inf")  # running std overflowed: every feature normalises to 0
        return x, y

    model = mlp([16, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=350, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- vanishing: a misapplied "gate bias" helper sets every hidden bias to +8 at step 120 --------
REINIT_STEP = 120


def _sigmoid_bad_reinit(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4], activation=nn.Sigmoid)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def before_step(step, m, _opt):
        if step == REINIT_STEP:  # meant for LSTM forget gates, applied to every hidden Linear
            with torch.no_grad():
                for layer in list(m)[:-1]:
                    if isinstance(layer, nn.Linear):
                        layer.bias.fill_(8.0)

    fit(
        watch,
        model,
        opt,
        steps=320,
        batch_at=teacher_classification(seed=seed),
        loss_fn=F.cross_entropy,
        before_step=before_step,
    )


# --- loss spike: one tabular batch carries the -999 "missing value" sentinel --------------------
SENTINEL_STEP = 200


def _sentinel(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = TabularNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = tabular(seed, sentinel_at=(SENTINEL_STEP, [3, 11, 17, 26], [2]))
    fit(watch, model, opt, steps=320, batch_at=data, loss_fn=F.mse_loss)


SCENARIOS: list[Scenario] = [
    Scenario(
        "explode9_zero_grad_forgotten",
        f"Regression MLP, SGD momentum; from step {ZERO_GRAD_LOST} optimizer.zero_grad() is never called "
        "(a refactored accumulation branch), so .grad sums every batch since: gradients and updates grow.",
        _zero_grad_forgotten,
        expect={"exploding_gradient": ZERO_GRAD_LOST},
        allow=BLOWS_UP | {"stagnation"},
        tags=frozenset({"mlp", "momentum", "ninth"}),
    ),
    Scenario(
        "explode9_sum_loss_batch_growth",
        f"Classifier trained with reduction='sum' CE and SGD momentum tuned for batch 16; a progressive "
        f"batch-size schedule switches to batch 512 at step {BATCH_GROWS}: 32x larger gradients.",
        _sum_loss_batch_growth,
        expect={"exploding_gradient": BATCH_GROWS},
        allow=BLOWS_UP | {"stagnation", "vanishing_gradient"},
        tags=frozenset({"mlp", "momentum", "ninth"}),
    ),
    Scenario(
        "nonfinite9_lars_zero_grad_norm",
        f"Two-head multi-task MLP with a hand-written LARS (trust = |w|/|g|, no zero guard); at step "
        f"{EMPTY_TASK_STEP} a batch has no task-B samples: head B's grad is 0, trust inf, weights NaN after "
        "that step's update; loss NaN from the next step.",
        _lars_zero_grad,
        expect={"nonfinite": EMPTY_TASK_STEP},
        tags=frozenset({"mlp", "lars", "multitask", "ninth"}),
    ),
    Scenario(
        "overfit9_highdim_logreg",
        "Logistic regression (zero init) with 200 features (5 informative) on 192 rows with 10% flipped labels, SGD momentum, "
        "no weight decay; held-out CE every 5 steps.",
        _highdim_logreg,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"linear", "momentum", "ninth"}),
    ),
    Scenario(
        "overfit9_augmentation_disabled",
        f"CNN on 192 noisy images with 20% label noise; shift+noise augmentation until step {AUG_OFF}, "
        "then a resumed config drops it and the net memorises; held-out CE every 5 steps.",
        _aug_disabled,
        expect={"overfitting": AT_VAL_MINIMUM},
        allow=frozenset({"loss_spike"}),
        tags=frozenset({"cnn", "adam", "augmentation", "ninth"}),
    ),
    Scenario(
        "stagnant9_loader_zero_inputs",
        f"MLP classifier (Adam); from step {ZERO_INPUT_STEP} the loader's normaliser divides by inf and every "
        "input is 0: the loss rises to the class-prior level and stays there.",
        _zero_inputs,
        expect={"stagnation": ZERO_INPUT_STEP},
        allow=frozenset({"loss_spike", "vanishing_gradient"}),
        tags=frozenset({"mlp", "adam", "data", "ninth"}),
    ),
    Scenario(
        "vanish9_sigmoid_bad_reinit",
        f"2-hidden-layer sigmoid MLP (Adam) trains; at step {REINIT_STEP} a gate-bias init helper misapplied to "
        "every hidden Linear sets the biases to +8: all sigmoids saturate, gradients below the head collapse.",
        _sigmoid_bad_reinit,
        expect={"vanishing_gradient": REINIT_STEP},
        allow=frozenset({"stagnation", "loss_spike"}),
        tags=frozenset({"mlp", "sigmoid", "adam", "ninth"}),
    ),
    Scenario(
        "spike9_missing_value_sentinel",
        f"Tabular regression with entity embeddings (Adam); at step {SENTINEL_STEP} four rows carry the -999 "
        "missing-value sentinel in one continuous column.",
        _sentinel,
        expect={"loss_spike": SENTINEL_STEP},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"tabular", "adam", "ninth"}),
    ),
]
