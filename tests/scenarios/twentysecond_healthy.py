"""Set 22 healthy controls (held-out): correct training recipes that stress a monitor's rules -- Barlow Twins (loss in
the tens), MINE (a negative, noisy loss), a warmup-stable-decay schedule, DQN with hard target-network syncs, Mean
Teacher with a consistency ramp-up, FedAvg over non-IID clients, alternating block updates for matrix completion,
SGLD posterior sampling, a Cox partial likelihood, a Tweedie loss on heavy-tailed claims, a linear-chain CRF and a
hash-grid neural field with sparse gradients."""

# Offline measurements (`_measure.py twentysecond twentysecond_healthy.py`, seeds 0/1/2, one thread; "loss" = 20-step
# means first -> last; "ratio" = max loss[t] / median(loss[t-20:t]); "grad" = total gradient norm, first 10 -> last 20
# steps; val = the held-out loss passed every 10 steps, "min@step"). No NaN/Inf in any loss, gradient or weight of any
# run. Every val below ends at or within ~2% of its minimum.
# barlow_twins_cross_correlation: loss 11/12/11 -> 4.8/5.0/4.8, val 11 -> min on the last check (4.8/5.0/4.9),
#   monotone; ratio <= 1.16; grad 13-18 (52 at step 0) -> 6.2-6.3.
# mine_donsker_varadhan_negative: loss -0.04/-0.04/-0.06 -> -2.0/-1.9/-1.8 (true MI 2.04; 20-step means wobble +-0.1
#   from step ~200); val -0.04..-0.06 -> min -1.8@369 / -1.9@399 / -2.0@389, last the same to 2 digits; ratio not
#   defined (negative medians); grad 0.16-0.19 -> 3.8-4.9 (RISES), single steps up to 31-33 (258/225/343).
# mixer_warmup_stable_decay: loss 1.8 -> 0.59/0.70/0.70 (10% label noise); val 1.8 -> min 0.63@279 / 0.58@269 /
#   0.52@239, last 0.63/0.58(0.583 vs 0.580)/0.53(0.527 vs 0.521); ratio 1.57-1.67 (single batches); grad 0.36-0.52
#   -> 0.79-0.99 (max 2.1-2.4 around the end of warmup). (dim 48 first: same curves, 3 s a run; dim 32 since.)
# dqn_hard_target_sync: TD loss 20-step means alternate with the syncs (seed 0: 0.0082 0.0014 0.0080 0.00066 0.011
#   0.0024 ... 0.00081 0.00024), 0.0082/0.0087/0.0084 -> 0.00024/0.0004/0.00013; ratio 46@82 / 30@80 / 25@80 (the
#   step after a sync, by design); val (MSE to Q*) 0.27/0.33/0.26 -> min 0.0013@379 / 0.0022@369 / 0.0014@399, last
#   0.0015/0.0026/0.0014 (1e-3 of the start); grad 0.03 -> 0.004-0.009. (First version: Adam 1e-3, batch 64, sync
#   every 30, 360 steps: val bottomed at 0.027@259 and ended at 0.038, Q-values never close to Q*; lr 3e-3, batch
#   128, sync every 40, 400 steps since.)
# mean_teacher_consistency_rampup: loss 1.7 -> 0.67/0.75/0.70; CE part 1.68 -> 0.44/0.53/0.46 while the weighted
#   consistency part rises 0 -> 0.20 (step 100) -> 0.22-0.25; val 1.7 -> min on (or 1 check before) the last check
#   (0.65/0.73/0.54); ratio <= 1.35; grad 0.64-0.72 -> 1.1. (First version, 240 labels of 6 classes, ramp to 30 over
#   150 steps: val 1.005@99, then up to 1.10 during the ramp and 1.015 at the end -- not a control; 600 labels, ramp
#   to 10 over 100 steps since; 4 classes / ramp to 30 also bumped val +0.05 to +0.35.)
# fedavg_noniid_clients: loss 1.7 -> 0.48/0.58/0.44 (client sawtooth; the first local step after each reset is the
#   highest); val (global model, per round) 1.8 -> min on the last round (0.60/0.72/0.55), falling every round but
#   one; ratio 1.7-2.0; grad 0.65-0.79 -> 0.95-1.2; per-step update of the last layer 0.03-0.05 of its norm. (lr 0.1
#   first: healthy but flat for 80 steps, val only 1.1 at 400; lr 0.2 since.)
# alternating_block_matrix_completion: loss 1.2/0.88/0.98 -> 0.026/0.021/0.039 (plateau ~1.0 for the first 40-60
#   steps); val 1.1/0.98/1.0 -> min on the last check (0.10/0.073/0.14), monotone; ratio 1.3/2.5/1.6; one of the two
#   modules has grad None on every step (rows in the first 20 steps, cols in the last 20); grad 0.1-0.12 -> 0.03.
# sgld_langevin_posterior: loss 1.3 -> 0.46/0.52/0.46; val 1.3 -> min 0.62@299 / 0.63@299 / 0.53@289, last 0.62/
#   0.63(seed 1 wobbles 0.63-0.66 over the last 100 steps)/0.54; ratio <= 1.5; |lr x grad| 0.03 vs |update| 0.51 on
#   every step (the Langevin noise is ~16x the gradient step); relative update per step 0.05-0.18. (lr 0.2 and 0.4
#   first: the loss kept falling while the sample's val rose from 0.57@109 to 0.86 (and even the 10-sample posterior
#   average's val rose 0.51 -> 0.57-0.65) -- a cold-posterior-like overfit, not a control; lr 0.05 since.)
# cox_partial_likelihood_survival: loss 4.1/4.0/4.0 -> 3.6/3.7/3.6 (-10%); val (batches of 512) 5.4 -> min 5.0 on the
#   last check, always 1.3-1.4 above the training loss; val C-index 0.38/0.55/0.44 -> 0.78/0.77/0.76; ratio <= 1.07;
#   grad 0.21-0.39 -> 0.36-0.40.
# tweedie_heavy_tailed_claims: 75-84% zeros, max claim 1492/136/1102 (mean 5.4/0.93/1.5) in 20 held-out batches; loss
#   11/3.6/4.3 -> 5.3/3.2/3.3 (20-step means wander +-0.3); val 10/3.6/3.9 -> min 4.94@289 / 3.01@279 / 3.32@229,
#   last 4.95/3.03/3.37; ratio 3.7@23 / 2.2@177 / 2.7@36 (single batches with a large claim); grad median ~1-3 with
#   single steps up to 50@154 / 7.3@277 / 12@36. (Weights 0.35 first: seeds 1-2 learned only 10%; 0.6: one claim of
#   99,000 -- 0.45 since.)
# linear_chain_crf_tagger: loss 16/9.6/18 -> 4.5/2.8/8.6 (seed 2's chain has more entropy); val 13/6.6/16 -> min
#   4.6@299 / 2.3@239 / 8.4@289, last within 0.05; ratio <= 1.47; grad 13-17 (max 20-27 at 0-1) -> 3.3-6.2.
# hash_grid_neural_field: loss 0.17/0.098/0.10 -> 1.9e-5/1.3e-5/9.1e-6 (1e-3 reached by step ~40); val 0.19/0.083/0.10
#   -> min 1.8e-5@289 / 1.2e-5@269 / 1.1e-5@299, last 2.0e-5/1.2e-5/1.1e-5; ratio 1.3-2.1; grad 0.13-0.5 ->
#   0.0015-0.002 (100x smaller); a batch gives gradient to 8% / 27% / 60% / 63% of the rows of the 4 tables.
# Wall time (one thread, recorder): 0.2-2.3 s a run, 28 s for the 36; up to 10 s when 3 jobs shared the 2 cores.

