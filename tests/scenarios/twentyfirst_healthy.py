"""Set 21 healthy controls (held-out): runs that train correctly but look suspicious to a naive monitor -- DP-SGD
noise, a hand-written Muon optimizer, round-robin tasks with loss levels 100x apart, a Gumbel-softmax VAE whose
gradients grow as tau falls, cyclical KL annealing, soft labels with a 97% entropy floor, gradual magnitude pruning,
hard-example mining, rare events, progressive resizing, PPO, and a batch-size ramp."""

# Offline measurements (`_measure.py twentyfirst twentyfirst_healthy.py`, seeds 0/1/2, one thread; "loss" = 20-step
# means first -> last; "ratio" = max loss[t] / median(loss[t-20:t]); "grad" = total gradient norm; val = the held-out
# loss passed every 10 steps). No NaN/Inf in any loss, gradient, weight or val of any run.
# dpsgd_per_sample_clip_noise: loss 1.3 -> 0.30/0.31/0.40 (flat-noisy from ~step 120), val 1.2-1.3 -> min 0.26@299 /
#   0.31@229 / 0.35@129, last 0.26/0.32/0.36; ratio <= 2.0; the .grad the optimizer sees is 0.57-0.63 on EVERY step
#   (the added noise, sqrt(5508 params) / 128) while the median per-sample gradient norm falls 2.1 -> 0.07-0.15.
#   (First version, lr 0.05 constant: val 1.3 -> min 0.64@129 -> 0.76 at the end, loss rising with it -- noise-driven
#   drift, not a control; lr 0.1 with cosine decay since.)
# muon_newton_schulz_resmlp (lr 0.01): loss 1.3 -> 0.33/0.38/0.39, val 1.1-1.2 -> min 0.38@299 / 0.34@299 / 0.40@299
#   (noisy 0.45-0.65 during the constant-lr phase, falling in the cooldown); ratio <= 1.9; grad 1.9 -> 1.3-1.4 (never
#   decays; max 2.7-2.9 at 54-79). (Muon lr 0.02 had val bumps of +0.1 (0.56 -> 0.65); halved.)
# round_robin_two_task_batches: the logged loss alternates step by step between CE (2.1 -> ~0.4-0.5) and MSE (0.035 ->
#   ~0.005), 70-100x apart at the end; 20-step means 0.99 -> 0.23/0.24/0.22; each head has grad None on every other
#   step; ratio 6.1/3.8/5.0 (a CE step over the mixed median); val (CE + MSE) 2.0 -> min 0.48@389 / 0.45@399 /
#   0.53@399: CE 2.06-2.08 -> 0.47/0.44/0.52, MSE 0.029-0.041 -> 0.0047/0.0041/0.0037; grad 0.36-0.42 -> 0.68-0.79
#   (max 1.7-2.2, late, on CE steps). (First version, targets 0.2 sin(2 x.w): the regression head only learned the
#   mean, MSE 0.037 -> 0.02 = the target variance; targets 0.2 tanh(x.w) since.)
# gumbel_softmax_vae_tau_anneal: loss 41-46 -> 18/18/23, val (hard codes) 40-46 -> min 18@299 / 17@289 / 23@279
#   (seed 2 merges some clusters: its val sits at 23-24 from step ~200, still drifting down); ratio <= 1.17; encoder
#   layer grads 0.15-0.38 (first 20 medians) -> 0.09-6.1 medians with single steps up to 8-37 (last 20, tau ~0.1);
#   total max 41@293 / 30@213 / 21@289 vs 7.5-9.9 typical (last-20 median). (4 codes of 8 values first: recon
#   stuck far above the noise floor in 300 steps, with any lr tried; one 16-way code since.)
# vae_cyclical_kl_annealing: loss 440-600 -> 43/46/43; within each 100-step cycle the 20-step means rise while beta
#   ramps (seed 0: 52 53 57 58 58 | 42 48 52 50 48 | 33 39 44 44 43); ratio 1.21; val (beta 1) 440-570 -> min on the
#   last check in every seed (42/46/43), monotone; grad 260-320 -> 77-84.
# soft_targets_entropy_floor: target entropy 2.237/2.231/2.230 (ln 10 = 2.303); loss (first 10 -> last 20 means)
#   2.2905 -> 2.2386, 2.2935 -> 2.2358, 2.2901 -> 2.2298 (-2.3 to -2.6%); val KL part 0.068/0.077/0.078 ->
#   0.0023/0.0043/0.0001, val min on the last check; ratio 1.00; grad 0.054-0.062 -> 0.017-0.021.
# gradual_magnitude_pruning_80pct: loss 1.5 -> 0.47-0.57 (step ~80), rises to 0.58/0.69/0.65 while pruning goes past
#   ~60% (steps 120-220), then 0.41/0.42/0.44 at the end; val 1.4-1.5 -> 0.49-0.56, up to 0.62-0.67 mid-pruning,
#   min on the last check (0.46/0.42/0.46); ratio 1.8/1.5/1.8; final density 0.2 in every layer.
# ohem_top25pct_hard_examples: logged (hardest-25%) loss 2.1 -> 1.2/1.3/1.3, plain val CE 2.0 -> 0.57/0.60/0.65 (min on
#   the last check); ratio <= 1.2; grad RISES 0.65-0.83 -> 2.0-2.1 (max 2.9-3.3).
# rare_event_bce_pos_weight: loss 0.56-0.63 -> 0.16/0.21/0.24 (20-step means wander +-0.05 with the positive count);
#   ratio 7.6/2.9/2.9 (single batches with several positives); val 0.56-0.64 -> min on the last check (0.31/0.20/0.22).
# progressive_resizing_cnn: loss 1.3 -> 0.49-0.53 at 8x8 (steps 60-79), 0.35-0.38 (80-99, first at 16x16), 0.08-0.09
#   (140-159), 0.11-0.13 (160-179, first at 24x24), then 0.074/0.076/0.084; ratio 3.2/3.3/3.0 (single batches); val
#   1.4 -> min 0.049@159 / 0.066@289 / 0.059@299, last 0.052/0.066/0.059; val after each resize: seed 1 0.41@79 ->
#   0.81@89 (BN running stats from 8x8) -> 0.18@99, else down; at 169: 0.049 -> 0.15 / 0.078 -> 0.14 / 0.065 -> 0.11,
#   back under 0.08 by 229; grad 0.73-0.81 -> 0.30-0.34. 2.2-2.5 s alone, 3.6 s with the CPU shared. (First version,
#   frequencies in cycles per pixel and area-downsampling: the 24x24 stage was harder than 16x16, ratio 19 at the
#   switch and val 0.04 -> 0.16 at the end; re-rendered per size since.)
# ppo_gridworld_clipped_surrogate: loss +0.01..+0.08 (20-step means, steps 0-120) -> -0.005..-0.012 after; ratio
#   7.4/5.7/3.8 (sign changes); mean sampled return per 5 rollouts -0.02..-0.04 -> 0.94-0.95; val 1.0-1.1 -> min
#   0.053@299 / 0.055@279 / 0.056@289 (flat 0.054-0.06 from ~200); clip norms 0.06-0.7 (median 0.23-0.24).
# batch_size_ramp_16_to_512: loss 1.6-1.7 -> 0.36/0.39/0.42, val 1.6-1.7 -> min on the last check (0.38/0.38/0.43);
#   ratio <= 1.6; grad 2.4-2.7 -> 0.50-0.52 (last layer 1.9 -> 0.22).
# Replaced before measuring all seeds: a GRU decoder with scheduled sampling (teacher forcing 1 -> 0) on running sums
#   mod 7/10: learned exactly by step ~80 (loss -> 0.002-0.004), so the schedule changed nothing (no stress).
# Wall time (one thread, with the recorder, sharing 2 cores): 0.4-3.5 s per run, 45 s for the 36 runs.

