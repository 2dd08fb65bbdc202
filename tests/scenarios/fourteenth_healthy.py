"""Set 14 healthy controls (held-out): legitimately healthy runs that are hard for a monitor.

Measured offline (seeds 0,1,2) with _fourteenth_measure.py; the numbers are below.
"""

# Offline measurements (_fourteenth_measure.py, seeds 0/1/2; "loss" = mean over steps 0-9 | ~25% | ~50% | ~75% | last 20;
# "spike" = max loss[t]/median(loss[t-20:t]); no NaN/Inf in loss or any parameter gradient unless stated):
# preln_resmlp48_warmup_cosine: loss 0.45->0.025 | 0.42->0.011 | 0.79->0.034; val falls to its min at the end
#   (379-399); grad norm 4.6-8 at start -> 0.3-0.5; largest ratio 2.0-2.6 (warmup-phase noise). 12-13 s per run.
# rezero_resmlp60 (lr 4e-4): at step 0 the 240/304 block tensors have exactly-zero grads (gates at 0), none from
#   step ~5 (block weight grads 2e-4..1.7e-3, Adam-normalised); loss 5-step means 1.42, 1.41, 1.41, 1.38, 1.36 (steps
#   0-25), 1.26 at 35-40. loss 1.42->0.125 | 1.40->0.109 | 1.47->0.107; ratio 2.7-4.2 on single batches at loss
#   ~0.1 (grad norm tracks the batch loss, max 7.7-9.2 vs ~2.8 typical late). (lr 1e-3 gave a 10-step turbulent
#   episode, so it was lowered.) ~7 s.
# fixup_rescnn20 (lr 0.002, noise 1.3): loss 1.39->0.16 | 1.39->0.20 | 1.38->0.19; val 1.38->0.31/0.26/0.15;
#   per-batch losses 0.05-0.6 late with grad norm proportional (max 3.3/8.3/9.6 vs ~1.5); no step above 0.9.
#   (lr 0.05 diverged to NaN, lr 0.01 had a real 5.4 spike at step 63, so lowered.) ~8 s.
# linear_regression_to_1e7 (lr 0.02): loss 1.1 -> 2.2e-2 (100) -> 3.8e-4 (200) -> 6e-6 (300) -> 1.4-1.6e-7 (last
#   20), geometric the whole run; grad norm 1.2 -> 4e-4; ratio < 1 everywhere.
# clip_every_step_transformer: clip_grad_norm_ 0.02 returns > 0.02 on every step (recorded total after clip is
#   0.02 at every step); loss 1.33->0.16 | 1.38->0.19 | 1.28->0.14; ratio 1.9-2.8.
# bf16_autocast_cnn: loss 1.1->0.024 | 1.2->0.027 | 1.2->0.019; val at its min on the last check; ratio up to 7.4
#   at step 207 of seed 2 = one batch at ~0.15 when the median is 0.02 (isolated, next step normal).
# fp16_scaler_skips: 18 overflow skips per seed (steps 0-9 while the 2^28 scale backs off, then one every ~30
#   steps after growth); on those steps the param grads hold inf/NaN (scaled) and clip returns inf, which the
#   loop passes as grad_norm; the loss itself is always finite. loss 1.38->0.13 | 1.37->0.14 | 1.38->0.12.
# cyclic_lr_bncnn: loss 1.3->0.33 | 1.35->0.35 | 1.33->0.36 (5% label noise floor ~0.25); isolated batches up to
#   0.88 (ratio 3.7-5.3) from the flipped labels, each followed by normal steps; grad norm 0.9 -> 0.3, max at start.
# sparse_mf_sparseadam: loss 1.5->0.24 | 1.55->0.11 | 1.54->0.27, val to its min at the last check; ratio <= 2.3.
# frozen_random_features: frozen params have grad None throughout; loss 1.37->0.82 | 1.38->0.70 | 1.37->0.73,
#   still falling at the end; val min on the last check.
# gradual_unfreeze: loss 1.39 -> 1.34 (steps 0-100, head only on random features: slow but falling) -> 0.84
#   -> 0.42 -> 0.26-0.32; grad norm rises when layers unfreeze (0.18 -> max 4.9-7.8 at ~312-317, loss not rising
#   there: ratio 1.8-2.5).
# aux_head_annealed: total loss 2.7 -> 0.15 (aux weight 0 from step 200; the aux head's grads are exactly 0 after
#   that and AdamW decays it); ratio 2.4-5.6 on single batches at loss ~0.15.
# sparse_parity_plateau: loss 0.70 -> 0.66/0.65/0.60 at step ~112 (plateau near ln 2), then 0.17/0.12/0.11 at 225,
#   0.013/0.008/0.010 at the end; ratio <= 1.05.
# curriculum_lstm (length 4 + step//20, clip 1.0): loss 1.32->0.31 | 1.33->0.26 | 1.38->0.37; clip returns
#   up to ~1 most of the late steps; ratio 2.4-3.2. (Without clipping and a faster curriculum, grad norm hit
#   363 and loss rose: changed.)
# postln_transformer_invsqrt: loss 1.41->0.44 | 1.46->0.39 | 1.37->0.36 (5% label noise); ratio 2.6-3.2; val
#   1.38->0.31 (min 0.235@339) / 1.43->0.35 / 1.33->0.23.
# constant_target_wd: loss 1.4 -> 0.035 (100) -> 0.013/0.012/0.018 (last 20), still falling; first-layer grad
#   ~0.1 (mean) vs 0.25 at the output.
# batch2_dropout_smoothing (SGD lr 0.01, momentum 0.5): loss (smoothing floor ~0.4) 1.40->1.12 | 1.41->1.09 |
#   1.39->1.05; val 1.40->0.98 (min 0.87) / 1.28->0.84 (min 0.77) / 1.33->0.92 (min 0.90); the data is a fresh
#   stream (no repeats), so no overfitting is possible. (lr 0.02/momentum 0.9 diverged in seed 2: changed.)
# bn_huge_lr: loss 0.9 -> 0.04-0.05; isolated single batches at 0.36-0.47 while the median is ~0.02 (ratio up to
#   21, e.g. seed 1 steps 203, 207), each followed by ~0.01 batches: hard-example noise at a tiny loss, not an
#   instability (grad norm max at step 1).

