"""Set 18 faults (held-out): shipped bugs in a 1-D U-Net denoiser, a mixture of experts, quantisation-aware
training, a deep 1-D CNN, a tabular regressor, knowledge distillation, a GRU seq2seq, a ViT, a weight-tied LM and a
contrastive (InfoNCE) encoder. Onsets from offline measurement (`_measure.py eighteenth`)."""

# Offline measurements (`_measure.py eighteenth`: a stand-in watch() recording, after every optimizer step, the loss,
# the val loss, every parameter's grad norm grouped by module, the relative update size per module and any NaN/Inf
# in loss, grads or weights; seeds 0/1/2). "ratio" = max loss[t] / median(loss[t-20:t]); "twin" = the same run
# without the bug (scratch scripts, not shipped). Onset = first optimizer step at which the symptom is present.
#
# explode18_unet1d_sum_loss_full_length: grad total 5.0/6.6/16 at 149 -> 32/45/100 at 150 (the 8x longer signals)
#   -> 220/160/680 at 151 -> 1.9e3/650/2.1e3 at 152 (LeakyReLU U-Net, SGD momentum); loss 1.2-1.6 -> 8.2-8.6 at 150
#   -> 150-350 at 152; then the net sits at loss ~64-86 with bursts (grads 30-700) and re-explodes: grads 6.3e7 /
#   5.5e6 / 8.4e8, NaN loss+grads+weights from 175/265/186 to the end. Val min 0.037@149 / 0.038@139 / 0.033@139.
#   Seed 1 sits flat at loss ~64 for steps 160-260 -> stagnation allowed, with loss_spike and nonfinite. (ReLU
#   version: the burst killed every ReLU and the run never went NaN; a GELU version with 4x longer signals only
#   spiked and recovered; LeakyReLU x8 kept.)
# explode18_moe_accum_loss_not_divided: grad total 1.0/1.3/1.3 at 149 -> 4.7/5.3/4.8 at 150 -> 30/29/23 ->
#   53/29/46 -> 210/960/76 -> 3e4/1.5e5/5.6e3 -> 4.8e8/4e7/8e6 -> 2.7e18/1.3e12/8.5e11 at 156; NaN loss from
#   157/158/157 (grads 157) to the end. Logged loss (mean of micro-batches) 0.84/0.56/0.69 at 150, 3.7/3.8/2.8 at 151.
#   (With 4-way accumulation, lr x4, the run stayed stable: grads 1 -> 2-7, no growth; 8-way kept.)
# vanish18_qat_round_without_ste (glyph noise 1.0, Adam 5e-4): steps 120-149 grads layers.0/1/2 = 2.0/0.87/0.71
#   (seed 0; 2.0/0.87/0.78 seed 1) vs head 1.1-1.4; from step 150 exactly 0.0 in all three quantised layers at
#   every step to the end, head 1.3 (0.54-2.3); relative updates of those layers ~3e-10 (Adam decaying). Loss
#   (20-step means) 0.63/0.62/0.62 at 140-159 -> 0.54/0.51/0.54 at the end, val 0.57/0.67/0.67 (149) -> 0.50/0.59/0.58
#   (the float head still learns a little) -> stagnation allowed. Twin (STE): last-20 loss 0.25 vs 0.68 with the bug.
# vanish18_deep_conv1d_dcgan_init: steps 0-19 grad of conv 0 = 6.6e-11/8.6e-11/5.6e-11, conv 2 ~3e-10, conv 4 ~2.5e-9,
#   ... conv 16 ~1e-3, conv 18 ~1e-2, head 0.15/0.15/0.13 (x10 per layer); by the last 20 steps every conv layer's
#   grad is exactly 0 (dead ReLUs), head 0.13-0.17. Loss 1.6 (ln 5) from the first to the last step in all seeds,
#   val 1.6 -> stagnation allowed.
# nan18_log_price_free_listings: loss 0.04-0.06 (steps 140-159) -> NaN at 160 and every later step, grads and
#   weights NaN from 160, in all seeds; val min at 159 (0.044/0.030/0.064), NaN from 169. Ratio before 160 <= 1.8.
#   Allowed: loss_spike, stagnation (NaN to the end).
# nan18_kd_manual_kl_temperature_drop: loss (KL x T^2 at T=4) 7.1/7.1/7.4 at 149 -> NaN at 150 in all seeds; NaN on
#   150/125/137 of the 150 later steps (the batches where a teacher probability underflows); gradients and weights
#   stay finite (grad total 2-3.6), val (student CE vs teacher argmax) keeps falling: 0.93/0.87/1.1 at 149 ->
#   0.72/0.57/0.72 at the end. Only the loss is nonfinite. Allowed: loss_spike.
# spike18_seq2seq_tokenizer_rebuilt: loss 0.30/0.37/0.30 at 199 -> 7.6/8.3/8.2 at 200 (ratio 22/23/24 @200/200/201),
#   still 4.4-6.2 at 207, relearned to 0.53/0.54/0.62 (last 20); grads 0.8-1.2 -> 3.0/3.0/2.8 (max of the run);
#   val (same tokenizer) 0.32/0.34/0.35 at 199 -> 3.5/3.5/4.2 at 209 -> 0.47/0.50/0.60.
#   (Tried first: teacher forcing cut from 1.0 to 0.0 at 200 gave a lasting x2.3-2.5 level shift, not a spike;
#   resuming without the Adam state only x1.5-2. Replaced.)
# spike18_vit_normalize_dropped (10% label noise): loss 0.40-0.52 (mean of 180-199) -> 3.0/3.3/3.0 at 200 (ratio
#   6.3/6.9/8.0 @200; 7.0/6.1/6.1 @201), relearned to 0.56/0.46/0.43 (last 20); largest ratio before 200 2.1/3.1/2.3;
#   grads 1-2 -> 5-10 at 200-203 (not growing); val 0.42/0.34/0.49 at 199 -> 1.8/1.9/1.5 at 209 (same pipeline)
#   -> 0.43/0.35/0.52. FIXED AFTER THE FIRST EVAL: the first version had no label noise; its loss fell to ~0.02 and
#   single batches jumped 8x/43x/21x (seeds 0/1/2, steps 171/183/180) before the fault: the labelled symptom was
#   present before its onset (this recorder showed it; I had only read the largest ratio, at 200). Label noise added.
# overfit18_tied_lm_debug_batches: train 2.2-2.4 -> 0.17/0.12/0.19 (falling to the end); val (fresh text) min
#   1.4@49 / 1.5@49 / 1.4@49, then rising at almost every check to 3.5/3.7/3.4; ratio <= 1.33.
# overfit18_unet_cached_noise (16 cached signals, sigma 0.8): train 0.31-0.38 -> 0.0020/0.0024/0.0035; val (fresh
#   noise) min 0.072@69 / 0.072@119 / 0.068@159, then 0.12/0.09/0.087 at the end (+30-65%); ratio <= 2.2.
# stagnant18_vit_steplr_stepped_per_batch: lr 0.05 -> 5e-3 (40) -> 5e-4 (80) -> 5e-5 (120) ...; 10-step mean loss
#   0.84/0.49/0.67 at 70-79 -> 0.76/0.41/0.66 at 80-89, then 0.70-0.77 / 0.40-0.46 / 0.61-0.74 to step 300
#   (last 20: 0.75/0.42/0.61); val 0.78/0.51/0.70 at 79 -> 0.72/0.48/0.65 flat from ~120. Onset 80. Twin (constant
#   lr 0.05): last 20-step mean 0.16/0.003/0.29, still falling at 300.
# stagnant18_infonce_multiplied_by_temperature: loss 4.1 (ln 64 = 4.16) at every 20-step mean from the first to the
#   last and val 4.1 at every check, all seeds; grads 0.05-0.09 -> 0.03 (all three layers alike).
# Wall time per run 0.3-4.0 s on one thread (the recorder adds ~30%).

