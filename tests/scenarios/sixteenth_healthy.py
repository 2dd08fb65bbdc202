"""Set 16 healthy controls (held-out): same architectures as the set-16 faults, trained correctly
(or with a benign bug that produces no symptom)."""

# Offline measurements (_sixteenth_measure.py, seeds 0/1/2; "loss" = mean of steps 0-9 | ~25% | ~50% | ~75% |
# last 20; "ratio" = max loss[t] / median(loss[t-20:t]); no NaN/Inf in any loss, val or gradient):
# cnn_pixels_0_1_sgd (lr 0.1): loss 1.4 -> 1.3 (step ~75: an SGD plateau near ln4 for ~80 steps) -> 0.012/0.0025/
#   0.0067; val min on the last check; ratio 2.7/4.9/4.3 on single batches at loss ~0.005 (late jitter), grad
#   total max 5/1.6/3 at 112-157 while the loss falls fastest.
# gcn_sbm_adam (lr 1e-3; 5e-3 converged by step ~75): loss 1.4 -> 0.57/0.73/0.50, val 1.4 -> 0.43/0.74/0.52 at
#   the end; ratio <= 1.7; grads grow 0.15-0.24 -> 0.5-0.7 as it learns.
# transformer_cosine_stepped_with_metric: lr stays 1e-3 (0.00099 at most); loss 1.3 -> 0.24/0.33/0.29, val min
#   0.24@299 / 0.30@299 / 0.20@269 (0.33 last); ratio <= 2.1; grads grow 1-1.5 -> 2.8-3.9 (max 8.7). (The first
#   version's order-dependent task did not learn at all; the task was changed to the order-free time-sum.)
# sensor_conv1d_stuck_sensor_stable_norm: stuck rows from step 200 change nothing (no NaN); loss 1.4 -> 0.33/0.74/
#   0.45, val min at 289/269/289; ratio <= 2.3; first-conv grads 0.0025-0.014 in the first 20 steps vs head
#   0.03-0.33, 0.4-2.2 at the end. (A first version used feature_grad_mult 0.1 -> first-conv/head 2e-3 early;
#   dropped so the control is unambiguous.)
# two_tower_cold_items_safe_cosine: cold untagged items from step 220 give cos 0 and finite grads; loss 0.87 -> 0.70,
#   val 0.87-0.95 -> 0.67-0.71 falling to the end; ratio <= 1.23.
# infonce_tau_anneal_clamped: loss 3.2 -> 0.85/0.85/0.96; grads ~2.9 -> 3.0-3.3 (max 4.9-5.6 near 253-258 as tau
#   reaches 0.05); ratio <= 1.5.
# quant_highway_gate_bias_minus2: every block 0.02-0.05 early, 0.08-0.5 late; loss 1.5 -> 0.44/0.58/0.52; val min
#   at 269/239/289, within 0.03 of the last; ratio <= 1.55.
# gru_subset_val_from_train: train 1.35 -> 0.011/0.011/0.007, "val" (train subset, eval mode) 1.2-1.3 -> 0.007-0.01
#   falling at every check; grads shrink 0.46-0.65 -> 0.03 as it memorises; ratio <= 1.4.

from __future__ import annotations

import torch
from _sixteenth_lib import (
    GCN,
    ClickWorld,
    GRUClassifier,
    QuantHighwayNet,
    SensorNet,
    SeqTransformer,
    TwoTower,
    bar_images,
    encoder_mlp,
    fixed_subset,
    info_nce,
    mean_val,
    nonlinear_teacher,
    quiet_scheduler_warnings,
    run_loop,
    sbm_graphs,
    sensor_signals,
    seq_teacher,
    small_cnn,
    standard_step,
    two_views,
)
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

ce = F.cross_entropy
bce = F.binary_cross_entropy_with_logits
VAL = 10**6  # validation batches come from steps >= VAL of the same generator (never trained on)
STUCK_AT = 200
COLD_FROM = 220


def _cnn(watch, seed):
    data = bar_images(seed)
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _gcn(watch, seed):
    data = sbm_graphs(seed)
    torch.manual_seed(seed)
    model = GCN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _transformer_sched_metric(watch, seed):
    # Benign bug: CosineAnnealingLR stepped as sched.step(val_loss) once per 10-step "epoch" (copied from a
    # ReduceLROnPlateau loop). The metric is taken as the epoch number, the closed form gives lr ~ base lr:
    # the cosine schedule never anneals, training is still fine.
    quiet_scheduler_warnings()
    data = seq_teacher(seed)
    torch.manual_seed(seed)
    model = SeqTransformer(dropout=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
        after_val=lambda v: sched.step(v),
    )


