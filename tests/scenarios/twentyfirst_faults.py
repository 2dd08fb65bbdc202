"""Set 21 faults (held-out): a neural-ODE step size, a clip on a spent generator, a misplaced res_scale, an ODE horizon
in the wrong units, a hand-written MoE router softmax, a flow fed undequantised pixels, a teacher loaded with
strict=False, paired loaders with one set_epoch, a Dataset.__len__ counting shards, next(iter(loader)) in a multi-task
loop, Adam's eps from a TF config and nn.LeakyReLU(True). Onsets measured with
`_measure.py twentyfirst twentyfirst_faults.py`."""

# Offline measurements (seeds 0/1/2; plain-PyTorch recorder, no gradwatch). "loss" = 20-step means; "ratio" = max
# loss[t] / median(loss[t-20:t]); "grads" = per-module grad-norm medians; "twin" = the same run with the bug fixed
# (train(..., bug=False); scratch runs, not shipped). Wall time with the recorder: 0.2-3.4 s per run, one thread.
#
# explode21_ode_euler_dt_not_divided (finite, onset 0): grad total 1.3e3/1.9e3/1.5e3 (first 10), max 8e3/6.1e3/5e3,
#   never below 89/130/120, 250/360/520 in the last 20 (per module first 20: f2 930-1.3e3, f1 670-1e3, enc 260-360);
#   loss 23/37/26 -> 1.9/2.6/2.7, val min 1.9/2.5/2.2; no NaN/Inf; ratio <= 1.67. Twin (dt 0.5): grads 5-5.6 (first
#   10), 3.8-4.3 in the last 20, never above 16; loss 1.1-1.3 -> 0.42-0.59, val 0.49-0.65.
# explode21_gcn_clip_on_spent_generator (onset 1; the step-0 gradient is the only clipped one, 0.25): grad total at
#   steps 1-5: 1.3/0.18/3.7/17/24 (seed 0), 2.5/6.9/16/22/870, 2.5/9.9/35/140/1.4e4; 3e3-2e10 at step 6; first
#   NaN/Inf loss at 9/8/8, grads 9/8/7, weights 12/8/8, NaN to the end; loss 0.23-0.49 at step 0 -> 110-2.6e4 at step 5.
#   Twin (clipping works): no NaN, grads pinned at 0.25, but noisy (20-step means 1.5-29): lr 2 is too high even
#   clipped; the story is that of a user who believes clipping makes it safe, not of a healthy twin.
# vanish21_tcn_res_scale_on_whole_sum: per-conv grad medians (first 20) fall from head 0.14-0.17 and the last conv
#   5e-3 (~10x per block) to 1.7e-9/9.9e-9/9.6e-9 at the first conv, stem 2e-9/1.8e-8/1.4e-8; last 20: stem
#   2.7e-10/2.7e-5/5.6e-8 vs head 0.12-0.15. Loss 1.4 (ln 4, chance) at every 20-step mean, val 1.4 throughout. Twin
#   (res_scale on the branch only): stem 0.06-0.14, every conv 0.008-0.06, loss 1.2-1.4 -> 0.68-1.1. (Width 16 first:
#   seed 0 got out of it after ~100 steps; back to width 24, sequences shortened to 32 for time.)
# vanish21_ode_horizon_ten_times_too_long: grads first 20: enc 7.8e-5/4.6e-5/3.6e-5 vs f1 0.04-0.05, f2 0.08-0.11,
#   head 0.12-0.15; last 20: enc 1.9e-5/1.4e-5/8.9e-6 vs head 0.11-0.12. Loss 1.3-1.4 (chance) throughout, val 1.3-1.4.
#   Twin (T = 1): enc 0.14-0.17 (first 20), loss 1.3 -> 0.46-0.57. (T = 20, i.e. dt = 1, with Adagrad first: chaotic,
#   enc grads 1e-13..54 and the total up to 1.3e3 -- not a clean vanishing; T = 10 with SGD momentum since.)
# nan21_moe_router_handwritten_softmax: loss 1.3-1.4 -> 0.50/0.57/0.46 (120-149), val min 0.54@109/0.68@149/0.47@149,
#   grads 0.6-1.2 at 146-149; NaN loss, grads and weights from step 150 in every seed (the first step with tau = 0.01)
#   to the end, val NaN from 159. Pre-onset ratio 1.54/1.49/1.56. Twin (torch.softmax): no NaN, loss 0.46-0.57 at the
#   end.
# nan21_flow_logit_without_dequantization: NLL/dim 9.7/27/22 (first 20; the usual start of a flow: grads 68-200 in the
#   first 10, max 900-2e3 at step 0) -> -2.0/-1.8/-1.9 at 140-149, grads 0.6-1.2 at 146-149; NaN loss, grads and
#   weights from 150 in every seed, val NaN from 159. Twin: -2.2/-2.0/-2.1 at the end, no NaN. (First version
#   dequantised with (255 x + u) / 256: in fp32 u > 1 - 1.5e-5 rounds a 255 pixel to exactly 1.0, and the twin went
#   NaN at 247 (seed 0) / 162 (seed 1); u is now kept in [0.02, 0.98].)
# spike21_kd_teacher_loaded_strict_false (recovers): KD loss 0.3-0.4 -> 0.011-0.017 at 146-149 -> 0.45/0.51/0.53 at 150
#   (ratio 34/37/37 at 150; pre-onset ratio 1.37/1.46/1.43); 20-step mean 0.15-0.18 at 140-159, 0.044-0.061 at
#   160-179, 0.013/0.023/0.012 at 180-199 and 0.005/0.011/0.005 at the end (below the pre-onset level); grads
#   0.07-0.13 -> 1.0-1.3 at 150-151 -> 0.5 at 157. Val (same objective) 0.011-0.015 -> 0.03-0.05 at 159 -> 0.005-0.009.
#   Twin (prefix stripped, strict): no jump, 0.011-0.013 at the end.
# spike21_paired_loaders_set_epoch_missing (does not recover): InfoNCE 4.8-5.1 -> 0.29-0.30 (180-199) -> 8.2-9.0 at
#   200-201 (ratio 30/29/30 at 200/201/200; pre-onset ratio 1.22/1.23/1.23), 20-step means 8.0-8.1 (200-219), then
#   4.4 (chance is ln 64 = 4.16) to the end; grads 0.6-1 -> 5-6. Val (correct pairs) min 0.28@189/0.27@199/0.30@199,
#   rising to 2.8-3.0. Twin: 0.28-0.29 at the end, val 0.27-0.30.
# overfit21_graph_dataset_len_counts_shards: train CE 1.3 -> 0.16/0.19/0.11 (last 20), falling throughout; val min
#   0.80@69/0.97@89/1.0@49, then 1.6/1.7/2.3 at the end (never back). Twin (4096 graphs): train 0.66-0.72, val min
#   0.68@159/0.76@249/0.70@229, ends within 0.04 of its min.
# overfit21_multitask_next_iter_first_batch: train loss (main CE + aux MSE) 1.4-1.5 -> 0.067-0.072 (last 20), falling
#   throughout; val (main CE) min 1.1@19/1.3@19/1.1@19, then 2.4/2.8/2.1 at the end. Twin (labelled batches cycle
#   through 4096 samples): val 1.2-1.3 -> 0.77-1.0, min at 189/259/269. (First version: the aux loss weight read
#   from a misspelt config key (0). Its twin, aux weight 1 or 10, overfitted just as much, so the bug did not explain
#   the symptom; replaced.)
# stagnant21_adam_eps_one_from_tf_config: loss 1.4 (ln 4) at every 20-step mean, val 1.4 throughout; grads 0.5-1
#   (normal); relative updates per step 1.5e-5-8.7e-5 (head 2.7e-4-5e-4) in the first 20, 1e-7-4e-7 (head 1-2e-6) in
#   the last 20 (cosine). Twin (eps 1e-8): loss 1.4 -> 0.10-0.16 (last 20), val 0.11-0.13.
# stagnant21_leakyrelu_true_is_slope_one: loss 0.69-0.70 (ln 2) at every 20-step mean from step 0 (one blip 0.78-0.99
#   at step 1), val 0.69-0.70 throughout; grads 0.07-0.26 (last 20). Twin (inplace=True, slope 0.01): loss 0.36-0.43
#   (first 20) -> 0.034-0.041, val 0.03-0.04. (Adagrad 0.05 first: the linear net overshot at steps 1-4, loss up to
#   5-12, a spike unrelated to the bug; lr 0.01 since.)
# Replaced before shipping: explode21 seq2seq (GRU attention, SGD lr 20, the same spent clip generator): the GRU gates
#   saturated after a 3-step jump (grads 0.25 -> 83), then the lower layers' grads fell to 1e-8 with no NaN; a UNet
#   denoiser (too slow, its ReLUs died instead of diverging); a tiny ViT dividing attention scores by head_dim**-0.5
#   (learned fine, no gradient starvation); a forecaster with the target leaked into the window (val never rose);
#   matrix factorisation losing its weight decay to SparseAdam (val never clearly rose at 4000-12000 ratings).

