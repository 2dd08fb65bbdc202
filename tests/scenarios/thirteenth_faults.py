"""Set 13 faults: graph nets, flows, MDNs, KD, tabular, 1D conv audio; realistic practitioner bugs.

Onsets measured offline with _thirteenth_measure.py (fake watch, seeds 0/1/2); numbers in the comments.
"""

from __future__ import annotations

import torch
from _common import fit
from _thirteenth_lib import (
    GCN,
    MDN,
    BatchedGCN,
    RealNVP,
    TabularNet,
    audio_net,
    bce,
    focal_loss_from_probs,
    gen,
    inverse_sine,
    kd_batches,
    kd_loss,
    mdn_nll_naive,
    mean_of,
    random_teacher,
    sbm_graph_classification,
    sbm_graphs,
    tabular_batches,
    tone_batches,
    two_moons,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

CE = nn.CrossEntropyLoss()


# --------------------------------------------------------------------------- exploding
def train_gcn_unnormalized(watch, seed):
    # Bug: propagates with raw A + I instead of D^-1/2 (A+I) D^-1/2 (degree ~14, 3 layers).
    data = sbm_graphs(nodes=96, p_in=0.4, p_out=0.05, seed=seed)
    torch.manual_seed(seed)
    model = GCN(8, 32, 4, layers=3, normalize=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=CE)


def denoise_batches(seed, batch=32, length=256):
    def batch_at(step):
        g = gen(seed, step, salt=37)
        f = 2 + 10 * torch.rand(batch, 1, generator=g)
        ph = 6.283 * torch.rand(batch, 1, generator=g)
        t = torch.arange(length).float()[None, :] / length
        clean = torch.sin(6.283 * f * t + ph)
        noisy = clean + 0.5 * torch.randn(batch, length, generator=g)
        return noisy[:, None], clean[:, None]

    return batch_at


def train_audio_warmup_uncapped(watch, seed):
    # Learned FIR denoiser (two linear conv layers, MSE). Bug: warmup lambda written max(1, s/40)
    # instead of min(1, s/20): flat base LR, then from step 20 the LR climbs linearly without bound
    # until SGD crosses its stability edge.
    data = denoise_batches(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(1, 16, 9, padding=4), nn.Conv1d(16, 1, 9, padding=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.04, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(1.0, s / 20))  # meant min(1.0, s / 20)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=F.mse_loss, scheduler=sched)


# --------------------------------------------------------------------------- vanishing
def train_deep_gnn_sigmoid(watch, seed):
    # 10 message-passing layers with sigmoid activations (old tutorial default) and no residuals.
    data = sbm_graphs(nodes=64, seed=seed)
    torch.manual_seed(seed)
    model = GCN(8, 32, 4, layers=7, act=nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=CE)


def train_tabular_raw_units(watch, seed):
    # From step 200 the shards hold numeric columns already converted to kilo-units, and the loader
    # divides by 1000 again: the numeric tower's inputs (and so its weight gradients) shrink 1000x.
    base = tabular_batches(seed=seed)

    def data(step):
        (xn, cats), y = base(step)
        if step >= 200:
            xn = xn / 1000
        return (xn, cats), y

    torch.manual_seed(seed)
    model = TabularNet(numeric_act=nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=bce)


# --------------------------------------------------------------------------- nonfinite
def train_focal_raw_pixels(watch, seed):
    # Bug: images fed as 0..255 (forgot /255) into a focal loss written as -(1-pt)^g log(softmax(...)[y]).
    def data(step):
        g = gen(seed, step, salt=23)
        y = torch.randint(0, 4, (32,), generator=g)
        x = torch.rand(32, 1, 8, 8, generator=g) * 120
        for q in range(4):
            r, c = divmod(q, 2)
            x[y == q, :, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4] += 135
        return x.round(), y

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fit(watch, model, opt, steps=200, batch_at=data, loss_fn=focal_loss_from_probs(2.0))


def train_mdn_sentinel(watch, seed):
    # Bug: a -999 "missing" code reaches the target column at step 180, and the MDN loss is the
    # naive log(sum pi * pdf): the pdf underflows to 0 -> log 0 = -inf -> NaN gradients applied by Adam.
    data = inverse_sine(seed=seed, sentinel_at=180)
    torch.manual_seed(seed)
    model = MDN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=mdn_nll_naive)


# --------------------------------------------------------------------------- loss spike
def train_distill_bad_shard(watch, seed):
    # One shard stored in different units (x40) reaches the student at step 200.
    teacher = random_teacher(seed=seed)
    data = kd_batches(teacher, seed=seed, bad_shard_at=200)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=kd_loss(T=2.0))


