"""Set 17 faults (held-out): realistic shipped bugs in GRU, tabular MLPs, GCN/GAT graph nets, transformers, BN
CNNs, a conv autoencoder and a 1-D conv forecaster. Onsets from offline measurement (_seventeenth_measure.py)."""

# Offline measurements (_seventeenth_measure.py: a stand-in watch() recording loss, val and every parameter's grad
# norm after each optimizer step; seeds 0/1/2). "ratio" = max loss[t] / median(loss[t-20:t]); grad norms are per
# module, median over a window; "twin" = the same run without the bug (twins.py, not shipped), last-20 mean loss.
#
# vanish17_gru_epoch_seconds_column: GRU grads 1.6/1.3/1.4 (median, steps 120-149) -> exactly 0.0 at every step from
#   150 to the end in all seeds; head 0.2 -> 1.2-1.4. Loss 0.32/0.36/0.30 (120-149) -> 1.8/2.1/1.6 at 150 (ratio
#   6.3/6.4/6.1 @151) -> 1.4/1.3/1.2 at the end (class prior); val min 0.25@139 / 0.34@149 / 0.26@139, then
#   1.1-1.5 flat -> stagnation and the loss jump allowed. Twin: 0.29/0.27/0.24.
# vanish17_softmax_as_hidden_activation: first Linear 1.1e-5/9e-6/1.1e-5, second 3e-6, vs head 0.10-0.13 over steps
#   0-19 (ratio ~1e4) and the same at 280-299 (1.1e-5/9.3e-6/1.1e-5 vs 0.09/0.09/0.11); every layer down is ~10x
#   smaller. Loss 1.4 flat the whole run in all seeds (val 1.4) -> stagnation allowed. Twin (GELU): 0.39/0.48/0.49.
#   (RMSprop was tried first: the ratio was only ~400x early and the lower layers caught up by the end; SGD kept.)
# vanish17_gcn_degree_pow_minus1: convs.0 7.6e-8/4.8e-8/5e-8, convs.1 ~3e-7, convs.2 ~5e-6, convs.3 ~1e-4, convs.4
#   ~2e-3 vs head 0.065-0.075 (steps 0-19), unchanged at 280-299; loss 1.39 flat (val 1.4) -> stagnation allowed.
#   Twin (pow(-0.5)): 0.63/0.39/0.33. (Adam was tried first: the lower layers caught up to ~1/20 of the head by the
#   end; SGD momentum kept.)
# stagnant17_lambdalr_returns_absolute_lr: lr 9e-8 at most; loss 3.4/3.5/3.4 from the first to the last step (val
#   3.3/3.5/3.4 at every check); grads normal and constant (total 0.86-0.95, every block 0.02-0.8). Twin (factor
#   lambda): 3.4 -> 1.74/1.78/1.65.
# stagnant17_amp_clip_before_unscale: before 120 grads total 0.55-1.0 (clip 1.0) and the loss falls 2.1 -> 1.3/1.6/1.3
#   (steps 90-119, val still falling); from step 120 the grads the optimizer sees total exactly 1.5e-5 (clipped to 1 in
#   the x65536 space) at every step; loss 1.2/1.4/1.2 (120-149) and 1.2/1.4/1.3 at the end, val 1.2/1.4/1.2 flat from
#   ~150. Twin (no AMP): 1.22/1.51/1.29 at 110-119 -> 0.72/0.78/0.81 -> vanishing allowed (uniformly tiny grads).
# stagnant17_tanh_autoencoder_raw_uint8_target: loss 4.7e3/4.5e3/4.5e3 (steps 0-9) -> 4.2e3/4.6e3/4.3e3 (last 20),
#   per-batch 3e3-5.5e3 throughout, val 4.0e3-4.2e3 at every check; grads 51-58 early, 73-94 max by ~40, then
#   saturating tanh shrinks them to 0.12-0.27 at the end -> vanishing allowed. Twin (target scaled like the input):
#   0.71-1.2 -> 0.026/0.060/0.062.
# spike17_bgr_after_decoder_switch: loss 0.26-0.29 (170-199) -> 2.5/2.2/2.7 at 200 (ratio 10.3/10.4/11.0 @200/201/200),
#   relearned to 0.26-0.28 by the end; grad total 1-1.4 -> max 8.9/5.5/7.0 at 202-204 (not an explosion); val (same
#   decoder) min at 179/199/199, 0.57-0.72 at 209.
# spike17_collator_left_padding (10% label noise): loss 0.29/0.30/0.36 (170-199) -> 2.0/1.9/1.7 at 200 (ratio
#   6.9/6.3/6.1 @201/200/202), 1.1/0.77/1.0 at the end; grads 0.3-0.6 -> 2.4-3.7; val (same collator) min at
#   199/199/169, 1.4-1.6 at 209.
# explode17_log1p_target_dropped: loss 0.02/0.02/0.11 (120-149); grad total 0.37/2.5/4.3 at 149 -> 3.4e4/3.1e4/4.3e4
#   at 150 -> 6.8e11/5.1e9/6.7e12 at 151, max 3.9e12/1e19/6.7e12 at 154/153/151; loss 1.1e6-1.7e6 at 150, up to
#   1e14-1e24; the conv layers' grads are 0 (dead ReLUs) after the first steps; finite throughout; val (log targets)
#   0.014-0.068 -> 1.5e10-2.7e20. (Grad total is 59-130 on the first steps from init: targets ~5-8.)
# explode17_gaussian_nll_unfiltered_glitches: NLL -0.88/-0.75/-0.82 (170-199); grad total 9.6/2.2/6.0 at 199 ->
#   4.2e5/5.6e5/7.9e6 at 200, max 1.2e7/1.8e6/7.9e6 at 201/201/200, 1e3-1e4 at the end; loss 1e5-1.2e6 at 200-210,
#   1e3-1.7e3 at the end; finite throughout; val (same unfiltered pipeline) 1e5 at 209.
# nan17_gat_isolated_nodes_no_self_loops (node-feature signal 0.25): loss 0.33/0.61/0.38 around step 150, NaN loss and
#   NaN grads at every step from 180 on in every seed; ratio before 180 <= 3.9. (With signal 0.5 the loss fell to
#   ~0.005 and single batches jumped 5-8x before the bug; lowered.)
# overfit17_train_val_split_swapped: train 1.1-1.2 -> 0.041/0.041/0.048, falling throughout; val min 0.98@29 /
#   1.1@59 / 1.1@29, then rising steadily to 1.6/1.8/2.0. Late single-batch ratios 4.3-5.2 at train loss ~0.05.
#   (A first version, WeightedRandomSampler given 8 class weights -> 8 rows, had val rising from the first check;
#   replaced.) Explode (first try: an lr re-scaled x4 every epoch after a batch-size ramp) killed the ReLUs before
#   the output layer blew up, with no clear onset; replaced by the log1p-target bug.
# Wall time per run 0.3-3.3 s on one thread.