from __future__ import annotations

import torch
from _common import (
    MeanPoolTransformer,
    bn_cnn,
    fit,
    held_out,
    mlp,
    quadrant_images,
    sequence_classification,
    teacher_classification,
    teacher_regression,
    warmup_cosine_lr,
)
from _fourteenth_lib import (
    EarlyExitMLP,
    FixupCNN,
    FrozenFeatures,
    LSTMForget1,
    MatrixFactorization,
    ResMLP,
    bn_cnn3,
    first_token_sequences,
    inverse_sqrt_lr,
    ratings,
    sparse_parity,
)
from torch import nn

from gradwatch.evaluation.scenario import Scenario

mse = nn.functional.mse_loss
ce = nn.functional.cross_entropy


def _preln_resmlp48(watch, seed):
    data = teacher_regression(dim=16, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = ResMLP("preln", depth=48, dim=16, width=32, hidden=64, out=1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = warmup_cosine_lr(opt, start_factor=0.01, warmup=100, cosine_steps=300)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=mse, val_at=held_out(data), val_every=10, scheduler=sched)


def _rezero_resmlp60(watch, seed):
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = ResMLP("rezero", depth=60, dim=16, width=32, hidden=64, out=4)
    opt = torch.optim.Adam(model.parameters(), lr=4e-4)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce)


def _fixup_rescnn20(watch, seed):
    data = quadrant_images(batch=24, size=8, noise=1.3, seed=seed)
    torch.manual_seed(seed)
    model = FixupCNN(depth=20, ch=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, val_at=held_out(data), val_every=10)


def _linear_regression_to_1e7(watch, seed):
    gen = torch.Generator().manual_seed(seed + 5)
    w = torch.randn(16, 4, generator=gen) / 4

    def data(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(64, 16, generator=g)
        return x, x @ w

    torch.manual_seed(seed)
    model = nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.5)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=mse)


