"""Twelfth held-out set, healthy controls: sequence models, normalised CNNs, autoencoders, mixed
precision and realistic learning-rate schedules that should raise nothing."""

from __future__ import annotations

import torch
from _common import (
    LSTMClassifier,
    MeanPoolTransformer,
    bn_cnn,
    fit,
    held_out,
    quadrant_images,
    sequence_classification,
    warmup_cosine_lr,
)
from _twelfth_lib import (
    CausalTransformerLM,
    LMWrapper,
    RecurrentLM,
    blob_images,
    gen,
    lm_loss,
    markov_chain,
    markov_lm,
    sample_chain,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


# --- LSTM language model, truncated BPTT over a token stream, SGD lr 2 with clip 0.5 (PTB recipe) --
def _lstm_tbptt(watch, seed: int) -> None:
    torch.manual_seed(seed)
    vocab, bptt, rows = 16, 20, 16
    trans = markov_chain(vocab, 2.5, seed)
    steps = 300
    stream = sample_chain(trans, rows, steps * bptt + 1, gen(seed, 0))  # one long stream per batch row
    model = RecurrentLM(vocab, 16, 64, "lstm")
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    mon = watch(model, opt)
    state = None
    for step in range(steps):
        x = stream[:, step * bptt : (step + 1) * bptt]
        y = stream[:, step * bptt + 1 : (step + 1) * bptt + 1]
        if state is not None:
            state = tuple(s.detach() for s in state)  # truncate BPTT at the chunk boundary
        logits, state = model(x, state)
        loss = lm_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        mon.step(loss.detach(), grad_norm=norm)


# --- GRU classifier over 100-step sequences, Adam, clip 1.0 (the norm is passed) -----------------
class GRUHead(nn.Module):
    def __init__(self, dim=4, hidden=32, classes=4):
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def _gru_long(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = sequence_classification(batch=32, length=100, dim=4, seed=seed)
    model = GRUHead()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=250, batch_at=data, loss_fn=F.cross_entropy, clip=1.0)


# --- post-LN causal transformer LM, AdamW, 40-step linear warmup then cosine ------------------------
def _postln_lm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = CausalTransformerLM(vocab=16, d=32, layers=2, length=24, norm_first=False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = warmup_cosine_lr(opt, start_factor=0.02, warmup=40, cosine_steps=260)
    fit(watch, model, opt, steps=300, batch_at=markov_lm(16, 2.5, 32, 24, seed), loss_fn=lm_loss, scheduler=sched)


# --- BatchNorm CNN on batches of 4, SGD momentum, eval-mode validation every 20 steps -------------
def _bn_batch4(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = quadrant_images(batch=4, noise=2.0, seed=seed)
    model = bn_cnn(channels=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=data,
        loss_fn=F.cross_entropy,
        val_at=held_out(quadrant_images(batch=32, noise=2.0, seed=seed)),
        val_every=20,
    )


# --- convolutional autoencoder whose reconstruction error becomes tiny -----------------------------
class ConvAE(nn.Module):
    def __init__(self, ch=16, code=8, act=nn.ReLU):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, ch, 3, stride=2, padding=1),  # 16 -> 8
            act(),
            nn.Conv2d(ch, ch, 3, stride=2, padding=1),  # 8 -> 4
            act(),
            nn.Flatten(),
            nn.Linear(ch * 16, code),
        )
        self.dec = nn.Sequential(
            nn.Linear(code, ch * 16),
            act(),
            nn.Unflatten(1, (ch, 4, 4)),
            nn.ConvTranspose2d(ch, ch, 4, stride=2, padding=1),  # 4 -> 8
            act(),
            nn.ConvTranspose2d(ch, 1, 4, stride=2, padding=1),  # 8 -> 16
        )

    def forward(self, x):
        return self.dec(self.enc(x))


def _conv_ae_tiny(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = ConvAE()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=150, gamma=0.3)
    fit(watch, model, opt, steps=350, batch_at=blob_images(noise=0.0, seed=seed), loss_fn=F.mse_loss, scheduler=sched)


# --- bf16 autocast GroupNorm CNN with SGD + OneCycleLR ----------------------------------------------
def _bf16_gn_onecycle(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.GroupNorm(8, 32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 4),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=300, pct_start=0.3)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=quadrant_images(batch=16, noise=1.6, seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
        autocast_dtype=torch.bfloat16,
    )


# --- fp16 autocast transformer with GradScaler(init 2**32): the scaler skips the first steps ------
def _fp16_scaler_transformer(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = MeanPoolTransformer(dim=4, d_model=32, layers=2, out=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = warmup_cosine_lr(opt, start_factor=0.1, warmup=30, cosine_steps=270)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**32, growth_interval=100)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=sequence_classification(batch=32, length=12, dim=4, seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
        scaler=scaler,
        autocast_dtype=torch.float16,
    )


# --- LSTM classifier on noisy labels with ReduceLROnPlateau cutting the lr -------------------------
def _lstm_plateau(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LSTMClassifier(dim=4, hidden=32, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.3, patience=1, threshold=0.02)
    fit(
        watch,
        model,
        opt,
        steps=400,
        batch_at=sequence_classification(batch=32, length=12, dim=4, label_noise=0.25, seed=seed),
        loss_fn=F.cross_entropy,
        plateau_scheduler=plateau,
    )


# --- GRU LM, SGD momentum, step decay x0.1 at 150 and 250: the loss drops abruptly ----------------
def _gru_step_decay(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LMWrapper(RecurrentLM(16, 16, 64, "gru"))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[150, 250], gamma=0.1)
    fit(
        watch,
        model,
        opt,
        steps=320,
        batch_at=markov_lm(16, 2.5, 16, 20, seed),
        loss_fn=lm_loss,
        scheduler=sched,
        clip=5.0,
    )


# --- GRU that must recall the first token after 20 distractors: a long plateau, then it learns ----
def _recall_first(seed: int, batch: int = 32, length: int = 12, vocab: int = 8):
    def batch_at(step: int):
        g = gen(seed, step)
        seq = torch.randint(1, vocab, (batch, length), generator=g)
        return seq, seq[:, 0] - 1

    return batch_at


class RecallGRU(nn.Module):
    def __init__(self, vocab=8, hidden=48):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.gru = nn.GRU(16, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab - 1)

    def forward(self, x):
        return self.head(self.gru(self.emb(x))[0][:, -1])


def _recall_plateau(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = RecallGRU()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=400, batch_at=_recall_first(seed), loss_fn=F.cross_entropy)


# --- LSTM sequence autoencoder on noisy sine waves (reconstruct the sequence from the last state) --
class LSTMAutoencoder(nn.Module):
    def __init__(self, hidden=32, length=30):
        super().__init__()
        self.length = length
        self.enc = nn.LSTM(1, hidden, batch_first=True)
        self.dec = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        _, (h, _) = self.enc(x)
        z = h[-1][:, None].expand(-1, self.length, -1)
        return self.out(self.dec(z)[0])


def _sine_batches(seed: int, batch: int = 32, length: int = 30):
    t = torch.linspace(0, 1, length)

    def batch_at(step: int):
        g = gen(seed, step)
        f = 1.0 + 2.0 * torch.rand(batch, 1, generator=g)
        ph = 6.28 * torch.rand(batch, 1, generator=g)
        a = 0.5 + torch.rand(batch, 1, generator=g)
        x = (a * torch.sin(6.28 * f * t + ph) + 0.05 * torch.randn(batch, length, generator=g))[..., None]
        return x, x

    return batch_at


def _lstm_ae(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LSTMAutoencoder()
    opt = torch.optim.RMSprop(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=_sine_batches(seed), loss_fn=F.mse_loss, clip=1.0)


# --- pre-LN transformer LM, gradient accumulation x4, cosine decay to exactly 0 at the end --------
def _preln_accum(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = CausalTransformerLM(vocab=16, d=32, layers=2, length=24, norm_first=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200, eta_min=0.0)
    fit(
        watch,
        model,
        opt,
        steps=200,
        batch_at=markov_lm(16, 2.0, 8, 24, seed),
        loss_fn=lm_loss,
        scheduler=sched,
        accumulate=4,
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        "healthy12_lstm_lm_tbptt_sgd_clip",
        "LSTM language model over a Markov-chain token stream, truncated BPTT (20-token chunks, state carried and "
        "detached), plain SGD lr 2.0 with clip_grad_norm_(0.5) every step (norm passed; clipping is constant).",
        _lstm_tbptt,
        tags=frozenset({"rnn", "lstm", "lm", "sgd", "clipping", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_gru_100_steps_adam_clip",
        "GRU classifier over 100-step sequences (class from the time-sum), Adam 3e-3, clip 1.0 (norm passed).",
        _gru_long,
        tags=frozenset({"rnn", "gru", "adam", "clipping", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_postln_transformer_lm_warmup_cosine",
        "Post-LN 2-layer causal transformer LM on a Markov chain, AdamW 2e-3, 40-step linear warmup from 2% then cosine.",
        _postln_lm,
        tags=frozenset({"transformer", "attention", "lm", "adamw", "warmup", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_bn_cnn_batch4_eval_val",
        "BatchNorm CNN trained on batches of 4 of very noisy images (noisy batch statistics and losses), SGD momentum + wd, validated in eval mode "
        "(running stats) every 20 steps.",
        _bn_batch4,
        tags=frozenset({"cnn", "batchnorm", "momentum", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_conv_ae_tiny_loss_step_decay",
        "Conv autoencoder (stride-2 convs, 8-d code, transposed-conv decoder) on noiseless 4-blob images, Adam with "
        "StepLR x0.3 at 150/300: the MSE falls ~250x (0.13 -> 5e-4) and the gradient norm ~80x with it.",
        _conv_ae_tiny,
        tags=frozenset({"cnn", "autoencoder", "adam", "step-decay", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_bf16_groupnorm_cnn_onecycle",
        "GroupNorm CNN under bf16 autocast on CPU, SGD Nesterov with OneCycleLR (max 0.1) on noisy quadrant images.",
        _bf16_gn_onecycle,
        tags=frozenset({"cnn", "groupnorm", "bf16", "onecycle", "momentum", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_fp16_gradscaler_transformer",
        "Mean-pool transformer under fp16 autocast with GradScaler(init_scale=2**32), AdamW + warmup-cosine: the "
        "first steps overflow (inf grads), the scaler skips them and halves the scale, then it trains normally.",
        _fp16_scaler_transformer,
        tags=frozenset({"transformer", "attention", "fp16", "gradscaler", "adamw", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_lstm_reduce_on_plateau",
        "LSTM classifier, 25% label noise, Adam 3e-3 with ReduceLROnPlateau(factor 0.3, patience 1) per 20-step "
        "epoch: the loss reaches its noise floor and the lr is cut several times (converged, not stuck).",
        _lstm_plateau,
        tags=frozenset({"rnn", "lstm", "adam", "plateau", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_gru_lm_multistep_decay",
        "GRU LM, SGD momentum lr 0.5 (loose clip 5), MultiStepLR x0.1 at 150 and 250: the loss drops abruptly "
        "at each decay and is flat in between.",
        _gru_step_decay,
        tags=frozenset({"rnn", "gru", "lm", "momentum", "step-decay", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_gru_recall_plateau_then_learns",
        "GRU must output the first of 12 tokens (7 classes): the loss sits at ln 7 for a while, then falls once "
        "the memory forms.",
        _recall_plateau,
        # Measured after the first evaluation: with seed 2 the loss jumps 0.195 -> 1.205 at step 364 with the
        # gradient norm at 8.0 against 0.32 before (a GRU instability that recovers within 3 steps): a real
        # loss spike, so reporting one is allowed.
        allow=frozenset({"loss_spike"}),
        tags=frozenset({"rnn", "gru", "adam", "plateau", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_lstm_sine_autoencoder_rmsprop",
        "LSTM encoder-decoder autoencoder reconstructing noisy 30-step sine waves from the last hidden state, "
        "RMSprop 2e-3, clip 1.0.",
        _lstm_ae,
        tags=frozenset({"rnn", "lstm", "autoencoder", "rmsprop", "healthy", "twelfth"}),
    ),
    Scenario(
        "healthy12_preln_lm_accum4_cosine_to_zero",
        "Pre-LN causal transformer LM, 4 micro-batches of 8 accumulated per step, AdamW 3e-3 with cosine decay "
        "to exactly 0 at the last step (the tail barely moves).",
        _preln_accum,
        tags=frozenset({"transformer", "attention", "lm", "adamw", "accumulation", "healthy", "twelfth"}),
    ),
]
