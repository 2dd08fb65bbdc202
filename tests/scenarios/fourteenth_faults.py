"""Set 14 faults (held-out): one realistic practitioner bug per symptom. Onsets from offline measurement."""

# Offline measurements (_fourteenth_measure.py, seeds 0/1/2):
# explode14: grad norm 0.16-0.75 at steps 195-200; lr x100 applied from step 200's update; step 201 grad 16.8/7.2/
#   7.2, then 140@205 / 451@204 / 4.3e7@204; seed 0 reaches inf at 213 and NaN after, seed 2 stays at grad ~1e4
#   and loss ~1e7, seed 1 oscillates (grad 4-180) through 224. Onset 200.
# vanish14: mean first-layer weight grad 7e-12 / 1.4e-11 / 6e-12 vs last layer 0.31 / 0.24 / 0.25 from step 0;
#   loss 1.44 -> 1.38 (not learning, hence stagnation allowed).
# nonfinite14: loss finite through step 179 (1.37 -> 0.39-0.42), NaN loss and grads at 180 in every seed, NaN after.
# spike14: loss ~0.02-0.05 before; step 260 loss 6e6-1.1e7 x the running median, grad norm 2.2-3.0e3 (vs ~0.5);
#   loss elevated (~0.6-0.9 around step 300) and back to 0.03-0.06 by the end.
# overfit14 (lr 2e-4): train loss 1.35 -> 0.03 falling throughout; val min 1.17@109 / 1.18@129 / 1.24@89, last
#   1.95 / 1.66 / 2.26.
# stagnant14: loss 0.82 (step 100) -> 0.36 (150), falling; lr exactly 0 from step 150; loss flat at 0.38 / 0.33 /
#   0.45 after (batch noise only), gradients non-zero but never applied.

from __future__ import annotations

import torch
from _common import corrupt_at, fit, fixed_dataset, held_out, mlp, set_lr, teacher_classification, teacher_regression
from torch import nn

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

mse = nn.functional.mse_loss
ce = nn.functional.cross_entropy

EXPLODE_AT = 200
SPIKE_AT = 260
NAN_AT = 180
FREEZE_AT = 150


def _explode_stage2_lr(watch, seed):
    # Stage 2 of a two-stage schedule was meant to be lr/100 but the code multiplies by 100.
    data = teacher_regression(dim=16, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def stage2(step, model, opt):
        if step == EXPLODE_AT:
            set_lr(opt, 0.01 * 100)

    fit(watch, model, opt, steps=260, batch_at=data, loss_fn=mse, before_step=stage2)


def _vanish_deep_sigmoid(watch, seed):
    # A 14-layer MLP with sigmoid activations and default init (a "ReLU -> Sigmoid" refactor).
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16] + [48] * 13 + [4], activation=nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce)


def _nonfinite_last_batch_std(watch, seed):
    # Per-batch feature standardisation (x - mean) / std with drop_last=False: the dataset has
    # 180 full batches of 40 and one leftover sample; std of one sample is NaN (unbiased) -> NaN loss.
    gen = torch.Generator().manual_seed(seed + 3)
    teacher = torch.randn(16, 4, generator=gen)
    n = 40 * NAN_AT + 1
    xs = 3.0 * torch.randn(n, 16, generator=gen) + 1.0
    ys = (xs @ teacher).argmax(1)

    def data(step):
        i = step % (NAN_AT + 1)
        x, y = xs[i * 40 : (i + 1) * 40], ys[i * 40 : (i + 1) * 40]
        return (x - x.mean(0)) / x.std(0), y

    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=240, batch_at=data, loss_fn=ce)


def _spike_unnormalised_shard(watch, seed):
    # One shard skipped target normalisation: its batch arrives in raw units (x200, +500).
    base = teacher_regression(dim=16, batch=32, seed=seed)
    data = corrupt_at(base, SPIKE_AT, lambda x, y: (x, 200.0 * y + 500.0))
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=mse)


def _overfit_tiny_noisy_dataset(watch, seed):
    # 96 training examples (3 batches) with 30% label noise, a wide MLP, no regularisation.
    base = teacher_classification(dim=16, classes=4, batch=32, label_noise=0.3, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 256, 256, 4])
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    fit(watch, model, opt, steps=450, batch_at=fixed_dataset(base, 3), loss_fn=ce, val_at=held_out(base), val_every=10)


def _stagnant_intdiv_schedule(watch, seed):
    # Step decay written as 1 // (1 + step // 150) (integer division): the factor drops 1 -> 0 at step 150.
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 // (1 + s // FREEZE_AT))
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=ce, scheduler=sched)


SCENARIOS = [
    Scenario(
        name="explode14_stage2_lr_times100",
        description="MLP regression, SGD momentum; at step 200 a stage-2 lr multiplies by 100 instead of dividing",
        train=_explode_stage2_lr,
        expect={"exploding_gradient": EXPLODE_AT},
        # Label fixed AFTER the one real eval run (which used allow={nonfinite, loss_spike}): offline, the blow-up
        # kills every ReLU in seeds 1 and 2 -- all weight gradients are exactly 0 from step 206 (seed 1) / 205
        # (seed 2) to the end, only the output bias still learns -- so stagnation and vanishing_gradient after
        # the explosion are real consequences, not false alarms.
        allow=frozenset({"nonfinite", "loss_spike", "stagnation", "vanishing_gradient"}),
        tags=frozenset({"set14", "fault"}),
    ),
    Scenario(
        name="vanish14_deep_sigmoid_mlp",
        description="14-layer sigmoid MLP with default init: first layers get tiny gradients",
        train=_vanish_deep_sigmoid,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=frozenset({"set14", "fault"}),
    ),
    Scenario(
        name="nonfinite14_last_batch_std",
        description="per-batch standardisation; a leftover 1-sample batch at step 180 has std NaN",
        train=_nonfinite_last_batch_std,
        expect={"nonfinite": NAN_AT},
        allow=frozenset({"loss_spike", "stagnation"}),
        tags=frozenset({"set14", "fault"}),
    ),
    Scenario(
        name="spike14_unnormalised_shard",
        description="regression, Adam; one batch at step 260 arrives in raw target units",
        train=_spike_unnormalised_shard,
        expect={"loss_spike": SPIKE_AT},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"set14", "fault"}),
    ),
    Scenario(
        name="overfit14_tiny_noisy_dataset",
        description="wide MLP memorising 96 examples with 30% label noise",
        train=_overfit_tiny_noisy_dataset,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"set14", "fault"}),
    ),
    Scenario(
        name="stagnant14_intdiv_lr_schedule",
        description="LambdaLR 1 // (1 + step // 150): lr becomes exactly 0 at step 150",
        train=_stagnant_intdiv_schedule,
        expect={"stagnation": FREEZE_AT},
        tags=frozenset({"set14", "fault"}),
    ),
]