def _clip_every_step_transformer(watch, seed):
    data = sequence_classification(batch=32, length=10, dim=8, seed=seed)
    torch.manual_seed(seed)
    model = MeanPoolTransformer(dim=8, d_model=32, layers=2, out=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, clip=0.02)


def _bf16_autocast_cnn(watch, seed):
    data = quadrant_images(batch=16, size=8, noise=0.8, labels_first=True, seed=seed)
    torch.manual_seed(seed)
    model = bn_cnn(channels=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=data,
        loss_fn=ce,
        autocast_dtype=torch.bfloat16,
        val_at=held_out(data),
        val_every=10,
    )


def _fp16_scaler_skips(watch, seed):
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**28, growth_interval=30)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, scaler=scaler, clip=1.0, autocast_dtype=torch.float16)


def _cyclic_lr_bncnn(watch, seed):
    data = quadrant_images(batch=32, size=8, noise=1.2, label_noise=0.05, seed=seed)
    torch.manual_seed(seed)
    model = bn_cnn(channels=12)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=1e-3, max_lr=0.2, step_size_up=50, mode="triangular2")
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=ce, scheduler=sched)


def _sparse_mf_sparseadam(watch, seed):
    data = ratings(users=300, items=200, rank=4, batch=64, noise=0.1, seed=seed)
    torch.manual_seed(seed)
    model = MatrixFactorization(300, 200, rank=6)
    opt = torch.optim.SparseAdam(list(model.parameters()), lr=0.03)
    fit(watch, model, opt, steps=450, batch_at=data, loss_fn=mse, val_at=held_out(data), val_every=10)


def _frozen_random_features(watch, seed):
    data = quadrant_images(batch=32, size=8, noise=1.0, seed=seed)
    torch.manual_seed(seed)
    model = FrozenFeatures(ch=32)
    opt = torch.optim.Adam(model.head.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce, val_at=held_out(data), val_every=10)


def _gradual_unfreeze(watch, seed):
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 64, 4])
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for lin in linears[:-1]:
        lin.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def unfreeze(step, model, opt):
        # Top-down: layer 2 at step 100, layer 1 at 200, layer 0 at 300.
        for k, at in ((2, 100), (1, 200), (0, 300)):
            if step == at:
                linears[k].requires_grad_(True)

    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=ce, before_step=unfreeze)


def _aux_head_annealed(watch, seed):
    data = teacher_classification(dim=16, classes=4, batch=32, seed=seed)
    torch.manual_seed(seed)
    model = EarlyExitMLP()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    state = {"step": 0}

    def loss_fn(out, y):
        main, aux = out
        w = max(0.0, 1.0 - state["step"] / 200)
        return ce(main, y) + w * ce(aux, y)

    def tick(step, model, opt):
        state["step"] = step

    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=loss_fn, before_step=tick)


def _sparse_parity_plateau(watch, seed):
    data = sparse_parity(n=16, k=3, batch=128, seed=seed)
    torch.manual_seed(seed)
    model = mlp([16, 128, 2])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=450, batch_at=data, loss_fn=ce)


def _curriculum_lstm(watch, seed):
    data = first_token_sequences(dim=4, classes=4, batch=32, length_at=lambda s: 4 + s // 20, seed=seed)
    torch.manual_seed(seed)
    model = LSTMForget1(dim=4, hidden=32, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=ce, clip=1.0)


def _postln_transformer_invsqrt(watch, seed):
    data = sequence_classification(batch=32, length=10, dim=8, label_noise=0.05, seed=seed)
    torch.manual_seed(seed)
    model = MeanPoolTransformer(dim=8, d_model=32, layers=3, out=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.98))
    sched = inverse_sqrt_lr(opt, warmup=150)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=ce, scheduler=sched, val_at=held_out(data), val_every=10)


