"""Set 15 healthy controls (held-out): legitimately unusual runs chosen to hunt false alarms."""

# Offline measurements (_fifteenth_measure.py: a fake watch, no gradwatch; torch.set_num_threads(1); seeds 0/1/2).
# "loss" = mean of steps 0-9 | ~25% | ~50% | ~75% | last 20; "spike" = max loss[t]/median(loss[t-20:t]);
# "gn" = total grad norm (finite, non-None grads) mean of first 10 -> mean of last 20 (max@step); "val" = first check
# -> min@step -> last. No NaN/Inf in any loss or gradient of any healthy run. Every run <= 5.6 s alone on 1 thread.
# onecycle_high_peak_resmlp (max_lr 0.5): loss 1.07|.44|.38|.34|.32 / 1.01|.41|.38|.32|.33 / .94|.46|.34|.33|.32
#   (5% label-noise floor); ratio 2.2-2.4 (seed 1/2 at steps 22-24: the ramp's turbulent phase, loss 0.45 -> 1.42 for
#   one batch then back within 2-3 steps); gn 1.6-1.8 -> 0.28-0.34 (max 2.7-4.6 at 18-26); val 0.64->0.32@299,
#   0.57->0.22@229 (last 0.25), 0.63->0.31@199 (last 0.33): flat-noisy at the end, not rising.
# layerwise_lr_decay_transformer: loss 1.36->0.205 / 1.40->0.31 / 1.28->0.235; ratio 1.8-2.6; gn RISES 1.0-1.2 ->
#   4.5-5.8 (max 12-13 at 201-257) while loss and val fall (val min at 289/289/299, last 0.18/0.24/0.22).
# lamb_batch1024: loss 2.29->0.088 / 2.28->0.090 / 2.27->0.090; ratio <= 1.2; gn 0.21-0.24 -> 0.30-0.33 (max ~1).
# lookahead_adam_lstm: loss 1.37->0.28 / 1.37->0.27 / 1.39->0.27; ratio 1.8-1.9 (the 6-step sync); gn rises 0.2-0.3
#   -> 1.4-2.0 (max 4.2-4.3); val at its min on the last check in every seed (0.23/0.29/0.24).
# cutmix_bn_cnn (noise 2.0, lr 0.01; first tried noise 0.8/lr 0.05: val hit 0.009 at step 19 and then sat at 0.05-0.1,
#   an over-easy task, so made harder): loss 1.37|.69|.82|.82|.78 / 1.36|.81|.76|.82|.74 / 1.39|.82|.76|.61|.83 -- the
#   CutMix mixed-label floor is reached by ~step 80 and stays; ratio 1.7-1.8; val 1.32->0.248@289 (last 0.26),
#   1.35->0.261@149 (last 0.29; checks 150-299 in 0.26-0.31), 1.36->0.271@239 (last 0.30): flat-noisy, no trend.
# focal_label_smoothing_gru: loss 0.76->0.085 / 0.77->0.092 / 0.74->0.096; ratio 2.2-2.6; val min 0.078@299,
#   0.086@269, 0.068@259 (last 0.089/0.076).
# logreg_single_tensor_adagrad (|w_teacher| 4, lr 0.05; first tried |w| 2, lr 0.3: converged by step ~30, loss
#   0.58->0.47 only, so changed): loss 0.61|.40|.35|.32|.34 / .55|.37|.33|.33|.31 / .60|.38|.34|.34|.32 (Bayes 0.29);
#   gn 0.32-0.39 -> 0.18; val falls throughout, min at 299/289/299 (0.33/0.26/0.31).
# unused_branch_grad_none: 8 of 14 parameter tensors (aux_head, image_stem) have .grad None at every step;
#   loss 1.35->0.12 / 1.33->0.14 / 1.34->0.13; ratio 1.9-2.5; val min 0.117@299, 0.105@239, 0.086@289 (last 0.117).
# grad_accum8_cnn (noise 1.5; at noise 0.8 single batches hit ~1e-7 and the ratio reached 1e5-8e5 on ordinary
#   batches, so made harder): loss 1.36->0.21 / 1.38->0.28 / 1.37->0.23, still drifting down; ratio 2.9-3.7 on single
#   batches (e.g. seed 1: 0.08-0.18 around, 0.66 at 232, 0.47, 0.24 after); gn ~0.4-0.5 flat (max 2.5-3.4 at 28-33).
# large_batch_2048_lr_scaled (first written with batch 4096 / lr 1.6: ~13 s per run, halved): loss 0.89->0.023 /
#   0.82->0.023 / 0.94->0.022; ratio 1.3-1.7; gn 1.2-1.6 -> 0.08 (max 1.6-2.8 at steps 5-9 of warmup).
# stochastic_depth_resmlp: 295-297 of 300 steps have some block with .grad None (skipped block); loss 0.53->0.050 /
#   0.32->0.018 / 0.40->0.054; ratio 2.7-3.3 on single batches (seed 0 step 104: 0.173 vs ~0.045, next 0.065);
#   gn 3.6-4.1 -> 0.5-1.1; val 0.23->0.038 (min@229, last 0.038) / 0.12->0.0125@259 / 0.22->0.0375@299.
# tied_autoencoder: loss 0.57->0.136 / 0.56->0.137 / 0.57->0.138; ratio <= 1.4; gn 0.19-0.20 -> 0.053; val min on the
#   last check in every seed.
# gru_delayed_copy_plateau (gap 10, lr 3e-3; gap 12 left seed 2 on the plateau until step ~330 and only reached 1.33,
#   so shortened): 20-step loss means stay 1.78-1.80 until step ~60 (s0) / ~100 (s1) / ~80 (s2), then fall;
#   loss 1.80|1.43|.51|.33|.20 / 1.80|1.76|.75|.38|.24 / 1.80|1.74|1.01|.57|.37; ratio <= 1.7; clip(1.0) active from
#   the learning phase on (recorded norm 1.0); val 1.79 -> 0.187@379 / 0.223@389 / 0.287@399.
# converged_flat_constant_lr: loss 1.35|.35|.36|.38|.39 / 1.37|.38|.41|.35|.39 / 1.37|.45|.37|.30|.42 -- at the
#   10%-label-noise floor from ~step 60 to 399 at constant lr 0.05; ratio 2.8-4.1 on single batches (seed 2 step 316:
#   0.90 among 0.04-0.68); gn 0.26-0.34 -> 0.42-0.44; val 1.31->min 0.505@179 (checks 0.51-0.64 after, last 0.56) /
#   0.292@69 (0.29-0.35 after) / 0.432@249 (0.43-0.51): flat with check-to-check noise, no trend.
# uncertainty_weighted_multitask: loss 0.89|.13|-.14|-.32|-.46 / .86|.15|-.14|-.32|-.46 / .74|.09|-.16|-.34|-.48,
#   first negative at step 102/102/91; largest rise above the trailing 20-step median 0.14 / 0.07 / 0.08 (trailing
#   IQR 0.06 / 0.04 / 0.03); gn rises 0.5 -> 1.1-1.4 (the exp(-s) weights grow); val 0.81 -> -0.48 at the last check.
# dropout_tiny_dataset (192 examples = 6 batches, AdamW wd 0.1; with 128 examples / wd 0.05 seed 0's val crept up
#   0.4345@219 -> 0.447-0.467 at 289-299 while train fell, so enlarged): loss 1.34->0.16 / 1.36->0.15 / 1.38->0.16;
#   ratio 1.6-2.6; val 1.31->0.376@279 (last 0.381) / 1.31->0.430@289 (0.432) / 1.33->0.314@299.
# sum_reduction_adam: loss 8.4e3->284 / 6.8e3->226 / 1.3e4->438; ratio 1.3; gn 2.5e3-4e3 at start (max 5.4e3-8.2e3 at
#   15-17) -> 560-1200; val min at 299 in every seed.
# tiny_units_adam (first tried a plain net on 1e-3 targets: the default init's output ~0.1 dominated (loss 6e-3 ->
#   3e-5, worse than predicting 0); then a zero-init head: first-layer grads 200x below the head's, which is a real
#   depth ratio; settled on a x1e-3 output module): loss 3.8e-7->6.2e-8 / 3.0e-7->3.6e-8 / 5.5e-7->6.7e-8; ratio
#   1.4-1.9; gn 3-5e-7 -> 1.5-2.3e-7, first-layer and last-layer weight grads both ~1e-7 (mean 1.3e-7/1.35e-7 s0);
#   val min on the last check (5.1e-8 / 3.4e-8 / 7.9e-8).

