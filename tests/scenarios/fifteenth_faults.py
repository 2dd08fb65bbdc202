"""Set 15 faults (held-out): one realistic practitioner bug per symptom. Onsets from offline measurement."""

# Offline measurements (_fifteenth_measure.py: fake watch, no gradwatch; seeds 0/1/2; "gn" = total grad norm):
# explode15 (penalty 0.1, on from step 150): gn 0.13-0.50 over steps 140-149 -> 1.35/1.41/1.36 at step 150 (the
#   penalty gradient), then geometric growth: 1.6-1.7 at 160, 2.0-2.4 at 170, 2.8-3.4 at 180, 4.2-7.1 at 190,
#   17-28 at 200, 83-1.8e3 mean over the last 20 steps (max 3.1e4 / 640 / 410 at 257-259). Loss 0.02-0.06 before,
#   -4.4 at 150, about -46 around step 195, -1.2e3..-1.5e3 at the end (the total loss falls: the sign bug is
#   rewarded). All finite.
# vanish15 (20 layers, AdamW 3e-4; 12 layers + AdamW 1e-3 recovered in ~50 steps, 16 layers recovered in seed 2 at
#   ~200, so deepened): at step 0 every weight grad is ~1e-17..1e-22 (activations vanish too; total norm 0.12-0.27 is
#   the biases); mean grad over steps 50-299 of convs.0.weight 4e-13 / 1e-12 / 7e-12, convs.10.weight 9e-5..4e-4,
#   convs.19.weight 0.03-0.04, head.weight 0.19-0.29. Loss 1.39 -> 1.37 / 1.37 / 1.34 (not learning: stagnation
#   allowed).
# nan15: loss 0.44-0.51 (first 10) -> 0.08-0.21 at steps 165-169; NaN loss and NaN grads at step 170 in every seed
#   and on every step after (70 steps).
# spike15: median loss over 200-219 0.25/0.24/0.26; steps 220-223: 3.82, 3.62, 2.94, 2.93 / 2.72, 1.94, 2.12, 1.79 /
#   3.98, 3.46, 3.08, 2.11 (ratio 15.1 / 11.4 / 15.5 at 220); 0.47/0.17/0.41 at 224 and back to the median by 225-226;
#   mean over 240-259 0.24/0.25/0.31. gn 4.7-7.1 at 220 vs median 0.9-1.2 over 200-219.
# overfit15 (n=20, lr 0.01; n=24 at lr 0.005 had no rise in seed 0, at lr 0.02 train flattened by step ~100, so
#   changed): val min 0.280@74 / 0.192@59 / 0.252@64, then rising at every one of the 65-68 later checks (every 5
#   steps; full-batch, so train falls monotonically too): 0.335/0.200/0.276 50 steps later,
#   0.407/0.249/0.379 at +150, 0.424/0.392/0.668 at 399; train at the val minimum 0.048/0.028/0.028, 0.018/0.019/0.016
#   at step 200, 0.012/0.016/0.010 at the end (falling throughout).
# stagnant15 (EMA copied into the model from 150): 25-step loss means 0.685, 0.495 (steps 100-149), then 0.400, 0.399
#   (150-249), 0.394 (250-319) / 0.576, 0.380, 0.335, 0.333, 0.342 / 0.684, 0.529, 0.439, 0.442, 0.438. Without the
#   bug (same seeds) the loss keeps falling: 20-step means 0.39/0.32/0.43 at 140-159 -> 0.13/0.16/0.17 at 300-319.
#   Gradients stay normal (gn 0.75-0.85 before and after): the updates are applied, then 99.9% undone.

from __future__ import annotations

import torch
from _common import fit, sequence_classification, teacher_classification, teacher_regression
from _fifteenth_lib import DeepConv1d, loop, pair_embeddings, polynomial_points, tabular
from torch import nn

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

mse = nn.functional.mse_loss
ce = nn.functional.cross_entropy
F = nn.functional

EXPLODE_AT = 150
NAN_AT = 170
SPIKE_AT = 220
STALL_AT = 150


def _explode_l2_sign_flipped(watch, seed):
    # Phase 2 (from step 150) adds an L2 penalty to the loss, written as `loss - wd * sum(w^2)` (sign error):
    # the penalty now rewards growing weights; with SGD momentum the weights grow geometrically and every
    # gradient with them. The logged loss is the total (it heads to large negative values).
    data = teacher_regression(dim=16, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    weights = [p for p in model.parameters() if p.dim() > 1]
    state = {"step": 0}

    def tick(step, model, opt):
        state["step"] = step

    def loss_fn(out, y):
        loss = mse(out, y)
        if state["step"] >= EXPLODE_AT:
            loss = loss - 0.1 * sum((w * w).sum() for w in weights)
        return loss

    fit(watch, model, opt, steps=260, batch_at=data, loss_fn=loss_fn, before_step=tick)


def _vanish_gpt_init_deep_conv1d(watch, seed):
    # A transformer-style init helper (every weight N(0, 0.02^2), biases 0) applied to a 20-layer GELU Conv1d
    # sequence classifier (fan-in 96): each layer scales activations and gradients by ~0.02*sqrt(96)*0.5 ~ 0.1.
    data = sequence_classification(batch=32, length=16, dim=4, seed=seed)
    torch.manual_seed(seed)
    model = DeepConv1d(in_ch=4, ch=32, depth=20, classes=4)

    def gpt_init(m):
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    model.apply(gpt_init)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce)


