"""Third set, pathologies: one clearly labelled fault per scenario, on models and data the rest of the suite does not use.

Written apart from the rules and first run as a held-out set (2026-11-27): it found a StepLR stepped per
batch going unseen (stagnation's decay-tail exemption), a momentum-carried lr burst holding a weight-growth
explosion open for 30 steps, and an explosion whose finite weights overflowed their float32 norm turning
into vanishing and stagnation diagnoses; docs/rules.md says what changed. The dead-ReLU run stays late
against its label (the lr burst's step): its network dies some steps later (in seed 2 much later), and
stagnation fires 3 dead statistics rows after that.

Onsets follow the suite's conventions: the step at which the fault is injected (or 0 when it is there
from initialisation); overfitting uses each run's own held-out minimum.
"""

from __future__ import annotations

import torch
from _common import fit
from _third_lib import (
    Conv1dNet,
    GRULanguageModel,
    Recommender,
    bigram_tokens,
    gen,
    interactions,
    lm_loss,
    motif_sequences,
    multilabel_tags,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

# ----------------------------------------------------------------- exploding: lr schedule bug x100

LR_BUG_STEP = 150


def train_conv1d_lr_bug_x100(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = Conv1dNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    # A multiplier meant as a fraction (1.0) written as a percentage (100) for the second phase.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < LR_BUG_STEP else 100.0)
    data = motif_sequences(seed=seed)
    fit(watch, model, opt, steps=260, batch_at=lambda s: data(s, 0.8), loss_fn=F.cross_entropy, scheduler=sched)


# --------------------------------------------------- stagnation: ReLUs killed by a few big-lr steps

KILL_STEP = 120


def train_dead_relu_after_lr_burst(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(24, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 6)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def burst(step: int, _m: nn.Module, o: torch.optim.Optimizer) -> None:
        # resumed right after an lr-range test: its last lr (20) is still in the optimizer for one step,
        # then the scheduler sets the right lr again
        for group in o.param_groups:
            group["lr"] = 20.0 if step == KILL_STEP else 0.05

    data = multilabel_tags(label_noise=0.05, seed=seed)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=lambda s: (data(s)[0], data(s)[1].argmax(1)),  # single-label: the first active tag
        loss_fn=F.cross_entropy,
        before_step=burst,
    )


# ------------------------------------------------ vanishing: deep sigmoid conv net on raw-scale input


def train_sigmoid_conv1d_raw_scale(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = Conv1dNet(depth=8, act=nn.Sigmoid)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
    data = motif_sequences(seed=seed)
    # raw sensor counts, never standardised (offset 50, scale 20); with or without it, 8 sigmoid layers
    # shrink the gradient ~1e6 from the head to the first conv
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=lambda s: (lambda x, y: (50.0 + 20.0 * x, y))(*data(s, 0.5)),
        loss_fn=F.cross_entropy,
    )


# ---------------------------------------------------------- nonfinite: log of a probability of 0

LOG0_STEP = 140


def naive_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def train_multilabel_naive_bce_log0(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(24, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 6))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    clean = multilabel_tags(seed=seed)

    def batch_at(step: int):
        x, y = clean(step)
        if step == LOG0_STEP:  # one shard exported in raw units: features x1e4
            x = x * 1e4
        return x, y

    fit(watch, model, opt, steps=200, batch_at=batch_at, loss_fn=naive_bce)


# ------------------------------------------------------- overfitting: recommender on few interactions


def train_recommender_tiny_overfit(watch, seed: int) -> None:
    torch.manual_seed(seed)
    sample = interactions(seed=seed)
    train = sample(1000, gen(seed, 10**6))
    val = [sample(256, gen(seed, 2 * 10**6 + i)) for i in range(4)]
    model = Recommender()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=lambda s: train,
        loss_fn=F.binary_cross_entropy_with_logits,
        val_at=lambda i: val[i],
        val_every=5,
    )


# --------------------------------------------- stagnation: a per-epoch StepLR stepped every batch


def train_gru_lm_steplr_per_batch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = GRULanguageModel()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # meant as "x0.1 every 30 epochs", stepped every batch: lr 3e-3, 3e-4 at 30, 3e-5 at 60, 3e-6 at 90, ...
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    fit(watch, model, opt, steps=300, batch_at=bigram_tokens(seed=seed), loss_fn=lm_loss, scheduler=sched)


# ---------------------------------------------- loss spike: one batch from a different tokenizer

REMAP_STEP = 200


def train_gru_lm_remapped_batch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = GRULanguageModel()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    clean = bigram_tokens(seed=seed)
    perm = torch.randperm(24, generator=gen(seed, 0, 99))

    def batch_at(step: int):
        x, y = clean(step)
        if step == REMAP_STEP:  # a shard tokenised with another vocabulary: same text, permuted ids
            x, y = perm[x], perm[y]
        return x, y

    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=lm_loss)


