"""Twelfth held-out set, pathologies: each run has one labelled symptom at a known onset.

Sequence models, normalised CNNs, autoencoders, mixed precision and lr schedules. Onsets were
measured offline, without gradwatch, with the Recorder of _twelfth_lib (seeds 0, 1, 2); each
scenario documents how.
"""

from __future__ import annotations

import torch
from _common import LSTMClassifier, bn_cnn, fit, fixed_dataset, held_out, quadrant_images, sequence_classification
from _twelfth_lib import Block, LMWrapper, RecurrentLM, SelfAttention, blob_images, gen, lm_loss, markov_lm
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario


class SmallConvAE(nn.Module):
    def __init__(self, ch=16, code=6):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, ch, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(ch, ch, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(ch * 16, code),
        )
        self.dec = nn.Sequential(
            nn.Linear(code, ch * 16),
            nn.ReLU(),
            nn.Unflatten(1, (ch, 4, 4)),
            nn.ConvTranspose2d(ch, ch, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(ch, 1, 4, stride=2, padding=1),
        )

    def forward(self, x):
        return self.dec(self.enc(x))


BLOWS_UP = frozenset({"loss_spike", "nonfinite"})
ALSO_STAGNATES = frozenset({"stagnation"})


# --- exploding: hand-written warmup for a conv autoencoder; the post-warmup branch multiplies by
#     cfg.lr_scale (=100, a percentage meant to be divided by 100): lr 0.02 -> 2.0 from step 100 -----------
# The first update with lr 2.0 is step 100 (its gradient is still normal); measured offline without
# gradwatch: the grad norm first exceeds 3x (and 10x) its steps-10..onset median at step 101/103/101
# for seeds 0/1/2 (0.05 -> 1.3 -> 6 -> 10 -> 30 ..., exponential), loss inf/NaN at 197/199/197.
WARMUP_END = 100
EXPLODE_ONSET = 101


def _warmup_x100(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = SmallConvAE()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    lr_scale = 100  # "percent of peak"

    def factor(step):
        return (step + 1) / WARMUP_END if step < WARMUP_END else 1.0 * lr_scale

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    fit(
        watch,
        model,
        opt,
        steps=200,
        batch_at=blob_images(batch=32, noise=0.05, seed=seed),
        loss_fn=F.mse_loss,
        scheduler=sched,
    )


# --- exploding: OneCycleLR(max_lr=2.0) where 0.02 was meant (a dropped "e-2"), SGD momentum, conv
#     autoencoder (ReLU, no norm, MSE), no clipping: the lr ramps 0.08 -> 2.0 over 90 steps -------------
# Measured offline without gradwatch: the grad norm first exceeds 3x its steps-10..t median at step
# 47/53/70 for seeds 0/1/2 (5x: 68/61/72; lr ~1.2-1.8). Seed 0: turbulent 47-75 (grad 0.3 -> 1-4x,
# loss 0.04 -> 0.4 -> 4.7), then from ~80 monotone exponential growth (grad 0.5 -> 4.5e3 by step 99,
# ~1e7-1e8 by 110-130; loss ~1e14). No NaN within 220 steps. Labelled at the 3x step of seed 0.
ONECYCLE_ONSET = 47


def _onecycle_typo(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = SmallConvAE()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2.0, total_steps=300, pct_start=0.3)
    fit(
        watch,
        model,
        opt,
        steps=220,
        batch_at=blob_images(batch=32, noise=0.05, seed=seed),
        loss_fn=F.mse_loss,
        scheduler=sched,
    )


# --- vanishing: 4-layer tanh RNN stack with every weight drawn N(0, 0.02^2) (a GPT-style init loop) --
# Measured offline (seed 0): at step 0 the bias gradients fall ~6x per layer going down the stack
# (head.bias 0.18, layer-3 2.4e-2, layer-1 6.7e-4, layer-0 1e-4, input layer 1.4e-5) and every weight
# matrix gets ~3e-5 (weight_hh ~5e-6); still ~1e-5..1e-4 at step 249 in the lower layers. The loss
# only moves 1.387 -> ~1.35 in 250 steps (stagnation allowed).
class StackedRNN(nn.Module):
    def __init__(self, dim=4, hidden=64, layers=4, classes=4):
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.rnn = nn.RNN(hidden, hidden, num_layers=layers, nonlinearity="tanh", batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.rnn(self.inp(x))[0][:, -1])


def _stacked_rnn_small_init(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = StackedRNN()
    for p in model.parameters():  # "init like GPT-2": applied to every module
        if p.dim() > 1:
            nn.init.normal_(p, std=0.02)
        else:
            nn.init.zeros_(p)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=sequence_classification(batch=32, length=30, dim=4, seed=seed),
        loss_fn=F.cross_entropy,
    )


# --- vanishing: 10-conv autoencoder with sigmoid after every conv ("outputs in [0, 1]" gone wrong) --
# Measured offline (seed 0): weight-gradient norms fall ~10x per layer from the output: last conv
# 0.41, first conv 1.2e-9 at step 0; 8e-2 vs 6e-8 at step 249. Loss 0.137 -> 0.10 in 250 steps.
def _sigmoid_conv_ae(watch, seed: int) -> None:
    torch.manual_seed(seed)
    ch = 16
    layers = [nn.Conv2d(1, ch, 3, padding=1), nn.Sigmoid()]
    for _ in range(8):
        layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.Sigmoid()]
    layers += [nn.Conv2d(ch, 1, 3, padding=1), nn.Sigmoid()]
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(watch, model, opt, steps=250, batch_at=blob_images(batch=16, noise=0.05, seed=seed), loss_fn=F.mse_loss)


# --- nonfinite: collator switched to left padding; the first (padding) query of a short sequence
#     has every key masked by causal & padding masks -> softmax over all -inf = NaN --------------------
# With right padding (steps < 150) every query sees key 0 (a real token), so nothing is fully masked.
# Measured offline: the loss is finite through step 149 and NaN at exactly step 150 (seeds 0/1/2);
# AdamW then writes NaN into every weight, so every later step is NaN too.
LEFT_PAD_STEP = 150
PAD = 0


class PaddedLM(nn.Module):
    def __init__(self, vocab=17, d=32, length=24):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(length, d))
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab)

    def forward(self, x):
        t = x.shape[1]
        real = x != PAD
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        allowed = causal[None] & real[:, None, :]  # (b, query, key)
        h = self.tok(x) + self.pos[:t]
        for blk in self.blocks:
            h = blk(h, allowed)
        return self.out(self.norm(h))


