"""Set 16 faults (held-out): realistic shipped bugs in CNN, GNN, transformer, 1-D conv, recommender,
contrastive, highway and hand-written-GRU models. Onsets from offline measurement (_sixteenth_measure.py)."""

# Offline measurements (_sixteenth_measure.py: a fake watch() recording loss, val and every parameter's grad
# norm after each optimizer step; seeds 0/1/2). "loss" = mean of steps 0-9 | ~25% | ~50% | ~75% | last 20;
# "ratio" = max loss[t] / median(loss[t-20:t]); grad norms are per layer group, median [min, max] over a window.
#
# explode16_pixels_0_255 (SGD lr 0.1, m 0.9): loss 0.039/0.011/0.019 over steps 170-199, grads 0.02-0.45 per group;
#   step 200 (first 255x batch) grad total 2.6e3/5.4e3/8.2e3, step 201 3.8e6/1.1e6/9.6e6 (loss 1.1e8/1.6e7/1.6e8,
#   ratio 2e9-1.4e10). Never non-finite. The blow-up kills the ReLUs: first-conv grads exactly 0 from step 202,
#   all conv grads exactly 0 from 210/204/207 to the end, loss at ln4 (1.4) from ~209-215, val 1.4 (was 0.004-0.03)
#   -> stagnation / vanishing_gradient after it are measured consequences (allowed).
# explode16_mf_resume_lr_units (Adam 1e-2 -> lr 10 at step 150): mse 1.0 -> 0.13 by 120-149 (val min 0.11-0.12
#   @149); grad total 0.11-0.12 at 147-150, 73/110/88 at 151, 5e3-6e3 at 152, 1e5 by ~160, max 2.9-3.1e5 @178-182,
#   2e4 at the end; loss 1e3 @151 -> 4e7 (ratio 1.2-1.4e8); finite throughout. (First tried: SGD MF with a
#   sign-flipped L2 term -- the MF did not learn before the bug and the growth was gradual; replaced.)
# explode16_clip_moved_before_backward (SGD lr 20, clip 0.25): before 200 every step is clipped (recorded norm
#   0.25); unclipped norm at 200 = 0.36/0.36/0.37, then 0.8, 1.1, 7.4, 59@204 (s0) / 2, 3.2, 6.3 ... 22@216 (s1) /
#   1.8, 6.6 ... 21@213 (s2); loss 1.6 -> 120@204 / 51@212 / 56@213 (ratio 74/31/33) and never recovers (21-38 to
#   the end, uniform = 3.2); embedding and GRU-cell grads fall to 1e-5..1e-3 in many late steps (s0/s1) while the
#   output layer stays ~1.5 -> stagnation / vanishing after the explosion allowed.
# vanish16_highway_gate_bias_typo: every highway block 0.8e-9..4e-9 for the whole run vs head 0.6-0.9 (first 20)
#   / 0.26-0.41 (last 20); loss 1.6 -> 0.64/0.70/0.67 (linear head on the raw input; healthy twin 0.44/0.58/0.52).
# vanish16_feature_grad_mult_1e-6: conv feature layers 2.5e-9..6e-8 (first 20), 4e-8..7e-6 (last 20) vs context
#   0.01-0.13 / head 0.03-0.32 (first 20); loss flat at 1.39 to ~step 220 (s0, s2) and the whole run (s1: 1.3 at
#   the end) -> stagnation allowed; s0/s2 then fall to 0.63/0.61 once Adam's tiny steps add up.
# vanish16_gru_right_padded_last_step_readout: rnn.weight_ih 1e-13..9e-10 vs weight_hh 0.003-0.14, biases 0.01-0.23,
#   head 0.04-0.46, whole run; loss 1.39 -> 1.3/1.4/1.3, val flat (healthy readout of the last valid step in a
#   scratch run: 1.3 -> 0.24) -> stagnation allowed.
# nan16_one_pass_variance_stuck_sensor: min one-pass variance over steps 0-199 is 0.44-0.56 (seeds 0-4, after
#   raising the channel gains to U(1, 2.5): with U(0.5, 2) seeds 0 and 2 already went negative at steps 184 and 92,
#   so the gains were changed); at step 200 it is negative in every seed; loss 0.39/0.98/0.46 over 170-199, NaN
#   loss and NaN grads from step 200 in every seed, to the end. Val (clean data) NaN from 209.
# nan16_infonce_tau_schedule_unclamped: first NaN loss/grads at step 272 in all seeds (tau 0.0104 there); steps
#   242-271 grad total 1.2-6.8 per layer (healthy clamped twin 1.5-2.5 late, max 5.6), 11@271 (s0); loss 0.9-1.1.
#   Grad growth before the NaN (1/tau) -> exploding_gradient allowed.
# nan16_cosine_cold_item_no_tags: loss 0.73/0.73/0.71 over 190-219, grads 0.04-0.5; NaN loss at 220 (0/0 for the
#   empty bag), NaN user-side grads at 220 and NaN everywhere from 221 to the end.
# spike16_dropout_keep_prob_as_p: loss 0.35/0.36/0.34 (170-199) -> 1.0 at 200 (ratio 3.2/3.4/3.4 @200/203/203), mean
#   0.97-1.0 over 200-229, 0.68-0.77 at the end (never back to 0.35); grad total falls 1.3-1.5 (no explosion).
# spike16_label_map_off_by_one: loss 0.62/0.81/0.57 (170-199) -> 2.5/2.5/3.5 at 200 (ratio 5.3@205 / 3.3@201 /
#   6.1@200), 2.0-2.3 over 200-229, relearned to 0.96/1.1/0.74 by the end; val (current label map) min @199 in every
#   seed, 1.8-2.1 at 209. Grad total ~0.5 -> 1.3-3.2 while relearning (max 3.2; not an explosion).
# overfit16_sensor_debug_subset (lr 1e-3): train 1.4 -> 0.007/0.004/0.007, falling throughout; val min 1.1@89 /
#   1.3@89 / 1.2@99, then rising steadily to 4.0/3.2/4.0; ratio <= 1.17. (lr 2e-3 gave a 19x train-loss jump at
#   step 132 of seed 1 during memorisation; lowered.)
# overfit16_gru_tiny_subset (128 sequences, 20% noise, lr 2e-3): train 1.35 -> 0.011/0.011/0.007; val min
#   1.1@69 / 0.99@79 / 1.2@69, last 2.1/1.9/2.2; ratio <= 1.4. (64 sequences / 25% noise had val rising from the
#   first check at step 9; changed so a real minimum exists.)
# stagnant16_encoder_output_detached: pos/embed/encoder grads are None at every step; norm 0.06-0.4, head 0.3-1.9;
#   loss 1.5 -> 1.0 (a linear probe on random features; healthy twin 0.24-0.33).
# stagnant16_gcn_propagation_under_no_grad: w1/w2 grads 0.07-0.26 over 70-99, None from step 100 on; readout keeps
#   0.15-0.37; loss 1.1/1.2/1.1 (70-99) -> 1.0/1.1/0.94 (100-129) -> 0.84/1.0/0.73 at the end (healthy twin
#   0.57/0.73/0.50).
# stagnant16_ste_mask_never_true: blocks 0-2 grads exactly 0.0 at every step; block 3 0.02-0.19, head 0.14-0.52;
#   loss 1.5 -> 0.52/0.63/0.57 (healthy twin 0.44/0.58/0.52).
# Wall time per run 0.2-6 s on this machine (one thread).