def train_adagrad_state_reset(watch, seed):
    # Adagrad built with initial_accumulator_value=0.1. Bug: at step 300 ("phase 2") the optimizer state is
    # rebuilt with the default accumulator 0: the next updates are ~lr * sign(g) on every coordinate.
    data = tabular_batches(seed=seed)
    torch.manual_seed(seed)
    model = TabularNet()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.25, initial_accumulator_value=0.1)

    def before(step, m, o):
        if step == 300:
            for st in o.state.values():
                st["sum"].zero_()

    fit(watch, model, opt, steps=450, batch_at=data, loss_fn=bce, before_step=before)


# --------------------------------------------------------------------------- overfitting
def train_gnn_memorize(watch, seed):
    # 48 training graphs with 30% noisy labels, a wide GCN trained for 600 steps; held-out graphs for val.
    train = sbm_graph_classification(48, seed=seed)
    val = sbm_graph_classification(64, seed=seed, offset=10_000, label_noise=0.0)
    torch.manual_seed(seed)
    model = BatchedGCN(6, 64, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=600, batch_at=train, loss_fn=CE, val_at=val, val_every=10)


def train_tabular_id_memorize(watch, seed):
    # Row-id embedding (one id per training row) lets the net memorise 512 noisy rows; val rows are new ids.
    base = tabular_batches(seed=seed)
    rows = [base(i) for i in range(8)]
    xn = torch.cat([r[0][0] for r in rows])
    cats = torch.cat([r[0][1] for r in rows])
    y = torch.cat([r[1] for r in rows])
    flip = torch.rand(len(y), generator=gen(seed, 0, salt=29)) < 0.2
    y = torch.where(flip, 1 - y, y)
    ids = torch.arange(len(y))

    def data(step):
        g = gen(seed, step, salt=31)
        idx = torch.randint(0, len(y), (64,), generator=g)
        return (xn[idx], cats[idx], ids[idx]), y[idx]

    def val(i):
        (vxn, vc), vy = base(10_000 + i)
        return (vxn, vc, torch.full((len(vy),), len(y))), vy  # unseen-id bucket

    torch.manual_seed(seed)
    model = TabularNet(items=len(y) + 1, item_dim=16, hidden=128)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=500, batch_at=data, loss_fn=bce, val_at=val, val_every=10)


# --------------------------------------------------------------------------- stagnation
def train_flow_adadelta_lr(watch, seed):
    # Bug: lr=1e-3 copied from an Adam config into Adadelta (whose lr is a multiplier, default 1.0).
    data = two_moons(seed=seed)
    torch.manual_seed(seed)
    model = RealNVP()
    opt = torch.optim.Adadelta(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=mean_of)


def train_plateau_mode_max(watch, seed):
    # Bug: ReduceLROnPlateau(mode="max") fed the training loss: every falling epoch counts as "no
    # improvement", so the LR is cut 10x every 2 epochs (20 steps each) until updates are negligible.
    data = tone_batches(seed=seed)
    torch.manual_seed(seed)
    model = audio_net()
    opt = torch.optim.NAdam(model.parameters(), lr=3e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=1)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=CE, plateau_scheduler=plateau)