from __future__ import annotations

import warnings

import torch
from _twentyfirst_faults_lib import (
    TCN,
    VAL,
    EulerODENet,
    HandGCN,
    HandGIN,
    LogitFlow,
    Mixer,
    SiameseEncoder,
    SoftMoE,
    blob_images,
    checker_2d,
    graph_regression,
    info_nce,
    leaky_mlp,
    loop,
    mean_val,
    mlp_teacher_data,
    motif_sequences,
    paired_views,
    plain_step,
    quadrant_patches,
    small_graphs,
    teacher_net,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

ce = F.cross_entropy
LR_GCN = 2.0
HARD_ROUTING_AT = 150
DEQUANT_DROPPED_AT = 150
TEACHER_RELOAD_AT = 150
EPOCH = 200  # steps per epoch of the paired loaders (12800 pairs / 64)


# ---------------------------------------------------------------- exploding_gradient
def _explode_ode_dt(watch, seed, bug=True):
    """Neural-ODE classifier: encoder, vector field f(h) = W2 tanh(W1 h) integrated over t in [0, 10] with 20
    explicit Euler steps, head. The step size is computed as dt = t1 - t0 (10) instead of (t1 - t0) / n_steps (0.5):
    every Euler step multiplies the state's Jacobian by I + 10 J. Adam 1e-3, no clipping."""
    data = mlp_teacher_data(seed)
    torch.manual_seed(seed)
    model = EulerODENet(n_steps=20, dt=10.0 if bug else 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loop(watch, model, opt, 200, plain_step(model, opt, data, ce), mean_val(model, data, ce))


def _explode_clip_generator(watch, seed, bug=True):
    """Graph network written by hand (two graph convolutions relu(A X W)) regressing a 2-hop node function, SGD
    momentum 0.9 at lr 2 "made safe" by clip_grad_norm_(params, 0.25), where params = (p for p in model.parameters()
    if p.requires_grad) was built once before the loop: a generator, spent by the first call (PyTorch only warns),
    so from step 1 on nothing is clipped."""
    adj, data = graph_regression(seed)
    torch.manual_seed(seed)
    model = HandGCN(adj)
    opt = torch.optim.SGD(model.parameters(), lr=LR_GCN, momentum=0.9)
    params = (p for p in model.parameters() if p.requires_grad)
    if not bug:
        params = [p for p in model.parameters() if p.requires_grad]

    def train_step(step):
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
        return loss

    loop(watch, model, opt, 250, train_step, mean_val(model, data, F.mse_loss))


# ---------------------------------------------------------------- vanishing_gradient
def _vanish_tcn_res_scale(watch, seed, bug=True):
    """6-block dilated causal TCN (motif classification). The EDSR-style residual scaling (res_scale 0.1, for
    stability) is written res_scale * (x + body(x)) instead of x + res_scale * body(x): the skip path is scaled too,
    so the signal and the gradient shrink 10x per block. RMSprop 1e-3."""
    data = motif_sequences(seed)
    torch.manual_seed(seed)
    model = TCN(blocks=6, res_scale=0.1, scale_whole_sum=bug)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loop(watch, model, opt, 200, plain_step(model, opt, data, ce), mean_val(model, data, ce))


def _vanish_ode_horizon_units(watch, seed, bug=True):
    """Leaky continuous-time block (dh/dt = -h + W2 tanh(W1 h)) between an encoder and a head, 20 explicit Euler
    steps over [0, T]. T should be 1 (dt = 0.05); the config's horizon is in tenths of a second, read as seconds: T
    = 10, dt = 0.5, and each step maps h to 0.5 h + 0.5 f(h): the encoder's state (and gradient) is halved 20 times,
    ~1e-6, while the vector field and the head get normal gradients. SGD momentum 0.05."""
    data = mlp_teacher_data(seed)
    torch.manual_seed(seed)
    model = EulerODENet(n_steps=20, dt=(10.0 if bug else 1.0) / 20, leak=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loop(watch, model, opt, 250, plain_step(model, opt, data, ce), mean_val(model, data, ce))


# ---------------------------------------------------------------- nonfinite
def _nan_moe_softmax(watch, seed, bug=True):
    """Dense mixture of 4 experts: soft routing (router temperature 1) for 150 steps, then a near-hard routing phase
    with tau = 0.01. The router softmax is hand-written as exp(z) / sum exp(z), without subtracting the max: with
    tau = 0.01 any router logit above ~0.89 overflows exp to inf and inf / inf = NaN. AdamW 2e-3, 20 warmup steps."""
    data = mlp_teacher_data(seed)
    torch.manual_seed(seed)
    model = SoftMoE(handwritten=bug)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))

    def before(step):
        model.tau = 1.0 if step < HARD_ROUTING_AT else 0.01

    loop(
        watch, model, opt, 250, plain_step(model, opt, data, ce, before=before, sched=sched), mean_val(model, data, ce)
    )


def _nan_flow_dequant(watch, seed, bug=True):
    """RealNVP on 8x8 [0, 1] images through the usual logit preprocessing. Training batches are dequantised, (255 x
    + u) / 256, so the logit never sees an exact 0 or 1. At step 150 the data loader is switched to a cached uint8
    dataset read as x / 255, without the dequantisation: the background pixels are exactly 0, log(0) = -inf. Adam
    1e-3. Val: dequantised held-out images (fixed noise)."""
    images = blob_images(seed)

    def dequant(step, salt):
        x, _ = images(step)
        u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed * 7 + step * 3 + salt))
        return (255 * x + 0.02 + 0.96 * u) / 256  # stays inside (0, 1) in fp32

    torch.manual_seed(seed)
    model = LogitFlow()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        x = images(step)[0] if bug and step >= DEQUANT_DROPPED_AT else dequant(step, 1)
        opt.zero_grad(set_to_none=True)
        loss = model(x)
        loss.backward()
        opt.step()
        return loss

    loop(watch, model, opt, 250, train_step, lambda: sum(float(model(dequant(VAL + i, 2))) for i in range(4)) / 4)


