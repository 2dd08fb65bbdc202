"""Set 19 healthy controls (held-out): runs that look suspicious (sign-based Rprop steps, averaged SGD, Adamax on
noisy labels, a metric-learning loss, spectral-norm layers, layer-wise lr decay down to 2e-6, a noisy diffusion
loss, an MSE of ~1e-6, a collator change mid-run, ReZero branches with zero gradient at step 0) but train
correctly."""

# Offline measurements (`_measure.py nineteenth`, seeds 0/1/2; "loss" = 20-step means, first -> last; "ratio" = max
# loss[t] / median(loss[t-20:t]); no NaN/Inf in any loss, gradient, weight or val of any run):
# rprop_fullbatch_tanh_mlp (1024 noiseless rows): MSE 0.062/0.16/0.053 -> 1.9e-4/4e-4/2.5e-4, falling at every
#   20-step mean; val 0.018/0.035/0.019 -> 7.5e-4/1.6e-3/1.1e-3, min on the last check; grads 0.4-1 -> 1e-3 (the
#   updates are sign-based and stay ~1e-3 relative); ratio <= 0.96 (full batch, monotone). (First version: 512 rows
#   with noise 0.05: val min at step 99 then +25% by 299 -- a real overfit; made noiseless and 1024 rows.)
# asgd_relu_mlp (lr 0.1, averaging from step 100, 5% label noise): loss 1.4 -> 0.46/0.46/0.44, val 1.4 ->
#   0.44/0.34/0.43 (min 0.44@299 / 0.34@299 / 0.42@249); ratio 2.1/2.0/2.2 (single noisy-label batches, steps
#   228-282); grads 0.3 -> 0.6-0.7. (First version: ASGD lr 0.05 on a weight-normalised 1-D CNN: loss flat at 1.4 for
#   300 steps in every seed -- a stagnation, not a control; replaced.)
# adamax_lstm_noisy_labels (15% label noise, 2048 rows): loss 1.3 -> 0.64/0.60/0.65, val 1.3 -> 0.71/0.66/0.66 (min
#   0.70@289 / 0.65@279 / 0.66@299); ratio 1.8/1.9/2.2 (late single batches); grads 0.2-0.4 -> 0.9-1.5.
# soft_triplet_fresh_triplets: loss 0.53/0.51/0.55 -> 0.31/0.32/0.32, val 0.50/0.51/0.51 -> 0.29/0.31/0.32 (min on
#   or next to the last check); ratio <= 1.30; grads 1.2 -> 0.3-0.4.
# spectral_norm_conv1d: loss 1.4 -> 0.73/0.79/0.77, val 1.4 -> 0.78/0.75/0.73 (min 0.74@289 / 0.73@259 /
#   0.70@249); ratio <= 1.33; grads 0.2 -> 1.2-1.3 (the learned output scale grows).
# llrd_transformer_tiny_lower_lr: relative updates per step: embeddings ~1e-6, bottom block ~1e-4, top block ~1e-3,
#   head ~1e-2; loss 1.3/1.4/1.4 -> 0.29/0.35/0.27, val -> 0.30/0.38/0.24 (min on the last check); ratio <= 1.69.
# ddpm_noise_prediction: loss 0.91/0.94/0.88 -> 0.68/0.66/0.66, val 0.86/0.96/0.83 -> 0.67/0.70/0.61 (min on the last
#   check); ratio <= 1.37; grads 0.2 -> 0.55-0.67.
# smooth_regression_to_1e-6 (teacher scale 0.02, Adam + cosine to 0): MSE 1.3e-3/3.2e-3/6.4e-4 -> 3.5e-6/8.6e-6/
#   2.3e-6, val 5e-4/8.7e-4/1.4e-4 -> 2.9e-6/8.5e-6/3.5e-6 (min at 399/389/329, flat after); grads 0.03-0.1 ->
#   2e-4-8e-4; ratio <= 2.74 (single batches at ~3e-6). (Scale 0.5 first: MSE only ~7e-4; scaled down.)
# mha_correct_mask_pad_to_longest (Adam 5e-4): loss 1.3 -> 0.080/0.099/0.076, no change at 180, val 1.3 ->
#   0.077/0.12/0.066 (min on or next to the last check); ratio <= 1.68. (Adam 1e-3 first: loss ~0.04 by 220 and single
#   batches jumped x3.7 at 286-291, val 0.03 -> 0.13 on the last check in seed 2; lr halved.)
# rezero_transformer: steps 0-19: every branch parameter's grad 1e-4-2e-3 (exactly 0 at step 0), alpha 0.04-0.13,
#   head 0.43-0.55; last 20: branch grads 0.02-1.1; loss 1.4 -> 0.063/0.076/0.077, val 1.4 -> 0.06/0.088/0.053
#   (min 0.06@299 / 0.076@289 / 0.053@289); ratio 2.2/1.9/2.8 (single batches at loss ~0.07).
# Dropped after measurement (not shipped): a GRU forecaster with nn.GaussianNLLLoss (the NLL below zero): with Adam
#   2e-3 single batches jumped x11-17 (steps 207/223, grads 13-18) once the variance was small; with Adam 1e-3 and
#   clipping at 1.0 the NLL stayed above 0 in two seeds and still jumped x10 near zero. Annealed gradient noise
#   (0.3/(1+t)^0.55): loss 300x jumps and NaN at 275 in seed 2; at 0.003 val min at 109 then 0.17-0.29 (seed 2).
# Wall time (seed 0, one thread, with the recorder): 0.2-4.3 s per run, 16.4 s for the 10 controls.