from __future__ import annotations

import torch
from _seventeenth_lib import (
    GAT,
    VAL,
    Conv1dForecaster,
    ConvAE,
    DeepGCN,
    GRUReadout,
    TinyGPT,
    TokenTransformer,
    bn_cnn1,
    bn_cnn3,
    colour_squares,
    demand_series,
    first_token_task,
    gaussian_nll,
    gen,
    gratings,
    hetero_regression,
    lm_loss,
    markov_tokens,
    mean_val,
    norm_mlp,
    pipeline_val,
    run_loop,
    sbm,
    session_events,
    shapes,
    standard_step,
    tabular_teacher,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

ce = F.cross_entropy
mse = F.mse_loss

EPOCH_SECONDS_AT = 150
RAW_TARGET_AT = 150
GLITCH_AT = 200
ISOLATED_AT = 180
BGR_AT = 200
LEFT_PAD_AT = 200
AMP_AT = 120


# ---------------------------------------------------------------- vanishing_gradient
def _vanish_epoch_seconds(watch, seed):
    # Upstream schema change at step 150: the time column becomes raw Unix epoch seconds (~1.7e9) instead of
    # the fraction of the session elapsed. Every GRU gate saturates.
    # Validation reads the same feature table (epoch seconds from step 150 too).
    data = session_events(seed, epoch_seconds_from=EPOCH_SECONDS_AT)
    old, new = session_events(seed), session_events(seed, epoch_seconds_from=0)
    torch.manual_seed(seed)
    model = GRUReadout()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=pipeline_val(model, lambda step: lambda i: (new if step >= EPOCH_SECONDS_AT else old)(VAL + i), ce),
    )