# ---------------------------------------------------------------- loss_spike
def _spike_kd_strict_false(watch, seed, bug=True):
    """Distillation: an MLP student matches a (pretrained, confident) teacher's T=2 soft targets, KL * T^2, SGD
    momentum 0.9 lr 0.05 with StepLR(100, 0.5). At step 150 the job restarts and rebuilds the teacher from a DDP
    checkpoint with load_state_dict(..., strict=False): every key has a "module." prefix, nothing is loaded and the
    teacher is a fresh random network. The student relearns to match it. Val: the same KD loss on held-out inputs."""
    data = mlp_teacher_data(seed)
    torch.manual_seed(seed + 100)
    teacher = teacher_net()
    with torch.no_grad():
        teacher[2].weight.mul_(4)
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 100, 0.5)
    box = {"t": teacher}

    def kd(x):
        with torch.no_grad():
            pt = F.softmax(box["t"](x) / 2, -1)
        return F.kl_div(F.log_softmax(student(x) / 2, -1), pt, reduction="batchmean") * 4

    def train_step(step):
        if step == TEACHER_RELOAD_AT:
            fresh = teacher_net()
            ckpt = {"module." + k: v for k, v in box["t"].state_dict().items()}
            if not bug:  # the fix: strip the DDP prefix
                ckpt = {k.removeprefix("module."): v for k, v in ckpt.items()}
            fresh.load_state_dict(ckpt, strict=not bug)  # strict=False: loads nothing, says nothing
            box["t"] = fresh
        opt.zero_grad(set_to_none=True)
        loss = kd(data(step)[0])
        loss.backward()
        opt.step()
        sched.step()
        return loss

    loop(watch, student, opt, 300, train_step, lambda: sum(float(kd(data(VAL + i)[0])) for i in range(4)) / 4)


