"""Eleventh held-out set, pathologies: each run has one labelled symptom at a known onset.

Every onset below was measured offline without gradwatch, by training the scenario with the
plain recorder in _eleventh_lib.Recorder (per-parameter gradient norms, loss, held-out loss,
whether the weights are finite, after every optimizer step) for seeds 0, 1 and 2; the script
that does it is _measure_faults.py in this folder (its output: measure_faults.txt). "Median" below always means the median of the
named earlier window of steps of the same run.
"""

from __future__ import annotations

import torch
from _common import fit, mlp, teacher_classification, teacher_regression
from _eleventh_lib import gen
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

BLOWS_UP = frozenset({"loss_spike", "nonfinite"})


# --- exploding: gradient accumulation switched on at step 100: lr scaled up, micro-losses not divided ----
# From step ACCUM_FROM the config asks for 8 micro-batches per optimizer step ("effective batch 256"):
# the script applies the linear-scaling rule (lr x 8) but calls loss.backward() on each micro-batch
# without the / accum, so the summed gradient is also 8x the mean one: the update is 64x the
# batch-32 one. The logged loss is the mean of the micro-losses (what the user prints).
# Measured (seeds 0/1/2): total grad norm at step 100 is 4-7x the steps-50..99 median (8 summed
# micro-gradients), 30-3000x by step 104-105, 1e7-1e12x by step 110; inf grads at 111-113, NaN loss 115-120.
# (The same bug with a ReLU net also blows up; with lr not rescaled it stays trainable.)
ACCUM_FROM = 100


def _accum_not_divided(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1], activation=nn.Tanh)
    base_lr = 0.02
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9)
    data = teacher_regression(seed=seed, noise=0.05)
    mon = watch(model, opt)
    micro = 0
    for step in range(220):
        accum = 8 if step >= ACCUM_FROM else 1
        for group in opt.param_groups:
            group["lr"] = base_lr * accum  # linear scaling rule for the effective batch
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accum):
            x, y = data(micro)
            micro += 1
            loss = F.mse_loss(model(x), y)
            loss.backward()  # missing: (loss / accum).backward()
            total += float(loss.detach())
        opt.step()
        mon.step(torch.tensor(total / accum))


# --- exploding: a 5-epoch warmup stepped every batch: the full large-batch lr arrives at step 5 -------
# Batch 256 with the linear-scaling rule (lr 0.5 = 8 x the batch-32 lr), made safe by
# LinearLR(start_factor=0.02, total_iters=5) -- five *epochs* of warmup (200 steps) -- but the
# scheduler is stepped after every batch, so the lr reaches 0.5 at step 5.
# Measured (seeds 0-4): first step whose total grad norm exceeds 3x the median of all earlier steps:
# 5/6/6/5/6; grad norm ~30-200x by step 8, 1e4-1e6x by step 11; loss inf / NaN at steps 25-29.
# With the scheduler stepped per epoch (total_iters 200 in steps) the same run trains stably.
WARMUP_DONE = 5


def _warmup_per_batch(watch, seed: int, warmup_steps: int = WARMUP_DONE) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1], activation=nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.02, total_iters=warmup_steps)
    fit(
        watch,
        model,
        opt,
        steps=200,
        batch_at=teacher_regression(seed=seed, noise=0.05, batch=256),
        loss_fn=F.mse_loss,
        scheduler=sched,
    )


# --- vanishing: Keras-style BatchNorm momentum passed positionally: nn.BatchNorm1d(w, 0.99) = eps 0.99 ---
# The second positional argument of BatchNorm1d is eps, not momentum. With eps ~ 1 each BN layer
# divides by sqrt(var + 0.99) instead of sqrt(var): the activations (and the gradients flowing back)
# shrink layer after layer through the 10 hidden layers and the output is a constant.
# Measured (seeds 0/1/2): median hidden-layer weight-gradient norm ~1e-5 at steps 0, 100 and 249
# (0.4-0.5 at step 0 and 0.12-0.15 at step 249 with the default eps); the loss stays at ln 5 = 1.61
# (default eps: 0.35-0.40 by the end). Onset 0.
class DeepBN(nn.Module):
    def __init__(self, widths, bn_args):
        super().__init__()
        layers = []
        for i in range(len(widths) - 2):
            layers += [nn.Linear(widths[i], widths[i + 1]), nn.BatchNorm1d(widths[i + 1], *bn_args), nn.ReLU()]
        layers.append(nn.Linear(widths[-2], widths[-1]))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _bn_eps_positional(watch, seed: int, bn_args=(0.99,)) -> None:
    torch.manual_seed(seed)
    model = DeepBN([32] + [64] * 10 + [5], bn_args)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=teacher_classification(dim=32, classes=5, batch=64, seed=seed),
        loss_fn=F.cross_entropy,
    )