def _nan_acos_self_pairs(watch, seed):
    # Angular metric learning: loss = mean(acos(cos(a, p))^2) + mean(relu(1.2 - acos(cos(a, n)))^2), no clamp.
    # From step 170 the pair sampler hits a shard with one example per class and falls back to the anchor as its
    # own positive: cos(a, a) rounds to 1 (or just above), and acos gives NaN (forward) or -inf*0 (backward).
    data = pair_embeddings(dim=16, classes=8, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        a, p, n = data(step)
        if step >= NAN_AT:
            p = a  # sampler fallback: anchor reused as positive
        ea, ep, en = model(a), model(p), model(n)
        pos = torch.acos(F.cosine_similarity(ea, ep))
        neg = torch.acos(F.cosine_similarity(ea, en))
        loss = (pos**2).mean() + (torch.relu(1.2 - neg) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    loop(watch, model, opt, steps=240, train_step=train_step)


def _spike_shard_columns_permuted(watch, seed):
    # Tabular classifier (Adam); the 4 batches of steps 220-223 come from a shard exported with its columns in a
    # different order (a reversed column list), then the loader returns to normal shards.
    data = tabular(dim=12, batch=64, seed=seed)

    def batch_at(step):
        x, y = data(step)
        if SPIKE_AT <= step < SPIKE_AT + 4:
            x = x.flip(1)
        return x, y

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=320, batch_at=batch_at, loss_fn=ce)


def _overfit_polynomial_degree15(watch, seed):
    # Classic polynomial overfitting: degree-15 Legendre features of 20 noisy points of sin(3x), a linear model
    # (one Linear layer), full batch, Adam; held-out MSE on 256 fresh points every 5 steps.
    x, y = polynomial_points(20, degree=15, noise=0.3, seed=seed)
    vx, vy = polynomial_points(256, degree=15, noise=0.3, seed=seed, offset=1)
    torch.manual_seed(seed)
    model = nn.Linear(15, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    fit(watch, model, opt, steps=400, batch_at=lambda s: (x, y), loss_fn=mse, val_at=lambda i: (vx, vy), val_every=5)


def _stagnant_ema_copy_swapped(watch, seed):
    # An EMA of the weights (decay 0.999) is switched on at step 150; its update writes the wrong way round:
    # after ema.lerp_(p, 0.001) it copies ema INTO the model (`p.copy_(ema)`), so each optimizer update is
    # shrunk 1000x and the model stays where it was at step 150 while the loss was still falling.
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ema: list[torch.Tensor] = []

    def train_step(step):
        x, y = data(step)
        loss = ce(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def ema_update(step):
        with torch.no_grad():
            if step == STALL_AT - 1:
                ema.extend(p.detach().clone() for p in model.parameters())
            elif step >= STALL_AT:
                for e, p in zip(ema, model.parameters(), strict=False):
                    e.lerp_(p, 0.001)
                    p.copy_(e)  # bug: should leave p alone (eval swaps ema in, not training)

    loop(watch, model, opt, steps=320, train_step=train_step, after_step=ema_update)


SCENARIOS = [
    Scenario(
        name="explode15_l2_penalty_sign_flipped",
        description="ReLU regression MLP, SGD momentum; from step 150 an L2 term is subtracted instead of added: "
        "weights and gradients grow geometrically",
        train=_explode_l2_sign_flipped,
        expect={"exploding_gradient": EXPLODE_AT},
        allow=frozenset({"nonfinite", "loss_spike"}),
        tags=frozenset({"set15", "fault"}),
    ),
    Scenario(
        name="vanish15_gpt_init_deep_gelu_conv1d",
        description="20-layer GELU Conv1d classifier with a transformer-style N(0, 0.02) init, AdamW",
        train=_vanish_gpt_init_deep_conv1d,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=frozenset({"set15", "fault"}),
    ),
    Scenario(
        name="nan15_acos_anchor_as_positive",
        description="angular metric-learning loss with unclamped acos; from step 170 the anchor is reused as its "
        "own positive: acos(1) -> NaN/inf gradients",
        train=_nan_acos_self_pairs,
        expect={"nonfinite": NAN_AT},
        allow=frozenset({"loss_spike", "stagnation", "exploding_gradient"}),
        tags=frozenset({"set15", "fault"}),
    ),
    Scenario(
        name="spike15_shard_columns_reversed",
        description="tabular MLP classifier (Adam); the batches of steps 220-223 have their feature columns reversed",
        train=_spike_shard_columns_permuted,
        expect={"loss_spike": SPIKE_AT},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"set15", "fault"}),
    ),
    Scenario(
        name="overfit15_polynomial_degree15",
        description="linear model on degree-15 Legendre features of 20 noisy points, full batch Adam",
        train=_overfit_polynomial_degree15,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"set15", "fault"}),
    ),
    Scenario(
        name="stagnant15_ema_copied_into_model",
        description="MLP classifier, SGD momentum; from step 150 an inverted EMA update copies the EMA (decay 0.999) "
        "into the model every step: updates shrink 1000x",
        train=_stagnant_ema_copy_swapped,
        expect={"stagnation": STALL_AT},
        tags=frozenset({"set15", "fault"}),
    ),
]