from __future__ import annotations

import copy
import math

import torch
from _twentysecond_healthy_lib import (
    DIAG,
    MF,
    SGLD,
    TRUE_MI,
    VAL,
    CRFTagger,
    HashField,
    Mixer,
    barlow_loss,
    claims_data,
    concordance,
    correlated_pairs,
    cox_loss,
    dv_terms,
    field_data,
    gen,
    gratings,
    held_out_val,
    hmm_tags,
    low_rank_entries,
    mlp,
    q_star,
    replay_batch,
    rows_with_grad,
    run_loop,
    simple_step,
    soft_mse,
    ssl_views,
    survival_data,
    teacher_data,
    tweedie_loss,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

ce = F.cross_entropy


def _barlow(watch, seed):
    """Barlow Twins self-supervised pre-training: an MLP encoder + BatchNorm projector, loss = sum of (1 - C_ii)^2 +
    0.02 x sum of C_ij^2 over the 64x64 cross-correlation of the two views' standardised embeddings (views: 20%
    feature dropout + noise). The loss starts above 10 and gradients near 50, not around 1. Adam. Val: the same
    loss on held-out pairs."""
    data = ssl_views(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(mlp([32, 128, 64]), nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn(z1, v2):
        return barlow_loss(z1, model(v2))

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, loss_fn),
        val_loss=held_out_val(model, data, loss_fn),
    )


def _mine(watch, seed):
    """MINE: a statistics network T(x, y) maximises the Donsker-Varadhan bound E_joint[T] - log E_marginal[e^T] on
    pairs of 4-d Gaussians with I(X;Y) = 2.04 nats (marginal samples by shuffling y); the gradient uses MINE's moving
    average of E[e^T] (bias correction). The logged loss is minus the bound: it starts at ~0, goes negative towards
    -2.04 and stays noisy. Adam. Val: minus the bound on held-out pairs."""
    data = correlated_pairs(seed)
    torch.manual_seed(seed)
    model = mlp([8, 64, 64, 1], act=nn.ELU)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    box = {"ema": None}

    def train_step(step):
        x, y, perm = data(step)
        tj, lme, tm = dv_terms(model, x, y, perm)
        et = tm.exp().mean()
        box["ema"] = et.detach() if box["ema"] is None else 0.99 * box["ema"] + 0.01 * et.detach()
        surrogate = -(tj - et / box["ema"])
        opt.zero_grad(set_to_none=True)
        surrogate.backward()
        opt.step()
        return -(tj - lme).detach()

    def val(step):
        return sum(-float(tj - lme) for tj, lme, _ in (dv_terms(model, *data(VAL + i)) for i in range(4))) / 4

    run_loop(watch, model, opt, steps=400, train_step=train_step, val_loss=val)
    DIAG["true MI"] = round(TRUE_MI, 3)


def _wsd(watch, seed):
    """Warmup-stable-decay (trapezoidal) schedule, as in recent LM pre-training: AdamW 3e-3 with a 20-step warmup, held
    constant to step 240, then a linear decay to 0 over the last 60 steps (a sharp change of the lr mid-run, on
    purpose). A small MLP-Mixer on 16x16 oriented gratings (6 classes, 10% label noise). Val: held-out CE."""
    data = gratings(seed)
    torch.manual_seed(seed)
    model = Mixer()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 20, 1.0, (300 - s) / 60))
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, scheduler=sched),
        val_loss=held_out_val(model, data, ce),
    )


