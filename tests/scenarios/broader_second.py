"""A second set of scenarios written apart from the rest of the suite, first run as a held-out set (2026-11-27).

As a held-out set it found: a stagnation missed when the optimizer holds only the head (fixed:
layers with a gradient but an update ratio of exactly 0 count as frozen); a spike onset named at an
old recovered spike once the loss diverged (fixed); and two limits left visible here, a sigmoid RNN
whose gradient vanishes through time (not through depth: every layer still gets gradient from the
last steps) and heavy-tailed (Student-t, 2 degrees of freedom) regression targets whose outlier
batches read as loss spikes (docs/rules.md, known misses).

Its own data (a Markov token grammar, heavy-tailed regression, colour-dominance images, logistic
data, bag-of-words documents, low-rank targets, first-input sequences) and models (a tied-weight
causal transformer LM, an EmbeddingBag classifier, a sigmoid RNN cell, a norm-free residual MLP, a
deep linear net); the loop and the MLP builder are _common's. Every generator draws from private
torch.Generator objects.

Onsets are known from construction (the step at which the fault is injected); overfitting uses each
run's own held-out minimum.
"""

from __future__ import annotations

import math

import torch
from _common import fit, mlp
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

Batch = tuple[torch.Tensor, torch.Tensor]


def _gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 9_999_991 + step + 31)


def _fixed(seed: int, k: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000 + k)


# --------------------------------------------------------------------------- data


def markov_tokens(batch: int = 16, length: int = 24, vocab: int = 16, fanout: int = 3, seed: int = 0):
    """A random sparse Markov chain: each token has `fanout` equiprobable successors (floor log(fanout))."""
    g0 = _fixed(seed, 1)
    succ = torch.stack([torch.randperm(vocab, generator=g0)[:fanout] for _ in range(vocab)])

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        tok = torch.empty(batch, length + 1, dtype=torch.long)
        tok[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        choice = torch.randint(0, fanout, (batch, length), generator=g)
        for t in range(length):
            tok[:, t + 1] = succ[tok[:, t], choice[:, t]]
        return tok[:, :-1], tok[:, 1:]

    return batch_at


def heavy_tail_regression(batch: int = 64, dim: int = 10, seed: int = 0):
    """y = tanh(x @ w1) @ w2 + Student-t(2) noise (outliers: what Huber loss is for)."""
    g0 = _fixed(seed, 2)
    w1 = torch.randn(dim, 8, generator=g0) / dim**0.5
    w2 = torch.randn(8, 1, generator=g0) / 8**0.5
    t = torch.distributions.StudentT(2.0)

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, dim, generator=g)
        torch.manual_seed(seed * 77 + step)  # StudentT has no generator argument
        noise = 0.1 * t.sample((batch, 1))
        return x, torch.tanh(x @ w1) @ w2 + noise

    return batch_at


def colour_images(batch: int = 32, size: int = 10, classes: int = 3, offset: float = 0.35, seed: int = 0):
    """Class = which of 3 channels carries a slight mean offset, in pixel noise of std 1 (overlapping)."""

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        y = torch.randint(0, classes, (batch,), generator=g)
        x = torch.randn(batch, 3, size, size, generator=g)
        x[torch.arange(batch), y] += offset
        return x, y

    return batch_at


def logistic_data(batch: int = 1, dim: int = 10, seed: int = 0):
    w = 1.5 * torch.randn(dim, generator=_fixed(seed, 3)) / dim**0.5

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, dim, generator=g)
        y = (torch.rand(batch, generator=g) < torch.sigmoid(x @ w)).float()
        return x, y

    return batch_at


def blob_classes(batch: int = 64, dim: int = 12, classes: int = 4, seed: int = 0):
    means = 1.0 * torch.randn(classes, dim, generator=_fixed(seed, 4))

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        y = torch.randint(0, classes, (batch,), generator=g)
        return means[y] + torch.randn(batch, dim, generator=g), y

    return batch_at