from __future__ import annotations

import torch
from _common import mlp
from _twentyfirst_healthy_lib import (
    DIAG,
    VAE,
    VAL,
    ActorCritic,
    GumbelVAE,
    MuonAdamW,
    ResMLP,
    SharedTrunk,
    discrete_codes,
    dp_grads,
    entropy,
    gap_cnn,
    gen,
    latent_manifold,
    mean_val,
    rare_events,
    rollout,
    run_loop,
    simple_step,
    small_regression,
    soft_ce,
    stripes,
    teacher_mlp_data,
)
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from gradwatch.evaluation.scenario import Scenario

ce = F.cross_entropy


def _val(model, data, loss_fn, n=4):
    return mean_val(model, lambda i: data(VAL + i), loss_fn, n)


def _dpsgd(watch, seed):
    """DP-SGD on an MLP: per-sample gradients (torch.func) clipped to norm 1, Gaussian noise of std 1.0 x the clip
    added to their sum, / batch 128; SGD momentum 0.1 with cosine decay. The .grad the optimizer sees is mostly noise
    (its norm stays ~0.6 from the first step to the last) while the loss falls noisily."""
    data = teacher_mlp_data(seed, classes=4, batch=128)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300, eta_min=0.005)
    meds = []

    def train_step(step):
        x, y = data(step)
        with torch.no_grad():
            loss = ce(model(x), y)
        opt.zero_grad(set_to_none=True)
        meds.append(dp_grads(model, ce, x, y, clip=1.0, noise_mult=1.0, g=gen(seed, step, 11)))
        opt.step()
        sched.step()
        return loss

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=_val(model, data, ce))
    DIAG["median per-sample grad norm first/last 20"] = (round(sum(meds[:20]) / 20, 2), round(sum(meds[-20:]) / 20, 2))