def _dqn(watch, seed):
    """DQN on a deterministic 5x5 grid (reward 1 at the goal corner, gamma 0.9) from a uniform replay of random
    transitions: Huber TD loss against a target network that is hard-synced to the online network every 40 steps,
    Adam. Each sync moves the regression targets, so the TD loss jumps back up every 40 steps by design. Val: MSE
    between the online Q-values and Q* (value iteration) over all non-terminal states."""
    torch.manual_seed(seed)
    model = mlp([25, 64, 64, 4])
    target = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    qs = q_star()[:-1]
    eye = torch.eye(25)

    def train_step(step):
        if step % 40 == 0:
            target.load_state_dict(model.state_dict())
        s, a, r, s2, done = replay_batch(seed, step, batch=128)
        with torch.no_grad():
            y = r + 0.9 * (1 - done) * target(eye[s2]).max(1).values
        loss = F.smooth_l1_loss(model(eye[s]).gather(1, a[:, None]).squeeze(1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    run_loop(watch, model, opt, steps=400, train_step=train_step, val_loss=lambda s: F.mse_loss(model(eye[:-1]), qs))


def _mean_teacher(watch, seed):
    """Semi-supervised Mean Teacher (6 classes): 600 labels (32 per step) + a stream of unlabelled data (128 a step);
    loss = CE on the labelled batch + w(t) x MSE between the student's and the EMA teacher's (decay 0.99) softmax on
    differently-noised unlabelled inputs, w ramped up with the usual sigmoid schedule exp(-5 (1 - t/100)^2) to 10 over
    the first 100 steps. Student MLP with dropout, Adam. Val: the student's held-out CE."""
    data = teacher_data(seed, classes=6, batch=128)
    lx, ly = teacher_data(seed, classes=6, batch=600)(2 * VAL)
    torch.manual_seed(seed)
    model = mlp([16, 128, 128, 6], dropout=0.2)
    teacher = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    parts = []

    def train_step(step):
        g = gen(seed, step, 20)
        idx = torch.randint(0, 600, (32,), generator=g)
        xu = data(step)[0]
        w = 10 * math.exp(-5 * (1 - min(step, 100) / 100) ** 2)
        sup = ce(model(lx[idx]), ly[idx])
        with torch.no_grad():
            t_out = teacher(xu + 0.3 * torch.randn(xu.shape, generator=g))
        cons = soft_mse(model(xu + 0.3 * torch.randn(xu.shape, generator=g)), t_out)
        loss = sup + w * cons
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pt, ps in zip(teacher.parameters(), model.parameters(), strict=True):
                pt.mul_(0.99).add_(ps, alpha=0.01)
        parts.append((float(sup.detach()), float(w * cons.detach())))
        return loss

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=held_out_val(model, data, ce))
    DIAG["sup, w*cons 20-step means at 0/100/200/280"] = [
        tuple(round(sum(p[k] for p in parts[a : a + 20]) / 20, 3) for k in (0, 1)) for a in (0, 100, 200, 280)
    ]


def _fedavg(watch, seed):
    """FedAvg simulated on one model: 4 clients with skewed (non-IID) label distributions, 5 local SGD steps each per
    round, then the server averages the 4 client models; every client starts its local steps from the global weights,
    so the weights jump back at every client switch and the loss is a sawtooth over clients. Val: the global model's
    held-out CE (balanced data), once per 20-step round."""
    clients = []
    for c in range(4):
        probs = torch.full((6,), 0.05)
        probs[[(2 * c) % 6, (2 * c + 1) % 6]] = 0.4
        clients.append(teacher_data(seed, batch=32, label_probs=lambda s, p=probs: p))
    held = teacher_data(seed, batch=128)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 6])
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    mon = watch(model, opt)
    glob = copy.deepcopy(model.state_dict())
    local = []
    for step in range(400):
        rnd, k = divmod(step, 20)
        c, j = divmod(k, 5)
        if j == 0:
            model.load_state_dict(glob)
        x, y = clients[c](rnd * 5 + j)
        loss = ce(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        val = None
        if j == 4:
            local.append(copy.deepcopy(model.state_dict()))
        if k == 19:
            glob = {n: sum(sd[n] for sd in local) / 4 for n in glob}
            local = []
            model.load_state_dict(glob)
            with torch.no_grad():
                val = held_out_val(model, held, ce)(step)
        mon.step(loss.detach(), val_loss=val)


def _alternating_mf(watch, seed):
    """Matrix completion by alternating block updates (the gradient version of ALS): a rank-8 factorisation of a
    noisy rank-4 120x90 matrix from 35% of its entries; phases of 25 steps alternately train the row factors only
    (column factors requires_grad=False, grad None) and the column factors only. MSE + small L2, Adam 0.02. Val: MSE
    on held-out entries."""
    data = low_rank_entries(seed)
    torch.manual_seed(seed)
    model = MF()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)

    def train_step(step):
        rows = (step // 25) % 2 == 0
        model.rows.weight.requires_grad_(rows)
        model.cols.weight.requires_grad_(not rows)
        ij, v = data(step)
        u, w = model.rows(ij[:, 0]), model.cols(ij[:, 1])
        loss = F.mse_loss((u * w).sum(1), v) + 1e-3 * (u.pow(2).sum(1) + w.pow(2).sum(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    run_loop(watch, model, opt, steps=400, train_step=train_step, val_loss=held_out_val(model, data, F.mse_loss))


def _sgld(watch, seed):
    """Bayesian MLP by stochastic-gradient Langevin dynamics (hand-written optimizer): theta -= lr grad(mean NLL +
    Gaussian prior / N) + N(0, 2 lr / N) noise, on a 512-sample dataset, minibatch 64, lr 0.05 constant. The injected
    noise (std 0.014 per weight per step) is ~10-30x the gradient step, so every update is mostly a random walk;
    the loss still falls, slowly and noisily. Val: held-out CE of the current sample."""
    data = teacher_data(seed, classes=4, batch=512)
    xs, ys = data(0)
    torch.manual_seed(seed)
    model = mlp([16, 64, 4])
    opt = SGLD(model.parameters(), lr=0.05, n_data=512, seed=seed)
    steps = []

    def batch(step):
        idx = torch.randint(0, 512, (64,), generator=gen(seed, step, 21))
        return xs[idx], ys[idx]

    def train_step(step):
        before = [p.detach().clone() for p in model.parameters()]
        out = simple_step(model, opt, batch, ce)(step)
        with torch.no_grad():
            drift = sum(float((0.05 * p.grad).pow(2).sum()) for p in model.parameters()) ** 0.5
            total = sum(float((p - b).pow(2).sum()) for p, b in zip(model.parameters(), before, strict=True)) ** 0.5
        steps.append((drift, total))
        return out

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=held_out_val(model, data, ce))
    DIAG["|lr*grad|, |update| first20 / last20"] = [
        tuple(round(sum(s[k] for s in chunk) / 20, 4) for k in (0, 1)) for chunk in (steps[:20], steps[-20:])
    ]


def _cox(watch, seed):
    """Cox proportional-hazards network (DeepSurv): negative partial log-likelihood over each batch's risk sets, ~35%
    censored. The loss is ~log(batch) ~ 3.5 and can fall only to the partial likelihood's floor; the val loss, on
    batches of 512, sits ~1.4 higher (larger risk sets), not because of overfitting. MLP, Adam."""
    data = survival_data(seed)
    big = survival_data(seed, batch=512)
    torch.manual_seed(seed)
    model = mlp([10, 32, 32, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, te = big(VAL + 99)
    with torch.no_grad():
        c0 = concordance(model(x), te)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, cox_loss),
        val_loss=held_out_val(model, big, cox_loss),
    )
    with torch.no_grad():
        DIAG["val C-index start, end"] = (round(c0, 3), round(concordance(model(x), te), 3))


def _tweedie(watch, seed):
    """Insurance pricing: claim totals with 75-85% zeros and log-normal severities (heavy right tail), Tweedie deviance
    (p = 1.5) with a log link, output bias initialised to log(mean claim) as practitioners do. A batch's loss is set by
    its few large claims. MLP, Adam. Val: the same loss on 8 held-out batches of 256."""
    data = claims_data(seed)
    ys = torch.cat([data(VAL + 1000 + i)[1] for i in range(20)])
    torch.manual_seed(seed)
    model = mlp([12, 32, 32, 1])
    with torch.no_grad():
        model[-1].bias.fill_(math.log(float(ys.mean())))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    DIAG["zero fraction, mean, max of 20 batches"] = (
        round(float((ys == 0).float().mean()), 3),
        round(float(ys.mean()), 3),
        round(float(ys.max()), 1),
    )
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, tweedie_loss),
        val_loss=held_out_val(model, data, tweedie_loss, n=8),
    )


