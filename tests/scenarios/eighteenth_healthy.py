"""Set 18 healthy controls (held-out): runs that look suspicious (a policy-gradient surrogate loss around zero, warm
restarts, experts that get no tokens, fp16 GradScaler skipping steps, noisy micro-batch losses, a tiny fine-tuning
lr, a loss in int16 units, a very deep residual net with tiny residual-branch gradients, a long plateau that breaks,
a learned temperature at its clamp, sparse embedding gradients, quantisation switched on mid-run) but train
correctly."""

# Offline measurements (`_measure.py eighteenth`, seeds 0/1/2; "loss" = 20-step means, first -> last; "ratio" = max
# loss[t] / median(loss[t-20:t]); no NaN/Inf in any loss, val or weight of any run; the only nonfinite gradients are
# the fp16 run's skipped steps):
# reinforce_contextual_bandit: surrogate loss -0.07/-0.05/-0.04 -> -0.2 (steps 60-79) -> -0.10/-0.10/-0.09 (it rises
#   as the entropy bonus shrinks; negative throughout, so no ratio); val (greedy regret on 2048 held-out contexts)
#   0.19/0.18/0.26 -> 0.0039/0.0067/0.0046, min 0.0029@269/0.0064@289/0.004@269; grads 0.26-0.29 -> 0.16-0.19.
#   (lr 5e-3 with 256 val contexts: regret reached ~0.003 by step 140 then wandered 0.004-0.01; made steadier.)
# vit_cosine_warm_restarts: loss 1.8/1.7/1.7 -> 0.28/0.21/0.18 with bumps after the restarts at 60 and 180; val
#   1.7 -> 0.16/0.24/0.11 (min 0.16@299 / 0.22@269 / 0.11@299); ratio <= 2.7; grads 3 -> 3-4, max 10-12 mid-run.
# moe_top1_load_balancing (6 experts, 10% label noise): loss 1.3 -> 0.92/0.92/0.82, val 1.3 -> 0.92/0.93/0.80 (min
#   at 279/269/289); experts 0 and 3 got no gradient (None) on 2 and 8 of the first 20 steps (seed 0); router
#   grads 0.003-0.005 vs head 0.4; ratio <= 1.37.
# fp16_gradscaler_skipped_steps: 7/7/8 steps with Inf gradients (GradScaler skipped them; first at 91,119 / 81,107 /
#   82,109, then about every 25-30 steps); weights always finite; loss 1.3 -> 0.57/0.53/0.51, val 1.3 ->
#   0.57/0.61/0.53 (min 0.56@269 / 0.57@299 / 0.50@299); ratio <= 1.62.
# accum16_microbatch_logged_loss: logged (4-row) loss 1.2 -> 0.63/0.77/0.73, 20-step means jumping 0.6-1.0; ratio
#   3.0/3.6/3.8 on single micro-batches; val (64-row batches) 1.2 -> 0.76/0.81/0.78 (min at 289/299/239).
# tied_lm_finetune_small_lr (pretrained 100 steps off-monitor, Adam 1e-5): loss 0.85/0.87/0.90 -> 0.68/0.67/0.68,
#   falling ~0.01 per 20 steps; val 0.85/0.89/0.88 -> 0.68/0.71/0.69, lower at every check but one, min on the
#   last check; ratio <= 1.19. (lr 5e-5 converged by step ~200 to the 0.6 entropy floor; lowered.)
# unet_int16_pcm_units: MSE 1.6e7 -> 2.0e6/2.0e6/1.9e6 (most of it by step 60), val 1.6e7 -> 1.9e6/2.1e6/1.7e6 (min at
#   289 in all seeds); grads 1.5e6-2.6e6 early, 9e6-1.1e7 at the end, single-step maxima 8.6e7-9.1e7 (steps
#   31-82) while the loss falls; ratio <= 1.46.
# residual_mlp_24_blocks: steps 0-19 grads: first Linear of every branch 0.0033-0.0036, head 0.62, input layer 0.36;
#   last 20: branch first Linears 0.013-0.032, head 0.49 (all layers learn: relative updates 1e-3-1e-2); loss 1.2/
#   1.1/1.1 -> 0.63/0.54/0.54, val 1.1 -> 0.67/0.56/0.54 (min 0.65@239 / 0.55@229 / 0.53@239); ratio <= 1.56.
# copy_task_plateau_then_drop (Adam 5e-4, 400 steps): loss 2.5 -> 2.2 over the first 100 steps (ln 10 = 2.3), then
#   2.0/2.1/2.0 at 100-119 -> 0.38/0.67/0.31 at 180-199 -> 0.038/0.043/0.036; val 2.5 -> 0.036/0.041/0.034, min on
#   the last check; grads 0.6 -> 0.08; ratio <= 1.01.
# clip_logit_scale_at_clamp: the logit_scale parameter's gradient is exactly 0 at every step (exp = 111 > clamp
#   100); loss 3.5/3.1/3.6 -> 1.5/1.7/1.7, val 3.0/2.9/2.9 -> 1.6/1.8/1.6 (min at 299/269/289); grads 9-12 early
#   (max 24-48 at step 0), 3.6-3.9 at the end; ratio <= 1.55.
# sparse_embedding_mf_adagrad: MSE 1.1 -> 0.19/0.17/0.15, val 1.1 -> 0.17/0.17/0.14 (min on the last check, all
#   seeds); sparse embedding grads 0.05-0.14 (norm of the coalesced values); ratio <= 1.3.
# qat_int4_ste_midrun: loss 1.8 -> 0.88/0.96/0.93 (100-119) -> 0.23/0.19/0.26, no jump at 150 (ratio <= 2.4, late
#   single batches); val 1.8 -> 0.22/0.18/0.21 (min at 289/299/289); grads 0.4 -> 2.1-2.6 (layers.0 0.25 -> 1.8).
# Wall time per run 0.3-3.1 s on one thread without the recorder (the recorder adds ~30-60%).

