"""Set 19 faults (held-out): shipped bugs in a ReZero transformer, a tabular MLP re-initialised mid-run, a conv +
BiGRU CTC recogniser, a transformer fed an HF-style attention mask, a DDPM-style denoiser (twice), a GRU temperature
forecaster, an LSTM behind a broken dedup step and a Siamese triplet net. Onsets from offline measurement
(`_measure.py nineteenth`)."""

# Offline measurements (`_measure.py nineteenth`: a stand-in watch() recording, after every optimizer step, the loss,
# the val loss, every parameter's grad norm grouped by module, the relative update per module and any NaN/Inf in
# loss, grads or weights; seeds 0/1/2). "ratio" = max loss[t] / median(loss[t-20:t]); "pre-onset ratio" = the same
# over steps before the onset. Onset = first optimizer step at which the symptom is present. "twin" = the healthy
# control of nineteenth_healthy.py that is the same run without the bug.
#
# stagnant19_rezero_with_zero_init_branches (first written as vanish19_rezero_with_zero_init_branches): every
#   parameter of both blocks (attention in/out projections, both FF linears, both LNs, alpha) has a gradient of
#   exactly 0 at every step from 0 to 299 in all seeds (first 20 and last 20 steps: 0[0,0]); embeddings 0.04-0.06,
#   final LN 0.11-0.14, head 0.3-0.5. Loss 1.4 -> 0.92/0.92/0.97 (the bag-of-embeddings part still learns, slowly),
#   val 1.4 -> 0.95/0.97/0.96; ratio <= 1.19. Twin
#   (healthy19_rezero_transformer): branch grads ~1e-3 in the first 20 steps, 0.02-1 by the end, loss -> 0.06-0.08.
#   Stagnation allowed (slow fall). Relabelled after the first evaluation (written as vanish19_..., expecting
#   vanishing_gradient and allowing stagnation; the service raised stagnation, dead gradients, at step 15 on every
#   seed): layers whose gradient is exactly 0 at every step are dead layers, which issue 3's taxonomy and the suite
#   (stagnant16_ste_mask_never_true) file under stagnation; vanishing_gradient is now the allowed one.
# vanish19_zero_init_helper_applied_to_all_layers (SGD momentum 0.05): loss 20-step means 1.4 -> 0.45/0.45/0.44 at
#   120-139, then 1.4 (ln 4, chance) from 150 to the end in every seed; grad total 0.5-1 -> 0.07-0.2. Steps 150-179:
#   first Linear 4.8e-5/1.6e-4/1.7e-4 (median; exactly 0 at 150), second 2e-4-3.4e-4, third 0.005-0.006, head 0.1;
#   last 20 steps: first Linear 1.5e-4/3.3e-4/4e-4 vs head 0.09-0.13 (it never leaves the saddle). Val min
#   0.45@149 / 0.34@139 / 0.43@139 -> 1.4. The jump to chance at 150 is x2.9-3.3 (ratio 3.2/3.3/2.9 @150/151/150);
#   pre-onset ratio 1.66/2.55/1.85 (noisy batches while learning). Allowed: loss_spike, stagnation.
# nan19_ctc_long_utterances_cropped: loss 5.5 -> 2.3-2.4 at 100-119 (CTC still learning slowly; val 2.8 -> 2.4/2.2/
#   2.2, min @119); inf at 120 in every seed, then NaN loss, grads and weights at every step 121-299 (grads NaN from
#   120: inf loss -> NaN gradient); pre-onset ratio <= 1.07. Allowed: loss_spike, stagnation.
# nan19_hf_mask_as_key_padding_mask: loss 1.3-1.4 -> 0.98-1.0 (160-179), pre-onset ratio 1.13/1.12/1.23; NaN loss,
#   grads and weights at 180 and every later step in all seeds; val (fixed-padding pipeline) min 1.0@169 /
#   0.99@179 / 0.98@179, NaN from 189. Needs need_weights=True: on the SDPA path (need_weights=False) torch 2.13
#   returns 0 for a fully masked query in training (no NaN), while the eval fast path gives NaN: the first version
#   trained fine and only its validation was NaN (and from step 0, since the held-out batches were padded to the
#   longest). Fixed: attention maps requested (as code that logs them does), val on the fixed-padding pipeline.
# spike19_diffusion_raw_timestep: loss (20-step means) 0.91/0.94/0.88 -> 0.71-0.75 at 180-199; 35/110/430 at
#   200, ratio 606@201 / 393@201 / 604@200, 20-step mean 62-110 at 200-219, relearned to 3.8/1.8/3.9 at 240-259 and
#   1.3/0.93/1.4 at the end (above the 0.7 before); val 0.70/0.74/0.64 -> 130/54/110 at 209 -> 1.1/0.95/1.4. Grad
#   total 0.4-1.1 -> 4.8e3-1.8e4 at 200-201 and 130-210 in the last 20 steps (the raw t input, up to 99, stays in
#   the net): exploding_gradient allowed. Pre-onset ratio <= 1.37 (largest in the healthy twin, 1.32-1.37).
# spike19_forecaster_scaler_refit_summer: loss 0.081/0.080/0.081 (180-199) -> 4.3/3.8/3.0 at 200 (ratio 53/50/51
#   @200/200/201), 20-step mean 1.4-1.8 at 200-219, 0.53/0.42/0.46 at the end (the model re-learns the new scale);
#   pre-onset ratio 1.66/1.80/1.52; grads 0.4-1.9 -> 13-16 at 200 -> 2-3 (last 20: gru ~2, head ~0.4). Val (through
#   the same pipeline) 0.08 at 189 -> 1.3 at 209 -> 0.4-0.57.
# overfit19_lstm_dedup_wrong_key (32 rows left): train 1.3 -> 0.00091/0.0012/0.0015 (falling throughout); val min
#   1.2@29 / 1.1@29 / 1.2@39, then rising at almost every check to 3.6/2.7/3.6; ratio <= 2.15 (while memorising).
#   Twin on the whole pool (healthy19_adamax_lstm_noisy_labels): val min at 289/279/299.
# overfit19_triplet_cached_bank (128 triplets, soft-margin): train 0.46 -> 0.13 (last 20, all seeds); val min
#   0.50@39 / 0.49@19 / 0.54@19, then 0.55/0.53/0.57-0.58 from ~100 to the end (+7-10%, never back down); ratio
#   <= 1.03. A mild case. (Tried first: the hinge TripletMarginLoss with margin 0.5: the bank was satisfied by step
#   ~60, loss exactly 0, gradient 0 and val flat at its minimum: no overfitting. Replaced by the soft margin.)
#   Twin (fresh triplets, healthy19_soft_triplet_fresh_triplets): val 0.5 -> 0.29-0.32, min on the last check.
# stagnant19_diffusion_target_noise_redrawn: loss 20-step means 0.96-1.1 from the first to the last step in every
#   seed, val (against the noise actually in x_t) 1.0/1.1/0.95 -> 0.98/1.1/0.96, never lower than 0.95; grads
#   0.13-0.2 -> 0.1; ratio <= 1.38. Twin (healthy19_ddpm_noise_prediction): 0.9 -> 0.66-0.68.
#
# Dropped after measurement (not shipped): explode19 x2 -- an MDN with sigma = exp(raw) on a saturating sensor gave
# bursts (grads 1 -> 10-300 on single steps, loss jumping between -1.5 and +2) but no sustained growth and no NaN in
# 400 steps; a masked-LM divided by mask.mean() (x384) went NaN at step 3-4 (grads 560 -> 8.7e4 -> NaN), and x4/x8
# neither exploded nor learned with SGD. vanish19 Gumbel-softmax with tau annealed per batch: the encoder grads fell
# 10-25x but with bursts up to 0.5 (near ties / tau). stagnant19 remove_weight_norm at export (step 150): the conv
# net only started learning at ~120-140 and the biases + head kept improving after 150 (loss 1.1 -> 0.83).
# Wall time (seed 0, one thread, with the recorder): 0.3-5.0 s per run, 16.6 s for the 9 faults.