def _vanish_softmax_hidden(watch, seed):
    # The MLP builder takes its hidden activation from cfg.act, which a config merge filled with the output
    # head's activation ("softmax"): every hidden layer is Linear -> LayerNorm -> Softmax.
    data = tabular_teacher(seed)
    torch.manual_seed(seed)
    model = norm_mlp([16, 128, 128, 128, 128, 4], act="softmax", norm="layer")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _vanish_gcn_pow_minus1(watch, seed):
    # Symmetric GCN normalisation written deg.pow(-1) instead of deg.pow(-0.5): D^-1 (A+I) D^-1 shrinks every
    # propagation by ~1/degree.
    data = sbm(seed)
    torch.manual_seed(seed)
    model = DeepGCN(norm="inv")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


# ---------------------------------------------------------------- stagnation
def _stagnant_lambdalr_absolute(watch, seed):
    # LambdaLR's lambda returns the learning rate itself (3e-4 * warmup) instead of a factor: the optimizer's
    # lr 3e-4 is multiplied by it, so the lr peaks at 9e-8.
    data = markov_tokens(seed)
    torch.manual_seed(seed)
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 3e-4 * min(1.0, (s + 1) / 50))

    def train_step(step):
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=mean_val(model, lambda i: data(VAL + i), lm_loss),
    )


def _stagnant_amp_clip_scaled(watch, seed):
    # At step 120 mixed precision is switched on. The loop clips to 1.0 right after scaler.scale(loss).backward()
    # without scaler.unscale_(): the *scaled* gradients (x65536) are clipped, so after scaler.step() unscales them
    # the update is ~1/65536 of a normal one.
    data = gratings(seed, noise=2.0, classes=8)
    torch.manual_seed(seed)
    model = bn_cnn1(classes=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")

    def train_step(step):
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        if step < AMP_AT:
            loss = ce(model(x), y)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss, norm
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = ce(out.float(), y)
        scaler.scale(loss).backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # bug: scaled gradients
        scaler.step(opt)
        scaler.update()
        return loss, norm

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _stagnant_tanh_ae_raw_target(watch, seed):
    # Conv autoencoder with a tanh output; the input is scaled to [-1, 1] but the loss target is the raw uint8
    # image (the loader's "raw" field): 0..255. tanh can't reach it.
    base = shapes(seed)
    torch.manual_seed(seed)
    model = ConvAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def data(step):
        x = base(step)
        return 2 * x - 1, torch.round(255 * x)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: data(VAL + i), mse),
    )


# ---------------------------------------------------------------- loss_spike
def _spike_bgr(watch, seed):
    # At step 200 the image decoding moves from PIL to cv2, which returns BGR; nothing converts it.
    # Validation goes through the same decoder (held-out images, BGR from step 200 too).
    data = colour_squares(seed, bgr_from=BGR_AT)
    rgb, bgr = colour_squares(seed), colour_squares(seed, bgr_from=0)
    torch.manual_seed(seed)
    model = bn_cnn3()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=pipeline_val(model, lambda step: lambda i: (bgr if step >= BGR_AT else rgb)(VAL + i), ce),
    )