from __future__ import annotations

import torch
from _eighteenth_lib import (
    QATMLP,
    VAL,
    CausalLM,
    MoEClassifier,
    ResidualMLP,
    SparseMF,
    TiedGRULM,
    TinyViT,
    UNet1d,
    ViewEncoder,
    bandit,
    bigram_text,
    copy_loss,
    copy_task,
    denoise_data,
    gen,
    glyphs,
    info_nce,
    mean_val,
    ratings,
    regime_tabular,
    run_loop,
    seq_ce,
    simple_step,
    two_views,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

ce = F.cross_entropy
mse = F.mse_loss


def _reinforce_bandit(watch, seed):
    # REINFORCE on a contextual bandit (5 arms, Bernoulli rewards), batch-mean baseline and an entropy bonus. The
    # loss handed to the monitor is the surrogate -(advantage * log pi) - 0.01 * entropy: it hovers around zero and
    # changes sign. Validation: the greedy policy's expected regret on held-out contexts.
    context, reward, best = bandit(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 5))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def train_step(step):
        x = context(step)
        logits = model(x)
        logp_all = torch.log_softmax(logits, -1)
        a = torch.multinomial(logp_all.exp().detach(), 1, generator=gen(seed, step, 21)).squeeze(1)
        r, _ = reward(step, x, a)
        adv = r - r.mean()
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        loss = -(adv * logp_all[torch.arange(len(x)), a]).mean() - 0.01 * entropy
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def regret(step):
        total = 0.0
        for i in range(4):
            x = context(VAL + i, batch=512)
            a = model(x).argmax(-1)
            _, p = reward(VAL + i, x, a)
            total += float((best(x) - p).mean())
        return total / 4

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=regret)