def _muon(watch, seed):
    """Pre-LN residual MLP trained with a hand-written Muon (Newton-Schulz-orthogonalised Nesterov momentum, lr 0.01)
    on the hidden 2-D weights and AdamW 3e-3 on the rest, one optimizer; constant lr, then a linear cooldown to 0 over
    the last 120 steps. Update sizes are set by the lr, not by the gradient, whose norm never decays."""
    data = teacher_mlp_data(seed, classes=8, batch=64)
    torch.manual_seed(seed)
    model = ResMLP()
    hidden = [p for n, p in model.named_parameters() if n.startswith("blocks") and p.dim() == 2]
    other = [p for n, p in model.named_parameters() if not (n.startswith("blocks") and p.dim() == 2)]
    opt = MuonAdamW(hidden, other, lr=0.01, adam_lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (300 - s) / 120))
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, scheduler=sched),
        val_loss=_val(model, data, ce),
    )


def _round_robin(watch, seed):
    """Round-robin multi-task: a shared MLP trunk with a classification head (8 classes, CE ~2 at the start) and a
    regression head (MSE of targets with variance ~0.02); even steps train on a classification batch, odd steps on a
    regression batch, and the logged loss is that step's task loss (alternating levels ~100x apart)."""
    cls, reg = teacher_mlp_data(seed, classes=8, batch=64), small_regression(seed)
    torch.manual_seed(seed)
    model = SharedTrunk()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        task = step % 2
        x, y = (cls, reg)[task](step // 2)
        out = model(x, task)
        loss = ce(out, y) if task == 0 else F.mse_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def parts():
        with torch.no_grad():
            return _val(lambda x: model(x, 0), cls, ce)(0), _val(lambda x: model(x, 1), reg, F.mse_loss)(0)

    start = parts()
    run_loop(watch, model, opt, steps=400, train_step=train_step, val_loss=lambda step: sum(parts()))
    DIAG["val CE, MSE start -> end"] = [round(v, 4) for v in start + parts()]


def _gumbel_vae(watch, seed):
    """Categorical VAE (one 16-way code: a clustering of 16 noisy codebook vectors) trained through the
    Gumbel-softmax relaxation with the temperature annealed exponentially 1 -> 0.1 over the run, as in discrete-VAE
    recipes: the encoder's gradients grow ~1/tau as the relaxation sharpens. Adam. Val: reconstruction with hard
    (argmax) codes + KL, on held-out data."""
    data = discrete_codes(seed, groups=1, values=16)
    torch.manual_seed(seed)
    model = GumbelVAE(groups=1, values=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def train_step(step):
        x, _ = data(step)
        rec, kl = model.terms(x, tau=10 ** (-step / 300), g=gen(seed, step, 12))
        loss = rec + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def val(step):
        return sum(float(sum(model.terms(data(VAL + i)[0]))) for i in range(4)) / 4

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=val)


def _cyclical_vae(watch, seed):
    """MLP VAE with cyclical KL annealing (4 cycles of 100 steps: beta 0 -> 1 over the first 50, then 1): the
    training loss (reconstruction + beta KL) rises in each ramp. Val: the full negative ELBO (beta 1) on held-out
    data with a fixed noise draw."""
    data = latent_manifold(seed)
    torch.manual_seed(seed)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        x, _ = data(step)
        rec, kl = model.terms(x, gen(seed, step, 13))
        loss = rec + min(1.0, (step % 100) / 50) * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def val(step):
        return sum(sum(model.terms(data(VAL + i)[0], gen(seed, VAL + i, 13))) for i in range(4)) / 4

    run_loop(watch, model, opt, steps=400, train_step=train_step, val_loss=val)
    x = data(VAL)[0]
    with torch.no_grad():
        DIAG["val rec, kl at end"] = tuple(round(float(t), 2) for t in model.terms(x, gen(seed, VAL, 13)))


def _soft_targets(watch, seed):
    """Soft-label training: the targets are a teacher's temperature-3 softmax over 10 classes (entropy 2.23-2.24 of
    ln 10 = 2.303 nats), loss = CE(student, soft targets) = H(targets) + KL. The loss can only fall from 2.30 to the
    ~2.24 floor (3%) while its learnable KL part falls from 0.066 to < 0.005. MLP, Adam."""
    data = teacher_mlp_data(seed, classes=10, batch=128, soft_temp=3.0)
    DIAG["target entropy"] = round(entropy(data(VAL)[1]), 3)
    torch.manual_seed(seed)
    model = mlp([16, 128, 128, 10])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step_fn, losses = simple_step(model, opt, data, soft_ce), []

    def train_step(step):
        losses.append(float((out := step_fn(step)).detach()))
        return out

    with torch.no_grad():
        kl0 = _val(model, data, soft_ce)(0) - entropy(data(VAL)[1])
    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=_val(model, data, soft_ce))
    with torch.no_grad():
        DIAG["val KL start, end"] = (round(kl0, 4), round(_val(model, data, soft_ce)(0) - entropy(data(VAL)[1]), 4))
    DIAG["loss first10, last20"] = (round(sum(losses[:10]) / 10, 4), round(sum(losses[-20:]) / 20, 4))