def bag_of_words(batch: int = 32, vocab: int = 300, doc_len: int = 20, seed: int = 0):
    """Label = sign of the summed polarity of a document's tokens (+ noise); fixed-length docs."""
    polarity = torch.randn(vocab, generator=_fixed(seed, 5))

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        docs = torch.randint(0, vocab, (batch, doc_len), generator=g)
        score = polarity[docs].sum(1) + 1.0 * torch.randn(batch, generator=g)
        return docs, (score > 0).long()

    return batch_at


def low_rank_regression(batch: int = 64, dim: int = 16, out: int = 16, seed: int = 0):
    """y = x @ A with A of rank 2 and singular values 3 and 1 (a deep linear net learns them in stages)."""
    g0 = _fixed(seed, 6)
    u, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g0))
    v, _ = torch.linalg.qr(torch.randn(out, 2, generator=g0))
    a = u @ torch.diag(torch.tensor([3.0, 1.0])) @ v.T

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, dim, generator=g)
        return x, x @ a + 0.01 * torch.randn(batch, out, generator=g)

    return batch_at


def first_input_sequences(batch: int = 32, length: int = 40, dim: int = 4, seed: int = 0):
    """Noise sequences; the binary label is the sign of a fixed projection of the first element only."""
    w = torch.randn(dim, generator=_fixed(seed, 7))

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, length, dim, generator=g)
        return x, (x[:, 0] @ w > 0).long()

    return batch_at


def positive_regression(batch: int = 64, dim: int = 8, seed: int = 0):
    """Positive targets y = exp(0.3 x @ w) (a rate), regressed on the log scale."""
    w = torch.randn(dim, generator=_fixed(seed, 8)) / dim**0.5

    def batch_at(step: int) -> Batch:
        g = _gen(seed, step)
        x = torch.randn(batch, dim, generator=g)
        return x, torch.exp(0.3 * x @ w).unsqueeze(1)

    return batch_at


# ------------------------------------------------------------------------- models


class TinyCausalLM(nn.Module):
    """Pre-LN causal transformer LM with the output projection tied to the token embedding."""

    def __init__(self, vocab: int = 16, d: int = 32, layers: int = 2, length: int = 24) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(length, d))
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab, bias=False)
        nn.init.normal_(self.tok.weight, std=0.02)  # GPT-2 style init for a tied embedding
        self.out.weight = self.tok.weight  # weight tying
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        t = tok.shape[1]
        h = self.tok(tok) + self.pos[:t]
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        return self.out(self.norm(h))


class SeqClassifierTransformer(nn.Module):
    def __init__(self, dim: int = 6, d: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, d)
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x)).mean(1))


class BagClassifier(nn.Module):
    def __init__(self, vocab: int = 300, d: int = 16) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, d, mode="mean", sparse=False)
        self.hidden = nn.Linear(d, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, docs: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.hidden(self.bag(docs))))


class SigmoidRNN(nn.Module):
    """A hand-written Elman RNN with a sigmoid non-linearity (nn.RNN only offers tanh/relu)."""

    def __init__(self, dim: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.rec = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], self.rec.in_features)
        proj = self.inp(x)
        for t in range(x.shape[1]):
            h = torch.sigmoid(proj[:, t] + self.rec(h))
        return self.head(h)


class PlainResBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, d)
        self.fc2 = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(x)))


class NoNormResNet(nn.Module):
    """Residual MLP without any normalisation."""

    def __init__(self, dim: int = 10, d: int = 32, blocks: int = 10) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, d)
        self.blocks = nn.Sequential(*[PlainResBlock(d) for _ in range(blocks)])
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.inp(x)))