from __future__ import annotations

import math

import torch
from _common import (
    LSTMClassifier,
    MeanPoolTransformer,
    bn_cnn,
    fit,
    fixed_dataset,
    held_out,
    quadrant_images,
    sequence_classification,
    teacher_classification,
    teacher_regression,
)
from _fifteenth_lib import (
    LAMB,
    CopySeq2Seq,
    GRUClassifier,
    OutputScale,
    ResMLP,
    SmallCNN,
    TiedAutoencoder,
    TwoHeadWithUnusedBranch,
    UncertaintyMultiTask,
    binary_logistic,
    delayed_copy,
    loop,
    low_rank_vectors,
    mean_val,
    two_task,
)
from torch import nn

from gradwatch.evaluation.scenario import Scenario

mse = nn.functional.mse_loss
ce = nn.functional.cross_entropy
F = nn.functional


def _onecycle_high_peak(watch, seed):
    # OneCycleLR with a high peak (max_lr 0.5, SGD Nesterov) on a pre-LN residual MLP, 5% label noise.
    data = teacher_classification(dim=16, classes=4, batch=64, label_noise=0.05, seed=seed)
    torch.manual_seed(seed)
    model = ResMLP(dim=16, width=64, hidden=128, depth=4, out=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=300, pct_start=0.3)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, scheduler=sched, val_at=held_out(data), val_every=10)