# --- vanishing: phase 2 switches AdamW -> SGD and reuses AdamW's weight_decay=0.1 -----------------
# AdamW's weight_decay is decoupled (w -= lr * wd * w, lr 1e-3: 1e-4 per step). Phase 2 (fine-tuning
# with SGD momentum, lr 0.1) passes the same weight_decay=0.1 to torch.optim.SGD, where it is an L2
# term: each step shrinks every weight by lr * wd = 1%, x10 through momentum. The 6-hidden-layer
# ReLU net's weights decay towards 0 and, as they are multiplied together, the gradients of every
# layer collapse (1e-12 by step 200) while the loss climbs back to ln 4.
# Measured (seeds 0/1/2): the first layer's weight-gradient norm falls below 1/3 of its steps-70..119
# median at steps 131/131/129 and below 1/10 at 145/140/138 (1e-3 of it by ~150-155, ~1e-12 by 200);
# the total norm (which keeps the output bias's gradient) below 1/3 at 134/133/133. The 5-step mean
# loss climbs 0.5 -> 1.3 over steps 120-145 and then sits at ~ln 4. Onset label: 130, where the
# decline becomes measurable. With weight_decay 0.05 the same run keeps training normally.
OPT_SWITCH = 120
WD_VANISH_ONSET = 130