from __future__ import annotations

import torch
from _eighteenth_lib import (
    QATMLP,
    VAL,
    ListingRegressor,
    MoEClassifier,
    Seq2SeqGRU,
    TiedGRULM,
    TinyViT,
    UNet1d,
    ViewEncoder,
    bigram_text,
    cached_noisy_dataset,
    deep_conv1d,
    denoise_data,
    glyphs,
    info_nce,
    kd_data,
    kd_loss_manual,
    listings,
    mean_val,
    regime_tabular,
    reverse_cipher,
    run_loop,
    seq_ce,
    simple_step,
    tone_bursts,
    two_views,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

ce = F.cross_entropy
mse = F.mse_loss

FULL_LENGTH_AT = 150
ACCUM_AT = 150
QAT_AT = 150
FREE_AT = 160
T_DROP_AT = 150
REMAP_AT = 200
RAW_PIXELS_AT = 200
LR_UNET = 1e-3
LR_MOE = 0.05
STEPLR_STALL_AT = 80  # measured: the loss stops improving once the lr is 5e-4 (step 80)


# ---------------------------------------------------------------- exploding_gradient
def _explode_unet_sum(watch, seed):
    # LeakyReLU 1-D U-Net denoiser. Loss = per-sample *sum* of squared errors (mse(..., reduction="sum") / batch,
    # from a VAE recipe), with SGD momentum tuned on 32-sample crops. Progressive resizing switches to full
    # 256-sample signals at step 150: the gradient (and so the effective step) grows 8x.
    data = denoise_data(seed, length_at=lambda s: 32 if s < FULL_LENGTH_AT else 256)
    torch.manual_seed(seed)
    model = UNet1d(act=nn.LeakyReLU)
    opt = torch.optim.SGD(model.parameters(), lr=LR_UNET, momentum=0.9)

    def loss_fn(out, y):
        return F.mse_loss(out, y, reduction="sum") / len(y)

    val_data = denoise_data(seed, length_at=lambda s: 64)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, loss_fn),
        val_loss=mean_val(model, lambda i: val_data(VAL + i), mse),
    )


