"""Set 20 healthy controls (held-out): runs that look suspicious (SGDR restarts, a min-max adversarial objective
sitting on a floor, BYOL with a moving EMA target, LoRA adapters whose A gets zero gradient at first, a noise
curriculum that raises the loss twice, bf16 with a warmup from lr 0, a cyclical lr, self-paced sample weights, batches
of 2, Cauchy target noise, 8-way gradient accumulation, an MSE of ~1e-8) but train correctly."""

# Offline measurements (`_measure.py twentieth`, seeds 0/1/2; "loss" = 20-step means, first -> last; "ratio" = max
# loss[t] / median(loss[t-20:t]); no NaN/Inf in any loss, gradient, weight or val of any run):
# gru_sgdr_tmult2: loss 1.3 -> 0.31/0.26/0.32 (lowest 20-step means 0.23-0.24), val 1.3 -> min 0.21@259 / 0.25@229 /
#   0.22@259, then 0.23/0.33/0.42 on the last check (the restart at 280 puts the lr back to 0.05); ratio 2.6/2.3/3.7,
#   all at 288-294 (after that restart); grads 0.3 -> 1-1.6.
# fgsm_adversarial_training: logged loss (half adversarial) 1.3 -> 1.0 by step ~60, then flat at 0.97-1.0 to the end
#   (the adversarial floor); clean val 1.3 -> 0.56/0.58/0.63 (min 0.56@299 / 0.56@149 / 0.61@259, flat from ~100);
#   ratio <= 1.19; grads 0.4 -> 0.7-0.8. (First choice, a DANN with a gradient-reversal layer ramped to 1, then to
#   0.3: the target-domain val rose from 0.86-0.89 to 1.9-2.6 in seed 0 and oscillated in the others -- a real
#   failure, not a control; replaced.)
# byol_ema_target: loss 1.8/1.8/1.5 -> 0.20/0.11/0.11, val 1.4/1.5/1.2 -> 0.20/0.095/0.12 (min on the last check);
#   ratio <= 1.46; grads 3-4 -> 0.2-0.3. No collapse: per-dim std of the normalised embeddings 0.145/0.125/0.131 ->
#   0.163/0.144/0.144, nearest-centroid accuracy of the 8 clusters from encoder features 0.79/0.89/0.84 ->
#   0.95/0.97/0.91.
# lora_adapters_frozen_transformer: loss 1.4/1.3/1.3 -> 0.36/0.58/0.49, val 1.3 -> 0.43/0.64/0.46 (min 0.38@189 /
#   0.62@179 / 0.46@199, still falling); ratio <= 1.38; grads 1.6-2.5 -> 2.3-3.5.
# denoiser_noise_curriculum: MSE 0.16-0.18 -> 0.022 (100-119); sigma 0.35 at 120: 0.044-0.046 (ratio 2.2/2.6/2.2 at
#   120-122) -> 0.040; sigma 0.5 at 240: 0.070-0.074 -> 0.065-0.072. Val (current sigma) 0.021-0.022@119 ->
#   0.040-0.044 -> 0.065-0.078. No other ratio above 2.6.
# bf16_resconv1d_warmup_from_zero: loss 1.5 -> 0.35-0.38 (the label-smoothing floor), val (plain CE) 1.5 -> min
#   0.083@229 / 0.093@279 / 0.082@239, ~0.1 at the end; ratio <= 1.40; grads 6-7 -> 0.1-0.8. (First version: SGD
#   Nesterov 0.05, no smoothing: loss 0.008 -> 1.7-2.7 blow-ups at steps 100-170, ratio 94-1173, in fp32 too; at
#   lr 0.01 still x100-700; AdamW + label smoothing since.)
# lstm2_cyclic_triangular2: loss 1.4 -> 0.26/0.30/0.36, val 1.4 -> min 0.21@209 / 0.25@299 / 0.27@299; ratio
#   2.1/1.7/2.3 (near lr peaks); grads 0.16-0.24 -> 2.6-2.9. (Replaced an LSTM over 150-step sequences, which did not
#   learn in 200 steps: 1.4 -> 1.1-1.3, also with an event-detection task and with mean-pooled outputs.)
# self_paced_sample_weights: weighted loss 1.3 -> 0.16-0.19 (flat from ~step 80: the mislabelled samples stay
#   down-weighted), clean val 1.3 -> 0.14/0.14/0.099 (min 0.098@269 / 0.09@229 / 0.099@289); ratio 2.2/2.2/2.1;
#   grads 0.25-0.3 -> 0.7-0.8. (First version, threshold 1.5 -> 4.5 with 20% noise, then 1 -> 5 with 10%: the
#   model fitted only the samples it already got right and the clean val rose 1.4 -> 4.3-4.7 -- self-paced
#   collapse, not a control; the threshold now starts above the initial loss.)
# batch2_plain_cnn: loss at ln 4 for ~200-260 steps, then 20-step means wandering 0.14-0.78 (40 samples each); val
#   1.4 -> min 0.31@429 / 0.34@399 / 0.32@359, 0.32/0.37/0.33 at the end (one check at 0.45 in seed 1); ratio
#   34/40/97 (single batches of 2); grads up to 14-19 on single steps. (First version, lr 0.01 and noise 0.8: the
#   loss reached 1e-5 and seed 2's val went 0.03 -> 0.78 -> 0.04 around step 150: a real instability.)
# cauchy_noise_l1_regression: batch L1 20-step means between 0.58 and 4.8 with no trend (outliers), ratio 32/19/127;
#   val against noise-free targets 0.58/0.30/0.31 -> 0.16/0.10/0.11 (min 0.15@189 / 0.099@249 / 0.10@199, flat
#   from ~100); grads 0.2-1. (A val on noisy targets was flat: it only measured the outliers.)
# accum8_preln_resmlp_radam: loss 1.5/1.4/1.3 -> 0.35/0.33/0.33, val -> min 0.54@189 / 0.23@249 / 0.38@249; ratio
#   <= 1.77; grads 1.8-2 -> 1.4-1.8.
# fourier_mlp_tiny_loss: MSE 9.7e-5/7.6e-5/6.6e-5 -> 7.9e-9/8.0e-9/6.5e-9, val 4.6e-5/3e-5/2.7e-5 -> 8.4e-9/8.4e-9/
#   6.6e-9 (min on or next to the last check); ratio <= 1.51; grads 0.014-0.016 -> 6e-5-8e-5. (Amplitude 0.02 with
#   ExponentialLR(0.99) first: the MSE stopped at 2-5e-5, an 8% relative error -- a poor fit; output layer scaled
#   x0.01, amplitude 0.01, gamma 0.995 since.)
# Wall time (seed 0, one thread, with the recorder, one process): 0.2-3.8 s per run, 17.9 s for the 12 controls.

