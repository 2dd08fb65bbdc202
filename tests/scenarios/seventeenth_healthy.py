"""Set 17 healthy controls (held-out): runs that look suspicious (plateaus, huge or tiny loss scales, heavy-tailed or
noisy batch losses, schedules to zero, clipping on every step, frozen layers, curricula, small embedding gradients,
early convergence, tiny learning rates) but train correctly."""

# Offline measurements (_seventeenth_measure.py, seeds 0/1/2; "loss" = mean of steps 0-9 -> last 20; "ratio" = max
# loss[t] / median(loss[t-20:t]); no NaN/Inf in any loss, val or gradient of any run):
# gru_xor_plateau_rmsprop: loss 0.69-0.70 flat for ~100/90/135 steps (20-step mean first < 0.6 at 125/114/159), then
#   0.33/0.34/0.34 at the end (10% flipped labels: floor 0.33); val 0.38/0.26/0.29; ratio <= 2.2; grads 0.1 -> 1-2
#   while it learns -> 0.16-0.19. (Without label noise and lr 3e-3 it reached 0.001 and a single batch jumped 1700x;
#   changed.)
# price_regression_in_dollars: MSE 4.6e9/4e9/6.3e9 -> 5.3e8/5.1e8/5.5e8 (noise floor 2.3e8), val min at
#   299/269/259; grad total 2.5e10-2.9e10 early, 4.9e9-6.5e9 at the end; ratio <= 2.5.
# conv1d_autoencoder_volts: MSE 2.5e-9/3.9e-9/6.3e-9 -> 5.3e-11/8.8e-11/1.1e-10, val falling at every check; grad total
#   4e-10..1e-9 early, 7e-11..1.4e-10 at the end, all layers within 3x of each other; ratio <= 1.16. (A first version
#   with biases only learned to output ~0: loss 1e-2 -> 2e-5 >> the signal power; biases removed.)
# huber_student_t_noise (df 3): loss 0.15-0.22 -> 0.065-0.08, val falling to 0.06-0.077; ratio 3.4/3.0/2.9 on
#   single batches with large noise draws; grads 0.1-0.44. (df 2 gave a 20x single batch in seed 2; df 3 kept.)
# gpt_warmup_cosine_to_zero: loss 3.3 -> 1.2/1.1/1.1, val min on the last check (1.1); flat for the last ~150 steps
#   as the lr goes to 0; ratio <= 1.18; grads 0.9 -> 0.37.
# gru_lm_clip_always_active: clip_grad_norm_ returned 0.19-0.52 (median 0.28-0.29) vs max_norm 0.1: clipped on every
#   step; loss 2.8 -> 1.1-1.2 (Markov floor ~1.1), val min at 289/269/299; ratio <= 1.17.
# frozen_backbone_head_only: backbone grads None at every step; head 0.8-1.2 -> 0.38-0.46; loss 1.7 -> 0.47/0.47/0.52,
#   val 1.1 -> 0.34/0.34/0.44; ratio <= 2.5.
# lstm_difficulty_curriculum: loss 1.4 -> 0.32/0.50/0.43; the train loss rises while harder examples come in (seed 1:
#   0.56 at step ~75 -> 0.69 at ~150); val (full distribution) 1.4 -> 0.31/0.55/0.47, min at 269/289/289 (seed 1 one
#   check at 1.6 around step 60); ratio <= 2.2; LSTM grads 0.3-0.6 -> 1.4-1.8 as it learns. (A length curriculum
#   4 -> 8 -> 16 made a 3.6x loss jump at a stage change and val rose 1.3 -> 2.3 early; replaced.)
# embeddingbag_adagrad_zipf: loss 1.4 -> 0.79/0.72/0.78, val 1.4 -> 0.76/0.65/0.72 still falling; embedding grads
#   0.017 vs MLP 0.09-0.18 in the first 20 steps; ratio <= 1.7. (3 keywords per document reached 0.005 and a single
#   batch jumped 40x; made harder.)
# gin_four_graphs_per_step (10% flipped labels): loss 0.65-0.71 -> 0.41/0.46/0.42, val 0.6-0.7 -> 0.23/0.41/0.49
#   (min 0.23/0.32/0.44); per-step ratio 7.3/7.6/8.5 (one confidently wrong graph in four), grads up to 11-16.
#   (2 graphs per step without label noise: ratio 26; changed.)
# stream_converged_floor_noisy_val (30% noise): loss 1.3 -> ~1.0 by step ~80 and flat to 400 (0.95/0.98/1.1 last
#   20); progressive val on 32 fresh examples 0.71-1.4, min at 209/259/369; ratio <= 1.7.
# tiny_lr_raw_counts (lr 2e-8): MSE 6.6e3/1.5e4/1.4e3 -> 150/33/76, val falling at every check; grad total 1e5 -> 1.5e3-
#   2.9e3; ratio <= 1.7.
# Wall time per run 0.1-3.4 s on one thread.