def _sensor(watch, seed):
    # Stable two-pass variance + eps; stuck sensor rows from STUCK_AT on are harmless.
    data = sensor_signals(seed, stuck_at=STUCK_AT)
    torch.manual_seed(seed)
    model = SensorNet(one_pass=False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    clean = sensor_signals(seed)  # validation data: no stuck rows
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: clean(VAL + i), ce),
    )


def _two_tower(watch, seed):
    world = ClickWorld(seed, cold_from=COLD_FROM)
    torch.manual_seed(seed)
    model = TwoTower(safe_cosine=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, world.batch_at, bce),
        val_loss=mean_val(model, lambda i: world.batch_at(VAL + i), bce),
    )


def _infonce(watch, seed):
    data = two_views(seed)
    torch.manual_seed(seed)
    model = encoder_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        v1, v2 = data(step)
        tau = max(0.05, 0.5 - 0.45 * step / 250)
        opt.zero_grad(set_to_none=True)
        loss = info_nce(model(v1), model(v2), tau)
        loss.backward()
        opt.step()
        return loss

    run_loop(watch, model, opt, steps=300, train_step=train_step)


def _highway(watch, seed):
    data = nonlinear_teacher(seed)
    torch.manual_seed(seed)
    model = QuantHighwayNet(gate_bias=-2.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _gru_val_from_train(watch, seed):
    # Same tiny-subset training as overfit16_gru_tiny_subset, but the "validation" batches are drawn
    # from the training subset by mistake: no held-out signal, nothing to diagnose.
    base = seq_teacher(seed, dim=4, length=12, label_noise=0.2)
    train = fixed_subset(base, 4)
    torch.manual_seed(seed)
    model = GRUClassifier(dim=4, hidden=48)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, train, ce),
        val_loss=mean_val(model, train, ce, n=4),
    )


def _s(name, desc, fn, arch):
    return Scenario(name=name, description=desc, train=fn, tags=frozenset({"set16", "healthy", arch}))


SCENARIOS = [
    _s(
        "healthy16_cnn_pixels_0_1_sgd",
        "Small CNN (no norm), SGD lr 0.1 momentum 0.9, bar-orientation images in [0, 1].",
        _cnn,
        "cnn",
    ),
    _s(
        "healthy16_gcn_sbm_adam",
        "2-layer dense GCN + linear readout, node classification on a fresh SBM graph per step, Adam 1e-3.",
        _gcn,
        "gnn",
    ),
    _s(
        "healthy16_transformer_cosine_stepped_with_metric",
        "Pre-LN transformer classifier (dropout 0.1), AdamW; "
        "CosineAnnealingLR stepped as step(val_loss) each 10-step epoch: lr stays ~base (benign).",
        _transformer_sched_metric,
        "transformer",
    ),
    _s(
        "healthy16_sensor_conv1d_stuck_sensor_stable_norm",
        "1-D conv net on raw sensor signals with per-sample "
        "two-pass standardisation (+eps); stuck-sensor rows from step 200 are harmless.",
        _sensor,
        "conv1d",
    ),
    _s(
        "healthy16_two_tower_cold_items_safe_cosine",
        "Two-tower recommender (user embedding + proj, item = "
        "EmbeddingBag of tags), F.cosine_similarity; untagged cold items from step 220 give cos 0, finite.",
        _two_tower,
        "recommender",
    ),
    _s(
        "healthy16_infonce_tau_anneal_clamped",
        "Contrastive MLP encoder, InfoNCE via cross_entropy, temperature "
        "annealed 0.5 -> 0.05 over 250 steps then held (gradients grow as tau falls).",
        _infonce,
        "contrastive",
    ),
    _s(
        "healthy16_quant_highway_gate_bias_minus2",
        "4 highway layers (gate bias -2) with a fake-quant STE "
        "activation after layer 3, Adam, nonlinear-teacher classification.",
        _highway,
        "highway",
    ),
    _s(
        "healthy16_gru_subset_val_from_train",
        "Hand-written GRU memorises 128 sequences (20% noisy labels); the "
        "val batches are drawn from the training subset by mistake, so val falls with train.",
        _gru_val_from_train,
        "rnn",
    ),
]