P = frozenset({"third"})
BLOWS_UP = frozenset({"loss_spike", "nonfinite"})

SCENARIOS: list[Scenario] = [
    Scenario(
        name="explode_conv1d_lr_bug_x100",
        description=f"1-D conv net (no norm), SGD Nesterov lr 0.01; a LambdaLR multiplier written as 100 instead of "
        f"1.0 raises the lr to 1.0 from step {LR_BUG_STEP}.",
        train=train_conv1d_lr_bug_x100,
        expect={"exploding_gradient": LR_BUG_STEP},
        # Seed 0 ends in NaN (step 158); seed 1 does not: its weights stop at 1e12..1e21 (finite; two layers'
        # float32 norms overflow to inf), every gradient but the head bias is exactly 0 and the loss sits at
        # chance for the remaining 100 steps. That is still the explosion (exploding_gradient's weight_growth
        # keeps an overflowed norm), not a new vanishing or stagnation.
        allow=BLOWS_UP,
        tags=P | {"conv1d", "nesterov", "scheduler"},
    ),
    Scenario(
        name="stagnant_dead_relu_after_lr_burst",
        description=f"Wide ReLU MLP (no norm), SGD momentum lr 0.05; step {KILL_STEP} runs at lr 20 (an lr-range "
        "test's last lr left in the optimizer on resume): every ReLU of the last hidden layer dies, the output is "
        "constant and the loss stays stuck at the class prior's entropy afterwards.",
        train=train_dead_relu_after_lr_burst,
        expect={"stagnation": KILL_STEP},
        allow=frozenset({"loss_spike", "exploding_gradient", "vanishing_gradient"}),
        tags=P | {"mlp", "momentum", "dead-relu"},
    ),
    Scenario(
        name="vanish_sigmoid_conv1d_raw_scale",
        description="8-layer 1-D conv net with sigmoid activations (default init) on unstandardised inputs "
        "(offset 50, scale 20), Adagrad: the backward signal shrinks ~7x per sigmoid layer (RMS gradient ~1e-8 at "
        "the first conv vs ~4e-2 at the head) and the loss stays at chance from the start.",
        train=train_sigmoid_conv1d_raw_scale,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=P | {"conv1d", "sigmoid", "adagrad"},
    ),
    Scenario(
        name="nonfinite_multilabel_naive_bce_log0",
        description=f"Multi-label MLP (dropout) with a hand-written BCE log(sigmoid(z)); at step {LOG0_STEP} a batch "
        "in raw units (x1e4) saturates sigmoid to exactly 0/1 in float32: log(0).",
        train=train_multilabel_naive_bce_log0,
        expect={"nonfinite": LOG0_STEP},
        tags=P | {"mlp", "adam", "multilabel"},
    ),
    Scenario(
        name="overfit_recommender_tiny",
        description="NCF-style recommender (user/item embeddings + ReLU MLP, 40 users x 50 items), Adam 1e-3, full "
        "batch of 1000 observed interactions; 1024 held-out interactions evaluated every 5 steps: the held-out loss "
        "falls for ~55-75 steps, then rises as the embeddings memorise.",
        train=train_recommender_tiny_overfit,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=P | {"embedding", "recommender", "adam"},
    ),
    Scenario(
        name="stagnant_gru_lm_steplr_per_batch",
        description="GRU LM with Adam 3e-3 and StepLR(step_size=30, gamma=0.1) meant per epoch but stepped per "
        "batch: the lr is 3e-6 by step 90 while the loss is still far above what the model reaches.",
        train=train_gru_lm_steplr_per_batch,
        expect={"stagnation": 90},
        tags=P | {"gru", "lm", "adam", "scheduler"},
    ),
    Scenario(
        name="spike_gru_lm_remapped_batch",
        description=f"GRU LM with Adam; the batch at step {REMAP_STEP} comes from a shard tokenised with another "
        "vocabulary (token ids permuted).",
        train=train_gru_lm_remapped_batch,
        expect={"loss_spike": REMAP_STEP},
        tags=P | {"gru", "lm", "adam"},
    ),
]