from __future__ import annotations

import torch
from _common import LSTMClassifier, mlp, teacher_classification, teacher_regression
from _nineteenth_lib import (
    T_DIFF,
    VAL,
    Denoiser,
    TokenTransformer,
    count_tokens,
    mean_val,
    noised,
    ring_points,
    run_loop,
    simple_step,
)
from _nineteenth_more import (
    EmbedNet,
    SNConvNet,
    band_waves,
    identity_triplets,
    sequence_pool,
    soft_triplet_loss,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

ce = F.cross_entropy
mse = F.mse_loss


def _rprop_fullbatch(watch, seed):
    # Rprop (sign-based, per-weight step sizes) on the full batch (512 rows) of a small regression, as Rprop is
    # meant to be used (1024 noiseless rows): the update sizes do not follow the gradient's magnitude.
    full = teacher_regression(dim=8, batch=1024, seed=seed)(0)
    val = teacher_regression(dim=8, batch=1024, seed=seed)(VAL)
    torch.manual_seed(seed)
    model = mlp([8, 64, 64, 1], activation=nn.Tanh)
    opt = torch.optim.Rprop(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, lambda s: full, mse),
        val_loss=lambda step: float(mse(model(val[0]), val[1])),
    )


def _asgd_mlp(watch, seed):
    # ASGD (averaged SGD; averaging from step 100) on a 3-layer ReLU MLP, tabular classification, 5% label noise.
    data = teacher_classification(dim=16, classes=4, batch=64, label_noise=0.05, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.ASGD(model.parameters(), lr=0.1, t0=100)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _adamax_lstm_full_pool(watch, seed):
    # The LSTM of overfit19_lstm_dedup_wrong_key on the whole 2048-row training half (15% label noise), Adamax.
    data = sequence_pool(seed)
    torch.manual_seed(seed)
    model = LSTMClassifier(hidden=64)
    opt = torch.optim.Adamax(model.parameters(), lr=4e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _triplet_fresh(watch, seed):
    # The Siamese embedding net of overfit19_triplet_cached_bank with fresh triplets every batch.
    data = identity_triplets(seed)
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


def _spectral_norm_cnn(watch, seed):
    # 1-D CNN whose convolutions and head are spectral-normalised (torch parametrisation), a learned output scale,
    # Adam: Lipschitz-constrained layers learn slowly but steadily.
    data = band_waves(seed)
    torch.manual_seed(seed)
    model = SNConvNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _llrd_transformer(watch, seed):
    # Layer-wise lr decay (x0.1 per level, from the head down): head/final LN 2e-3, top block 2e-4, bottom block
    # 2e-5, embeddings 2e-6. The lower layers barely move, by design.
    data = count_tokens(seed)
    torch.manual_seed(seed)
    model = TokenTransformer()
    groups = [
        {"params": [*model.head.parameters(), *model.ln.parameters()], "lr": 2e-3},
        {"params": model.blocks[1].parameters(), "lr": 2e-4},
        {"params": model.blocks[0].parameters(), "lr": 2e-5},
        {"params": [model.pos, *model.embed.parameters()], "lr": 2e-6},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _diffusion(watch, seed):
    # The DDPM-style noise-prediction MLP of the spike19/stagnant19 diffusion faults, done right. The loss is
    # noisy (it depends on the batch's timesteps) and falls slowly.
    data = ring_points(seed)
    torch.manual_seed(seed)
    model = Denoiser()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        x0, t, eps = data(step)
        opt.zero_grad(set_to_none=True)
        loss = mse(model(noised(x0, t, eps), t / T_DIFF), eps)
        loss.backward()
        opt.step()
        return loss

    def val(step):
        return (
            sum(float(mse(model(noised(x0, t, e), t / T_DIFF), e)) for x0, t, e in (data(VAL + i) for i in range(4)))
            / 4
        )

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=val)


def _regression_to_1e6(watch, seed):
    # Noiseless smooth regression (SiLU MLP, Adam with cosine decay over 400 steps): the MSE falls to ~1e-6.
    data = teacher_regression(dim=4, batch=128, scale=0.02, seed=seed)
    torch.manual_seed(seed)
    model = mlp([4, 64, 64, 1], activation=nn.SiLU)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=400)
    run_loop(
        watch,
        model,
        opt,
        steps=400,
        train_step=simple_step(model, opt, data, mse, scheduler=sched),
        val_loss=mean_val(model, lambda i: data(VAL + i), mse),
    )


def _mha_pad_to_longest(watch, seed):
    # The transformer of nan19_hf_mask_as_key_padding_mask with the mask the right way round (True = PAD); the
    # collator also switches to padding to the longest sequence at step 180 (shorter batches, no effect).
    data = count_tokens(seed, longest_from=180)
    torch.manual_seed(seed)
    model = TokenTransformer(need_weights=True)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: count_tokens(seed)(VAL + i), ce),
    )


