"""Set 20 faults (held-out): shipped bugs in a plain CNN resumed by a cluster launcher, an LRU-style linear
recurrence, a deep GELU MLP's init helper, a 1-D CNN reloaded after its optimizer was built, an LSTM behind a logging
callback, a token transformer's warmup, a CNN with a squeeze-excite activation, a Lipschitz-constrained tanh MLP, a
focal loss, a tone classifier fed at the wrong sample rate, a position-sensitive CNN given horizontal flips and a GRU
forecaster behind a windowing bug. Onsets from offline measurement (`_measure.py twentieth`)."""

# Offline measurements (`_measure.py twentieth`: a stand-in watch() recording, after every optimizer step, the loss,
# the val loss, every parameter's grad norm grouped by module, the relative update per module and any NaN/Inf in
# loss, grads or weights; seeds 0/1/2). "loss" = 20-step means; "ratio" = max loss[t] / median(loss[t-20:t]);
# "pre-onset ratio" = the same over steps before the onset. Onset = first optimizer step at which the symptom is
# present. "twin" = the same run without the bug (scratch runs, not shipped).
#
# explode20_cnn_resume_lr_times_world_size: loss 4.6-4.8 -> 0.16-0.23 at 120-139 (MSE), grad total 0.4-1.3 before
#   150; after the x32 lr at 150, grad total at 151/152/153/154: 9.6/270/8.9e6/inf (seed 0), 5.3/180/2.9e3/6.7e12
#   (seed 1), 2.3/55/740/6.5e6 (seed 2); NaN loss, grads and weights from 154-157 to the end in all seeds; pre-onset
#   ratio 1.27/1.17/1.37. Val min 0.17/0.19/0.15 at 149. (First version: a ReLU classifier on quadrant images. The
#   loss was already ~1e-4, and x32 changed nothing. With 20% label noise the ReLUs died (seed 1 at chance) and no
#   gradient grew; replaced by the GELU regression.) Allowed: loss_spike, nonfinite, stagnation (NaN to the end).
# explode20_lru_decay_radius_above_one (finite): loss 38/74/88 in the first 10 steps (the state grows ~lam^80),
#   2.0-3.4 at 25%, 0.53/0.98/0.92 at the end; grad total 1.5e3/3.2e3/2.8e3 (first 10; max 2.9e3-5.7e3 at 0-3), never
#   below 50-92, 110/280/260 in the last 20; per module first 20: lam 900-2.4e3, C/head 220-530, B 50-96. Adam cannot
#   pull lam back under 1 (max lam 1.09 -> 1.07-1.08 by the end). No NaN/Inf; ratio <= 3.4 (single batches late).
#   Twin (radius 0.5-0.95): loss 1.3 -> 0.12-0.14, grads 0.7-1.0 at first, 8-9 at the end. (Radius 0.95-1.05 over 60
#   steps first: grads 16-75 at the start falling to 0.6-4 within ~50 steps, the loss fine: not an explosion; with SGD
#   momentum the run was NaN within 2 steps or after ~170 steps depending on the seed.) Allowed: loss_spike.
# explode20_init_normal_mean_not_std (finite): MSE 3.6e9/6.2e9/8.6e9 (first 20) -> 1.6e8/2.8e8/2.9e8 (last 20), val
#   likewise (1.7e9-5.4e9 -> 1.8e8-3.2e8); grad total 2.1e10/1.6e10/4.4e10 (first 10), 7.6e8-1.1e9 in the last 20,
#   never below 4.9e8; no NaN/Inf; ratio <= 2.16. Twin (default init): MSE 0.3-0.5 -> 0.014-0.044, grads 0.1-0.2.
#   Allowed: loss_spike.
# stagnant20_optimizer_built_before_checkpoint_load: loss 1.4-1.5 at every 20-step mean from 0 to 249 (chance is
#   ln 4 = 1.39), val 1.4-1.5 throughout; the model's weights never change (relative update exactly 0 in every
#   module at every step). opt.zero_grad() only clears the old tensors, so the model's .grad accumulate: grad total
#   0.8-1 at step 0, 4-5 (first 10), 170-200 at 249, growing linearly (exploding_gradient allowed for that reason:
#   the .grad tensors really grow 200x). Ratio <= 1.09. Twin = spike20_sample_rate_doubled_no_resample before 200
#   (same net, data and Adam): loss 1.1 -> 0.1 by step 180.
# stagnant20_zero_grad_in_logging_callback: loss 1.4 -> 0.64/0.65/0.73 (100-119) -> 0.48/0.49/0.55 (140-159) and
#   falling; from 150 every .grad is None at the optimizer step and at mon.step (no update, no momentum tail): loss
#   0.46-0.56 to the end, val exactly constant from 149 (0.44/0.57/0.52). Twin: 0.48-0.54 at 140-159 -> 0.30-0.36 at
#   the end. Pre-onset ratio <= 1.24; ratio <= 1.77.
# stagnant20_warmup_length_in_samples: lr 1e-7 at step 0 -> 2e-5 at 199; loss 1.4/1.4/1.5 -> 1.3/1.4/1.4, val 1.4/
#   1.5/1.5 -> 1.3/1.4/1.4; relative updates 6e-7-2.5e-5 per step (first 20), 1.6e-5-5.8e-4 (last 20); grads 0.4-1.6
#   throughout; ratio <= 1.09. The same TokenTransformer with Adam 5e-4-1e-3 reaches 0.06-0.10 in set 19's controls
#   (healthy19_mha_correct_mask_pad_to_longest, healthy19_rezero_transformer). (300 steps first: 9 s; cut to 200.)
# vanish20_hardsigmoid_from_se_config: grad norm per conv, first 20 steps (medians, conv 1 -> 8 -> head): 2.5e-6/9.3e-7
#   /9.1e-7 -> 0.11/0.1/0.084 -> head 0.91/0.73/0.7, i.e. ~4-5x smaller per layer, 1e-6 of the head at the first conv;
#   last 20: first conv 3.3e-7-8.8e-7, head 0.14-0.16. Loss ln 4 (1.4) at every 20-step mean, val 1.4 throughout.
#   The ReLU twin (same He init, lr 0.01; at 0.05 it went NaN) learns (loss -> 0-0.2), first conv 0.03-0.17.
#   Stagnation allowed (nothing is learnt). (Default init first: the ReLU twin did not learn either; He init since.)
# vanish20_frobenius_norm_as_spectral_norm: loss 1.4 -> 0.2-0.3 (100-139), val min 0.17@99 / 0.17@149 / 0.23@79. At
#   150 the loss jumps to 1.4 (chance; ratio 4.7/6.1/6.1 at 150/153/150, pre-onset ratio 3.1/2.6/2.0) and stays there
#   to the end, val 1.3-1.4. Grad norm by layer, 30 steps before -> after 150 (seed 0): first Linear 0.9 -> 6.7e-4,
#   2nd 0.55 -> 1.5e-3, 3rd 0.42 -> 4.7e-3, 4th 0.4 -> 0.015, 5th 0.38 -> 0.051, 6th 0.34 -> 0.18, head 0.31 -> 0.14
#   (seeds 1/2 alike); last 20: first 6e-4 vs head 0.12. Allowed: loss_spike (the jump), stagnation.
# nan20_focal_gamma_half_on_saturated_probs: CE phase loss 0.17-0.25 (first 20) -> 5e-3/4e-6/2e-6 at 140-149; fraction
#   of the batch with p == 1.0 at step 149: 0.31/0.88/0.95. NaN gradients at 150 in every seed, NaN weights from 150
#   and NaN loss from 151 to the end; val NaN from 159. Pre-onset ratio 48/6077/737 (single batches when the loss is
#   1e-5-1e-8: the blobs are almost separable). Allowed: loss_spike, stagnation, exploding_gradient.
# spike20_sample_rate_doubled_no_resample: loss 1.1 -> 0.091/0.098/0.094 (180-199) -> 3.3/3.4/2.9 at 200 (ratio
#   41/37/31 at 200), 20-step mean 1.3-1.4 at 200-219, relearned to 0.44-0.49 (220-239) and 0.18/0.19/0.18 at the end;
#   grads 0.1-0.4 -> 3.0-3.5 at 200-203 -> 0.3-0.4. Val (same pipeline) min 0.08@189 / 0.099@199 / 0.076@179 -> 1.1-
#   1.4 at 209 -> 0.13-0.18. Pre-onset ratio 2.24/2.40/2.25.
# spike20_hflip_augmentation_on_position_labels: loss 1.1 -> 0.10-0.12 (25%-50%) -> 2.8-4.2 at 200, 4.8-5.2 at 201-
#   202 (ratio 69/42/70 at 202/200/201), 20-step mean 1.8-2.0 at 200-219, then 0.82 to the end (the left/right
#   classes stay confused: never recovers); grads 0.1-0.8 -> 2.5-3.5. Val (unflipped data) 0.15/0.024/0.078 ->
#   0.8-0.9. Pre-onset ratio 5.7/5.1/5.4 (single noisy batches at loss ~0.1). (Images with noise 0.5 first: loss 3e-4
#   before 200, pre-onset ratio up to 37 on 1e-4-level blips; noise raised to 1.2.)
# overfit20_forecaster_window_stride_bug (32 windows, full batch): train MSE 0.56-0.72 -> 0.0026/0.00028/6.3e-6,
#   falling throughout; val min 0.53@29 / 0.58@19 / 0.59@59, then rising to 0.69-0.71 / 1.0-1.1 / 0.9-0.92 and never
#   back. Ratio 5.9/4.1/13 late (full-batch Adam wobbles at a train MSE of 1e-3-1e-5).
# Wall time (seed 0, one thread, with the recorder, one process): 0.2-2.7 s per run, 15.3 s for the 12 faults.