def _crf(watch, seed):
    """Sequence tagging with a linear-chain CRF on top of an embedding + residual conv1d emission network: NLL of the
    gold tag path by the forward algorithm, summed over 16 tokens (the loss starts near 16 ln 5 = 26). Adam. Val:
    held-out NLL."""
    data = hmm_tags(seed)
    torch.manual_seed(seed)
    model = CRFTagger()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def train_step(step):
        x, y = data(step)
        loss = model.nll(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def val(step):
        return sum(float(model.nll(*data(VAL + i))) for i in range(4)) / 4

    run_loop(watch, model, opt, steps=300, train_step=train_step, val_loss=val)


def _hash_field(watch, seed):
    """Neural field with an Instant-NGP multiresolution hash encoding (4 levels, 1024-row tables, bilinear) and a tiny
    MLP fitted to a smooth 2-D signal: each step touches only the table rows around its 256 sample points (sparse
    rows of gradient) and the MSE falls by orders of magnitude within ~100 steps. Adam (eps 1e-15, betas 0.9/0.99).
    Val: MSE at held-out coordinates."""
    data = field_data(seed)
    torch.manual_seed(seed)
    model = HashField()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, F.mse_loss),
        val_loss=held_out_val(model, data, F.mse_loss),
    )
    DIAG["fraction of table rows with a gradient, per level"] = rows_with_grad(model, *data(0))