def _constant_target_wd(watch, seed):
    target = torch.tensor([[0.5, -1.0, 2.0]])

    def data(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return torch.randn(32, 16, generator=g), target.expand(32, 3)

    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    fit(watch, model, opt, steps=400, batch_at=data, loss_fn=mse)


def _batch2_dropout_smoothing(watch, seed):
    data = teacher_classification(dim=16, classes=4, batch=2, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(16, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 4),
    )

    def loss_fn(out, y):
        return ce(out, y, label_smoothing=0.15)

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    fit(watch, model, opt, steps=500, batch_at=data, loss_fn=loss_fn, val_at=held_out(data), val_every=10)


def _bn_huge_lr(watch, seed):
    data = quadrant_images(batch=32, size=8, noise=1.0, seed=seed)
    torch.manual_seed(seed)
    model = bn_cnn3(ch=16)
    convs = [p for n, p in model.named_parameters() if p.dim() == 4]
    rest = [p for n, p in model.named_parameters() if p.dim() != 4]
    opt = torch.optim.SGD(
        [{"params": convs, "lr": 4.0, "weight_decay": 5e-4}, {"params": rest, "lr": 0.05}], momentum=0.9
    )
    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=ce)


ALL = {
    "preln_resmlp48_warmup_cosine": (_preln_resmlp48, "48-block pre-LN residual MLP, AdamW, 100-step warmup + cosine"),
    "rezero_resmlp60": (_rezero_resmlp60, "60-block ReZero residual MLP (no norm, residual gates start at 0), Adam"),
    "fixup_rescnn20": (_fixup_rescnn20, "20-block Fixup residual CNN without normalisation (zero-init branches), SGD"),
    "linear_regression_to_1e7": (
        _linear_regression_to_1e7,
        "realisable linear regression whose loss falls geometrically to ~1e-7 and below",
    ),
    "clip_every_step_transformer": (
        _clip_every_step_transformer,
        "post-LN transformer with clip_grad_norm 0.02, clipping active every step, Adam",
    ),
    "bf16_autocast_cnn": (_bf16_autocast_cnn, "BN CNN under CPU bfloat16 autocast, Adam"),
    "fp16_scaler_skips": (
        _fp16_scaler_skips,
        "fp16 autocast + GradScaler (huge init scale, short growth interval: overflow skips; clip norm is inf on skipped steps)",
    ),
    "cyclic_lr_bncnn": (_cyclic_lr_bncnn, "BN CNN, SGD with triangular2 CyclicLR 1e-3..0.2"),
    "sparse_mf_sparseadam": (
        _sparse_mf_sparseadam,
        "matrix factorisation with sparse embeddings trained by SparseAdam",
    ),
    "frozen_random_features": (_frozen_random_features, "frozen random conv features, only a linear head trains"),
    "gradual_unfreeze": (_gradual_unfreeze, "MLP trained head-first, layers unfrozen top-down at steps 100/200/300"),
    "aux_head_annealed": (
        _aux_head_annealed,
        "early-exit auxiliary head whose loss weight anneals 1 -> 0 by step 200, AdamW",
    ),
    "sparse_parity_plateau": (
        _sparse_parity_plateau,
        "sparse parity (n=16, k=3): loss plateau at ln2, then sudden learning",
    ),
    "curriculum_lstm": (
        _curriculum_lstm,
        "LSTM (forget bias 1) remembering the first token, sequence length grows 4 -> 23, clip 1.0",
    ),
    "postln_transformer_invsqrt": (
        _postln_transformer_invsqrt,
        "3-layer post-LN transformer, 150-step warmup then inverse-sqrt decay",
    ),
    "constant_target_wd": (_constant_target_wd, "MLP learning a constant output with AdamW weight decay 0.1"),
    "batch2_dropout_smoothing": (_batch2_dropout_smoothing, "batch-2 SGD, dropout 0.5 twice, label smoothing 0.15"),
    "bn_huge_lr": (_bn_huge_lr, "BN CNN with SGD lr 4.0 on scale-invariant convs (+wd), 0.05 elsewhere"),
}

SCENARIOS = [
    Scenario(name=f"healthy14_{key}", description=desc, train=fn, tags=frozenset({"set14", "healthy"}))
    for key, (fn, desc) in ALL.items()
]