from __future__ import annotations

import torch
from _common import LSTMClassifier, mlp, quadrant_images, sequence_classification, teacher_classification
from _nineteenth_lib import TokenTransformer, count_tokens
from _twentieth_lib import DIAG, VAL, PlainCNN, ResConv1d, fit20, mean_val, run_loop, simple_step, tone_clips
from _twentieth_more import (
    FourierMLP,
    GRUClassifier,
    LoRALinear,
    PreLNResMLP,
    byol_mlp,
    cauchy_regression,
    conv_denoiser,
    coordinate_curve,
    permuted_tokens,
    smooth_signals,
    two_views,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

ce = F.cross_entropy
mse = F.mse_loss


def _gru_sgdr(watch, seed):
    # GRU sequence classifier, SGD momentum lr 0.05 with CosineAnnealingWarmRestarts(T_0=40, T_mult=2): the lr
    # jumps from ~0 back to 0.05 at steps 40, 120 and 280.
    data = sequence_classification(seed=seed)
    torch.manual_seed(seed)
    model = GRUClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=40, T_mult=2)
    fit20(watch, model, opt, 300, data, ce, scheduler=sched)


def _fgsm_adversarial(watch, seed):
    # Adversarial training (a min-max objective): each step perturbs the batch by eps * sign(grad_x CE) (FGSM,
    # eps 0.3 on unit-variance inputs) and trains on 0.5 CE(clean) + 0.5 CE(adversarial); MLP, Adam. The logged
    # loss stays well above the clean loss and sits on a floor from ~step 60. Val: clean CE on held-out data.
    data = teacher_classification(dim=16, classes=4, batch=64, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 128, 128, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        x, y = data(step)
        x_req = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(ce(model(x_req), y), x_req)
        x_adv = (x + 0.3 * gx.sign()).detach()
        loss = 0.5 * ce(model(x), y) + 0.5 * ce(model(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=mean_val(model, lambda i: data(VAL + i), ce))


def _byol(watch, seed):
    # BYOL: online encoder + projector + predictor (BN MLPs), target = EMA (0.99) of encoder + projector, loss
    # 2 - 2 cos(pred(online(v1)), target(v2)), symmetrised; AdamW. No negatives, a moving target: collapse is the
    # risk (measured: none). Val: the same loss on held-out views (no update).
    data = two_views(seed)
    torch.manual_seed(seed)
    model = nn.ModuleDict({"enc": byol_mlp(32, 128, 32), "proj": byol_mlp(32, 64, 16), "pred": byol_mlp(16, 64, 16)})
    target = nn.ModuleDict({"enc": byol_mlp(32, 128, 32), "proj": byol_mlp(32, 64, 16)})
    target.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("pred")})
    target.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)

    def byol_loss(v1, v2):
        p = F.normalize(model["pred"](model["proj"](model["enc"](v1))), dim=-1)
        with torch.no_grad():
            z = F.normalize(target["proj"](target["enc"](v2)), dim=-1)
        return (2 - 2 * (p * z).sum(-1)).mean()

    def spread_and_probe():
        # Representation check for the measurement script: per-dim std of the normalised embeddings (collapse -> 0)
        # and nearest-centroid accuracy of the 8 clusters from frozen encoder features.
        model.eval()
        with torch.no_grad():
            v1, _, c = data(VAL + 7)
            h = F.normalize(model["enc"](v1), dim=-1)
            cent = torch.stack([h[c == k].mean(0) for k in range(8)])
            v1b, _, cb = data(VAL + 8)
            hb = F.normalize(model["enc"](v1b), dim=-1)
            acc = float(((hb @ cent.T).argmax(1) == cb).float().mean())
        model.train()
        return round(float(h.std(0).mean()), 3), round(acc, 3)

    DIAG["spread, probe acc at start"] = spread_and_probe()

    def train_step(step):
        v1, v2, _ = data(step)
        loss = byol_loss(v1, v2) + byol_loss(v2, v1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name in ("enc", "proj"):
                for pt, po in zip(target[name].parameters(), model[name].parameters(), strict=True):
                    pt.mul_(0.99).add_(po, alpha=0.01)
        return loss

    def val(step):
        target.eval()
        out = sum(float(byol_loss(v1, v2) + byol_loss(v2, v1)) for v1, v2, _ in (data(VAL + i) for i in range(4))) / 4
        target.train()
        return out

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=val)
    DIAG["spread, probe acc at end"] = spread_and_probe()