def _padded_lm_batches(seed: int, batch=32, length=24):
    base = markov_lm(16, 2.5, batch, length, seed)

    def batch_at(step):
        x, y = base(step)
        x, y = x + 1, y + 1  # token ids 1..16, 0 is padding
        lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen(seed, 10**7 + step))
        keep = torch.arange(length)[None] < lengths[:, None]
        if step >= LEFT_PAD_STEP:  # tokenizer(padding_side="left") in the new collator
            keep = keep.flip(1)
            x = torch.stack([torch.roll(r, int(length - n)) for r, n in zip(x, lengths, strict=True)])
            y = torch.stack([torch.roll(r, int(length - n)) for r, n in zip(y, lengths, strict=True)])
        return x.masked_fill(~keep, PAD), y.masked_fill(~keep, PAD)

    return batch_at


def _masked_lm_loss(logits, y):
    mask = (y != PAD).float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return (ce * mask.reshape(-1)).sum() / mask.sum()  # NaN * 0 is still NaN


def _left_padding(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = PaddedLM()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    fit(watch, model, opt, steps=220, batch_at=_padded_lm_batches(seed), loss_fn=_masked_lm_loss)


# --- nonfinite: fp16 autocast, no norm before attention; a shard in raw units (x1000) makes q.k
#     overflow fp16 -> inf scores -> NaN softmax (the same batch is finite in fp32) ---------------------
# Measured offline: loss finite through 169, NaN at exactly 170 (seeds 0/1/2). With the step-169
# weights the x1000 batch gives |q.k/sqrt(d)| up to 0.8-1.8e7 (> 65504): loss 250-480 in fp32, NaN
# under fp16 autocast. Adam then puts NaN in the weights; every later step is NaN.
RAW_SHARD_STEP = 170


class AttnPoolNoNorm(nn.Module):
    def __init__(self, dim=4, d=32, classes=4):
        super().__init__()
        self.embed = nn.Linear(dim, d)
        self.att = SelfAttention(d, heads=4)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x)
        return self.head((h + self.att(h)).mean(1))