def _explode_moe_accum(watch, seed):
    # MoE classifier, SGD momentum. At step 150 the run moves to 8-way gradient accumulation ("effective batch 512")
    # with the linear lr scaling rule (lr x8), but the micro-batch losses are not divided by 8: every optimizer
    # step is 64x larger than before. The logged loss is the mean over the micro-batches.
    data = regime_tabular(seed)
    torch.manual_seed(seed)
    model = MoEClassifier()
    base_lr = LR_MOE
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9)

    def train_step(step):
        accum = 1 if step < ACCUM_AT else 8
        for group in opt.param_groups:
            group["lr"] = base_lr * accum
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(accum):
            x, y = data(step * 8 + k)
            loss = ce(model(x), y) + 0.01 * model.aux
            loss.backward()  # bug: not loss / accum
            total = total + loss.detach()
        opt.step()
        return total / accum

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


# ---------------------------------------------------------------- vanishing_gradient
def _vanish_qat_round(watch, seed):
    # Quantisation-aware fine-tuning switched on at step 150 (int8 weights and activations). The fake-quantiser
    # returns round(x / s) * s without the straight-through estimator: round() has zero gradient, so every
    # quantised layer below the float head gets exactly zero gradient.
    data = glyphs(seed, noise=1.0)
    torch.manual_seed(seed)
    model = QATMLP(ste=False)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def before(step):
        if step == QAT_AT:
            model.enable_quant()

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, before=before),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _vanish_dcgan_init(watch, seed):
    # Deep plain 1-D CNN (10 conv layers, no normalisation) whose init helper was copied from a DCGAN recipe:
    # every weight ~ N(0, 0.02^2). The signal shrinks ~10x per layer.
    data = tone_bursts(seed)
    torch.manual_seed(seed)
    model = deep_conv1d(depth=10, init_std=0.02)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


# ---------------------------------------------------------------- nonfinite
def _nan_log_price(watch, seed):
    # The regressor takes log(price). From step 160 the catalogue includes free listings (price 0): log(0) = -inf.
    data = listings(seed, free_from=FREE_AT)
    clean = listings(seed)
    torch.manual_seed(seed)
    model = ListingRegressor()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: clean(VAL + i), mse),
    )


def _nan_kd_manual_kl(watch, seed):
    # Distillation from a very confident teacher with a hand-written KL: sum p_t * (log p_t - log p_s). The
    # temperature schedule drops T from 4 to 1 at step 150; at T=1 some teacher probabilities underflow to 0 and
    # 0 * log(0) = NaN.
    data = kd_data(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_at(step):
        t = 4.0 if step < T_DROP_AT else 1.0
        return lambda out, teacher: kd_loss_manual(out, teacher, t)

    def train_step(step):
        x, teacher = data(step)
        opt.zero_grad(set_to_none=True)
        loss = loss_at(step)(model(x), teacher)
        loss.backward()
        opt.step()
        return loss

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=lambda step: sum(float(ce(model(x), t.argmax(1))) for x, t in (data(VAL + i) for i in range(4))) / 4,
    )