from __future__ import annotations

import torch
from _seventeenth_lib import (
    GIN,
    VAL,
    BagClassifier,
    Conv1dAE,
    DollarRegressor,
    GRULanguageModel,
    RNNReadout,
    TinyGPT,
    bn_cnn1,
    eeg_volts,
    gratings,
    heavy_tailed_regression,
    homophily_graphs,
    house_prices,
    lm_loss,
    margin_curriculum,
    markov_tokens,
    mean_val,
    norm_mlp,
    raw_counts,
    run_loop,
    standard_step,
    tabular_teacher,
    xor_marker_sequences,
    zipf_documents,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario

ce = F.cross_entropy
mse = F.mse_loss


def _xor_plateau(watch, seed):
    # XOR of two markers at the start of an 8-step sequence (10% flipped labels): a long plateau at ln 2 before
    # the GRU finds it.
    data = xor_marker_sequences(seed, length=8, label_noise=0.1)
    torch.manual_seed(seed)
    model = RNNReadout(dim=4, hidden=32, classes=2, cell="gru")
    opt = torch.optim.RMSprop(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=400,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _dollars(watch, seed):
    # MSE in dollars^2 (loss ~1e10, gradients ~1e9): large but correct; Adam is invariant to the scale.
    data = house_prices(seed)
    torch.manual_seed(seed)
    model = DollarRegressor()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: data(VAL + i), mse),
    )


def _eeg_volts(watch, seed):
    # 1-D conv autoencoder on signals in volts (~5e-5): MSE ~1e-9 and tiny gradients, learning fine.
    data = eeg_volts(seed)
    torch.manual_seed(seed)
    model = Conv1dAE()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, eps=1e-12)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: data(VAL + i), mse),
    )


def _heavy_tailed(watch, seed):
    # Student-t (df 3) noise on the targets, Huber loss: per-batch losses are heavy-tailed, training is fine.
    data = heavy_tailed_regression(seed, df=3.0)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)

    def huber(out, y):
        return F.huber_loss(out.squeeze(1), y, delta=1.0)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, huber),
        val_loss=mean_val(model, lambda i: data(VAL + i), huber, n=8),
    )


def _gpt_warmup_cosine(watch, seed):
    # Linear warmup from 0 over 30 steps, cosine decay to exactly 0 at the last step: flat start, flat end.
    data = markov_tokens(seed)
    torch.manual_seed(seed)
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = 360
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=30)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - 30, eta_min=0.0)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[30])

    def train_step(step):
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    run_loop(
        watch,
        model,
        opt,
        steps=steps,
        train_step=train_step,
        val_loss=mean_val(model, lambda i: data(VAL + i), lm_loss),
    )


def _gru_lm_clip(watch, seed):
    # Plain SGD lr 2 with clip_grad_norm_(0.1): the clip is active on every step.
    data = markov_tokens(seed)
    torch.manual_seed(seed)
    model = GRULanguageModel()
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, lm_loss, clip=0.1),
        val_loss=mean_val(model, lambda i: data(VAL + i), lm_loss),
    )


def _frozen_backbone(watch, seed):
    # A CNN pre-trained (unwatched) on high-contrast gratings; the conv backbone is frozen (requires_grad False)
    # and only a fresh head is trained on low-contrast gratings of the same 8 classes.
    pre = gratings(seed, noise=1.0, classes=8)
    torch.manual_seed(seed)
    model = bn_cnn1(classes=8)
    popt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        x, y = pre(10**7 + step)
        popt.zero_grad(set_to_none=True)
        ce(model(x), y).backward()
        popt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    model[-1] = nn.Linear(32, 8)
    data = gratings(seed, noise=1.0, contrast=0.6, classes=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # frozen params have no grad: skipped
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _lstm_curriculum(watch, seed):
    # Difficulty curriculum: batches start from the easiest 50% of candidates (largest teacher margin) and widen
    # linearly to the full distribution at step 150. The training loss rises as harder examples come in.
    data, full = margin_curriculum(seed, start=0.5, full_at=150)
    torch.manual_seed(seed)
    model = RNNReadout(dim=4, hidden=48, classes=4, cell="lstm")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: full(VAL + i), ce),
    )