def _gradual_pruning(watch, seed):
    """Gradual magnitude pruning (Zhu & Gupta cubic schedule) of every Linear weight of an MLP to 80% sparsity,
    re-pruned every 20 steps from 40 to 280 (sparsity 0.18 at 60, 0.46 at 100, 0.70 at 160, 0.80 from 260), through
    torch.nn.utils.prune masks set up before training: pruned weights get exactly zero gradient. Adam, 400 steps."""
    data = teacher_mlp_data(seed, classes=8, batch=64)
    torch.manual_seed(seed)
    model = mlp([16, 256, 256, 8])
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for m in linears:
        prune.identity(m, "weight")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def before(step):
        if 40 <= step <= 280 and step % 20 == 0:
            s = 0.8 * (1 - (1 - (step - 40) / 240) ** 3)
            for m in linears:
                w = (m.weight_orig * m.weight_mask).detach().abs().flatten()
                k = int(s * w.numel())
                if k > 0:
                    thr = w.kthvalue(k).values
                    m.weight_mask.copy_((w > thr).float().view_as(m.weight_mask))

    run_loop(
        watch,
        model,
        opt,
        steps=400,
        train_step=simple_step(model, opt, data, ce, before=before),
        val_loss=_val(model, data, ce),
    )
    DIAG["final density per layer"] = [round(float(m.weight_mask.mean()), 3) for m in linears]


def _ohem(watch, seed):
    """Online hard example mining: per-sample CE, only the hardest 25% of each batch of 128 are back-propagated and
    logged, so the logged loss stays high (the batch's hardest samples) while the model improves. Val: plain CE."""
    data = teacher_mlp_data(seed, classes=8, batch=128)
    torch.manual_seed(seed)
    model = mlp([16, 128, 128, 8])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def ohem(logits, y):
        return ce(logits, y, reduction="none").topk(32).values.mean()

    run_loop(
        watch, model, opt, steps=300, train_step=simple_step(model, opt, data, ohem), val_loss=_val(model, data, ce)
    )


def _rare_events(watch, seed):
    """Rare-event detection: ~1% positives (2.6 per batch of 256 on average, Poisson-like), BCE with pos_weight 10,
    MLP, Adam. A batch's loss depends mostly on how many positives it holds: single batches stand up to several times
    above their neighbours. Val: the same loss on 8 held-out batches."""
    data = rare_events(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(mlp([20, 64, 64, 1]), nn.Flatten(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pw = torch.tensor(10.0)

    def loss_fn(out, y):
        return F.binary_cross_entropy_with_logits(out, y, pos_weight=pw)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, loss_fn),
        val_loss=_val(model, data, loss_fn, n=8),
    )


def _progressive_resizing(watch, seed):
    """Progressive resizing: a global-average-pooled BN CNN classifies stripe orientation on images rendered at 8x8
    (steps 0-79), 16x16 (80-159), then full 24x24 (160-299); SGD momentum 0.03 + cosine. The loss level moves at
    each resize. Val: held-out images at the current size."""

    def size_at(step):
        return 8 if step < 80 else 16 if step < 160 else 24

    torch.manual_seed(seed)
    model = gap_cnn(width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    data = stripes(seed, size_at=size_at)

    def val(step):
        return mean_val(model, lambda i: stripes(seed, size_at=lambda _: size_at(step))(VAL + i), ce)(step)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, scheduler=sched),
        val_loss=val,
    )