def _lora_transformer(watch, seed):
    # A token transformer pretrained (off-monitor, 100 steps) on counting words 1-4 is frozen; rank-4 LoRA adapters
    # (B zero-initialised) on both feed-forward linears of each block and a fresh head learn to count other words
    # (ids permuted), AdamW 3e-3. At step 0 every A gets exactly zero gradient (B = 0).
    pre = count_tokens(seed)
    torch.manual_seed(seed)
    model = TokenTransformer()
    popt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for s in range(100):
        x, y = pre(s)
        popt.zero_grad()
        ce(model(x), y).backward()
        popt.step()
    model.requires_grad_(False)
    for b in model.blocks:
        b.ff[0], b.ff[2] = LoRALinear(b.ff[0]), LoRALinear(b.ff[2])
    model.head = nn.Linear(32, 4)
    data = permuted_tokens(count_tokens(seed + 100), seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    fit20(watch, model, opt, 200, data, ce)


def _noise_curriculum(watch, seed):
    # Conv1d denoiser; curriculum on the noise level: sigma 0.2 until step 120, 0.35 until 240, 0.5 after. The MSE
    # against the clean signal rises at each stage, then falls. Val: the current stage's noise level.
    def sigma(step):
        return 0.2 if step < 120 else 0.35 if step < 240 else 0.5

    data = smooth_signals(seed, sigma_at=sigma)
    torch.manual_seed(seed)
    model = conv_denoiser()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=360,
        train_step=simple_step(model, opt, data, mse),
        val_loss=lambda step: mean_val(
            model, lambda i: smooth_signals(seed, sigma_at=lambda _: sigma(step))(VAL + i), mse
        )(step),
    )