class BatchScaled(nn.Module):
    """Divides every feature by its batch std (no epsilon, no centring): a hand-rolled 'scale norm'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.std(0, keepdim=True)


def small_cnn(classes: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(12, 24, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, classes),
    )


# --------------------------------------------------------------------------- loop


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    logp = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    return (-((1 - logp.exp()) ** gamma) * logp).mean()


# ------------------------------------------------------------- healthy controls


def train_causal_lm_tied_bf16(watch, seed: int) -> None:
    torch.manual_seed(seed)
    steps, warm = 300, 20
    model = TinyCausalLM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm if s < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm)))
        ),
    )
    fit(
        watch,
        model,
        opt,
        steps=steps,
        batch_at=markov_tokens(seed=seed),
        loss_fn=lm_loss,
        scheduler=sched,
        autocast_dtype=torch.bfloat16,
    )


def train_huber_cyclic_triangular(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([10, 64, 64, 1], activation=nn.SiLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.002, max_lr=0.05, step_size_up=40, mode="triangular")
    fit(
        watch,
        model,
        opt,
        steps=320,
        batch_at=heavy_tail_regression(seed=seed),
        loss_fn=lambda o, y: F.huber_loss(o, y, delta=0.5),
        scheduler=sched,
    )


def train_focal_cnn_onecycle(watch, seed: int) -> None:
    torch.manual_seed(seed)
    steps = 250
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    fit(watch, model, opt, steps=steps, batch_at=colour_images(seed=seed), loss_fn=focal_loss, scheduler=sched)


def train_logreg_batch1_sgd(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Linear(10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=logistic_data(seed=seed),
        loss_fn=lambda o, y: F.binary_cross_entropy_with_logits(o.squeeze(1), y),
    )


def train_sgdr_warm_restarts(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([12, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=70, eta_min=1e-5)
    fit(watch, model, opt, steps=300, batch_at=blob_classes(seed=seed), loss_fn=F.cross_entropy, scheduler=sched)


def train_embbag_reduce_on_plateau(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = BagClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.3, patience=1, min_lr=1e-4)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=bag_of_words(seed=seed),
        loss_fn=F.cross_entropy,
        plateau_scheduler=plateau,
    )


def train_deep_linear_saddle(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 16, bias=False), nn.Linear(16, 16, bias=False), nn.Linear(16, 16, bias=False))
    for m in model:
        nn.init.normal_(m.weight, std=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    fit(watch, model, opt, steps=300, batch_at=low_rank_regression(seed=seed), loss_fn=F.mse_loss)


# ------------------------------------------------------------------ pathologies

RES_RAISE_STEP = 150


def train_nonorm_resnet_lr_raise(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = NoNormResNet()
    for blk in model.blocks:
        nn.init.normal_(blk.fc2.weight, std=0.02)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def raise_lr(step: int, _m: nn.Module, o: torch.optim.Optimizer) -> None:
        if step == RES_RAISE_STEP:
            for group in o.param_groups:
                group["lr"] = 0.25

    fit(
        watch,
        model,
        opt,
        steps=260,
        batch_at=heavy_tail_regression(seed=seed),
        loss_fn=F.mse_loss,
        before_step=raise_lr,
    )


def train_sigmoid_rnn_long(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = SigmoidRNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(watch, model, opt, steps=200, batch_at=first_input_sequences(seed=seed), loss_fn=F.cross_entropy)


LOGNEG_STEP = 170


def train_log_negative_rate(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([8, 32, 32, 1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    clean = positive_regression(seed=seed)

    def batch_at(step: int) -> Batch:
        x, y = clean(step)
        if step == LOGNEG_STEP:  # a batch logged in different units: inputs x1000
            x = 1000.0 * x
        return x, y

    # the rate is predicted as 1 + output (assumed to stay positive), compared on the log scale
    fit(
        watch,
        model,
        opt,
        steps=230,
        batch_at=batch_at,
        loss_fn=lambda o, y: ((torch.log(1.0 + o) - torch.log(y)) ** 2).mean(),
    )


CONST_STEP = 160


def train_div_batch_std_constant_batch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(BatchScaled(), nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    clean = blob_classes(seed=seed)

    def batch_at(step: int) -> Batch:
        x, y = clean(step)
        if step == CONST_STEP:  # a loader bug repeats one sample across the whole batch
            x = x[:1].expand_as(x).contiguous()
            y = y[:1].expand_as(y).contiguous()
        return x, y

    fit(watch, model, opt, steps=220, batch_at=batch_at, loss_fn=F.cross_entropy)


SCALE_STEP = 180


def train_cnn_scaled_batch_100x(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    clean = colour_images(offset=0.2, seed=seed)

    def batch_at(step: int) -> Batch:
        x, y = clean(step)
        if step == SCALE_STEP:
            x = 100.0 * x
        return x, y

    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy)


def train_transformer_tiny_dataset_overfit(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g = _gen(seed, 555)
    teacher = torch.randn(6, 3, generator=_fixed(seed, 9))

    def make(n: int, gen: torch.Generator) -> Batch:
        x = torch.randn(n, 8, 6, generator=gen)
        y = (x.mean(1) @ teacher).argmax(1)
        flip = torch.rand(n, generator=gen) < 0.3
        y = torch.where(flip, torch.randint(0, 3, (n,), generator=gen), y)
        return x, y

    train = make(48, g)
    val = [make(64, _gen(seed, 10**6 + i)) for i in range(4)]
    model = SeqClassifierTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=lambda s: train,
        loss_fn=F.cross_entropy,
        val_at=lambda i: val[i],
        val_every=5,
    )


def train_optimizer_only_last_layer(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([12, 64, 64, 64, 64, 64, 4])
    # the bug: the optimizer is given only the head's parameters; the body stays at its random init
    opt = torch.optim.Adam(model[-1].parameters(), lr=1e-3)
    fit(watch, model, opt, steps=250, batch_at=blob_classes(seed=seed), loss_fn=F.cross_entropy)


SCHED_BUG_STEP = 120


def train_buggy_scheduler_collapse_adam(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # meant as a step decay at 120 (x0.5), written with the exponent in the wrong place: x1e-6
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < SCHED_BUG_STEP else 1e-6)
    fit(
        watch,
        model,
        opt,
        steps=280,
        batch_at=colour_images(offset=0.2, seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


H = frozenset({"healthy", "broader"})
P = frozenset({"broader"})

SCENARIOS: list[Scenario] = [
    Scenario(
        name="healthy_causal_lm_tied_bf16_adamw",
        description="2-layer pre-LN causal transformer LM (tied input/output embedding) on a sparse Markov token "
        "grammar, bf16 autocast on CPU, AdamW with 20-step warmup and cosine to 10%.",
        train=train_causal_lm_tied_bf16,
        tags=H | {"transformer", "lm", "bf16", "adamw"},
    ),
    Scenario(
        name="healthy_huber_cyclic_triangular",
        description="SiLU MLP, Huber loss on a regression with Student-t(2) outliers, SGD+momentum with a "
        "triangular CyclicLR (0.002-0.05, 40 steps up / 40 down).",
        train=train_huber_cyclic_triangular,
        tags=H | {"mlp", "huber", "cyclic"},
    ),
    Scenario(
        name="healthy_focal_cnn_onecycle",
        description="Small CNN (no normalisation) with focal loss (gamma 2) on colour-dominance images, SGD with "
        "OneCycleLR to 0.1.",
        train=train_focal_cnn_onecycle,
        tags=H | {"cnn", "focal", "onecycle"},
    ),
    Scenario(
        name="healthy_logreg_batch1_sgd",
        description="Logistic regression (one Linear layer) with plain SGD and batch size 1 on Bernoulli labels: "
        "per-step losses range ~0.01-3.",
        train=train_logreg_batch1_sgd,
        tags=H | {"linear", "sgd", "batch1"},
    ),
    Scenario(
        name="healthy_sgdr_warm_restarts",
        description="ReLU MLP, SGD+momentum 0.1 with CosineAnnealingWarmRestarts(T_0=70): the lr jumps from "
        "~0 back to 0.1 at steps 70, 140, 210, 280 (a restart may bump the loss briefly).",
        train=train_sgdr_warm_restarts,
        # a restart's bump is scheduled, not a fault; whether it counts as a spike is ambiguous
        allow=frozenset({"loss_spike"}),
        tags=H | {"mlp", "sgdr", "momentum"},
    ),
    Scenario(
        name="healthy_embbag_reduce_on_plateau",
        description="EmbeddingBag(mean, dense grads) bag-of-words classifier, Adam 3e-2 with ReduceLROnPlateau "
        "(factor 0.3, patience 1, min_lr 1e-4) stepped every 20 steps on the mean train loss.",
        train=train_embbag_reduce_on_plateau,
        tags=H | {"embedding", "adam", "plateau"},
    ),
    Scenario(
        name="healthy_deep_linear_saddle_plateau",
        description="3-layer deep linear net (init std 0.05) on a rank-2 linear target, plain SGD lr 0.2: the loss "
        "sits on a saddle plateau, then drops in stages as each singular direction is learned.",
        train=train_deep_linear_saddle,
        tags=H | {"linear", "sgd", "plateau"},
    ),
    Scenario(
        name="explode_nonorm_resnet_lr_raise",
        description=f"10-block residual MLP without normalisation, SGD lr 0.01, lr set to 0.25 at step "
        f"{RES_RAISE_STEP}.",
        train=train_nonorm_resnet_lr_raise,
        expect={"exploding_gradient": RES_RAISE_STEP},
        allow=frozenset({"loss_spike", "nonfinite"}),
        tags=P | {"resnet", "mlp", "sgd"},
    ),
    Scenario(
        name="vanish_sigmoid_rnn_first_input",
        description="Hand-written sigmoid Elman RNN over 40 noise steps; the label depends only on the first "
        "input (the gradient through time vanishes; input and recurrent weights still get gradient from recent "
        "steps).",
        train=train_sigmoid_rnn_long,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=P | {"rnn", "sigmoid", "momentum"},
    ),
    Scenario(
        name="nonfinite_log_negative_rate",
        description=f"ReLU MLP predicts a rate as 1 + output, loss on log scale (Adam); a batch with inputs x1000 "
        f"at step {LOGNEG_STEP} drives 1 + output below 0: log of a negative number.",
        train=train_log_negative_rate,
        expect={"nonfinite": LOGNEG_STEP},
        # Seed 2: Adam at a tiny loss goes unstable at ~137 (0.0011 -> 0.0123, then 4-11x for 5 steps, grad
        # norm 0.05 -> 1.13) before the NaN: a real spike.
        allow=frozenset({"loss_spike"}),
        tags=P | {"mlp", "adam"},
    ),
    Scenario(
        name="nonfinite_batch_std_zero_constant_batch",
        description=f"MLP whose first module divides by the batch std (no eps); at step {CONST_STEP} the loader "
        "repeats one sample across the batch: std 0, x/0 = inf.",
        train=train_div_batch_std_constant_batch,
        expect={"nonfinite": CONST_STEP},
        tags=P | {"mlp", "momentum"},
    ),
    Scenario(
        name="spike_cnn_100x_batch_rmsprop",
        description=f"Small CNN (no normalisation), RMSprop; the batch at step {SCALE_STEP} has inputs x100.",
        train=train_cnn_scaled_batch_100x,
        expect={"loss_spike": SCALE_STEP},
        tags=P | {"cnn", "rmsprop"},
    ),
    Scenario(
        name="overfit_transformer_tiny_dataset",
        description="2-layer transformer sequence classifier (Adam) on 48 training sequences with 30% label noise, "
        "full batch; 256 held-out sequences evaluated every 5 steps.",
        train=train_transformer_tiny_dataset_overfit,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=P | {"transformer", "adam"},
    ),
    Scenario(
        name="stagnant_optimizer_only_head",
        description="6-layer ReLU MLP; by mistake the Adam optimizer holds only the head's parameters: the body "
        "keeps its random init (its gradients are computed but never applied).",
        train=train_optimizer_only_last_layer,
        expect={"stagnation": 0},
        tags=P | {"mlp", "adam"},
    ),
    Scenario(
        name="stagnant_buggy_scheduler_1e-6_adam",
        description=f"Small CNN with Adam; a LambdaLR bug multiplies the lr by 1e-6 from step {SCHED_BUG_STEP} "
        "while the loss is still falling.",
        train=train_buggy_scheduler_collapse_adam,
        expect={"stagnation": SCHED_BUG_STEP},
        tags=P | {"cnn", "adam", "scheduler"},
    ),
]