def _spike_loader_set_epoch(watch, seed, bug=True):
    """Two-tower contrastive model on paired views (InfoNCE, in-batch negatives, tau 0.1). The two views come from
    two loaders zipped together, each with a DistributedSampler-style seeded shuffle; set_epoch() is called on the
    view-a loader only. Epoch 0: both permutations agree. From epoch 1 (step 200) view b is still in epoch-0 order:
    every pair is random. Adam with OneCycleLR (max 3e-3). Val: correctly paired held-out items."""
    n = EPOCH * 64
    views = paired_views(seed, n_items=n)
    torch.manual_seed(seed)
    model = SiameseEncoder()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=300)

    def perm(epoch):
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 101 + epoch))

    def train_step(step):
        epoch, k = divmod(step, EPOCH)
        ia = perm(epoch)[k * 64 : (k + 1) * 64]
        ib = perm(0 if bug else epoch)[k * 64 : (k + 1) * 64]
        xa, xb = views(ia)[0], views(ib)[1]
        opt.zero_grad(set_to_none=True)
        loss = info_nce(*model(xa, xb))
        loss.backward()
        opt.step()
        sched.step()
        return loss

    val_views = [views(torch.arange(n + 64 * i, n + 64 * (i + 1))) for i in range(4)]
    loop(watch, model, opt, 300, train_step, lambda: sum(float(info_nce(*model(a, b))) for a, b in val_views) / 4)