def _layerwise_lr_decay(watch, seed):
    # Layer-wise lr decay 0.3 (ELECTRA/BEiT fine-tuning style): head 3e-3, top encoder layer 9e-4, ...,
    # embedding 3e-3 * 0.3^4 = 2.4e-5. AdamW.
    data = sequence_classification(batch=32, length=10, dim=8, seed=seed)
    torch.manual_seed(seed)
    model = MeanPoolTransformer(dim=8, d_model=32, layers=3, out=4)
    base, decay = 3e-3, 0.3
    groups = [{"params": model.head.parameters(), "lr": base}]
    for depth_from_top, layer in enumerate(reversed(model.encoder.layers), start=1):
        groups.append({"params": layer.parameters(), "lr": base * decay**depth_from_top})
    groups.append({"params": model.embed.parameters(), "lr": base * decay ** (len(model.encoder.layers) + 1)})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, val_at=held_out(data), val_every=10)


def _lamb_batch1024(watch, seed):
    # Hand-written LAMB (trust ratio per tensor), batch 1024, 10 classes, linear warmup 20 then poly decay.
    data = teacher_classification(dim=32, classes=10, batch=1024, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10))
    decayed = [p for p in model.parameters() if p.dim() > 1]
    other = [p for p in model.parameters() if p.dim() <= 1]
    opt = LAMB([{"params": decayed, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}], lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 20, (1 - s / 250) ** 2))
    fit(watch, model, opt, steps=250, batch_at=data, loss_fn=ce, scheduler=sched)