# ---------------------------------------------------------------- loss_spike
def _spike_tokenizer_rebuilt(watch, seed):
    # GRU encoder-decoder (reverse + substitution cipher), Adam. At step 200 the data workers pick up a tokenizer
    # rebuilt on a new corpus: same vocabulary, different id order; the model's embeddings and output layer are
    # not remapped. Validation goes through the same tokenizer.
    data = reverse_cipher(seed, remap_from=REMAP_AT)
    old, new = reverse_cipher(seed), reverse_cipher(seed, remap_from=0)
    torch.manual_seed(seed)
    model = Seq2SeqGRU(hidden=128)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fwd_data(step):
        src, tgt = data(step)
        return (src, tgt), tgt

    def val(step):
        pipe = new if step >= REMAP_AT else old
        return sum(float(seq_ce(model((s, t)), t)) for s, t in (pipe(VAL + i) for i in range(4))) / 4

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, fwd_data, seq_ce),
        val_loss=val,
    )


def _spike_vit_raw_pixels(watch, seed):
    # ViT on glyph images. At step 200 a refactor of the transform pipeline drops Normalize(mean, std): raw [0, 1]
    # pixels from then on. Validation goes through the same pipeline.
    # 10% label noise.
    data = glyphs(seed, raw_from=RAW_PIXELS_AT, label_noise=0.1)
    norm, raw = glyphs(seed, label_noise=0.1), glyphs(seed, raw_from=0, label_noise=0.1)
    torch.manual_seed(seed)
    model = TinyViT()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce),
        val_loss=lambda step: (
            sum(
                float(ce(model(x), y)) for x, y in ((raw if step >= RAW_PIXELS_AT else norm)(VAL + i) for i in range(4))
            )
            / 4
        ),
    )


# ---------------------------------------------------------------- overfitting
def _overfit_tied_lm_debug(watch, seed):
    # Weight-tied GRU LM. A `--max-train-batches 8` debug flag was left in the launch script: the model cycles over
    # the same 8 batches (128 sequences) for the whole run. Validation uses fresh text.
    text = bigram_text(seed, length=24)
    cache = [text(i) for i in range(8)]
    torch.manual_seed(seed)
    model = TiedGRULM(d=96)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, lambda s: cache[s % 8], seq_ce),
        val_loss=mean_val(model, lambda i: text(VAL + i), seq_ce),
    )


def _overfit_unet_cached_noise(watch, seed):
    # Denoiser trained on a cached noisy dataset (the noise was drawn once when the dataset was written to disk,
    # 16 signals), instead of fresh noise per epoch. Validation: fresh signals with fresh noise.
    data = cached_noisy_dataset(seed, signals=16, sigma=0.8)
    fresh = denoise_data(seed, sigma=0.8)
    torch.manual_seed(seed)
    model = UNet1d(width=24)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, mse),
        val_loss=mean_val(model, lambda i: fresh(VAL + i), mse),
    )


# ---------------------------------------------------------------- stagnation
def _stagnant_steplr_per_batch(watch, seed):
    # ViT, SGD momentum with StepLR(step_size=40, gamma=0.1) meant per *epoch* but stepped after every batch:
    # the lr drops 10x every 40 steps and the run stalls early, far from converged.
    data = glyphs(seed)
    torch.manual_seed(seed)
    model = TinyViT()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=40, gamma=0.1)
    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=simple_step(model, opt, data, ce, scheduler=sched),
        val_loss=mean_val(model, lambda i: data(VAL + i), ce),
    )


def _stagnant_infonce_times_temp(watch, seed):
    # InfoNCE where the similarity is *multiplied* by the temperature (0.07) instead of divided by it: the logits
    # live in [-0.07, 0.07] and the loss cannot go below ~ln(64) - 0.1.
    data = two_views(seed)
    torch.manual_seed(seed)
    model = ViewEncoder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn(emb_pair, _):
        a, b = emb_pair
        return info_nce(a, b, 0.07)

    def fwd(x):
        return model(x[0]), model(x[1])

    def train_step(step):
        x, _ = data(step)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fwd(x), None)
        loss.backward()
        opt.step()
        return loss

    run_loop(
        watch,
        model,
        opt,
        steps=300,
        train_step=train_step,
        val_loss=lambda step: sum(float(loss_fn(fwd(data(VAL + i)[0]), None)) for i in range(4)) / 4,
    )


def _f(name, desc, fn, expect, allow=(), arch=(), opt=""):
    return Scenario(
        name=name,
        description=desc,
        train=fn,
        expect=expect,
        allow=frozenset(allow),
        tags=frozenset({"set18", "fault", *arch, opt} - {""}),
    )