def _bf16_warmup_from_zero(watch, seed):
    # Residual 1-D CNN (GroupNorm) under CPU bf16 autocast, label smoothing 0.1, AdamW 2e-3 with a linear warmup
    # from exactly 0 over 150 steps, then constant.
    data = tone_clips(seed)
    torch.manual_seed(seed)
    model = ResConv1d()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 150))

    def train_step(step):
        x, y = data(step)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = ce(out.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=mean_val(model, lambda i: data(VAL + i), ce))


def _lstm_cyclic(watch, seed):
    # 2-layer LSTM (dropout 0.2 between layers) over 20-step sequences, Adam with a triangular2 CyclicLR
    # (3e-4 .. 6e-3, 50 steps up, 50 down, peak halved each cycle): the loss wobbles with the lr.
    data = sequence_classification(length=20, seed=seed)
    torch.manual_seed(seed)
    model = LSTMClassifier(hidden=48)
    model.lstm = nn.LSTM(4, 48, num_layers=2, dropout=0.2, batch_first=True)
    opt = torch.optim.Adam(model.parameters(), lr=6e-3)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=3e-4, max_lr=6e-3, step_size_up=50, mode="triangular2", cycle_momentum=False
    )
    fit20(watch, model, opt, 300, data, ce, scheduler=sched)


def _self_paced(watch, seed):
    # Self-paced learning on 10% noisy labels: per-sample weights sigmoid(4 (lam - loss_i)) with the threshold lam
    # rising 2.5 -> 6.5 over the run: hard (mostly mislabelled) samples are down-weighted and admitted late; the
    # logged loss is the weighted one. MLP, SGD Nesterov. Val: plain CE on held-out clean labels.
    data = teacher_classification(dim=16, classes=4, batch=64, label_noise=0.1, seed=seed)
    clean = teacher_classification(dim=16, classes=4, batch=64, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def loss_at(step):
        def loss(logits, y):
            per = F.cross_entropy(logits, y, reduction="none")
            w = torch.sigmoid(4 * (2.5 + 4 * step / 300 - per.detach()))
            return (w * per).mean()

        return loss

    def train_step(step):
        return simple_step(model, opt, data, loss_at(step))(step)

    run_loop(
        watch, model, opt, steps=300, train_step=train_step, val_loss=mean_val(model, lambda i: clean(VAL + i), ce)
    )


def _batch2_cnn(watch, seed):
    # Plain CNN trained on batches of 2 very noisy images, SGD momentum 0.003: per-step losses range from ~0 to ~3.
    data = quadrant_images(batch=2, noise=1.5, seed=seed)
    val = quadrant_images(batch=64, noise=1.5, seed=seed)
    torch.manual_seed(seed)
    model = PlainCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    fit20(watch, model, opt, 450, data, ce, val_data=val)


def _cauchy_l1(watch, seed):
    # Regression with Cauchy-distributed target noise (scale 0.2), L1 loss, SiLU MLP, Adam: batch losses are
    # heavy-tailed (a single far outlier moves the mean). Val: L1 against the noise-free targets.
    data = cauchy_regression(seed)
    clean = cauchy_regression(seed, scale=0.0)
    torch.manual_seed(seed)
    model = mlp([8, 64, 64, 1], activation=nn.SiLU)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit20(watch, model, opt, 300, data, F.l1_loss, val_data=clean)


def _accum8_radam(watch, seed):
    # Pre-LN residual MLP, RAdam 2e-3; every optimizer step accumulates 8 micro-batches of 16 (effective batch 128),
    # the logged loss is the mean over them.
    data = teacher_classification(dim=16, classes=4, batch=16, label_noise=0.05, seed=seed)
    torch.manual_seed(seed)
    model = PreLNResMLP()
    opt = torch.optim.RAdam(model.parameters(), lr=2e-3)

    def train_step(step):
        opt.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for k in range(8):
            x, y = data(step * 8 + k)
            micro = ce(model(x), y) / 8
            micro.backward()
            total = total + micro.detach()
        opt.step()
        return total

    run_loop(watch, model, opt, steps=250, train_step=train_step, val_loss=mean_val(model, lambda i: data(VAL + i), ce))


def _tiny_loss_fourier(watch, seed):
    # Fourier-feature MLP (output layer scaled x0.01) fitting a smooth curve of amplitude ~0.01, Adam 3e-3 with
    # ExponentialLR(0.995): the MSE falls from ~1e-4 to ~1e-8.
    data = coordinate_curve(seed, scale=0.01)
    torch.manual_seed(seed)
    model = FourierMLP()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.995)
    fit20(watch, model, opt, 300, data, mse, scheduler=sched)