def _lookahead_adam_lstm(watch, seed):
    # Lookahead (k=6, alpha=0.5) around Adam: every 6th step the fast weights are pulled half-way back to the
    # slow weights, a small periodic loss bump by construction.
    data = sequence_classification(batch=32, length=12, dim=4, seed=seed)
    val_at = held_out(data)
    torch.manual_seed(seed)
    model = LSTMClassifier(dim=4, hidden=32, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    slow = [p.detach().clone() for p in model.parameters()]

    def train_step(step):
        x, y = data(step)
        loss = ce(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sync(step):
        if step % 6 == 5:
            with torch.no_grad():
                for s, p in zip(slow, model.parameters(), strict=False):
                    s.add_(p - s, alpha=0.5)
                    p.copy_(s)

    loop(watch, model, opt, steps=300, train_step=train_step, after_step=sync, val=lambda: mean_val(model, val_at, ce))


def _cutmix_bn_cnn(watch, seed):
    # CutMix (Beta(1,1) box area) on 12x12 quadrant images; loss = lam*CE(y_a) + (1-lam)*CE(y_b), so the train
    # loss floors well above 0 and is noisy; val on clean held-out images.
    data = quadrant_images(batch=32, size=12, noise=2.0, seed=seed)
    val_at = held_out(data)
    gen = torch.Generator().manual_seed(seed + 101)
    torch.manual_seed(seed)
    model = bn_cnn(channels=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train_step(step):
        x, y = data(step)
        lam = float(torch.rand((), generator=gen))
        perm = torch.randperm(len(x), generator=gen)
        side = int(round(12 * math.sqrt(1 - lam)))
        r, c = (int(v) for v in torch.randint(0, 12 - side + 1, (2,), generator=gen))
        x = x.clone()
        x[:, :, r : r + side, c : c + side] = x[perm, :, r : r + side, c : c + side]
        lam = 1 - side * side / 144
        out = model(x)
        loss = lam * ce(out, y) + (1 - lam) * ce(out, y[perm])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    loop(watch, model, opt, steps=300, train_step=train_step, val=lambda: mean_val(model, val_at, ce))


def _focal_smoothing_gru(watch, seed):
    # Focal loss (gamma 2) on label-smoothed (0.1) targets, GRU classifier, Adam: a loss that is small and
    # flattens early by construction (focal down-weights the easy examples).
    data = sequence_classification(batch=32, length=12, dim=4, seed=seed)
    val_at = held_out(data)
    torch.manual_seed(seed)
    model = GRUClassifier(dim=4, hidden=32, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def focal_ls(out, y):
        logp = F.log_softmax(out, dim=1)
        target = torch.full_like(logp, 0.1 / 4)
        target.scatter_(1, y[:, None], 0.9 + 0.1 / 4)
        pt = logp.gather(1, y[:, None]).exp().squeeze(1)
        return ((1 - pt) ** 2 * -(target * logp).sum(dim=1)).mean()

    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=focal_ls, val_at=val_at, val_every=10)


def _logreg_single_tensor_adagrad(watch, seed):
    # Logistic regression with ONE parameter tensor (Linear(20, 1, bias=False)); Adagrad lr 0.05 whose effective
    # step shrinks like 1/sqrt(sum g^2). Bernoulli labels: the loss floor (Bayes) is ~0.29, not 0.
    data = binary_logistic(dim=20, batch=64, seed=seed)
    torch.manual_seed(seed)
    model = nn.Linear(20, 1, bias=False)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=data,
        loss_fn=F.binary_cross_entropy_with_logits,
        val_at=held_out(data),
        val_every=10,
    )


def _unused_branch_grad_none(watch, seed):
    # A multi-task model of which only the classification path runs: an aux regression head and a conv stem for
    # a second modality are registered (requires_grad, in Adam) but never used, so their .grad stays None.
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = TwoHeadWithUnusedBranch(dim=16, width=64, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, val_at=held_out(data), val_every=10)


def _grad_accum8_cnn(watch, seed):
    # 8 micro-batches of 4 images accumulated per optimizer step (effective batch 32), CNN without norm, SGD.
    data = quadrant_images(batch=4, size=8, noise=1.5, seed=seed)
    torch.manual_seed(seed)
    model = SmallCNN(ch=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=250, batch_at=data, loss_fn=ce, accumulate=8)


def _large_batch_lr_scaled(watch, seed):
    # Batch 2048 with the linear-scaling rule (0.1 x 2048/256 = 0.8) behind a 30-step warmup, then cosine;
    # LayerNorm MLP, SGD momentum.
    data = teacher_classification(dim=16, classes=4, batch=2048, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(16, 128),
        nn.LayerNorm(128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.LayerNorm(128),
        nn.ReLU(),
        nn.Linear(128, 4),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.8, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / 30 if s < 30 else 0.5 * (1 + math.cos(math.pi * (s - 30) / 170))
    )
    fit(watch, model, opt, steps=200, batch_at=data, loss_fn=ce, scheduler=sched)


def _stochastic_depth(watch, seed):
    # 12-block pre-LN residual MLP with stochastic depth (whole-batch block drop, p up to 0.5): on each step a
    # different subset of blocks is skipped and gets no gradient (.grad None that step); AdamW.
    data = teacher_regression(dim=16, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = ResMLP(dim=16, width=32, hidden=64, depth=12, out=1, drop_max=0.5, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=mse, val_at=held_out(data), val_every=10)


def _tied_autoencoder(watch, seed):
    # Autoencoder whose decoder is the encoder's transpose (one weight gets gradient from both uses), Adam.
    data = low_rank_vectors(dim=32, rank=6, batch=64, noise=0.05, seed=seed)
    torch.manual_seed(seed)
    model = TiedAutoencoder(dim=32, code=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=mse, val_at=held_out(data), val_every=10)


def _gru_delayed_copy(watch, seed):
    # GRU encoder-decoder (teacher forcing) copying 5 symbols (vocab 6) shown before a 10-step blank gap: the loss
    # sits at ~ln 6 until the encoder learns to hold the symbols, then falls (delayed learning, healthy).
    data = delayed_copy(length=5, vocab=6, gap=10, batch=32, seed=seed)
    val_at = held_out(data)
    torch.manual_seed(seed)
    model = CopySeq2Seq(vocab=6, hidden=64, emb=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def seq_ce(out, y):
        return ce(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def train_step(step):
        (src, dec_in), y = data(step)
        loss = seq_ce(model(src, dec_in), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    def val():
        return sum(float(seq_ce(model(*val_at(i)[0]), val_at(i)[1])) for i in range(4)) / 4

    loop(watch, model, opt, steps=400, train_step=train_step, val=val)


def _converged_flat_constant_lr(watch, seed):
    # Easy images + 10% label noise, SGD momentum at a CONSTANT lr: converged to the label-noise floor by
    # ~step 60-80, then ~300 steps flat at a good value (converged, not stagnant).
    data = quadrant_images(batch=32, size=8, noise=0.5, label_noise=0.1, seed=seed)
    torch.manual_seed(seed)
    model = SmallCNN(ch=12)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=ce, val_at=held_out(data), val_every=10)


def _uncertainty_weighted_multitask(watch, seed):
    # Two tasks weighted by learned homoscedastic uncertainty (Kendall et al.): the total loss crosses zero and
    # ends negative as the log-variances follow the shrinking task losses; Adam.
    data = two_task(dim=16, classes=4, batch=64, noise=0.05, seed=seed)
    val_at = held_out(data)
    torch.manual_seed(seed)
    model = UncertaintyMultiTask(dim=16, width=64, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def train_step(step):
        x, (y_reg, y_cls) = data(step)
        loss = model.loss(model(x), y_reg, y_cls)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def val():
        return sum(float(model.loss(model(x), *y)) for x, y in (val_at(i) for i in range(4))) / 4

    loop(watch, model, opt, steps=300, train_step=train_step, val=val)


def _dropout_tiny_dataset(watch, seed):
    # 192 clean training examples (6 batches cycled), wide MLP with dropout 0.5 and AdamW wd 0.1: train loss noisy,
    # held-out CE (128 fresh examples) noisy but levelling off, not rising.
    stream = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    data = fixed_dataset(stream, 6)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(16, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 4),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, val_at=held_out(stream), val_every=10)


def _sum_reduction_adam(watch, seed):
    # MSE with reduction='sum' over batch 256 on targets in raw units (x10): the loss starts ~1e4 and gradient
    # norms are in the thousands, but Adam is invariant to the loss scale, so training is normal.
    data = teacher_regression(dim=16, batch=256, scale=10.0, noise=0.5, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_fn(out, y):
        return F.mse_loss(out, y, reduction="sum")

    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=loss_fn, val_at=held_out(data), val_every=10)


def _tiny_units_adam(watch, seed):
    # Targets in units of 1e-3 (e.g. daily returns) and a model whose last module rescales its output by 1e-3
    # (target normalisation folded into the model): loss ~3e-7 -> ~6e-8 and every gradient ~1e-7, uniformly across
    # layers (the unit-scale run's curve x1e-6). Adam with the default eps=1e-8, which at this gradient scale damps
    # the first ~100 steps a little; cosine lr to 0.
    data = teacher_regression(dim=16, batch=64, scale=1e-3, noise=1e-4, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1), OutputScale(1e-3)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=mse, val_at=held_out(data), val_every=10, scheduler=sched)


ALL = {
    "onecycle_high_peak_resmlp": (
        _onecycle_high_peak,
        "pre-LN residual MLP, SGD Nesterov, OneCycleLR max_lr 0.5, 5% label noise",
    ),
    "layerwise_lr_decay_transformer": (
        _layerwise_lr_decay,
        "3-layer transformer, AdamW with layer-wise lr decay 0.3 (embedding lr 2.4e-5, head 3e-3)",
    ),
    "lamb_batch1024": (_lamb_batch1024, "hand-written LAMB, batch 1024, 10 classes, warmup + poly decay"),
    "lookahead_adam_lstm": (_lookahead_adam_lstm, "LSTM, Lookahead(k=6, alpha=0.5) around Adam"),
    "cutmix_bn_cnn": (_cutmix_bn_cnn, "BN CNN with CutMix (mixed-label loss), SGD momentum + wd"),
    "focal_label_smoothing_gru": (
        _focal_smoothing_gru,
        "GRU classifier, focal loss (gamma 2) on label-smoothed targets, Adam",
    ),
    "logreg_single_tensor_adagrad": (
        _logreg_single_tensor_adagrad,
        "logistic regression with a single weight tensor (no bias), Adagrad, Bernoulli labels",
    ),
    "unused_branch_grad_none": (
        _unused_branch_grad_none,
        "multi-task model with an unused aux head and conv stem (requires_grad, in optimizer, grad None)",
    ),
    "grad_accum8_cnn": (_grad_accum8_cnn, "CNN without norm, 8 micro-batches of 4 accumulated per step, SGD momentum"),
    "large_batch_2048_lr_scaled": (
        _large_batch_lr_scaled,
        "batch 2048, linear-scaled lr 0.8 with 30-step warmup + cosine, LayerNorm MLP, SGD momentum",
    ),
    "stochastic_depth_resmlp": (
        _stochastic_depth,
        "12-block residual MLP with stochastic depth (whole blocks skipped per step), AdamW",
    ),
    "tied_autoencoder": (_tied_autoencoder, "autoencoder with decoder = encoder transpose on low-rank data, Adam"),
    "gru_delayed_copy_plateau": (
        _gru_delayed_copy,
        "GRU encoder-decoder copying 5 symbols across a 10-step gap: long plateau at ln 6, then learns",
    ),
    "converged_flat_constant_lr": (
        _converged_flat_constant_lr,
        "CNN at constant SGD lr reaches the 10%-label-noise floor by ~step 80 and stays flat",
    ),
    "uncertainty_weighted_multitask": (
        _uncertainty_weighted_multitask,
        "regression + classification weighted by learned log-variances (Kendall): total loss goes negative, Adam",
    ),
    "dropout_tiny_dataset": (
        _dropout_tiny_dataset,
        "192 clean examples, dropout 0.5 MLP, AdamW: noisy train and held-out loss, held-out not rising",
    ),
    "sum_reduction_adam": (_sum_reduction_adam, "MSE reduction='sum' on raw-unit targets, Adam: gradient norms ~1e3"),
    "tiny_units_adam": (
        _tiny_units_adam,
        "regression on targets of scale 1e-3 with a x1e-3 output layer, Adam: loss ~1e-7, all gradients ~1e-7",
    ),
}

SCENARIOS = [
    Scenario(name=f"healthy15_{key}", description=desc, train=fn, tags=frozenset({"set15", "healthy"}))
    for key, (fn, desc) in ALL.items()
]