def _sgd_reuses_adamw_wd(watch, seed: int, wd: float = 0.1) -> None:
    torch.manual_seed(seed)
    model = mlp([16] + [64] * 6 + [4])
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=wd)
    data = teacher_classification(seed=seed, batch=64)
    mon = watch(model, adamw)
    opt = adamw
    for step in range(300):
        if step == OPT_SWITCH:
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=adamw.defaults["weight_decay"])
        x, y = data(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- nonfinite: AMP with GradScaler, but the loop calls optimizer.step() instead of scaler.step() ----
# fp16 autocast (CPU), GradScaler(init_scale 2**16): scaler.scale(loss).backward(); scaler.unscale_(opt);
# clip_grad_norm_(1.0); opt.step(); scaler.update() -- scaler.step() was dropped when clipping was added, so a
# step whose fp16 gradients overflowed is not skipped. At step GLITCH_STEP a sensor glitch gives
# two targets of 400 (others are O(1)): the scaled fp16 gradient overflows to inf, clip turns it into
# NaN (inf * 0) and the update writes NaN into the weights. (A correct AMP loop would skip the step.)
# Measured (seeds 0/1/2): grads non-finite at exactly GLITCH_STEP (logged loss ~1e4 there), weights
# NaN after its update, loss NaN from the next step.
GLITCH_STEP = 170


def _scaler_bypassed(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_regression(seed=seed, noise=0.05)

    def data(step):
        x, y = base(step)
        if step == GLITCH_STEP:
            y = y.clone()
            y[:2] = 400.0
        return x, y

    model = mlp([16, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    mon = watch(model, opt)
    for step in range(240):
        x, y = data(step)
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        loss = F.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()  # should be scaler.step(opt), which skips a step whose gradients overflowed
        scaler.update()
        mon.step(loss.detach())


# --- nonfinite: entropy bonus computed as -(p * log p).sum() over masked logits --------------------
# A REINFORCE policy on a contextual bandit with an entropy bonus. From MASK_STEP the environment
# marks some actions invalid and the code masks their logits with -inf: p = 0 and log p = -inf there,
# so p * log p = 0 * -inf = NaN and the loss is NaN from that step (should use torch.special.entr or
# a finite fill value). Measured (seeds 0/1/2): loss finite before MASK_STEP, NaN at MASK_STEP.
MASK_STEP = 150


def _entropy_masked(watch, seed: int) -> None:
    torch.manual_seed(seed)
    n_actions, dim = 6, 12
    w_true = torch.randn(dim, n_actions, generator=torch.Generator().manual_seed(seed + 41))
    model = mlp([dim, 64, n_actions], activation=nn.Tanh)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    mon = watch(model, opt)
    baseline = 0.0
    for step in range(230):
        g = gen(seed, step)
        x = torch.randn(64, dim, generator=g)
        logits = model(x)
        if step >= MASK_STEP:  # level 2: some actions are unavailable in some states
            valid = torch.rand(64, n_actions, generator=g) > 0.3
            valid[:, 0] = True
            logits = logits.masked_fill(~valid, float("-inf"))
        logp = logits.log_softmax(-1)
        p = logp.exp()
        gumbel = -torch.log(-torch.log(torch.rand(64, n_actions, generator=g)))
        a = (logits.detach() + gumbel).argmax(-1)  # Gumbel-max sampling
        reward = (x @ w_true).gather(1, a[:, None]).squeeze(1) + 0.5 * torch.randn(64, generator=g)
        adv = reward - baseline
        baseline = 0.9 * baseline + 0.1 * float(reward.mean())
        entropy = -(p * logp).sum(-1).mean()
        loss = -(logp.gather(1, a[:, None]).squeeze(1) * adv).mean() - 0.01 * entropy
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- loss spike: after a resume the loader lost shuffle=True and reads a label-sorted table ----------
# 2048 training rows stored sorted by label (512 per class). Epochs 1-3 are shuffled; the job is
# preempted and the resumed DataLoader is built with shuffle=False (the default), so from
# SORTED_FROM it reads 16 batches of class 0, then 16 of class 1, ... Adam quickly learns "everything
# is class 0"; the first class-1 batch (step SORTED_FROM + 16) then costs several nats, and the same
# happens at every class boundary.
# Measured: first logged loss > 3x the median of the previous 50 steps: 208 = SORTED_SPIKE for seeds
# 0/1/2 (loss ~0.3 -> 3.6-4.1 at the boundary; the grad norm also jumps ~8-10x there).
SORTED_FROM = 192  # the start of epoch 4 (64 batches per epoch)
SORTED_SPIKE = SORTED_FROM + 16


def _sorted_after_resume(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 53)
    n = 2048
    x_big, y_big = teacher_classification(dim=16, classes=4, batch=4 * n, label_noise=0.05, seed=seed)(0)
    keep = torch.cat([torch.nonzero(y_big == c).squeeze(1)[: n // 4] for c in range(4)])  # 512 rows per class
    x_all, y_all = x_big[keep], y_big[keep]  # the table on disk is sorted by label
    perms = {}

    def batch_at(step):
        epoch, i = divmod(step, n // 32)
        if step < SORTED_FROM:
            idx = perms.setdefault(epoch, torch.randperm(n, generator=g0))
        else:
            idx = torch.arange(n)  # resumed loader: shuffle=False
        sl = idx[32 * i : 32 * (i + 1)]
        return x_all[sl], y_all[sl]

    model = mlp([16, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- loss spike: an "evaluate with EMA weights" callback swaps the EMA in and never swaps back -------
# An EMA of the weights (decay 0.999, no warmup/bias correction) is kept for evaluation. At
# EMA_SWAP the new eval callback does model.load_state_dict(ema.state_dict()) and never restores
# the live weights. After 200 steps a 0.999 EMA is still ~82% the initial weights, so training
# resumes from an almost untrained model: the loss jumps back up, then is relearned.
# Measured (seeds 0/1/2): loss ~0.2 (median of steps 150-199) -> 1.42-1.43 at EMA_SWAP; grad norm
# stays within 2x of its median; relearned to ~0.25 by the end.
EMA_SWAP = 200


def _ema_swapped_in(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([20, 128, 128, 5])
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = teacher_classification(dim=20, classes=5, batch=32, seed=seed)

    def before(step, model, optimizer):
        if step == EMA_SWAP:
            model.load_state_dict(ema)  # "evaluate the EMA weights" -- the live weights are never put back
        if step > 0:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].mul_(0.999).add_(v, alpha=0.001)

    fit(watch, model, opt, steps=320, batch_at=data, loss_fn=F.cross_entropy, before_step=before)


# --- overfitting: model.eval() for validation and never model.train() again: dropout is off -----------
# A wide MLP regularised by dropout 0.5 on 256 noisy training rows (8 batches, 25% label noise). The
# validation helper calls model.eval() and the training loop never switches back, so from the first
# validation (step 4) on the net trains without dropout and memorises the noisy labels.
# Measured (seeds 0/1/2): held-out CE min 1.05/1.10/0.93 at steps 34/24/39, then rises steadily to
# 2.20/2.65/1.77 at the end (+90-140%); train CE -> 0.003.
def _eval_mode_sticks(watch, seed: int) -> None:
    torch.manual_seed(seed)
    raw = teacher_classification(dim=24, classes=4, batch=32, label_noise=0.25, seed=seed)
    train = [raw(i) for i in range(8)]
    model = nn.Sequential(
        nn.Linear(24, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = watch(model, opt)
    model.train()
    for step in range(300):
        x, y = train[step % 8]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        val = None
        if step % 5 == 4:
            model.eval()  # ... and no model.train() after it
            with torch.no_grad():
                val = sum(float(F.cross_entropy(model(vx), vy)) for vx, vy in (raw(10**6 + i) for i in range(4))) / 4
        mon.step(loss.detach(), val_loss=val)


# --- overfitting: target encoding computed on the training rows including the row itself -------------
# Binary tabular task, 8 informative numeric columns plus a 120-level categorical column that is
# unrelated to the label. The categorical is target-encoded with the mean label of its training rows
# (~2 rows per level) *including the row being encoded*: on the training set the encoding leaks the
# label; on held-out rows it is noise. The MLP first learns the real signal, then leans on the leak.
# Measured (seeds 0/1/2): held-out CE min 0.49/0.59/0.43 at steps 19/24/19, then rises steadily to
# 1.76/1.88/1.45 at the end; train CE -> 0.01.
def _target_encoding_leak(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 83)
    n_train, n_val, levels = 256, 256, 120
    w = torch.randn(8, generator=g0)
    x = torch.randn(n_train + n_val, 8, generator=g0)
    y = ((x @ w) / 8**0.5 + 0.8 * torch.randn(n_train + n_val, generator=g0) > 0).long()
    cat = torch.randint(0, levels, (n_train + n_val,), generator=g0)
    sums = torch.zeros(levels).index_add_(0, cat[:n_train], y[:n_train].float())
    counts = torch.zeros(levels).index_add_(0, cat[:n_train], torch.ones(n_train))
    enc = (sums[cat] + 0.5) / (counts[cat] + 1.0)  # smoothed mean, the row's own label included
    feats = torch.cat([x, enc[:, None], (counts[cat] / 4)[:, None]], 1)

    def batch_at(step):
        i = torch.arange(32) + 32 * (step % 8)
        return feats[i], y[i]

    def val_at(k):
        i = n_train + torch.arange(64) + 64 * k
        return feats[i], y[i]

    model = mlp([10, 128, 128, 2])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=320, batch_at=batch_at, loss_fn=F.cross_entropy, val_at=val_at, val_every=5)


# --- stagnation: a warmup-stable-decay schedule given num_training_steps = num_epochs ---------------
# WSD schedule: 10 warmup steps, constant lr, linear decay to 0 over the last 10% of training.
# num_training_steps was passed the number of epochs (NUM_EPOCHS = 120) where epochs *
# batches_per_epoch (= 480) was meant: the decay runs from step 108 to 120 and from step 120 on the
# lr is exactly 0, with the model still far from trained.
# Measured (seeds 0/1/2, 20-step mean loss): identical to the correct run (total 480) until step
# 108; the correct run then keeps falling (~0.95-0.99 over steps 120-139, 0.34-0.37 over 340-359);
# the buggy one sits at 1.05-1.18 from steps 120-139 to the end. Onset = 120, the first step whose
# update has lr == 0.
NUM_EPOCHS = 120


def _schedule_total_in_epochs(watch, seed: int, total: int = NUM_EPOCHS) -> None:
    torch.manual_seed(seed)
    model = mlp([32, 128, 128, 10])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    decay_from = int(0.9 * total)

    def factor(s):
        if s < 10:
            return (s + 1) / 10
        if s < decay_from:
            return 1.0
        return max(0.0, (total - s) / (total - decay_from))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    fit(
        watch,
        model,
        opt,
        steps=360,
        batch_at=teacher_classification(dim=32, classes=10, batch=32, seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


# --- stagnation: inputs and labels shuffled with two different permutations ---------------------------
# A custom epoch shuffler does x = x[torch.randperm(n)]; y = y[torch.randperm(n)] (two draws) every
# epoch, so labels are independent of inputs. The loss falls to the class-prior entropy in a few
# steps and stays there for the whole run. Onset 0.
# Measured (seeds 0/1/2): 20-step mean loss 1.36-1.40 (ln 4 = 1.386) at every point of the run.
def _xy_shuffled_apart(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 97)
    n = 2048
    base = teacher_classification(dim=16, classes=4, batch=n, seed=seed)
    x_all, y_all = base(0)
    state = {}

    def batch_at(step):
        epoch, i = divmod(step, n // 32)
        if state.get("epoch") != epoch:
            state["epoch"] = epoch
            state["x"] = x_all[torch.randperm(n, generator=g0)]
            state["y"] = y_all[torch.randperm(n, generator=g0)]  # should reuse the same permutation
        sl = slice(32 * i, 32 * (i + 1))
        return state["x"][sl], state["y"][sl]

    model = mlp([16, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy)


SCENARIOS: list[Scenario] = [
    Scenario(
        "explode11_accum_summed_lr_scaled",
        f"Tanh regression MLP, SGD momentum lr 0.02; from step {ACCUM_FROM} 8-micro-batch gradient accumulation "
        "with the lr scaled x8 (linear scaling) but micro-losses not divided by 8: 64x updates, grads grow "
        "1e3-1e6x within 10 steps, inf/NaN by ~115.",
        _accum_not_divided,
        expect={"exploding_gradient": ACCUM_FROM},
        allow=BLOWS_UP,
        tags=frozenset({"mlp", "momentum", "accumulation", "eleventh"}),
    ),
    Scenario(
        "explode11_epoch_warmup_stepped_per_batch",
        f"Tanh regression MLP, batch 256, SGD momentum lr 0.5 (linear-scaled) behind LinearLR(total_iters=5) meant "
        f"as 5 epochs but stepped per batch: full lr at step {WARMUP_DONE}, grads 30-200x by step 8, NaN ~20-25.",
        _warmup_per_batch,
        expect={"exploding_gradient": WARMUP_DONE},
        allow=BLOWS_UP,
        tags=frozenset({"mlp", "momentum", "scheduler", "eleventh"}),
    ),
    Scenario(
        "vanish11_batchnorm_eps_positional",
        "10-hidden-layer ReLU MLP with nn.BatchNorm1d(w, 0.99) (Keras momentum passed positionally = eps 0.99): "
        "hidden-layer gradients ~1e-5 (vs ~0.3 with eps 1e-5), loss stuck at ln 5.",
        _bn_eps_positional,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=frozenset({"mlp", "batchnorm", "momentum", "eleventh"}),
    ),
    Scenario(
        "vanish11_sgd_reuses_adamw_weight_decay",
        f"6-hidden-layer ReLU MLP, AdamW(wd 0.1) until step {OPT_SWITCH}, then SGD momentum lr 0.1 reusing weight_decay=0.1 "
        "as L2: the weights decay to ~0 and every layer's gradient collapses (first layer 1e-3x by ~150, 1e-12 by 200).",
        _sgd_reuses_adamw_wd,
        expect={"vanishing_gradient": WD_VANISH_ONSET},
        allow=frozenset({"stagnation", "loss_spike"}),
        tags=frozenset({"mlp", "adamw", "momentum", "weight-decay", "optimizer-switch", "eleventh"}),
    ),
    Scenario(
        "nonfinite11_amp_scaler_step_bypassed",
        f"fp16 autocast + GradScaler with clip, but opt.step() is called instead of scaler.step(): at step {GLITCH_STEP} "
        "two glitch targets (400) overflow the scaled fp16 grads; the inf step is not skipped, weights NaN.",
        _scaler_bypassed,
        expect={"nonfinite": GLITCH_STEP},
        allow=frozenset({"loss_spike", "exploding_gradient"}),
        tags=frozenset({"mlp", "amp", "fp16", "momentum", "eleventh"}),
    ),
    Scenario(
        "nonfinite11_entropy_bonus_masked_actions",
        f"REINFORCE policy with an entropy bonus -(p*log p).sum(); from step {MASK_STEP} invalid actions are masked with "
        "-inf, so 0 * -inf = NaN in the loss.",
        _entropy_masked,
        expect={"nonfinite": MASK_STEP},
        allow=frozenset({"loss_spike", "exploding_gradient"}),
        tags=frozenset({"mlp", "rl", "adam", "masking", "eleventh"}),
    ),
    Scenario(
        "spike11_label_sorted_after_resume",
        f"MLP classifier (Adam) on a label-sorted table; resumed at step {SORTED_FROM} with shuffle=False: 16 batches "
        f"of one class at a time, the loss jumps 0.3 -> ~4 at the first class boundary (step {SORTED_SPIKE}) and at each one after.",
        _sorted_after_resume,
        expect={"loss_spike": SORTED_SPIKE},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"mlp", "adam", "data", "resume", "eleventh"}),
    ),
    Scenario(
        "spike11_ema_weights_swapped_in",
        f"MLP classifier (Adam); at step {EMA_SWAP} an eval callback loads the EMA weights (decay 0.999, ~82% init) "
        "into the model and never restores the live ones: loss 0.2 -> 1.4, relearned over ~100 steps.",
        _ema_swapped_in,
        expect={"loss_spike": EMA_SWAP},
        tags=frozenset({"mlp", "adam", "ema", "eleventh"}),
    ),
    Scenario(
        "overfit11_eval_mode_never_reset",
        "Wide dropout MLP on 256 rows with 25% label noise; validation calls model.eval() and training never calls "
        "model.train() again, so dropout is off from step 4: held-out CE rises ~+100% after its minimum.",
        _eval_mode_sticks,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"mlp", "dropout", "adam", "eleventh"}),
    ),
    Scenario(
        "overfit11_target_encoding_leak",
        "Tabular binary task with a 120-level categorical target-encoded including each row's own label (~2 rows "
        "per level): the MLP learns the real features, then the leak; held-out CE triples after its minimum.",
        _target_encoding_leak,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"mlp", "tabular", "adam", "leak", "eleventh"}),
    ),
    Scenario(
        "stagnant11_wsd_schedule_total_in_epochs",
        f"AdamW MLP on a 10-class task with a warmup-stable-decay schedule whose total was given in epochs "
        f"({NUM_EPOCHS}) not steps: lr is 0 from step {NUM_EPOCHS}, the loss sits at ~1.1 (correct run: 0.35).",
        _schedule_total_in_epochs,
        expect={"stagnation": NUM_EPOCHS},
        tags=frozenset({"mlp", "adamw", "scheduler", "eleventh"}),
    ),
    Scenario(
        "stagnant11_xy_shuffled_separately",
        "MLP classifier (Adam) whose epoch shuffler permutes inputs and labels with two different permutations: "
        "labels are independent of inputs, the loss sits at ln 4 from the start.",
        _xy_shuffled_apart,
        expect={"stagnation": 0},
        tags=frozenset({"mlp", "adam", "data", "eleventh"}),
    ),
]