def _rezero(watch, seed):
    # ReZero transformer done right: alpha = 0 at init but the branches keep their default init. At step 0 every
    # branch parameter's gradient is exactly 0 (alpha multiplies it); alpha moves first and the branches follow.
    data = count_tokens(seed)
    torch.manual_seed(seed)
    model = TokenTransformer(rezero=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _h(name, desc, fn, arch=(), opt=""):
    return Scenario(name=name, description=desc, train=fn, tags=frozenset({"set19", "healthy", *arch, opt} - {""}))


SCENARIOS = [
    _h(
        "healthy19_rprop_fullbatch_tanh_mlp",
        "Tanh MLP regression trained full-batch with Rprop.",
        _rprop_fullbatch,
        ("mlp", "tabular"),
        "rprop",
    ),
    _h(
        "healthy19_asgd_relu_mlp",
        "3-layer ReLU MLP, tabular classification, ASGD with averaging from step 100.",
        _asgd_mlp,
        ("mlp", "tabular"),
        "asgd",
    ),
    _h(
        "healthy19_adamax_lstm_noisy_labels",
        "LSTM sequence classifier, 15% label noise, 2048 rows, Adamax.",
        _adamax_lstm_full_pool,
        ("rnn", "lstm"),
        "adamax",
    ),
    _h(
        "healthy19_soft_triplet_fresh_triplets",
        "Siamese MLP, soft-margin triplet loss on fresh triplets, Adam.",
        _triplet_fresh,
        ("mlp", "siamese", "metric_learning"),
        "adam",
    ),
    _h(
        "healthy19_spectral_norm_conv1d",
        "1-D CNN with spectral-norm parametrisations on every layer, Adam.",
        _spectral_norm_cnn,
        ("cnn", "conv1d", "spectral_norm", "audio"),
        "adam",
    ),
    _h(
        "healthy19_llrd_transformer_tiny_lower_lr",
        "Token transformer with layer-wise lr decay x0.1 per level (embeddings at 2e-6), AdamW.",
        _llrd_transformer,
        ("transformer", "attention", "nlp"),
        "adamw",
    ),
    _h(
        "healthy19_ddpm_noise_prediction",
        "DDPM-style noise-prediction MLP on 2-D points, Adam; noisy slowly falling loss.",
        _diffusion,
        ("mlp", "diffusion"),
        "adam",
    ),
    _h(
        "healthy19_smooth_regression_to_1e-6",
        "SiLU MLP on a noiseless smooth target, Adam + cosine; MSE reaches ~1e-6.",
        _regression_to_1e6,
        ("mlp", "regression"),
        "adam",
    ),
    _h(
        "healthy19_mha_correct_mask_pad_to_longest",
        "Transformer classifier with a correct key_padding_mask; the "
        "collator pads to the longest sequence from step 180.",
        _mha_pad_to_longest,
        ("transformer", "attention", "nlp"),
        "adam",
    ),
    _h(
        "healthy19_rezero_transformer",
        "ReZero token transformer (alpha = 0 at init, branches default init): zero "
        "branch gradients at step 0, then normal training.",
        _rezero,
        ("transformer", "attention", "init"),
        "adam",
    ),
]