def _bag_adagrad(watch, seed):
    # EmbeddingBag(2000 x 32, mean) over Zipf text (one class keyword per document, 10% label noise) with
    # Adagrad: each step touches few rows of the table, whose gradient is small next to the MLP's.
    data = zipf_documents(seed)
    torch.manual_seed(seed)
    model = BagClassifier()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _gin_four_graphs(watch, seed):
    # Graph classification with 4 graphs per step (10% flipped labels): per-step losses are very noisy.
    data = homophily_graphs(seed, graphs=4, label_noise=0.1)
    val = homophily_graphs(seed, graphs=32, label_noise=0.1)
    torch.manual_seed(seed)
    model = GIN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=400,
        train_step=standard_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: val(VAL + i), ce, n=2),
    )


def _stream_floor(watch, seed):
    # Fresh data every step, 30% label noise: converges in well under 100 steps and sits at its floor; progressive
    # validation on the next 32 unseen examples is noisy.
    data = tabular_teacher(seed, batch=32, label_noise=0.3)
    torch.manual_seed(seed)
    model = norm_mlp([16, 64, 64, 4], act="silu", norm="layer")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

    def progressive_val(step):
        x, y = data(step + 1)
        return ce(model(x), y)

    run_loop(
        watch,
        model,
        opt,
        steps=400,
        train_step=standard_step(model, opt, data, ce),
        val_loss=progressive_val,
    )


def _tiny_lr_counts(watch, seed):
    # Raw count features (hundreds): lr 2e-8 is the right size for this SGD regression; it learns slowly but steadily.
    data = raw_counts(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=2e-8, momentum=0.9)

    def loss_fn(out, y):
        return mse(out.squeeze(1), y)

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=standard_step(model, opt, data, loss_fn),
        val_loss=mean_val(model, lambda i: data(VAL + i), loss_fn),
    )


def _h(name, desc, fn, arch=(), opt=""):
    return Scenario(name=name, description=desc, train=fn, tags=frozenset({"set17", "healthy", *arch, opt} - {""}))


SCENARIOS = [
    _h(
        "healthy17_gru_xor_plateau_rmsprop",
        "GRU, XOR of two early markers: long plateau at ln 2, then learns.",
        _xor_plateau,
        ("rnn", "gru"),
        "rmsprop",
    ),
    _h(
        "healthy17_price_regression_in_dollars",
        "BN MLP regressing prices in dollars: MSE ~1e10, gradients ~1e9.",
        _dollars,
        ("mlp", "tabular", "batchnorm"),
        "adam",
    ),
    _h(
        "healthy17_conv1d_autoencoder_volts",
        "1-D conv autoencoder on signals in volts (~5e-5): MSE ~1e-9.",
        _eeg_volts,
        ("conv1d", "autoencoder"),
        "adam",
    ),
    _h(
        "healthy17_huber_student_t_noise",
        "MLP regression, Huber loss, Student-t target noise: heavy-tailed batch losses.",
        _heavy_tailed,
        ("mlp", "tabular"),
        "sgd_momentum",
    ),
    _h(
        "healthy17_gpt_warmup_cosine_to_zero",
        "Causal transformer LM, warmup from ~0 and cosine decay to exactly 0.",
        _gpt_warmup_cosine,
        ("transformer", "lm"),
        "adamw",
    ),
    _h(
        "healthy17_gru_lm_clip_always_active",
        "GRU LM, SGD lr 2 with clip 0.1 active on every step.",
        _gru_lm_clip,
        ("rnn", "gru", "lm"),
        "sgd",
    ),
    _h(
        "healthy17_frozen_backbone_head_only",
        "Pre-trained BN CNN with the backbone frozen; only a new head trains.",
        _frozen_backbone,
        ("cnn", "batchnorm", "frozen"),
        "sgd_momentum",
    ),
    _h(
        "healthy17_lstm_difficulty_curriculum",
        "LSTM with an easy-to-hard curriculum (teacher margin), full distribution from step 150.",
        _lstm_curriculum,
        ("rnn", "lstm", "curriculum"),
        "adam",
    ),
    _h(
        "healthy17_embeddingbag_adagrad_zipf",
        "EmbeddingBag text classifier on Zipf tokens, Adagrad: small embedding grads.",
        _bag_adagrad,
        ("embedding", "text"),
        "adagrad",
    ),
    _h(
        "healthy17_gin_four_graphs_per_step",
        "GIN graph classifier, 4 graphs per step: very noisy per-step loss.",
        _gin_four_graphs,
        ("gnn",),
        "adam",
    ),
    _h(
        "healthy17_stream_converged_floor_noisy_val",
        "Fresh-data stream, 30% label noise: converges early, sits at "
        "its floor; progressive validation on 32 examples is noisy.",
        _stream_floor,
        ("mlp", "tabular", "layernorm"),
        "adamw",
    ),
    _h(
        "healthy17_tiny_lr_raw_counts",
        "MLP on raw count features (hundreds), SGD lr 2e-8: slow, steady learning.",
        _tiny_lr_counts,
        ("mlp", "tabular"),
        "sgd_momentum",
    ),
]