from __future__ import annotations

import torch
from _common import LSTMClassifier, mlp, teacher_classification
from _nineteenth_lib import (
    T_DIFF,
    TEMP_MEAN,
    TEMP_STD,
    VAL,
    CTCNet,
    Denoiser,
    GRUForecaster,
    TokenTransformer,
    count_tokens,
    ctc_loss_fn,
    mean_val,
    noised,
    ring_points,
    run_loop,
    simple_step,
    temperature_windows,
    toy_speech,
)
from _nineteenth_more import (
    EmbedNet,
    identity_triplets,
    sequence_pool,
    soft_triplet_loss,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

ce = F.cross_entropy
mse = F.mse_loss

RESET_AT = 150
LONG_UTTERANCES_AT = 120
PAD_TO_LONGEST_AT = 180
RAW_TIMESTEP_AT = 200
SCALER_REFIT_AT = 200


# ---------------------------------------------------------------- vanishing_gradient
def _vanish_rezero_zero_init(watch, seed):
    # Token transformer with ReZero residuals (h + alpha * branch, alpha initialised to 0) *and* the GPT/Fixup habit
    # of zero-initialising each branch's last linear: alpha and the branch see each other's zero, so every
    # attention and feed-forward parameter gets exactly zero gradient forever. Only the embeddings, final LN and
    # head learn (a bag-of-words model).
    data = count_tokens(seed)
    torch.manual_seed(seed)
    model = TokenTransformer(rezero=True, zero_out=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _vanish_init_helper_zeroes_all(watch, seed):
    # GELU MLP on a tabular task, SGD momentum. At step 150 the label set is extended and the head re-initialised
    # with `model.apply(zero_init)`, a helper written for the head (zero weight and bias) but applied to every
    # nn.Linear: all weights are 0, the net sits on the saddle at the origin and every layer below the head gets
    # (near-)zero gradient.
    data = teacher_classification(dim=16, classes=4, batch=64, label_noise=0.05, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 64, 4], activation=nn.GELU)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def zero_init(m):
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def before(step):
        if step == RESET_AT:
            model.apply(zero_init)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, before=before),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