def _h(name, fn, arch, opt):
    desc = " ".join(fn.__doc__.split())
    return Scenario(f"healthy22_{name}", desc, fn, tags=frozenset({"set22", "healthy", *arch.split(), opt}))


SCENARIOS = [
    _h("barlow_twins_cross_correlation", _barlow, "mlp self_supervised batchnorm", "adam"),
    _h("mine_donsker_varadhan_negative", _mine, "mlp mutual_information", "adam"),
    _h("mixer_warmup_stable_decay", _wsd, "mlp_mixer vision schedule", "adamw"),
    _h("dqn_hard_target_sync", _dqn, "mlp rl value_based", "adam"),
    _h("mean_teacher_consistency_rampup", _mean_teacher, "mlp semi_supervised ema", "adam"),
    _h("fedavg_noniid_clients", _fedavg, "mlp federated", "sgd"),
    _h("alternating_block_matrix_completion", _alternating_mf, "embedding matrix_factorization", "adam"),
    _h("sgld_langevin_posterior", _sgld, "mlp bayesian custom_optimizer", "sgld"),
    _h("cox_partial_likelihood_survival", _cox, "mlp survival", "adam"),
    _h("tweedie_heavy_tailed_claims", _tweedie, "mlp heavy_tailed regression", "adam"),
    _h("linear_chain_crf_tagger", _crf, "conv1d crf sequence", "adam"),
    _h("hash_grid_neural_field", _hash_field, "hash_encoding neural_field sparse", "adam"),
]