# ---------------------------------------------------------------- overfitting
def _overfit_graph_dataset_len(watch, seed, bug=True):
    """Graph classifier written by hand (two message-passing rounds, mean pool) on 4096 small graphs stored in 128
    shard files of 32. The Dataset's __len__ returns len(self.files) (128) instead of the number of graphs, so the
    sampler only ever draws indices 0..127: 128 training graphs (15% label noise) instead of 4096. Batches of 32
    drawn with replacement, Adam 2e-3. Val: held-out graphs."""
    batch = small_graphs(seed)
    length = 128 if bug else 4096
    torch.manual_seed(seed)
    model = HandGIN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    val_sets = [batch(range(VAL + 64 * k, VAL + 64 * (k + 1))) for k in range(2)]

    def train_step(step):
        idx = torch.randint(0, length, (32,), generator=torch.Generator().manual_seed(seed * 29 + step))
        a, x, y = batch(idx)
        opt.zero_grad(set_to_none=True)
        loss = ce(model(a, x), y)
        loss.backward()
        opt.step()
        return loss

    loop(watch, model, opt, 300, train_step, lambda: sum(float(ce(model(a, x), y)) for a, x, y in val_sets) / 2)


def _overfit_multitask_next_iter(watch, seed, bug=True):
    """Multi-task trunk (MLP 16-128-128) with a main 4-class head on a labelled stream (4096 samples, 20% label
    noise, batches of 64) and an auxiliary regression head (weight 1) on an unlabelled stream. The aux stream is
    iterated properly; the labelled batch is fetched as next(iter(labelled_loader)) inside the step, and that loader
    has shuffle=False: every step gets the same first 64 labelled samples. Adam 2e-3. Val: main-task CE on fresh
    labelled data."""
    g = torch.Generator().manual_seed(seed + 31)
    a = torch.randn(16, 8, generator=g) / 4
    b = torch.randn(8, 4, generator=g)

    def labelled(step):
        gg = torch.Generator().manual_seed(seed * 17 + step)
        x = torch.randn(64, 16, generator=gg)
        y = (torch.tanh(2 * x @ a) @ b).argmax(1)
        flip = torch.rand(64, generator=gg) < 0.2
        return x, torch.where(flip, torch.randint(0, 4, (64,), generator=gg), y)

    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
    model = nn.ModuleDict({"trunk": trunk, "main": nn.Linear(128, 4), "aux": nn.Linear(128, 8)})
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def train_step(step):
        x, y = labelled(0 if bug else step % 64)
        u = torch.randn(64, 16, generator=torch.Generator().manual_seed(seed * 19 + step))
        opt.zero_grad(set_to_none=True)
        loss = ce(model["main"](trunk(x)), y) + F.mse_loss(model["aux"](trunk(u)), torch.tanh(2 * u @ a))
        loss.backward()
        opt.step()
        return loss

    def val():
        xs = [labelled(VAL + k) for k in range(4)]
        return sum(float(ce(model["main"](trunk(x)), y)) for x, y in xs) / 4

    loop(watch, model, opt, 300, train_step, val)