# ---------------------------------------------------------------- nonfinite
def _nan_ctc_long(watch, seed):
    # Conv + BiGRU CTC recogniser (4x downsampling: 16 output frames). From step 120 the curriculum adds long
    # utterances; the collator crops audio to 64 frames but not the transcripts, so some targets are longer than
    # the output: CTC loss = inf (zero_infinity=False), gradients NaN.
    data = toy_speech(seed, long_from=LONG_UTTERANCES_AT)
    clean = toy_speech(seed)
    torch.manual_seed(seed)
    model = CTCNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = ctc_loss_fn()
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, loss_fn),
        val_loss=mean_val(model, lambda i: clean(VAL + i), loss_fn),
    )


def _nan_hf_mask_longest(watch, seed):
    # Transformer classifier on nn.MultiheadAttention, fed the HF-style attention mask (True = keep) as
    # key_padding_mask (True = ignore). While the collator pads every batch to 32 (lengths <= 28) each sequence
    # has some PAD keys to attend to and the run trains. From step 180 the collator pads to the longest sequence:
    # that sequence has every key masked, softmax over all -inf = NaN.
    data = count_tokens(seed, longest_from=PAD_TO_LONGEST_AT)
    fixed = count_tokens(seed)
    torch.manual_seed(seed)
    model = TokenTransformer(mask_convention="hf", need_weights=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: fixed(VAL + i), ce),
    )


# ---------------------------------------------------------------- loss_spike
def _diffusion_step(model, opt, data, t_feature=lambda step, t: t / T_DIFF, redraw_target=False):
    def train_step(step):
        x0, t, eps = data(step)
        xt = noised(x0, t, eps)
        target = torch.randn_like(x0) if redraw_target else eps
        opt.zero_grad(set_to_none=True)
        loss = mse(model(xt, t_feature(step, t)), target)
        loss.backward()
        opt.step()
        return loss

    return train_step


def _spike_diffusion_raw_t(watch, seed):
    # DDPM-style noise-prediction MLP on 2-D points. At step 200 a refactor of the sampler passes the integer
    # timestep t (0..99) instead of t / T to the model. Validation goes through the same code.
    data = ring_points(seed)
    torch.manual_seed(seed)
    model = Denoiser()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def feat(step, t):
        return t.float() if step >= RAW_TIMESTEP_AT else t / T_DIFF

    def val(step):
        out = 0.0
        for i in range(4):
            x0, t, eps = data(VAL + i)
            out += float(mse(model(noised(x0, t, eps), feat(step, t)), eps))
        return out / 4

    run_loop(watch, model, opt, steps=300, train_step=_diffusion_step(model, opt, data, feat), val_loss=val)


def _spike_scaler_refit(watch, seed):
    # GRU temperature forecaster on standardised series. At step 200 the pipeline refits its scaler on a fresh
    # chunk from the summer (mean 29, std 2.5 instead of 20, 4) and standardises inputs and targets with it.
    def scaler(step):
        return (TEMP_MEAN, TEMP_STD) if step < SCALER_REFIT_AT else (29.0, 2.5)

    data = temperature_windows(seed, scaler_at=scaler)
    torch.manual_seed(seed)
    model = GRUForecaster()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, mse),
        val_loss=lambda step: mean_val(
            model, lambda i: temperature_windows(seed, scaler_at=lambda _: scaler(step))(VAL + i), mse
        )(step),
    )


# ---------------------------------------------------------------- overfitting
def _overfit_dedup_wrong_key(watch, seed):
    # LSTM sequence classifier. The dedup step keys on (label, signs of three features of the first frame) instead
    # of the row id: 2048 rows shrink to <= 32. Validation: the held-out half of the pool.
    data = sequence_pool(seed, dedup_wrong_key=True)
    torch.manual_seed(seed)
    model = LSTMClassifier(hidden=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _overfit_triplet_bank(watch, seed):
    # Siamese embedding MLP with the soft-margin triplet loss softplus(d(a, p) - d(a, n)). The triplets are mined once
    # (128 of them) and cached instead of re-sampled each epoch. Validation: fresh triplets of the same identities.
    data = identity_triplets(seed, bank=128)
    torch.manual_seed(seed)
    model = EmbedNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, soft_triplet_loss),
        val_loss=mean_val(model, lambda i: data(VAL + i), soft_triplet_loss),
    )