def _fp16_raw_shard(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = sequence_classification(batch=32, length=12, dim=4, seed=seed)

    def batch_at(step):
        x, y = base(step)
        if step == RAW_SHARD_STEP:
            x = x * 1000.0  # this shard skipped the standardisation step
        return x, y

    model = AttnPoolNoNorm()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(
        watch,
        model,
        opt,
        steps=240,
        batch_at=batch_at,
        loss_fn=F.cross_entropy,
        autocast_dtype=torch.float16,
    )


# --- loss spike: teacher forcing switched off (ratio 1.0 -> 0.0) at step N: the decoder is fed its
#     own greedy predictions and can no longer see the true previous token ----------------------------
# Measured offline (seed 0): loss 1.25-1.32 over steps 130-149, 4.05 at step 150 (4.0-4.1 for
# 150-153), then it settles at ~2.5 and stays there (2.47 over 250-259): seeds 1/2 the same shape
# (1.65 -> 2.8 -> 2.6; 1.31 -> 2.6 -> 2.48). The loss stays flat and high afterwards (stagnation allowed).
TF_OFF_STEP = 150


def _teacher_forcing_off(watch, seed: int) -> None:
    torch.manual_seed(seed)
    vocab = 16
    data = markov_lm(vocab, 2.5, 32, 20, seed)
    lm = RecurrentLM(vocab, 16, 64, "gru")
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    mon = watch(lm, opt)
    for step in range(260):
        x, y = data(step)
        if step < TF_OFF_STEP:  # teacher forcing
            logits, _ = lm(x)
        else:  # "teacher_forcing_ratio: 0.0" from the inference config
            inp, state, outs = x[:, :1], None, []
            for _t in range(x.shape[1]):
                o, state = lm(inp, state)
                outs.append(o)
                inp = o.argmax(-1).detach()
            logits = torch.cat(outs, 1)
        loss = lm_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- loss spike: "re-initialise the head" loop resets every module with reset_parameters() except
#     convs: BatchNorm affine + running stats and the linear head are reset mid-run ---------------------
# Measured offline (seed 0): loss 0.02-0.5 (mean ~0.12) over steps 160-179, 1.43 at 180, 1.0-1.3 for
# 180-185, back under 0.3 by ~193; seeds 1/2: 10-step mean after the reset 0.69/0.52 vs ~0.1 before.
REINIT_STEP = 180


def _bn_reinit(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = bn_cnn(channels=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)

    def before(step, model, _opt):
        if step == REINIT_STEP:
            for m in model.modules():
                if hasattr(m, "reset_parameters") and not isinstance(m, nn.Conv2d):
                    m.reset_parameters()

    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=quadrant_images(batch=16, noise=1.2, seed=seed),
        loss_fn=F.cross_entropy,
        before_step=before,
    )


# --- overfitting: LSTM LM (hidden 128) memorises a tiny corpus (64 sequences) of a Markov chain -----
# Measured offline: held-out CE is lowest at step 69/59/59 (seeds 0/1/2; 1.73/2.01/1.76), then rises
# steadily to 3.1-3.5 at step 299 while the training CE falls to ~0.18-0.2.
def _lstm_lm_tiny(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = markov_lm(16, 2.0, 16, 24, seed)
    model = LMWrapper(RecurrentLM(16, 32, 128, "lstm"))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=fixed_dataset(data, 4),
        loss_fn=lm_loss,
        val_at=held_out(data),
        val_every=5,
    )


class GRUHead(nn.Module):
    def __init__(self, dim=4, hidden=32, classes=4):
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


# --- overfitting: GRU classifier on 96 sequences with 30% label noise ----------------------------------
# Measured offline: clean held-out CE is lowest at step 49/69/64 (seeds 0/1/2; ~0.68-0.78), then rises
# to 2.0-2.25 by step 299 while the training CE falls to ~0.003 (noisy labels memorised).
def _gru_tiny_noisy(watch, seed: int) -> None:
    torch.manual_seed(seed)
    clean = sequence_classification(batch=32, length=12, dim=4, seed=seed)
    noisy = sequence_classification(batch=32, length=12, dim=4, label_noise=0.3, seed=seed)
    model = GRUHead(hidden=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=fixed_dataset(noisy, 3),
        loss_fn=F.cross_entropy,
        val_at=held_out(clean),
        val_every=5,
    )


# --- stagnation: phase 2 freezes the encoder and rebuilds the optimizer over model.enc (meant .dec) --
# The new Adam holds only frozen parameters: from step 80 nothing is updated, although the decoder
# still gets (normal-sized) gradients. Measured offline, 20-step mean MSE, bug vs the same run with
# the optimizer left alone: seed 0 0.072-0.074 flat from 80 to 280 vs 0.056 -> 0.0096; seed 1 0.040-
# 0.043 flat vs 0.035 -> 0.0082; seed 2 0.031-0.032 flat vs 0.029 -> 0.015.
PHASE2_STEP = 80


def _phase2_wrong_params(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = SmallConvAE()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    data = blob_images(batch=32, noise=0.05, seed=seed)
    mon = watch(model, opt)
    for step in range(280):
        if step == PHASE2_STEP:
            model.enc.requires_grad_(False)
            opt = torch.optim.Adam(model.enc.parameters(), lr=3e-4)  # copy-paste: should be model.dec
        x, y = data(step)
        loss = F.mse_loss(model(x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- stagnation: ReduceLROnPlateau(mode="max") copied from an accuracy config, fed the loss ----------
# A falling loss counts as "no improvement": after 4 bad 20-step epochs the lr is cut 1e-3 -> 1e-5
# (factor 0.01) at the end of step 99, 1e-7 at 179, 1e-9 at 259. Measured offline, 40-step mean CE,
# bug vs the same run without the scheduler: seed 0 0.87, 0.85, 0.87, 0.84, 0.83 (120-320) vs 0.69,
# 0.56, 0.49, 0.42, 0.36; seeds 1/2 flat at 0.94-0.98 / 0.73-0.77 vs falling to 0.41 / 0.43.
PLATEAU_CUT_STEP = 100


def _plateau_mode_max(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = LSTMClassifier(dim=4, hidden=32, classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.01, patience=3)
    fit(
        watch,
        model,
        opt,
        steps=320,
        batch_at=sequence_classification(batch=32, length=12, dim=4, seed=seed),
        loss_fn=F.cross_entropy,
        plateau_scheduler=plateau,
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        "explode12_warmup_lambda_x100_conv_ae",
        f"Conv autoencoder (ReLU, MSE), SGD momentum, hand-written LambdaLR warmup whose post-warmup branch "
        f"multiplies by lr_scale=100 (a percentage): lr 0.02 -> 2.0 from step {WARMUP_END}; grad norm grows "
        "exponentially (0.05 -> 1e18), inf/NaN near step 197.",
        _warmup_x100,
        expect={"exploding_gradient": EXPLODE_ONSET},
        allow=BLOWS_UP,
        tags=frozenset({"cnn", "autoencoder", "momentum", "warmup", "scheduler", "twelfth"}),
    ),
    Scenario(
        "explode12_onecycle_max_lr_typo_conv_ae",
        "Conv autoencoder (ReLU, MSE), SGD momentum, OneCycleLR(max_lr=2.0) where 0.02 was meant: as the lr "
        f"ramps past ~1.2 the run turns unstable (step ~{ONECYCLE_ONSET}), then gradients grow exponentially "
        "to ~1e7-1e8 (loss ~1e14).",
        _onecycle_typo,
        expect={"exploding_gradient": ONECYCLE_ONSET},
        # Measured after the first evaluation: by step ~75 the ReLUs are dead (encoder gradients ~1e-7, exactly
        # 0 from ~89) and only the output bias still gets a gradient: vanishing is present too.
        allow=BLOWS_UP | {"vanishing_gradient"},
        tags=frozenset({"cnn", "autoencoder", "momentum", "onecycle", "scheduler", "twelfth"}),
    ),
    Scenario(
        "vanish12_stacked_tanh_rnn_gpt_init",
        "4-layer tanh nn.RNN stack (+ input projection) with every weight re-initialised N(0, 0.02^2) and "
        "zero biases, SGD momentum, 30-step sequences: gradients shrink ~6x per layer down the stack "
        "(input layer ~1e-5 vs head bias ~0.2); the loss barely moves.",
        _stacked_rnn_small_init,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"rnn", "init", "momentum", "twelfth"}),
    ),
    Scenario(
        "vanish12_sigmoid_conv_autoencoder",
        "10-conv autoencoder (no downsampling) with a sigmoid after every conv, SGD momentum: first-conv "
        "gradients ~1e-9 vs ~0.4 at the last conv; loss 0.137 -> 0.10 in 250 steps.",
        _sigmoid_conv_ae,
        expect={"vanishing_gradient": 0},
        allow=ALSO_STAGNATES,
        tags=frozenset({"cnn", "autoencoder", "sigmoid", "momentum", "twelfth"}),
    ),
    Scenario(
        "nonfinite12_left_padding_causal_mask",
        f"Pre-LN causal transformer LM (hand-written attention, -inf masks for causal & padding); at step "
        f"{LEFT_PAD_STEP} the collator switches to left padding, so the first query of each short sequence "
        "has no allowed key: softmax of all -inf = NaN, and masking the loss (NaN * 0) keeps it NaN.",
        _left_padding,
        expect={"nonfinite": LEFT_PAD_STEP},
        allow=frozenset({"loss_spike", "exploding_gradient"}),
        tags=frozenset({"transformer", "attention", "lm", "padding", "adamw", "twelfth"}),
    ),
    Scenario(
        "nonfinite12_fp16_autocast_raw_units_attention",
        f"Attention-pool sequence classifier without a norm before attention, fp16 autocast, no GradScaler; "
        f"the batch at step {RAW_SHARD_STEP} skipped standardisation (x1000): q.k reaches ~1e7, overflows "
        "fp16 to inf, softmax gives NaN (the same batch is finite in fp32).",
        _fp16_raw_shard,
        expect={"nonfinite": RAW_SHARD_STEP},
        allow=frozenset({"loss_spike", "exploding_gradient"}),
        tags=frozenset({"attention", "fp16", "autocast", "adam", "twelfth"}),
    ),
    Scenario(
        "spike12_teacher_forcing_switched_off",
        f"GRU language model trained with teacher forcing; at step {TF_OFF_STEP} the ratio becomes 0 "
        "(free-running on its own greedy tokens): loss 1.3 -> 4.0, then stuck at ~2.5 (no recovery).",
        _teacher_forcing_off,
        expect={"loss_spike": TF_OFF_STEP},
        allow=ALSO_STAGNATES,
        tags=frozenset({"rnn", "gru", "lm", "seq2seq", "adam", "twelfth"}),
    ),
    Scenario(
        "spike12_bn_and_head_reset_midrun",
        f"BatchNorm CNN, SGD momentum; at step {REINIT_STEP} a 're-init the head' loop calls reset_parameters() "
        "on every non-conv module (BatchNorm affine + running stats, linear head): loss ~0.1 -> 1.4, "
        "recovers over ~15 steps.",
        _bn_reinit,
        expect={"loss_spike": REINIT_STEP},
        tags=frozenset({"cnn", "batchnorm", "momentum", "twelfth"}),
    ),
    Scenario(
        "overfit12_lstm_lm_tiny_corpus",
        "LSTM LM (hidden 128), Adam, 64 fixed training sequences of a Markov chain, held-out CE on fresh "
        "sequences every 5 steps: held-out CE bottoms out ~step 60-70, then rises 1.7 -> 3.1.",
        _lstm_lm_tiny,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"rnn", "lstm", "lm", "adam", "twelfth"}),
    ),
    Scenario(
        "overfit12_gru_tiny_noisy_labels",
        "GRU classifier, Adam, 96 fixed sequences with 30% flipped labels, clean held-out CE every 5 steps: "
        "held-out CE bottoms out ~step 50, then rises 0.78 -> 2.25 while train CE -> 0.003.",
        _gru_tiny_noisy,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"rnn", "gru", "adam", "label-noise", "twelfth"}),
    ),
    Scenario(
        "stagnant12_phase2_optimizer_on_frozen_encoder",
        f"Conv autoencoder, Adam; at step {PHASE2_STEP} phase 2 freezes the encoder and rebuilds Adam over "
        "model.enc.parameters() (meant model.dec): nothing is updated any more, decoder gradients stay "
        "normal, the MSE stops at ~0.072 (the intact run reaches 0.01).",
        _phase2_wrong_params,
        expect={"stagnation": PHASE2_STEP},
        tags=frozenset({"cnn", "autoencoder", "adam", "freezing", "twelfth"}),
    ),
    Scenario(
        "stagnant12_plateau_mode_max_on_loss",
        "LSTM classifier, Adam 1e-3, ReduceLROnPlateau(mode='max', factor=0.01, patience=3) fed the training "
        f"loss: a falling loss is 'no improvement', lr 1e-3 -> 1e-5 from step {PLATEAU_CUT_STEP} (1e-7 at 180): "
        "the loss freezes at ~0.85 (the intact run reaches 0.36).",
        _plateau_mode_max,
        expect={"stagnation": PLATEAU_CUT_STEP},
        tags=frozenset({"rnn", "lstm", "adam", "plateau", "scheduler", "twelfth"}),
    ),
]