from __future__ import annotations

import torch
from _common import set_lr
from _sixteenth_lib import (
    GCN,
    GRULM,
    MF,
    ClickWorld,
    GRUClassifier,
    PaddedGRUClassifier,
    QuantHighwayNet,
    SensorNet,
    SeqTransformer,
    TwoTower,
    bar_images,
    encoder_mlp,
    fixed_subset,
    info_nce_naive,
    lm_loss,
    markov_text,
    mean_val,
    nonlinear_teacher,
    ratings,
    right_padded_sequences,
    run_loop,
    sbm_graphs,
    sensor_signals,
    seq_teacher,
    set_dropout,
    small_cnn,
    standard_step,
    two_views,
)
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

ce = F.cross_entropy
bce = F.binary_cross_entropy_with_logits
mse = F.mse_loss
VAL = 10**6

PIXELS_255_AT = 200
LR_UNITS_AT = 150
CLIP_BUG_AT = 200
STUCK_AT = 200
TAU_NAN_AT = 272  # placeholder until measured
COLD_FROM = 220
DROPOUT_AT = 200
LABEL_SHIFT_AT = 200
NO_GRAD_AT = 100


# ---------------------------------------------------------------- exploding_gradient
def _explode_pixels_255(watch, seed):
    # The image cache is rebuilt at step 200 (an epoch boundary) by a loader that skips the /255.
    base = bar_images(seed)

    def data(step):
        x, y = base(step)
        return (x * 255.0 if step >= PIXELS_255_AT else x), y

    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: base(VAL + i), ce),
    )