from __future__ import annotations

import io

import torch
from _common import (
    LSTMClassifier,
    bn_cnn,
    mlp,
    quadrant_images,
    sequence_classification,
    teacher_classification,
    teacher_regression,
)
from _nineteenth_lib import TokenTransformer, count_tokens
from _twentieth_lib import (
    DIAG,
    VAL,
    DiagLinearRNN,
    GRUForecast,
    PlainCNN,
    ToneNet,
    act_cnn,
    ar_windows,
    blob_classes,
    fit20,
    focal_from_probs,
    lip_mlp,
    mean_val,
    run_loop,
    set_constraint,
    simple_step,
    tone_clips,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

ce = F.cross_entropy
mse = F.mse_loss

RESUME_AT = 150
ZERO_GRAD_AT = 150
LIPSCHITZ_AT = 150
FOCAL_AT = 150
RATE_AT = 200
HFLIP_AT = 200


# ---------------------------------------------------------------- exploding_gradient
def _explode_world_size(watch, seed):
    # Plain CNN (GELU, no normalisation) regressing the brightness of each quadrant of noisy images (MSE), SGD
    # momentum lr 0.01. Preempted and resumed at step 150 by a cluster launcher that applies the linear scaling rule
    # lr * world_size (32) although the per-step batch did not change.
    data = quadrant_images(noise=1.0, seed=seed)
    torch.manual_seed(seed)
    model = PlainCNN(act=F.gelu)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def brightness(step):
        x, _ = data(step)
        return x, 4 * F.adaptive_avg_pool2d(x, 2).flatten(1)

    def before(step):
        if step == RESUME_AT:
            for g in opt.param_groups:
                g["lr"] = g["lr"] * 32

    fit20(watch, model, opt, 300, brightness, mse, before=before)


def _explode_lru_radius(watch, seed):
    # LRU-style diagonal linear recurrence over 80 steps whose per-channel decays lam are drawn from [0.98, 1.1]
    # and used raw: the exp(-exp(nu)) reparametrisation that keeps |lam| < 1 was dropped. Most channels grow as
    # lam^80 (up to ~2000x); Adam, no clipping.
    data = sequence_classification(length=80, seed=seed)
    torch.manual_seed(seed)
    model = DiagLinearRNN(radius=(0.98, 1.1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit20(watch, model, opt, 250, data, ce)


def _explode_normal_mean(watch, seed):
    # 7-layer GELU regression MLP whose init helper calls nn.init.normal_(w, 0.02): the 0.02 is the *mean*, the
    # std stays 1 (GPT-style std=0.02 was meant). Activations grow ~5x per layer; Adam.
    data = teacher_regression(dim=16, batch=64, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 64, 64, 64, 64, 1], activation=nn.GELU)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.02)
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit20(watch, model, opt, 300, data, mse)


# ---------------------------------------------------------------- stagnation
def _stagnant_reload_after_optimizer(watch, seed):
    # 1-D CNN on tone clips. The script builds Adam over the model's parameters, then "loads the checkpoint" with
    # model = torch.load(path) (a whole pickled module: new Parameter objects). The optimizer steps the old tensors,
    # which never get a gradient; the model that trains keeps its loaded weights.
    data = tone_clips(seed)
    torch.manual_seed(seed)
    model = ToneNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    model = torch.load(buf, weights_only=False)
    fit20(watch, model, opt, 250, data, ce)


def _stagnant_zero_grad_callback(watch, seed):
    # LSTM classifier, Adam 1e-3. From step 150 a refactor runs the grad-norm logging callback (which ends with
    # optimizer.zero_grad() "to free memory") between backward() and optimizer.step(): every .grad is None when the
    # optimizer steps, so nothing moves.
    data = sequence_classification(seed=seed)
    torch.manual_seed(seed)
    model = LSTMClassifier(hidden=48)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    logged = []

    def train_step(step):
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        loss = ce(model(x), y)
        loss.backward()
        if step >= ZERO_GRAD_AT:
            logged.append(sum(float(p.grad.norm()) ** 2 for p in model.parameters()) ** 0.5)
            opt.zero_grad()
        opt.step()
        return loss

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=mean_val(model, lambda i: data(VAL + i), ce))