# ---------------------------------------------------------------- stagnation
def _stagnant_diffusion_redrawn(watch, seed):
    # DDPM-style denoiser whose training step draws the target noise with a second torch.randn_like call instead
    # of reusing the noise that made x_t: the target is independent of the input, the loss cannot leave ~1.
    data = ring_points(seed)
    torch.manual_seed(seed)
    model = Denoiser()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=_diffusion_step(model, opt, data, redraw_target=True),
        val_loss=lambda step: (
            sum(float(mse(model(noised(x0, t, e), t / T_DIFF), e)) for x0, t, e in (data(VAL + i) for i in range(4)))
            / 4
        ),
    )


def _f(name, desc, fn, expect, allow=(), arch=(), opt=""):
    return Scenario(
        name=name,
        description=desc,
        train=fn,
        expect=expect,
        allow=frozenset(allow),
        tags=frozenset({"set19", "fault", *arch, opt} - {""}),
    )


SCENARIOS = [
    _f(
        "stagnant19_rezero_with_zero_init_branches",
        "Token transformer with ReZero (alpha = 0) and zero-initialised branch outputs: every attention and "
        "feed-forward parameter gets exactly zero gradient.",
        _vanish_rezero_zero_init,
        {"stagnation": 0},
        {"vanishing_gradient"},
        ("transformer", "attention", "init"),
        "adam",
    ),
    _f(
        "vanish19_zero_init_helper_applied_to_all_layers",
        "GELU MLP, SGD momentum; at step 150 a head re-init helper (zero weights) is applied with model.apply to "
        "every Linear: the net sits on the zero saddle and the lower layers get no gradient.",
        _vanish_init_helper_zeroes_all,
        {"vanishing_gradient": RESET_AT},
        {"stagnation", "loss_spike"},
        ("mlp", "tabular", "init"),
        "sgd_momentum",
    ),
    _f(
        "nan19_ctc_long_utterances_cropped",
        "Conv + BiGRU CTC recogniser, Adam; from step 120 long utterances are cropped to 64 frames but their "
        "transcripts are not: CTC loss inf, gradients NaN.",
        _nan_ctc_long,
        {"nonfinite": LONG_UTTERANCES_AT},
        {"loss_spike", "stagnation"},
        ("rnn", "gru", "conv1d", "ctc", "speech"),
        "adam",
    ),
    _f(
        "nan19_hf_mask_as_key_padding_mask",
        "Transformer classifier fed an HF-style keep-mask as MultiheadAttention's key_padding_mask; from step 180 "
        "the collator pads to the longest sequence, whose keys are then all masked: NaN.",
        _nan_hf_mask_longest,
        {"nonfinite": PAD_TO_LONGEST_AT},
        {"loss_spike", "stagnation"},
        ("transformer", "attention", "nlp"),
        "adam",
    ),
    _f(
        "spike19_diffusion_raw_timestep",
        "DDPM-style noise-prediction MLP, Adam; from step 200 the model is conditioned on the integer timestep "
        "instead of t / T.",
        _spike_diffusion_raw_t,
        {"loss_spike": RAW_TIMESTEP_AT},
        ("exploding_gradient",),
        ("mlp", "diffusion"),
        "adam",
    ),
    _f(
        "spike19_forecaster_scaler_refit_summer",
        "GRU temperature forecaster, Adam; at step 200 the pipeline's scaler is refit on a summer chunk and "
        "standardises inputs and targets with the wrong statistics.",
        _spike_scaler_refit,
        {"loss_spike": SCALER_REFIT_AT},
        (),
        ("rnn", "gru", "forecasting"),
        "adam",
    ),
    _f(
        "overfit19_lstm_dedup_wrong_key",
        "LSTM sequence classifier, Adam; a dedup step keyed on the wrong columns leaves <= 32 training rows; val on "
        "held-out rows.",
        _overfit_dedup_wrong_key,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        ("rnn", "lstm", "data_pipeline"),
        "adam",
    ),
    _f(
        "overfit19_triplet_cached_bank",
        "Siamese MLP with TripletMarginLoss, Adam; 128 triplets mined once and reused; val on fresh triplets.",
        _overfit_triplet_bank,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        ("mlp", "siamese", "metric_learning"),
        "adam",
    ),
    _f(
        "stagnant19_diffusion_target_noise_redrawn",
        "DDPM-style denoiser whose target noise is drawn again instead of reusing the noise in x_t: the loss "
        "cannot leave ~1.",
        _stagnant_diffusion_redrawn,
        {"stagnation": 0},
        (),
        ("mlp", "diffusion"),
        "adam",
    ),
]