def _vit_warm_restarts(watch, seed):
    # ViT on noisy glyphs, AdamW with CosineAnnealingWarmRestarts(T_0=60, T_mult=2): the lr jumps back to its peak
    # at steps 60 and 180.
    data = glyphs(seed, noise=1.0)
    torch.manual_seed(seed)
    model = TinyViT()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=60, T_mult=2)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, scheduler=sched),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _moe_aux(watch, seed):
    # Top-1 mixture of experts with a Switch load-balancing loss (0.01). An expert that gets no token in a batch has
    # no gradient on that step. 10% label noise.
    data = regime_tabular(seed, label_noise=0.1)
    torch.manual_seed(seed)
    model = MoEClassifier(experts=6)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_fn(out, y):
        return ce(out, y) + 0.01 * model.aux

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, loss_fn),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _fp16_scaler(watch, seed):
    # Mixed precision (fp16 autocast) with a GradScaler whose scale grows every 25 steps: the fp16 activation
    # gradients overflow and the scaler skips the step and halves the scale, again and again (as on a GPU).
    data = regime_tabular(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(12, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**SCALE_EXP, growth_interval=25)

    def train_step(step):
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        loss = ce(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _accum_micro(watch, seed):
    # Gradient accumulation over 16 micro-batches of 4 rows (correctly divided by 16). The loop logs the last
    # micro-batch's loss (loss.item() * 16), as many loops do: a 4-row loss, very noisy.
    data = regime_tabular(seed, batch=4, label_noise=0.1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def train_step(step):
        opt.zero_grad(set_to_none=True)
        for k in range(16):
            x, y = data(step * 16 + k)
            loss = ce(model(x), y) / 16
            loss.backward()
        opt.step()
        return loss.detach() * 16

    val_data = regime_tabular(seed, batch=64, label_noise=0.1)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=mean_val(model, lambda i: val_data(VAL + i), ce),
    )


def _tied_lm_finetune(watch, seed):
    # A weight-tied GRU LM pretrained (before monitoring) on one text source, then fine-tuned with a small lr (5e-5)
    # on a sharper source with the same vocabulary: the loss falls slowly but steadily.
    pre = bigram_text(seed, length=24)
    fine = bigram_text(seed, length=24, temp=0.4)
    torch.manual_seed(seed)
    model = TiedGRULM(d=64)
    popt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for s in range(PRETRAIN_STEPS):
        x, y = pre(s)
        popt.zero_grad(set_to_none=True)
        seq_ce(model(x), y).backward()
        popt.step()
    opt = torch.optim.Adam(model.parameters(), lr=FINETUNE_LR)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, lambda s: fine(10_000 + s), seq_ce),
        val_loss=mean_val(model, lambda i: fine(VAL + i), seq_ce),
    )


def _unet_int16(watch, seed):
    # Denoiser on audio kept in int16 PCM units (amplitude ~8e3): MSE ~1e7, gradients huge; Adam does not mind.
    data = denoise_data(seed, scale=8192.0)
    torch.manual_seed(seed)
    model = UNet1d()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: data(VAL + i), mse),
    )


def _deep_residual(watch, seed):
    # 24 pre-LN residual blocks, the last layer of each branch initialised at 0.02 / sqrt(24) (GPT-2 style): the
    # first layer of every branch starts with a gradient ~100x smaller than the head's, yet all layers learn.
    data = regime_tabular(seed)
    torch.manual_seed(seed)
    model = ResidualMLP(depth=24)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=250,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _copy_plateau(watch, seed):
    # A 2-layer causal transformer learning to copy 6 tokens after a separator: a long plateau at ~ln(10) until the
    # lookup forms, then a sudden drop.
    data = copy_task(seed)
    torch.manual_seed(seed)
    model = CausalLM()
    opt = torch.optim.Adam(model.parameters(), lr=COPY_LR)
    loss_fn = copy_loss()
    run_loop(
        watch,
        model,
        opt,
        steps=COPY_STEPS,
        train_step=simple_step(model, opt, data, loss_fn),
        val_loss=mean_val(model, lambda i: data(VAL + i), loss_fn),
    )


def _clip_clamped(watch, seed):
    # Contrastive encoder with a CLIP-style learned logit scale (log 1/T) clamped at 100 as CLIP does, resumed from
    # a checkpoint where the scale had run past the clamp (111): the logit-scale parameter gets exactly zero
    # gradient at every step, the encoder trains normally.
    data = two_views(seed)
    torch.manual_seed(seed)
    model = ViewEncoder(learn_temp="log", init_temp=0.009)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_of(x):
        return info_nce(model(x[0]), model(x[1]), model.logit_scale.exp().clamp(max=100.0))

    def train_step(step):
        x, _ = data(step)
        opt.zero_grad(set_to_none=True)
        loss = loss_of(x)
        loss.backward()
        opt.step()
        return loss

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=lambda step: sum(float(loss_of(data(VAL + i)[0])) for i in range(4)) / 4,
    )


def _sparse_mf(watch, seed):
    # Matrix factorisation with sparse embedding gradients (nn.Embedding(sparse=True)) and Adagrad: each step
    # touches ~256 of 400 users and 300 items.
    data = ratings(seed)
    torch.manual_seed(seed)
    model = SparseMF()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: data(VAL + i), mse),
    )