def _explode_mf_resume_lr_units(watch, seed):
    # Matrix factorisation with Adam lr 1e-2. At step 150 the job resumes (optimizer state restored) and the
    # new config's lr, written in units of 1e-3 ("lr: 10"), is applied as the raw lr: 10.
    data = ratings(seed)
    torch.manual_seed(seed)
    model = MF()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def forward(step, x):
        if step == LR_UNITS_AT:
            set_lr(opt, 10.0)
        return model(x)

    run_loop(
        watch,
        model,
        opt,
        steps=260,
        train_step=standard_step(model, opt, data, mse, forward=forward),
        val_loss=mean_val(model, lambda i: data(VAL + i), mse),
    )


def _explode_clip_before_backward(watch, seed):
    # word_language_model-style recipe (SGD lr 20, clip 0.25); a refactor at step 200 moves
    # clip_grad_norm_ above loss.backward(), so it clips nothing.
    data = markov_text(seed)
    torch.manual_seed(seed)
    model = GRULM()
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, lm_loss, clip=0.25, clip_before_backward_from=CLIP_BUG_AT),
        val_loss=mean_val(model, lambda i: data(VAL + i), lm_loss),
    )


# ---------------------------------------------------------------- vanishing_gradient
def _vanish_highway_gate(watch, seed):
    # Highway gate bias typed as -20 instead of -2: every transform gate is ~2e-9.
    data = nonlinear_teacher(seed)
    torch.manual_seed(seed)
    model = QuantHighwayNet(gate_bias=-20.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _vanish_feature_grad_mult(watch, seed):
    # wav2vec-style feature_grad_mult configured as 1e-6 (meant 0.1).
    data = sensor_signals(seed)
    torch.manual_seed(seed)
    model = SensorNet(one_pass=False, feature_grad_mult=1e-6)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _vanish_gru_padded_readout(watch, seed):
    # Right-padded batches (6-12 valid steps, padded to 64) and the classifier reads out[:, -1] instead of the
    # last valid step: the input weights only see the valid steps, >50 GRU steps before the readout.
    data = right_padded_sequences(seed)
    torch.manual_seed(seed)
    model = PaddedGRUClassifier(last_valid=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


# ---------------------------------------------------------------- nonfinite
def _nan_one_pass_variance(watch, seed):
    # var = E[x^2] - E[x]^2 on raw readings (~1000 units); stuck-sensor rows from step 200: true var ~1e-6,
    # the fp32 cancellation gives values of either sign, sqrt(negative + 1e-5) = NaN.
    data = sensor_signals(seed, stuck_at=STUCK_AT)
    torch.manual_seed(seed)
    model = SensorNet(one_pass=True)
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


def _nan_infonce_tau(watch, seed):
    # tau annealed linearly 0.5 -> 0.05 "over 250 steps" with no clamp; the run is 300 steps; the
    # hand-written exp(sim / tau) overflows when tau < ~0.011.
    data = two_views(seed)
    torch.manual_seed(seed)
    model = encoder_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        v1, v2 = data(step)
        tau = 0.5 - 0.45 * step / 250
        opt.zero_grad(set_to_none=True)
        loss = info_nce_naive(model(v1), model(v2), tau)
        loss.backward()
        opt.step()
        return loss

    run_loop(watch, model, opt, steps=300, train_step=train_step)


def _nan_cosine_cold_item(watch, seed):
    # Hand-written cosine u.v / (|u| |v|); from step 220 each batch holds new items with no tags (empty bag: v = 0).
    world = ClickWorld(seed, cold_from=COLD_FROM)
    torch.manual_seed(seed)
    model = TwoTower(safe_cosine=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, world.batch_at, bce),
        val_loss=mean_val(model, lambda i: ClickWorld(seed).batch_at(VAL + i), bce),
    )


# ---------------------------------------------------------------- loss_spike
def _spike_dropout_keep_prob(watch, seed):
    # Fine-tuning config from a TF1 codebase: "dropout: 0.9" meant keep-prob; applied as p=0.9 from step 200.
    data = seq_teacher(seed)
    torch.manual_seed(seed)
    model = SeqTransformer(dropout=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def forward(step, x):
        if step == DROPOUT_AT:
            set_dropout(model, 0.9)
        return model(x)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce, forward=forward),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _spike_label_off_by_one(watch, seed):
    # The label map is re-exported at step 200 with classes shifted by one (y -> (y + 1) % 4).
    # Validation uses the label map in force at the current step (the same export feeds both).
    base = sbm_graphs(seed)
    now = {"step": 0}

    def relabel(y, step):
        return (y + 1) % 4 if step >= LABEL_SHIFT_AT else y

    def data(step):
        now["step"] = step
        g, y = base(step)
        return g, relabel(y, step)

    def val_at(i):
        g, y = base(VAL + i)
        return g, relabel(y, now["step"])

    torch.manual_seed(seed)
    model = GCN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, val_at, ce),
    )