def _ppo(watch, seed):
    """PPO on a batched 7x7 grid-world (goal drawn per episode, horizon 12): a rollout of 128 episodes every 8
    optimizer steps (4 epochs x 2 minibatches), GAE, clipped surrogate + 0.5 value MSE - 0.01 entropy, grad-norm clip
    0.5, Adam 1e-3. The loss is ~0, changes sign and scale with each rollout. Val: 1 - mean return of the (sampling)
    policy on 256 held-out episodes with fixed goals and sampling noise."""
    torch.manual_seed(seed)
    model = ActorCritic()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    box: dict = {}
    rets = []

    def train_step(step):
        k = step % 8
        if k == 0:
            box["roll"], r = rollout(model, gen(seed, step, 14))
            rets.append(r)
        if k % 2 == 0:
            box["perm"] = torch.randperm(len(box["roll"][0]), generator=gen(seed, step, 15))
        obs, act, logp0, adv, ret = box["roll"]
        idx = box["perm"][k % 2 :: 2]
        logits, v = model(obs[idx])
        a = adv[idx]
        a = (a - a.mean()) / (a.std() + 1e-8)
        logp_all = F.log_softmax(logits, -1)
        ratio = torch.exp(logp_all.gather(1, act[idx].view(-1, 1)).squeeze(1) - logp0[idx])
        surr = -torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a).mean()
        ent = -(logp_all.exp() * logp_all).sum(-1).mean()
        loss = surr + 0.5 * (v - ret[idx]).pow(2).mean() - 0.01 * ent
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        return loss.detach(), norm

    def val(step):
        return 1.0 - rollout(model, gen(seed, VAL, 16), n=256)[1]

    run_loop(watch, model, opt, steps=320, train_step=train_step, val_loss=val)
    DIAG["mean sampled return per 5 rollouts"] = [round(sum(rets[i : i + 5]) / 5, 2) for i in range(0, len(rets), 5)]


def _batch_ramp(watch, seed):
    """Batch-size warmup (as in large LM recipes): batch 16 doubling every 50 steps to 512, AdamW at a constant 2e-3;
    LayerNorm MLP. Gradient norm and loss noise fall ~5x as the batch grows, independently of learning."""
    data = teacher_mlp_data(seed, classes=8, batch=512)
    torch.manual_seed(seed)
    model = mlp([16, 128, 128, 8], norm=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)

    def batch(step):
        x, y = data(step)
        bs = 16 * 2 ** min(5, step // 50)
        return x[:bs], y[:bs]

    run_loop(
        watch, model, opt, steps=300, train_step=simple_step(model, opt, batch, ce), val_loss=_val(model, data, ce)
    )


def _h(name, fn, arch, opt):
    desc = " ".join(fn.__doc__.split())
    return Scenario(f"healthy21_{name}", desc, fn, tags=frozenset({"set21", "healthy", *arch.split(), opt}))


SCENARIOS = [
    _h("dpsgd_per_sample_clip_noise", _dpsgd, "mlp differential_privacy", "sgd_momentum"),
    _h("muon_newton_schulz_resmlp", _muon, "mlp residual custom_optimizer", "muon"),
    _h("round_robin_two_task_batches", _round_robin, "mlp multitask", "adam"),
    _h("gumbel_softmax_vae_tau_anneal", _gumbel_vae, "mlp vae generative discrete_latent", "adam"),
    _h("vae_cyclical_kl_annealing", _cyclical_vae, "mlp vae generative", "adam"),
    _h("soft_targets_entropy_floor", _soft_targets, "mlp soft_labels distillation", "adam"),
    _h("gradual_magnitude_pruning_80pct", _gradual_pruning, "mlp pruning sparsity", "adam"),
    _h("ohem_top25pct_hard_examples", _ohem, "mlp hard_mining", "adam"),
    _h("rare_event_bce_pos_weight", _rare_events, "mlp imbalanced binary", "adam"),
    _h("progressive_resizing_cnn", _progressive_resizing, "cnn batchnorm curriculum", "sgd_momentum"),
    _h("ppo_gridworld_clipped_surrogate", _ppo, "mlp rl policy_gradient", "adam"),
    _h("batch_size_ramp_16_to_512", _batch_ramp, "mlp large_batch curriculum", "adamw"),
]