def _spike_left_padding(watch, seed):
    # At step 200 a tokenizer/collator upgrade switches padding_side to "left"; the model uses learned absolute
    # positions and was trained on right-padded batches.
    # 10% label noise; validation goes through the same collator (left-padded from step 200 too).
    data = first_token_task(seed, label_noise=0.1, left_pad_from=LEFT_PAD_AT)
    right, left = first_token_task(seed, label_noise=0.1), first_token_task(seed, label_noise=0.1, left_pad_from=0)
    torch.manual_seed(seed)
    model = TokenTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=pipeline_val(model, lambda step: lambda i: (left if step >= LEFT_PAD_AT else right)(VAL + i), ce),
    )


# ---------------------------------------------------------------- exploding_gradient
def _explode_log_target_dropped(watch, seed):
    # Demand forecaster trained on log1p(demand). From step 150 the v2 feature store serves the target column
    # without the log1p transform (raw demand, ~150..3000); the inputs are unchanged.
    data = demand_series(seed, raw_target_from=RAW_TARGET_AT)
    clean = demand_series(seed)
    torch.manual_seed(seed)
    model = Conv1dForecaster()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: clean(VAL + i), mse),
    )


def _explode_gaussian_nll_glitches(watch, seed):
    # Heteroscedastic regression (mean, log-variance heads, Gaussian NLL). From step 200 an upstream filter on the
    # `valid` flag is dropped: ~5% of the rows are sensor glitches at +-1000.
    # Validation reads through the same (unfiltered) pipeline from step 200 on.
    data = hetero_regression(seed, glitch_from=GLITCH_AT)
    filtered, unfiltered = hetero_regression(seed), hetero_regression(seed, glitch_from=0)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, gaussian_nll),
        val_loss=pipeline_val(
            model, lambda step: lambda i: (unfiltered if step >= GLITCH_AT else filtered)(VAL + i), gaussian_nll
        ),
    )


# ---------------------------------------------------------------- nonfinite
def _nan_gat_isolated(watch, seed):
    # Hand-written dense GAT without self-loops (full graphs never had isolated nodes). From step 180 training
    # uses neighbour-sampled subgraphs, which leave some nodes with no neighbour: softmax over all -inf = NaN.
    data = sbm(seed, signal=0.25, drop_edges_from=ISOLATED_AT)
    clean = sbm(seed, signal=0.25)
    torch.manual_seed(seed)
    model = GAT()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: clean(VAL + i), ce),
    )


# ---------------------------------------------------------------- overfitting
def _overfit_split_swapped(watch, seed):
    # `split = int(0.1 * n)` was meant as the size of the validation slice, but the code trains on x[:split]
    # and validates on x[split:]: 256 training rows (20% noisy labels), 2304 held-out rows.
    x, y = tabular_teacher(seed, dim=16, classes=4, batch=2560, label_noise=0.2)(0)
    split = int(0.1 * len(x))
    train_x, train_y, val_x, val_y = x[:split], y[:split], x[split:], y[split:]

    def data(step):
        idx = torch.randint(0, split, (32,), generator=gen(seed, step, 12))
        return train_x[idx], train_y[idx]

    torch.manual_seed(seed)
    model = norm_mlp([16, 128, 128, 4], act="relu", norm="batch")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: (val_x[i * 576 : (i + 1) * 576], val_y[i * 576 : (i + 1) * 576]), ce),
    )


def _f(name, desc, fn, expect, allow=(), arch=(), opt=""):
    return Scenario(
        name=name,
        description=desc,
        train=fn,
        expect=expect,
        allow=frozenset(allow),
        tags=frozenset({"set17", "fault", *arch, opt} - {""}),
    )