# ---------------------------------------------------------------- overfitting
def _overfit_sensor_subset(watch, seed):
    # A debug flag `--subset 64` left on: the 1-D conv net trains on 2 fixed batches (20% noisy labels).
    base = sensor_signals(seed, label_noise=0.2)
    torch.manual_seed(seed)
    model = SensorNet(one_pass=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, fixed_subset(base, 2), ce),
        val_loss=mean_val(model, lambda i: base(VAL + i), ce),
    )


def _overfit_gru_subset(watch, seed):
    # The GRU memorises 128 sequences (20% noisy labels); val from fresh sequences.
    base = seq_teacher(seed, dim=4, length=12, label_noise=0.2)
    torch.manual_seed(seed)
    model = GRUClassifier(dim=4, hidden=48)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, fixed_subset(base, 4), ce),
        val_loss=mean_val(model, lambda i: base(VAL + i), ce),
    )


# ---------------------------------------------------------------- stagnation
def _stagnant_detached_encoder(watch, seed):
    data = seq_teacher(seed)
    torch.manual_seed(seed)
    model = SeqTransformer(dropout=0.1, detach_encoder=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _stagnant_gcn_no_grad(watch, seed):
    # From step 100 a "cache the propagated features" refactor wraps both GCN layers in torch.no_grad().
    data = sbm_graphs(seed)
    torch.manual_seed(seed)
    model = GCN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def forward(step, g):
        model.no_grad_propagation = step >= NO_GRAD_AT
        return model(g)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce, forward=forward),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _stagnant_ste_mask(watch, seed):
    data = nonlinear_teacher(seed)
    torch.manual_seed(seed)
    model = QuantHighwayNet(gate_bias=-2.0, buggy_ste=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _f(name, desc, fn, expect, allow=(), arch=""):
    return Scenario(
        name=name,
        description=desc,
        train=fn,
        expect=expect,
        allow=frozenset(allow),
        tags=frozenset({"set16", "fault", arch}),
    )


SCENARIOS = [
    _f(
        "explode16_pixels_0_255_after_cache_rebuild",
        "Small CNN (no norm), SGD momentum; from step 200 the rebuilt image cache skips /255: inputs 255x.",
        _explode_pixels_255,
        {"exploding_gradient": PIXELS_255_AT},
        {"loss_spike", "nonfinite", "stagnation", "vanishing_gradient"},
        "cnn",
    ),
    _f(
        "explode16_mf_resume_lr_units",
        "Matrix factorisation (Adam 1e-2); resumed at step 150 with the config lr "
        "in units of 1e-3 (10) applied raw: lr 10.",
        _explode_mf_resume_lr_units,
        {"exploding_gradient": LR_UNITS_AT},
        {"loss_spike", "nonfinite"},
        "recommender",
    ),
    _f(
        "explode16_clip_moved_before_backward",
        "Hand-written GRU LM, SGD lr 20 with clip 0.25; from step 200 "
        "clip_grad_norm_ runs before backward (clips nothing).",
        _explode_clip_before_backward,
        {"exploding_gradient": CLIP_BUG_AT},
        {"loss_spike", "nonfinite", "stagnation", "vanishing_gradient"},
        "rnn",
    ),
    _f(
        "vanish16_highway_gate_bias_typo",
        "4 highway layers with gate bias -20 (typo for -2): transform branches and "
        "gates get ~1e-9 x gradients; only the head learns.",
        _vanish_highway_gate,
        {"vanishing_gradient": 0},
        (),
        "highway",
    ),
    _f(
        "vanish16_feature_grad_mult_1e-6",
        "1-D conv sensor net; wav2vec-style feature_grad_mult set to 1e-6: the "
        "conv feature extractor's gradients are 1e-6 x.",
        _vanish_feature_grad_mult,
        {"vanishing_gradient": 0},
        {"stagnation"},
        "conv1d",
    ),
    _f(
        "vanish16_gru_right_padded_last_step_readout",
        "nn.GRU classifier on right-padded batches reading "
        "out[:, -1] (after ~55 pad steps) instead of the last valid step: input-weight gradients ~1e-12.",
        _vanish_gru_padded_readout,
        {"vanishing_gradient": 0},
        {"stagnation"},
        "rnn",
    ),
    _f(
        "nan16_one_pass_variance_stuck_sensor",
        "1-D conv net standardising raw readings with var = E[x^2]-E[x]^2; "
        "stuck-sensor rows from step 200: negative variance, sqrt -> NaN.",
        _nan_one_pass_variance,
        {"nonfinite": STUCK_AT},
        {"loss_spike", "stagnation"},
        "conv1d",
    ),
    _f(
        "nan16_infonce_tau_schedule_unclamped",
        "Contrastive MLP, hand-written InfoNCE exp(sim/tau); tau annealed "
        "linearly without a floor: exp overflows near step 272.",
        _nan_infonce_tau,
        {"nonfinite": TAU_NAN_AT},
        {"loss_spike", "exploding_gradient", "stagnation"},
        "contrastive",
    ),
    _f(
        "nan16_cosine_cold_item_no_tags",
        "Two-tower recommender, hand-written cosine; from step 220 untagged cold "
        "items (empty EmbeddingBag -> zero vector): 0/0.",
        _nan_cosine_cold_item,
        {"nonfinite": COLD_FROM},
        {"loss_spike", "stagnation"},
        "recommender",
    ),
    _f(
        "spike16_dropout_keep_prob_as_p",
        "Transformer classifier (AdamW); from step 200 dropout p=0.9 (a keep-prob read as drop-prob).",
        _spike_dropout_keep_prob,
        {"loss_spike": DROPOUT_AT},
        (),
        "transformer",
    ),
    _f(
        "spike16_label_map_off_by_one",
        "Dense GCN node classification; from step 200 labels shifted by one class.",
        _spike_label_off_by_one,
        {"loss_spike": LABEL_SHIFT_AT},
        (),
        "gnn",
    ),
    _f(
        "overfit16_sensor_debug_subset",
        "1-D conv sensor net trained on a leftover 64-example debug subset (20% noisy labels); val on fresh data.",
        _overfit_sensor_subset,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        "conv1d",
    ),
    _f(
        "overfit16_gru_tiny_subset",
        "Hand-written GRU memorises 128 sequences with 20% noisy labels; val on fresh sequences.",
        _overfit_gru_subset,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        "rnn",
    ),
    _f(
        "stagnant16_encoder_output_detached",
        "Transformer classifier whose encoder output is .detach()ed (linear-probe "
        "leftover): embedding and encoder never get a gradient.",
        _stagnant_detached_encoder,
        {"stagnation": 0},
        (),
        "transformer",
    ),
    _f(
        "stagnant16_gcn_propagation_under_no_grad",
        "Dense GCN; from step 100 both message-passing layers run under torch.no_grad() (feature-cache refactor).",
        _stagnant_gcn_no_grad,
        {"stagnation": NO_GRAD_AT},
        (),
        "gnn",
    ),
    _f(
        "stagnant16_ste_mask_never_true",
        "Quantised highway net; the STE backward mask is (x < -4) & (x > 4), never "
        "true: the three highway layers below the quantiser get exactly zero gradients.",
        _stagnant_ste_mask,
        {"stagnation": 0},
        {"vanishing_gradient"},
        "highway",
    ),
]