SCENARIOS = [
    # Measured: grad norm 1.1e3/3.5e3/677 at step 0 (the normalised GCN control: 0.19/0.10/0.14), up to
    # 3e13/3e10/1.5e7 by step 3; first non-finite grad at step 4/4/5 (seeds 0/1/2).
    Scenario(
        "explode13_gcn_unnormalized_adjacency",
        "GCN propagating with raw A+I (no degree normalisation)",
        train_gcn_unnormalized,
        expect={"exploding_gradient": 0},
        allow=frozenset({"nonfinite", "loss_spike"}),
        tags=frozenset({"gnn", "sgd"}),
    ),
    # Measured: grad norm median 0.38/0.31/0.47 over steps 20..79; first > 3x at 84/135/108, first > 10x at
    # 120/161/122 (LR 0.24/0.32/0.25), first non-finite grad at 125/164/126. Label = 10x crossing (120).
    # One label serves every seed: seed 1's own 10x crossing is 161, so it scores about 40 steps late.
    Scenario(
        "explode13_audio_warmup_uncapped",
        "learned 1D conv FIR denoiser, warmup lambda max() instead of min(): LR grows without bound",
        train_audio_warmup_uncapped,
        expect={"exploding_gradient": 120},
        allow=frozenset({"nonfinite", "loss_spike"}),
        tags=frozenset({"conv1d", "sgd", "schedule"}),
    ),
    # Measured: first-layer/head weight-grad ratio 1.2e-6/7.5e-7/1.3e-6 at step 0 (median first-layer grad
    # 3e-7..6e-7 all run). The loss never leaves ln 4 (1.398/1.399/1.392 over the last 20 steps), so the
    # run also stagnates as a consequence: stagnation allowed.
    Scenario(
        "vanish13_deep_gnn_sigmoid",
        "10-layer sigmoid GCN without residuals",
        train_deep_gnn_sigmoid,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=frozenset({"gnn", "sgd"}),
    ),
    # Measured: numeric.0 weight grad median 0.099/0.11/0.098 over steps 100..199, below 1/10 of that first
    # at step 200 (all seeds), median 1.9e-4 afterwards (~500x smaller). Loss mean 0.47-0.49 -> 0.57-0.64.
    Scenario(
        "vanish13_tabular_raw_units",
        "tabular net: numeric columns scaled /1000 twice from step 200, numeric tower stops learning",
        train_tabular_raw_units,
        expect={"vanishing_gradient": 200},
        allow=frozenset({"loss_spike"}),
        tags=frozenset({"tabular", "embeddings", "data-pipeline"}),
    ),
    # Measured: step-0 loss finite (2.97/9.54/14.7, grad norm 147/211/325); the first update makes p_t underflow:
    # loss inf and grads NaN first at step 1 for all seeds, NaN ever after. Label 1 (not 0) from that.
    Scenario(
        "nonfinite13_focal_raw_pixels",
        "focal loss from probabilities on 0..255 pixels: log(0)",
        train_focal_raw_pixels,
        expect={"nonfinite": 1},
        allow=frozenset({"exploding_gradient", "loss_spike"}),
        tags=frozenset({"focal", "cnn"}),
    ),
    # Measured: loss finite before step 180 (no earlier underflow); loss inf and grad NaN first at 180 (all seeds).
    Scenario(
        "nonfinite13_mdn_sentinel",
        "naive MDN likelihood meets a -999 missing-value target at step 180",
        train_mdn_sentinel,
        expect={"nonfinite": 180},
        allow=frozenset({"loss_spike", "exploding_gradient"}),
        tags=frozenset({"mdn", "adam", "data-pipeline"}),
    ),
    # Measured: loss 34.1/41.4/34.9 at step 200 vs median 0.35/0.42/0.35 of the previous 20; back under 1.5x
    # at step 201; then a mild elevation (~0.5) that recovers by ~290.
    Scenario(
        "spike13_distill_bad_shard",
        "KD student hit by one batch stored in x40 units at step 200",
        train_distill_bad_shard,
        expect={"loss_spike": 200},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"distillation", "adam"}),
    ),
    # Measured: the reset update happens at step 300 (its loss is computed before it), so the loss jumps at 301:
    # 4.1/11.2/7.6 vs median 0.45/0.47/0.48 (then 5.1/18.4/41.9 at 302), back under 1.5x by 308/307/308.
    # The same transient lifts the grad norm ~10-30x for a few steps (3.2/8.7/8.1 at 301): exploding allowed.
    Scenario(
        "spike13_adagrad_state_reset",
        "Adagrad accumulators reset at step 300",
        train_adagrad_state_reset,
        expect={"loss_spike": 301},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"tabular", "adagrad"}),
    ),
    # Measured: val minimum at step 69/79/59 (0.60/0.43/0.54), last val 1.8/2.2/2.6; train loss 0.5 -> 5e-4.
    Scenario(
        "overfit13_gnn_memorize",
        "GCN graph classifier memorising 48 noisy-label graphs",
        train_gnn_memorize,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"gnn", "adam"}),
    ),
    # Measured: val minimum at step 49/69/139, last val 1.9/0.98/0.96; train loss -> 0.017-0.019.
    Scenario(
        "overfit13_tabular_id_memorize",
        "tabular net with a per-row id embedding memorising 256 noisy rows",
        train_tabular_id_memorize,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"tabular", "embeddings", "adam"}),
    ),
    # Measured: relative update |dtheta|/|theta| median 1.9e-5/1.9e-5/1.7e-5 from step 0 (the Adam flow control:
    # 2.7e-3); loss 2.47->2.35, 2.48->2.37, 2.21->2.13 over 400 steps (first vs last 20 steps).
    Scenario(
        "stagnant13_flow_adadelta_lr",
        "RealNVP flow with Adadelta lr=1e-3 (Adam habit)",
        train_flow_adadelta_lr,
        expect={"stagnation": 0},
        tags=frozenset({"flow", "adadelta"}),
    ),
    # Measured: LR cut 10x after steps 58, 98, 138, ... (all seeds); relative update below 1/10 of its
    # steps-5..49 median from step 60, below 1/100 from step 100 (all seeds); loss mean over 80..99 equals
    # that over 380..399 (0.114/0.113, 0.100/0.096, 0.139/0.125). Label = 100 (updates negligible).
    Scenario(
        "stagnant13_plateau_mode_max",
        "ReduceLROnPlateau(mode='max') on a loss keeps cutting the LR",
        train_plateau_mode_max,
        expect={"stagnation": 100},
        tags=frozenset({"conv1d", "nadam", "schedule"}),
    ),
]