SCENARIOS = [
    _f(
        "vanish17_gru_epoch_seconds_column",
        "GRU over session events; from step 150 an upstream schema change makes the time column raw Unix epoch "
        "seconds (~1.7e9) instead of 0..1: every gate saturates, GRU gradients vanish.",
        _vanish_epoch_seconds,
        {"vanishing_gradient": EPOCH_SECONDS_AT},
        {"stagnation", "loss_spike"},
        ("rnn", "gru"),
        "adam",
    ),
    _f(
        "vanish17_softmax_as_hidden_activation",
        "Tabular MLP (Linear-LayerNorm-act x4) whose hidden activation came from the head's config: softmax.",
        _vanish_softmax_hidden,
        {"vanishing_gradient": 0},
        {"stagnation"},
        ("mlp", "tabular", "layernorm"),
        "sgd",
    ),
    _f(
        "vanish17_gcn_degree_pow_minus1",
        "5-layer GCN, SGD momentum; adjacency normalised D^-1 (A+I) D^-1 (pow(-1) typed for pow(-0.5)).",
        _vanish_gcn_pow_minus1,
        {"vanishing_gradient": 0},
        {"stagnation"},
        ("gnn",),
        "sgd_momentum",
    ),
    _f(
        "stagnant17_lambdalr_returns_absolute_lr",
        "Causal transformer LM, AdamW lr 3e-4 with LambdaLR whose lambda returns the lr (3e-4*warmup) instead "
        "of a factor: effective lr <= 9e-8.",
        _stagnant_lambdalr_absolute,
        {"stagnation": 0},
        (),
        ("transformer", "lm"),
        "adamw",
    ),
    _f(
        "stagnant17_amp_clip_before_unscale",
        "BN CNN, SGD momentum with clip 1.0; AMP turned on at step 120 with clip_grad_norm_ applied to the "
        "scaled gradients (no scaler.unscale_): updates shrink 65536x.",
        _stagnant_amp_clip_scaled,
        {"stagnation": AMP_AT},
        {"vanishing_gradient"},
        ("cnn", "batchnorm", "amp"),
        "sgd_momentum",
    ),
    _f(
        "stagnant17_tanh_autoencoder_raw_uint8_target",
        "Conv autoencoder with tanh output, input in [-1, 1] but the target is the raw 0..255 image.",
        _stagnant_tanh_ae_raw_target,
        {"stagnation": 0},
        {"vanishing_gradient"},
        ("autoencoder", "cnn"),
        "adam",
    ),
    _f(
        "spike17_bgr_after_decoder_switch",
        "BN CNN classifying coloured squares (Adam); from step 200 images arrive BGR (cv2 decoder).",
        _spike_bgr,
        {"loss_spike": BGR_AT},
        (),
        ("cnn", "batchnorm"),
        "adam",
    ),
    _f(
        "spike17_collator_left_padding",
        "Transformer with learned absolute positions (AdamW); from step 200 the collator pads on the left.",
        _spike_left_padding,
        {"loss_spike": LEFT_PAD_AT},
        (),
        ("transformer",),
        "adamw",
    ),
    _f(
        "explode17_log1p_target_dropped",
        "1-D conv demand forecaster (SGD Nesterov) trained on log1p targets; from step 150 the feature store "
        "serves raw demand (~150..3000) as the target.",
        _explode_log_target_dropped,
        {"exploding_gradient": RAW_TARGET_AT},
        {"loss_spike", "nonfinite"},
        ("conv1d", "timeseries"),
        "sgd_nesterov",
    ),
    _f(
        "explode17_gaussian_nll_unfiltered_glitches",
        "Heteroscedastic MLP (mean, log-var; Gaussian NLL, Adam); from step 200 glitch rows (+-1000) are no "
        "longer filtered out.",
        _explode_gaussian_nll_glitches,
        {"exploding_gradient": GLITCH_AT},
        {"loss_spike", "nonfinite"},
        ("mlp", "tabular"),
        "adam",
    ),
    _f(
        "nan17_gat_isolated_nodes_no_self_loops",
        "Hand-written dense GAT without self-loops; from step 180 neighbour-sampled subgraphs leave isolated "
        "nodes: softmax over an all -inf row.",
        _nan_gat_isolated,
        {"nonfinite": ISOLATED_AT},
        {"loss_spike", "stagnation"},
        ("gnn",),
        "adam",
    ),
    _f(
        "overfit17_train_val_split_swapped",
        "BN MLP (AdamW); split = int(0.1*n) meant as the val size: trains on 256 rows (20% noisy labels), "
        "validates on the other 2304.",
        _overfit_split_swapped,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        ("mlp", "tabular", "batchnorm"),
        "adamw",
    ),
]