def _h(name, desc, fn, arch=(), opt=""):
    return Scenario(name=name, description=desc, train=fn, tags=frozenset({"set20", "healthy", *arch, opt} - {""}))


SCENARIOS = [
    _h(
        "healthy20_gru_sgdr_tmult2",
        "GRU sequence classifier, SGD momentum with CosineAnnealingWarmRestarts(T_0=40, T_mult=2): lr restarts at "
        "steps 40, 120 and 280.",
        _gru_sgdr,
        ("rnn", "gru", "scheduler"),
        "sgd_momentum",
    ),
    _h(
        "healthy20_fgsm_adversarial_training",
        "MLP with FGSM adversarial training (min-max; eps 0.3), Adam: the logged loss is half adversarial and sits on "
        "a floor (~1.0) from step ~60.",
        _fgsm_adversarial,
        ("mlp", "adversarial"),
        "adam",
    ),
    _h(
        "healthy20_byol_ema_target",
        "BYOL self-supervised MLP (predictor, EMA target 0.99, BatchNorm), AdamW; no negatives, a moving target.",
        _byol,
        ("mlp", "self_supervised", "ema"),
        "adamw",
    ),
    _h(
        "healthy20_lora_adapters_frozen_transformer",
        "Frozen pretrained token transformer with rank-4 LoRA adapters (B = 0 at init) on its feed-forward layers "
        "and a fresh head, AdamW.",
        _lora_transformer,
        ("transformer", "attention", "nlp", "lora", "frozen"),
        "adamw",
    ),
    _h(
        "healthy20_denoiser_noise_curriculum",
        "Conv1d denoiser with a noise-level curriculum (sigma 0.2 -> 0.35 at step 120 -> 0.5 at 240), Adam: the MSE "
        "rises at each stage, then falls.",
        _noise_curriculum,
        ("cnn", "conv1d", "denoising", "curriculum"),
        "adam",
    ),
    _h(
        "healthy20_bf16_resconv1d_warmup_from_zero",
        "Residual 1-D CNN (GroupNorm) under bf16 autocast, label smoothing, AdamW with a 150-step linear warmup from "
        "lr 0.",
        _bf16_warmup_from_zero,
        ("cnn", "conv1d", "residual", "bf16", "audio"),
        "adamw",
    ),
    _h(
        "healthy20_lstm2_cyclic_triangular2",
        "2-layer LSTM classifier (dropout 0.2), Adam with a triangular2 CyclicLR (3e-4 .. 6e-3, period 100).",
        _lstm_cyclic,
        ("rnn", "lstm", "scheduler"),
        "adam",
    ),
    _h(
        "healthy20_self_paced_sample_weights",
        "MLP on 10% noisy labels with self-paced per-sample weights (threshold rising over training); the logged "
        "loss is the weighted one. SGD Nesterov.",
        _self_paced,
        ("mlp", "sample_weights", "curriculum"),
        "sgd_nesterov",
    ),
    _h(
        "healthy20_batch2_plain_cnn",
        "Plain CNN trained on batches of 2 noisy images, SGD momentum: very noisy per-step loss.",
        _batch2_cnn,
        ("cnn", "small_batch"),
        "sgd_momentum",
    ),
    _h(
        "healthy20_cauchy_noise_l1_regression",
        "SiLU MLP regression with Cauchy target noise, L1 loss, Adam: heavy-tailed batch losses.",
        _cauchy_l1,
        ("mlp", "regression", "heavy_tailed"),
        "adam",
    ),
    _h(
        "healthy20_accum8_preln_resmlp_radam",
        "Pre-LN residual MLP, RAdam, 8 accumulated micro-batches of 16 per optimizer step.",
        _accum8_radam,
        ("mlp", "residual", "grad_accumulation"),
        "radam",
    ),
    _h(
        "healthy20_fourier_mlp_tiny_loss",
        "Fourier-feature MLP fitting a smooth curve of amplitude ~0.01, Adam + ExponentialLR: MSE falls to ~1e-8.",
        _tiny_loss_fourier,
        ("mlp", "regression", "tiny_loss"),
        "adam",
    ),
]