SCENARIOS = [
    _f(
        "explode18_unet1d_sum_loss_full_length",
        "1-D U-Net denoiser, SGD momentum, per-sample summed MSE; progressive resizing moves from 32- to "
        "256-sample signals at step 150, growing the gradient 8x (LeakyReLU U-Net).",
        _explode_unet_sum,
        {"exploding_gradient": FULL_LENGTH_AT},
        {"loss_spike", "nonfinite", "stagnation"},
        ("unet", "conv1d", "denoising"),
        "sgd_momentum",
    ),
    _f(
        "explode18_moe_accum_loss_not_divided",
        "Mixture-of-experts classifier (top-1 router), SGD momentum; from step 150 8-way gradient accumulation with "
        "lr x8 but the micro-batch losses are not divided by 8.",
        _explode_moe_accum,
        {"exploding_gradient": ACCUM_AT},
        {"loss_spike", "nonfinite", "stagnation"},
        ("moe", "mlp", "tabular", "accumulation"),
        "sgd_momentum",
    ),
    _f(
        "vanish18_qat_round_without_ste",
        "MLP on glyph images; int8 QAT switched on at step 150 with a fake-quantiser lacking the straight-through "
        "estimator: all quantised layers get zero gradient.",
        _vanish_qat_round,
        {"vanishing_gradient": QAT_AT},
        {"stagnation"},
        ("mlp", "qat", "images"),
        "adam",
    ),
    _f(
        "vanish18_deep_conv1d_dcgan_init",
        "10-layer plain 1-D CNN on tone bursts, SGD momentum, all weights initialised N(0, 0.02^2) (DCGAN recipe).",
        _vanish_dcgan_init,
        {"vanishing_gradient": 0},
        {"stagnation"},
        ("cnn", "conv1d", "audio"),
        "sgd_momentum",
    ),
    _f(
        "nan18_log_price_free_listings",
        "Tabular regressor taking log(price); from step 160 free listings (price 0) appear: log(0) = -inf.",
        _nan_log_price,
        {"nonfinite": FREE_AT},
        {"loss_spike", "stagnation"},
        ("mlp", "tabular"),
        "adam",
    ),
    _f(
        "nan18_kd_manual_kl_temperature_drop",
        "Knowledge distillation with a hand-written KL; the temperature drops 4 -> 1 at step 150 and the confident "
        "teacher's probabilities underflow to 0: 0 * log 0 = NaN.",
        _nan_kd_manual_kl,
        {"nonfinite": T_DROP_AT},
        {"loss_spike"},
        ("mlp", "distillation"),
        "adam",
    ),
    _f(
        "spike18_seq2seq_tokenizer_rebuilt",
        "GRU encoder-decoder (reverse + cipher), Adam; from step 200 the ids come from a rebuilt tokenizer with a "
        "different vocabulary order.",
        _spike_tokenizer_rebuilt,
        {"loss_spike": REMAP_AT},
        (),
        ("rnn", "gru", "seq2seq"),
        "adam",
    ),
    _f(
        "spike18_vit_normalize_dropped",
        "ViT on glyph images, AdamW; from step 200 the transform pipeline no longer normalises the pixels.",
        _spike_vit_raw_pixels,
        {"loss_spike": RAW_PIXELS_AT},
        (),
        ("vit", "transformer", "images"),
        "adamw",
    ),
    _f(
        "overfit18_tied_lm_debug_batches",
        "Weight-tied GRU LM, Adam; a leftover debug flag limits training to the same 8 batches; val on fresh text.",
        _overfit_tied_lm_debug,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        ("rnn", "gru", "lm", "weight_tying"),
        "adam",
    ),
    _f(
        "overfit18_unet_cached_noise",
        "1-D U-Net denoiser, Adam, trained on 16 signals whose noise was drawn once and cached; val on fresh noise.",
        _overfit_unet_cached_noise,
        {"overfitting": AT_VAL_MINIMUM},
        (),
        ("unet", "conv1d", "denoising"),
        "adam",
    ),
    _f(
        "stagnant18_vit_steplr_stepped_per_batch",
        "ViT, SGD momentum; StepLR(step_size=40, gamma=0.1) meant per epoch is stepped per batch.",
        _stagnant_steplr_per_batch,
        {"stagnation": STEPLR_STALL_AT},
        (),
        ("vit", "transformer", "images", "scheduler"),
        "sgd_momentum",
    ),
    _f(
        "stagnant18_infonce_multiplied_by_temperature",
        "Contrastive MLP encoder (InfoNCE, Adam) with the similarity multiplied by the temperature 0.07 instead of "
        "divided: the loss cannot leave ~ln(batch).",
        _stagnant_infonce_times_temp,
        {"stagnation": 0},
        (),
        ("mlp", "contrastive"),
        "adam",
    ),
]