def _qat_ste(watch, seed):
    # The QAT switch done right: int4 fake-quantisation with the straight-through estimator from step 150. The loss
    # bumps a little and keeps falling.
    data = glyphs(seed, noise=1.0)
    torch.manual_seed(seed)
    model = QATMLP(ste=True, bits=4)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def before(step):
        if step == 150:
            model.enable_quant()

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, before=before),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


SCALE_EXP = 16
PRETRAIN_STEPS = 100
FINETUNE_LR = 1e-5
COPY_LR = 5e-4
COPY_STEPS = 400


def _h(name, desc, fn, arch=(), opt=""):
    return Scenario(name=name, description=desc, train=fn, tags=frozenset({"set18", "healthy", *arch, opt} - {""}))


SCENARIOS = [
    _h(
        "healthy18_reinforce_contextual_bandit",
        "REINFORCE with a batch-mean baseline and entropy bonus on a 5-arm contextual bandit; the logged loss is "
        "the surrogate (around zero, changing sign); val = greedy regret.",
        _reinforce_bandit,
        ("rl", "policy_gradient", "mlp"),
        "adam",
    ),
    _h(
        "healthy18_vit_cosine_warm_restarts",
        "ViT on noisy glyphs, AdamW with CosineAnnealingWarmRestarts (restarts at 60 and 180).",
        _vit_warm_restarts,
        ("vit", "transformer", "images", "scheduler"),
        "adamw",
    ),
    _h(
        "healthy18_moe_top1_load_balancing",
        "Top-1 mixture of 6 experts with a load-balancing loss; idle experts get no gradient on some steps.",
        _moe_aux,
        ("moe", "mlp", "tabular"),
        "adam",
    ),
    _h(
        "healthy18_fp16_gradscaler_skipped_steps",
        "fp16 autocast MLP with a GradScaler (growth every 25 steps) that keeps overflowing, skipping steps.",
        _fp16_scaler,
        ("mlp", "amp", "fp16"),
        "adam",
    ),
    _h(
        "healthy18_accum16_microbatch_logged_loss",
        "16-way gradient accumulation of 4-row micro-batches, correct; the logged loss is the last micro-batch's.",
        _accum_micro,
        ("mlp", "tabular", "accumulation"),
        "adamw",
    ),
    _h(
        "healthy18_tied_lm_finetune_small_lr",
        "Weight-tied GRU LM pretrained off-monitor, then fine-tuned with Adam lr 5e-5 on a sharper text source.",
        _tied_lm_finetune,
        ("rnn", "gru", "lm", "weight_tying", "finetune"),
        "adam",
    ),
    _h(
        "healthy18_unet_int16_pcm_units",
        "1-D U-Net denoiser on signals in int16 PCM units: MSE ~1e7, gradients ~1e4+, Adam.",
        _unet_int16,
        ("unet", "conv1d", "denoising"),
        "adam",
    ),
    _h(
        "healthy18_residual_mlp_24_blocks",
        "24-block pre-LN residual MLP (50 linear layers deep) with GPT-2-style scaled init: tiny branch "
        "gradients at first, all layers learn.",
        _deep_residual,
        ("mlp", "residual", "deep", "layernorm"),
        "adamw",
    ),
    _h(
        "healthy18_copy_task_plateau_then_drop",
        "2-layer causal transformer on a copy task: long plateau near ln(10), then a sudden drop.",
        _copy_plateau,
        ("transformer", "lm"),
        "adam",
    ),
    _h(
        "healthy18_clip_logit_scale_at_clamp",
        "Contrastive encoder (InfoNCE) whose learned CLIP logit scale sits past its clamp at 100: that parameter's "
        "gradient is exactly zero at every step.",
        _clip_clamped,
        ("mlp", "contrastive", "quick"),  # quick: guards the depth profile against a one-element layer
        "adam",
    ),
    _h(
        "healthy18_sparse_embedding_mf_adagrad",
        "Matrix factorisation with sparse embedding gradients and Adagrad.",
        _sparse_mf,
        ("embedding", "sparse", "recsys"),
        "adagrad",
    ),
    _h(
        "healthy18_qat_int4_ste_midrun",
        "MLP on glyphs; int4 fake-quantisation with a straight-through estimator switched on at step 150.",
        _qat_ste,
        ("mlp", "qat", "images"),
        "adam",
    ),
]