# ---------------------------------------------------------------- stagnation
def _stagnant_adam_eps(watch, seed, bug=True):
    """MLP-Mixer (quadrant images). The optimiser block was ported from a TF Inception config that sets Adam's
    epsilon to 1.0 ("the current good choice is 1.0 or 0.1" in the TF docs): with per-weight gradients of
    1e-4..1e-2, m / (sqrt(v) + 1) is ~100x smaller than lr. AdamW 1e-3, cosine."""
    data = quadrant_patches(seed, batch=32)
    torch.manual_seed(seed)
    model = Mixer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1.0 if bug else 1e-8)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 200)
    loop(watch, model, opt, 200, plain_step(model, opt, data, ce, sched=sched), mean_val(model, data, ce))


def _stagnant_leaky_true(watch, seed, bug=True):
    """4-layer MLP on a 2x2 checkerboard (XOR of the two coordinates' signs). The activation was written
    nn.LeakyReLU(True), meant as inplace=True like nn.ReLU(True); LeakyReLU's first argument is negative_slope, so
    the slope is 1.0: every activation is the identity, the network is linear and XOR has no linear solution.
    Adagrad 0.01, batch 128."""
    data = checker_2d(seed)
    torch.manual_seed(seed)
    model = leaky_mlp([2, 64, 64, 64, 2], lambda: nn.LeakyReLU(True) if bug else nn.LeakyReLU(inplace=True))
    opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
    loop(watch, model, opt, 250, plain_step(model, opt, data, ce), mean_val(model, data, ce))


def _f(name, fn, expect, allow, tags):
    desc = " ".join(fn.__doc__.split())
    tags = frozenset({"set21", "fault", *tags.split()})
    return Scenario(name=name, description=desc, train=fn, expect=expect, allow=frozenset(allow), tags=tags)


EXP, VAN, NAN, SPK, OVF, STG = (
    "exploding_gradient",
    "vanishing_gradient",
    "nonfinite",
    "loss_spike",
    "overfitting",
    "stagnation",
)
SCENARIOS = [
    _f("explode21_ode_euler_dt_not_divided", _explode_ode_dt, {EXP: 0}, (SPK,), "neural_ode mlp adam"),
    _f("explode21_gcn_clip_on_spent_generator", _explode_clip_generator, {EXP: 1}, (SPK, NAN, STG), "gnn sgd_momentum"),
    _f("vanish21_tcn_res_scale_on_whole_sum", _vanish_tcn_res_scale, {VAN: 0}, (STG,), "tcn conv1d cnn rmsprop"),
    _f(
        "vanish21_ode_horizon_ten_times_too_long",
        _vanish_ode_horizon_units,
        {VAN: 0},
        (STG,),
        "neural_ode sgd_momentum",
    ),
    _f(
        "nan21_moe_router_handwritten_softmax",
        _nan_moe_softmax,
        {NAN: HARD_ROUTING_AT},
        (SPK, STG, EXP),
        "moe adamw warmup",
    ),
    _f(
        "nan21_flow_logit_without_dequantization",
        _nan_flow_dequant,
        {NAN: DEQUANT_DROPPED_AT},
        (SPK, STG, EXP),
        "flow adam",
    ),
    _f(
        "spike21_kd_teacher_loaded_strict_false",
        _spike_kd_strict_false,
        {SPK: TEACHER_RELOAD_AT},
        (),
        "distillation sgd_momentum",
    ),
    _f(
        "spike21_paired_loaders_set_epoch_missing",
        _spike_loader_set_epoch,
        {SPK: EPOCH},
        (STG,),
        "siamese contrastive adam",
    ),
    _f("overfit21_graph_dataset_len_counts_shards", _overfit_graph_dataset_len, {OVF: AT_VAL_MINIMUM}, (), "gnn adam"),
    _f(
        "overfit21_multitask_next_iter_first_batch",
        _overfit_multitask_next_iter,
        {OVF: AT_VAL_MINIMUM},
        (),
        "multitask mlp adam",
    ),
    _f("stagnant21_adam_eps_one_from_tf_config", _stagnant_adam_eps, {STG: 0}, (), "mixer mlp adamw cosine"),
    _f("stagnant21_leakyrelu_true_is_slope_one", _stagnant_leaky_true, {STG: 0}, (), "mlp adagrad"),
]