def _stagnant_warmup_in_samples(watch, seed):
    # Token transformer, AdamW 1e-3 with linear warmup over "5 epochs". The warmup length was computed as
    # epochs * len(dataset) (2048 samples) instead of epochs * len(loader) (64 batches): 10240 steps, so the lr is
    # still 2% of its target at the last step.
    data = count_tokens(seed)
    torch.manual_seed(seed)
    model = TokenTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    warmup = 5 * 2048
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / warmup))
    fit20(watch, model, opt, 200, data, ce, scheduler=sched)


# ---------------------------------------------------------------- vanishing_gradient
def _vanish_hardsigmoid(watch, seed):
    # 8-conv plain CNN whose activation was taken from a MobileNetV3 config entry meant for the squeeze-excite gate:
    # nn.Hardsigmoid (slope 1/6 around 0) after every conv. SGD momentum.
    data = quadrant_images(seed=seed)
    torch.manual_seed(seed)
    model = act_cnn(depth=8, act=nn.Hardsigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit20(watch, model, opt, 300, data, ce)


def _vanish_frobenius(watch, seed):
    # 6-hidden-layer tanh MLP, SGD momentum. At step 150 a Lipschitz constraint is switched on for robustness
    # fine-tuning: W / max(1, torch.linalg.norm(W)) -- which is the Frobenius norm for a matrix, not the spectral
    # norm (matrix_norm(ord=2)): every layer's gain drops ~5x and the signal (and gradient) shrinks layer by layer.
    data = teacher_classification(dim=16, classes=4, batch=64, seed=seed)
    torch.manual_seed(seed)
    model = lip_mlp([16, 64, 64, 64, 64, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def before(step):
        if step == LIPSCHITZ_AT:
            set_constraint(model, True)

    fit20(watch, model, opt, 300, data, ce, before=before)


# ---------------------------------------------------------------- nonfinite
def _nan_focal_gamma(watch, seed):
    # Classifier on well-separated blobs, Adam 1e-2, plain CE until step 150; stage 2 switches to a hand-written
    # focal loss (1 - p)^gamma * -log(p) with gamma = 0.5. For samples the model already classifies with p == 1.0
    # (fp32), d/dp (1 - p)^0.5 = -inf and it is multiplied by log(1) = 0: NaN gradient.
    data = blob_classes(seed)
    torch.manual_seed(seed)
    model = mlp([8, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_at(step):
        def loss(logits, y):
            if step == FOCAL_AT - 1:
                p = torch.softmax(logits.detach(), -1).gather(1, y.view(-1, 1))
                DIAG["p==1 at step 149"] = float((p == 1.0).float().mean())
            return focal_from_probs(logits, y, 0.5) if step >= FOCAL_AT else ce(logits, y)

        return loss

    def train_step(step):
        return simple_step(model, opt, data, loss_at(step))(step)

    run_loop(watch, model, opt, steps=250, train_step=train_step, val_loss=mean_val(model, lambda i: data(VAL + i), ce))


# ---------------------------------------------------------------- loss_spike
def _spike_sample_rate(watch, seed):
    # 1-D CNN (BatchNorm) classifying tones by frequency band, Adam. From step 200 the clips come from a recorder at
    # twice the sample rate and the resampling step is missing: every frequency in cycles/sample halves, the bands
    # move. The model relearns the new bands. Validation through the same (broken) pipeline.
    data = tone_clips(seed, factor_at=lambda step: 0.5 if step >= RATE_AT else 1.0)
    torch.manual_seed(seed)
    model = ToneNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=350,
        train_step=simple_step(model, opt, data, ce),
        val_loss=lambda step: mean_val(
            model, lambda i: tone_clips(seed, factor_at=lambda _: 0.5 if step >= RATE_AT else 1.0)(VAL + i), ce
        )(step),
    )


def _spike_hflip(watch, seed):
    # BatchNorm CNN classifying which quadrant of a (very noisy) image is bright, SGD momentum. From step 200 a
    # "standard" augmentation config adds RandomHorizontalFlip(p=0.5): flipped images have the left/right quadrants
    # swapped but keep their labels (0 <-> 1, 2 <-> 3 confused for half the batch), for good.
    data = quadrant_images(noise=1.2, seed=seed)
    torch.manual_seed(seed)
    model = bn_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def augmented(step):
        x, y = data(step)
        if step >= HFLIP_AT:
            flip = torch.rand(len(y), generator=torch.Generator().manual_seed(seed * 7 + step)) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x, y

    fit20(watch, model, opt, 350, augmented, ce, val_data=data)


# ---------------------------------------------------------------- overfitting
def _overfit_window_stride(watch, seed):
    # GRU forecaster (next 4 values from 24). The windowing helper was called with stride = window * 64 instead of
    # 1: 32 training windows instead of ~2000, each a noisy AR series; full batch, Adam 3e-3. Val: fresh windows.
    data = ar_windows(seed, bank=32)
    torch.manual_seed(seed)
    model = GRUForecast()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit20(watch, model, opt, 300, data, mse)


def _f(name, desc, fn, expect, allow=(), arch=(), opt=""):
    return Scenario(
        name=name,
        description=desc,
        train=fn,
        expect=expect,
        allow=frozenset(allow),
        tags=frozenset({"set20", "fault", *arch, opt} - {""}),
    )


SCENARIOS = [
    _f(
        "explode20_cnn_resume_lr_times_world_size",
        "Plain GELU CNN (no norm) regressing quadrant brightness, SGD momentum lr 0.01; resumed at step 150 by a "
        "launcher that multiplies the lr by the world size (32) although the batch did not change.",
        _explode_world_size,
        {"exploding_gradient": RESUME_AT},
        ("loss_spike", "nonfinite", "stagnation"),
        ("cnn",),
        "sgd_momentum",
    ),
    _f(
        "explode20_lru_decay_radius_above_one",
        "LRU-style diagonal linear recurrence over 60 steps with decays drawn from [0.95, 1.05] and used raw (no "
        "reparametrisation keeping them below 1), Adam, no clipping.",
        _explode_lru_radius,
        {"exploding_gradient": 0},
        ("loss_spike",),
        ("rnn", "ssm"),
        "adam",
    ),
    _f(
        "explode20_init_normal_mean_not_std",
        "7-layer GELU regression MLP initialised with nn.init.normal_(w, 0.02): mean 0.02, std 1 (std 0.02 was "
        "meant); Adam.",
        _explode_normal_mean,
        {"exploding_gradient": 0},
        ("loss_spike",),
        ("mlp", "init"),
        "adam",
    ),
    _f(
        "stagnant20_optimizer_built_before_checkpoint_load",
        "1-D CNN; Adam is built over the model's parameters, then the model is replaced by torch.load of a pickled "
        "module: the optimizer steps tensors that never get a gradient.",
        _stagnant_reload_after_optimizer,
        {"stagnation": 0},
        ("exploding_gradient",),
        ("cnn", "conv1d", "audio"),
        "adam",
    ),
    _f(
        "stagnant20_zero_grad_in_logging_callback",
        "LSTM classifier, Adam; from step 150 a grad-norm logging callback ending in optimizer.zero_grad() runs "
        "between backward() and step(): no parameter is updated.",
        _stagnant_zero_grad_callback,
        {"stagnation": ZERO_GRAD_AT},
        (),
        ("rnn", "lstm"),
        "adam",
    ),
    _f(
        "stagnant20_warmup_length_in_samples",
        "Token transformer, AdamW 1e-3 with a linear warmup whose length was computed in samples (10240 steps) "
        "instead of batches: lr <= 2e-5 for the whole run.",
        _stagnant_warmup_in_samples,
        {"stagnation": 0},
        (),
        ("transformer", "attention", "nlp", "scheduler"),
        "adamw",
    ),
    _f(
        "vanish20_hardsigmoid_from_se_config",
        "8-conv plain CNN with nn.Hardsigmoid (the squeeze-excite gate's activation) after every conv, SGD momentum.",
        _vanish_hardsigmoid,
        {"vanishing_gradient": 0},
        ("stagnation",),
        ("cnn",),
        "sgd_momentum",
    ),
    _f(
        "vanish20_frobenius_norm_as_spectral_norm",
        "6-hidden-layer tanh MLP, SGD momentum; from step 150 a Lipschitz constraint divides each weight by "
        "torch.linalg.norm (Frobenius) instead of its spectral norm.",
        _vanish_frobenius,
        {"vanishing_gradient": LIPSCHITZ_AT},
        ("loss_spike", "stagnation"),
        ("mlp",),
        "sgd_momentum",
    ),
    _f(
        "nan20_focal_gamma_half_on_saturated_probs",
        "Blob classifier, Adam, CE until step 150, then a hand-written focal loss (1 - p)^0.5 * -log p: samples "
        "with p == 1.0 give an infinite derivative times log(1) = 0: NaN gradients.",
        _nan_focal_gamma,
        {"nonfinite": FOCAL_AT},
        ("loss_spike", "stagnation", "exploding_gradient"),
        ("mlp",),
        "adam",
    ),
    _f(
        "spike20_sample_rate_doubled_no_resample",
        "1-D BatchNorm CNN classifying tone bands, Adam; from step 200 clips come at twice the sample rate without "
        "resampling: the bands move, the loss jumps and is relearned.",
        _spike_sample_rate,
        {"loss_spike": RATE_AT},
        (),
        ("cnn", "conv1d", "audio", "data_pipeline"),
        "adam",
    ),
    _f(
        "spike20_hflip_augmentation_on_position_labels",
        "BatchNorm CNN classifying which quadrant is bright, SGD momentum; from step 200 RandomHorizontalFlip is "
        "added, swapping left/right quadrants without changing labels.",
        _spike_hflip,
        {"loss_spike": HFLIP_AT},
        (),
        ("cnn", "augmentation", "data_pipeline"),
        "sgd_momentum",
    ),
    _f(
        "overfit20_forecaster_window_stride_bug",
        "GRU forecaster trained on 32 noisy windows (a windowing stride bug) in full batches, Adam; val on fresh "
        "windows.",
        _overfit_window_stride,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        ("rnn", "gru", "forecasting", "data_pipeline"),
        "adam",
    ),
]
