"""Set 22 faults (held-out): a WGAN-GP weight read from a misspelt config key, a clip norm lost on resume, fairseq's
GradMultiply inside the conv loop, FiLM without the 1 + gamma, a macro-averaged loss over an absent class, Glow's
log-determinant through torch.logdet, a length warm-up with learned positions, a resume that re-initialises after
loading, a freeze written as a Module attribute, a WORLD_SIZE shard on one process, an MSE broadcast (B, 1) vs (B,)
and reentrant activation checkpointing on an input without grad. Onsets measured with
`_measure.py twentysecond twentysecond_faults.py`."""

# Offline measurements (seeds 0/1/2; plain-PyTorch recorder, no gradwatch). "loss" = 20-step means; "ratio" = max
# loss[t] / median(loss[t-20:t]); "grads" = per-module grad-norm medians; "twin" = the same run with the bug fixed
# (train(..., bug=False); scratch runs, not shipped). Wall time with the recorder: 0.3-2.5 s per run, one thread
# (4.4 s for a process's first run, imports included).
#
# explode22_wgan_gp_weight_config_key_typo (onset 0, finite): grad total 1.4/1.3/1.3 (first 10), then a steady climb
#   to 2.6e3/2.5e3/2.7e3 in the last 20 (max 2.9e3/2.8e3/3e3 at 248-249); last layer 2.3e3-2.5e3, first 780-820;
#   critic loss -1.9/-1.7/-2.0 (first 20) -> -8.0e3/-8.2e3/-9.0e3 (last 20), no NaN/Inf. Twin (penalty weight 10):
#   grads 14 (first 10) -> 1.4 (last 20), loss settles at -1.8.
# explode22_clip_norm_lost_on_resume (onset 150): grads pinned at 1.0 (the clip) up to 149; from 150 the raw norms:
#   6.6/3.3/7.5 at 150, max 30/13/16 within 6 steps, then 1.7e6@157 / 2.6e7@178 / 1.1e12@160; first NaN/Inf grad at
#   158/179/161, loss and weights NaN from 159/180/161 to the end (val NaN). Loss before 150: 20-step means
#   0.93-2.1 after step 20 (noisy edge-of-stability regime; pre-onset ratio 2.0/5.2/3.1, one-step blips). Twin (clip
#   kept): no NaN, grads 1.0, loss 0.93-0.99 at the end, val 0.73 (seed 0).
# vanish22_gradmultiply_inside_conv_loop (onset 0): grads first 20: conv0 1.8e-10/2.7e-10/2.5e-10, conv1 1.1e-8-1.6e-8,
#   conv2 1.2e-7-1.6e-7, conv3 2.7e-6-3.9e-6, conv4 1.1e-4, conv5 3.7e-3-4e-3, head 0.13-0.14 (x0.02-0.08 per layer);
#   last 20: conv0 1.7e-8/2.9e-9/1.4e-7 vs head 0.13-0.23. Loss 1.4 (ln 4, chance) at every 20-step mean (seed 2: 1.3,
#   1.2 in the last 40 steps), val 1.4/1.4/1.2 at the end. Twin (one GradMultiply after the stack): conv0 1.8e-5-3.2e-5
#   (first 20) -> 0.016-0.039 (last 20), loss 1.4 -> 1.0-1.1, val 0.96-1.1. (First version: SGD momentum lr 0.05 and 0.3
#   noise: the twin did not learn either (SGD cannot train this stack at all); Adam and noisier waveforms since, so that
#   the healthy encoder learns and the bugged one does not.)
# vanish22_film_gamma_without_plus_one (onset 0): grads first 20: lins.0 3.1e-12/3.5e-12/3e-12, lins.1 5e-11-6e-11,
#   lins.2 3.4e-9, lins.3 2.4e-7, lins.4 1.6e-5-2e-5, lins.5 1.8e-3, films.5 0.18-0.19, head 0.12-0.15 (~0.014x per
#   layer); last 20: lins.0 7e-12-9e-12 vs head 0.21-0.25. Loss 1.3 -> 1.0/1.1/1.0 (the head learns from c through
#   beta only), val min 0.97@159/1.1@239/1.0@249. Twin (1 + gamma): lins.0 0.0028 (first 20), loss 1.3 -> 0.54, val
#   0.52-0.59.
# nan22_macro_loss_absent_tail_class (onset 150): loss 2.0 -> 0.09-0.11 (140-149), val 0.067-0.10; NaN loss at 150
#   in every seed and at 99/100/100 of the 100 steps from 150 (a batch of 40 instance-sampled images nearly always
#   misses one of the tail classes). The gradient stays finite (the absent class's 0/0 gets no gradient path), so
#   the weights stay finite and the logged loss is NaN while training goes on: val 0.089/0.12/0.13 at the end.
#   Pre-onset ratio 1.9/2.4/2.4 (tiny losses). Twin (mean over present classes): no NaN, loss 0.04 at the end.
# nan22_glow_logdet_negative_determinant (onset 0): NaN loss at every step 0-199 in every seed (at least one of the
#   four QR rotations has det -1 in seeds 0/1/2), val NaN throughout; gradients finite (grad total 1.0-1.1 first 10,
#   0.71-0.73 last 20), weights finite. Twin (slogdet): NLL/dim 1.4 -> 1.3, val 1.2-1.3, no NaN.
# spike22_length_warmup_untrained_positions (recovers): loss 2.9 -> 0.70/0.76/0.71 (100-119; floor 0.69 at length 16)
#   -> 2.2/2.1/2.2 at 120 (ratio 3.2@121/3.0@123/3.2@120; pre-onset ratio <= 1.05), 20-step means 1.5/1.7/1.6 at
#   120-139, 0.58/0.71/0.65 at 140-159, 0.17/0.21/0.22 in the last 20 (below the pre-onset level: length 64 has a
#   lower floor); grads 0.5 -> 1.5-1.6. Val (at the current length) 0.65-0.69 -> 1.4-1.6 at 129 -> 0.16-0.19.
# spike22_resume_reinit_after_load (recovers): loss 0.9 -> 0.48/0.43/0.52 (120-139) -> 1.7/2.1/1.8 at 150 (ratio
#   3.8/5.0/3.6 at 150; pre-onset ratio 1.67/1.41/1.59), 20-step means 0.79/0.94/0.90 at 140-159, 0.59/0.64/0.68 at
#   160-179, 0.50/0.52/0.51 in the last 20; grads 0.6-1.1 -> 2.3-2.6 at 150. Val 0.41-0.47 -> 0.51-0.58 at 159 ->
#   0.38/0.42/0.44. Twin (no re-init): no jump (max ratio 1.67@93/1.53@282/1.59@142), loss 0.46 at the end.
# overfit22_freeze_via_module_attribute: train CE 1.0-1.2 -> 0.014-0.017 (last 20), falling throughout; val min
#   1.1@19/1.1@9/0.99@29, then 2.5/2.4/2.1 at the end (rising at every eval after ~60). Twin (requires_grad_(False),
#   head only): train 1.6 -> 0.84, val min 0.92@279 and 0.92 at the end.
# overfit22_world_size_shard_single_process: train CE 1.3-1.4 -> 0.010/0.014/0.020 (last 20), falling throughout; val
#   min 0.74@89/1.2@89/1.0@79, then 1.1/2.0/1.8 at the end. Twin (all 2048 sequences): train 0.75/1.1/1.0 at the end,
#   val min 0.56@269/1.0@219/0.79@269, within 0.01-0.03 of it at the end.
# stagnant22_mse_target_broadcast (onset 0): loss flat from step 0 at the target variance: 20-step means 1.1-1.3 /
#   0.36-0.40 / 0.79-0.89, first 20 vs last 20 1.3/1.2, 0.36/0.40, 0.84/0.81; val 1.3 / 0.33 / 0.86 at every eval.
#   Grads normal (total 0.15-0.37 first 10, 0.14-0.20 last 20). Twin (out.squeeze(1)): seed 0 loss 1.2 -> 0.33, val
#   1.3 -> 0.39.
# stagnant22_reentrant_checkpoint_no_input_grad (onset 100): loss 2.1-2.3 -> 0.82/0.88/0.85 (80-99) and flat from
#   there: 0.80/0.89/0.78 in the last 20; val 0.79/0.91/0.79 at 99 -> 0.77/0.88/0.74 at 299. From step 100 every
#   encoder module has no gradient (None) and a zero update; only the logit scale (one scalar) trains, grad total
#   1.5-1.8 -> 0.13-0.36. Twin: loss 0.82 -> 0.71, val 0.79 -> 0.68 (seed 0).
# Replaced before shipping: a WGAN-GP critic with the penalty's sign flipped, -(D(real) - D(fake) + 10 GP) (the critic
#   drove its input gradient to 0, which maximises (|g| - 1)^2 locally; grads 10-15 throughout, no explosion); a GRU
#   LM at SGD lr 8 whose clip was lost on resume (raw grads 0.1-0.3 unclipped, no explosion; 10-16 s a run); a tabular
#   MLP whose mixup mixed the inputs but not the targets from step 150 (the correct mixup raises the training loss
#   too, 0.68 -> 0.95, so the jump was not the bug's); the checkpointing run with a linear head (the head alone kept
#   lowering the loss, 0.95 -> 0.85; now a fixed-prototype cosine head with a learned scale).

from __future__ import annotations

import warnings

import torch
from _twentysecond_faults_lib import (
    VAL,
    Conv1dClassifier,
    ConvFeatureEncoder,
    FiLMNet,
    GlowVector,
    LSTMForecaster,
    PosTransformerLM,
    ResEncoderNet,
    SmallCNN,
    chirp_audio,
    classify_data,
    copy_sequences,
    gen,
    init_weights,
    lm_ce,
    loop,
    mean_val,
    mlp,
    motif_sequences,
    plain_step,
    regression_data,
    ring_gaussians,
    sensor_series,
    teacher_mlp,
    templates_10,
    update,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

ce = F.cross_entropy
RESUME_AT = 150
TAIL_STAGE_AT = 150
LONG_SEQ_AT = 120
CKPT_AT = 100
WORLD_SIZE = 16
LR_CLIPPED = 0.15


EXP, VAN, NAN, SPK, OVF, STG = (
    "exploding_gradient",
    "vanishing_gradient",
    "nonfinite",
    "loss_spike",
    "overfitting",
    "stagnation",
)
SCENARIOS: list[Scenario] = []


def _sc(name, expect, allow, tags):
    """Register the decorated train function as a set-22 fault scenario (description = its docstring)."""

    def register(fn):
        desc = " ".join(fn.__doc__.split())
        tags_ = frozenset({"set22", "fault", *tags.split()})
        SCENARIOS.append(Scenario(name, desc, fn, expect=expect, allow=frozenset(allow), tags=tags_))
        return fn

    return register


# ---------------------------------------------------------------- exploding_gradient
@_sc("explode22_wgan_gp_weight_config_key_typo", {EXP: 0}, (SPK,), "gan critic mlp adam")
def _explode_wgan_gp_key_typo(watch, seed, bug=True):
    """WGAN critic warm-up (critic MLP 2-128-128-128-1, LeakyReLU 0.2) on the 8-Gaussians ring against a frozen
    generator, Adam 1e-3 betas (0.5, 0.9). The gradient-penalty weight is read as cfg.get("lambda_gp", 0.0) while the
    config file spells it "gp_lambda": the penalty weight is 0, nothing keeps the critic 1-Lipschitz and the
    Wasserstein objective D(fake) - D(real) is unbounded: the critic scales its weights up without limit."""
    real = ring_gaussians(seed)
    cfg = {"gp_lambda": 10.0}
    lam = cfg.get("lambda_gp", 0.0) if bug else cfg["gp_lambda"]
    torch.manual_seed(seed + 500)
    generator = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))
    torch.manual_seed(seed)
    critic = mlp([2, 128, 128, 128, 1], lambda: nn.LeakyReLU(0.2))
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))

    def train_step(step):
        xr = real(step)
        with torch.no_grad():
            xf = generator(torch.randn(xr.shape[0], 8, generator=gen(seed, step, 9)))
        loss = critic(xf).mean() - critic(xr).mean()
        if lam > 0:
            eps = torch.rand(xr.shape[0], 1, generator=gen(seed, step, 10))
            xi = (eps * xr + (1 - eps) * xf).requires_grad_(True)
            (g,) = torch.autograd.grad(critic(xi).sum(), xi, create_graph=True)
            loss = loss + lam * ((g.norm(dim=1) - 1) ** 2).mean()
        return update(opt, loss)

    loop(watch, critic, opt, 250, train_step)


@_sc("explode22_clip_norm_lost_on_resume", {EXP: RESUME_AT}, (SPK, NAN), "mlp regression sgd_momentum")
def _explode_clip_lost_on_resume(watch, seed, bug=True):
    """Tabular regression MLP (16-256-256-256-1, ReLU), SGD momentum 0.9 at lr 0.15, kept stable by
    clip_grad_norm_(params, 1.0). At step 150 the job is preempted and resumed; the resume launcher does not pass
    --clip-norm, whose argparse default is 0 ("no clipping"), so from then on the same lr runs unclipped. Val:
    held-out MSE."""
    data = regression_data(seed)
    torch.manual_seed(seed)
    model = mlp([16, 256, 256, 256, 1], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=LR_CLIPPED, momentum=0.9)

    def train_step(step):
        clip = 0.0 if bug and step >= RESUME_AT else 1.0
        x, y = data(step)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    loop(watch, model, opt, 250, train_step, mean_val(model, data, F.mse_loss))


# ---------------------------------------------------------------- vanishing_gradient
@_sc("vanish22_gradmultiply_inside_conv_loop", {VAN: 0}, (STG,), "conv1d cnn audio adam")
def _vanish_gradmultiply_in_loop(watch, seed, bug=True):
    """wav2vec-style conv1d feature encoder (6 strided convs, GroupNorm on the first, GELU) on synthetic waveforms,
    mean pool, linear head. fairseq's GradMultiply(x, 0.1) (feature_grad_mult, meant to damp the encoder's gradient
    once) was moved inside the per-layer loop: the gradient is multiplied by 0.1 after every conv, 1e-6 at the first.
    Adam 1e-3."""
    data = chirp_audio(seed)
    torch.manual_seed(seed)
    model = ConvFeatureEncoder(in_loop=bug)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loop(watch, model, opt, 250, plain_step(model, opt, data, ce), mean_val(model, data, ce))


@_sc("vanish22_film_gamma_without_plus_one", {VAN: 0}, (STG,), "film mlp sgd_momentum")
def _vanish_film_without_one(watch, seed, bug=True):
    """Six FiLM-conditioned layers relu(gamma(c) * W h + beta(c)) on x, conditioned on c. The FiLM generators are
    initialised near zero (std 0.01) for the (1 + gamma) parametrisation, but the forward uses gamma itself: every
    layer multiplies the signal and the backward gradient by |gamma| ~ 0.03. SGD momentum 0.9, lr 0.05."""
    teacher = teacher_mlp(seed, dim=24)

    def data(step):
        xc = torch.randn(64, 24, generator=gen(seed, step, 11))
        return (xc[:, :16], xc[:, 16:]), teacher(xc)

    torch.manual_seed(seed)
    model = FiLMNet(plus_one=not bug)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loop(watch, model, opt, 250, plain_step(model, opt, data, ce), mean_val(model, data, ce))


# ---------------------------------------------------------------- nonfinite
@_sc("nan22_macro_loss_absent_tail_class", {NAN: TAIL_STAGE_AT}, (SPK, STG, EXP), "cnn long_tail adam")
def _nan_macro_loss_absent_class(watch, seed, bug=True):
    """Long-tailed 10-class image task (8x8 templates + noise, class frequencies ~0.55^k), small CNN, Adam 1e-3.
    Stage 1 samples class-balanced batches (4 per class); stage 2 (step 150) switches to instance sampling. The
    class-balanced loss is the mean over classes of each class's mean CE, computed as per-class sums / bincount:
    a tail class absent from the batch gives 0 / 0 = NaN. Val: balanced held-out CE."""
    tpl = templates_10(seed)
    freq = torch.tensor([0.55**k for k in range(10)])

    def batch(step, balanced):
        gg = gen(seed, step, 12)
        y = torch.arange(10).repeat(4) if balanced else torch.multinomial(freq, 40, True, generator=gg)
        return tpl[y] + 1.2 * torch.randn(40, 1, 8, 8, generator=gg), y

    def macro_ce(logits, y):
        per = F.cross_entropy(logits, y, reduction="none")
        sums = torch.zeros(10).scatter_add(0, y, per)
        counts = torch.bincount(y, minlength=10).float()
        if not bug:
            return (sums[counts > 0] / counts[counts > 0]).mean()
        return (sums / counts).mean()

    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(step):
        x, y = batch(step, step < TAIL_STAGE_AT)
        return update(opt, macro_ce(model(x), y))

    val_sets = [batch(VAL + i, True) for i in range(4)]
    loop(watch, model, opt, 250, train_step, lambda: sum(float(ce(model(x), y)) for x, y in val_sets) / 4)


@_sc("nan22_glow_logdet_negative_determinant", {NAN: 0}, (SPK, STG, EXP), "flow glow adam")
def _nan_glow_logdet(watch, seed, bug=True):
    """Glow on 8-d vectors: 4 steps of (invertible linear mixing W initialised as a random rotation from QR, affine
    coupling). log|det W| is computed with torch.logdet, which is NaN for det W < 0, instead of slogdet: a QR rotation
    has det -1 half of the time. Adam 1e-3. Val: held-out NLL per dim."""

    def data(step):
        gg = gen(seed, step, 13)
        z = torch.randn(128, 8, generator=gg)
        z[:, 4:] = z[:, 4:] * 0.5 + 0.8 * z[:, :4] ** 2 - 0.8
        return z, None

    torch.manual_seed(seed)
    model = GlowVector(use_logdet=bug)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    val = lambda: sum(float(model(data(VAL + i)[0])) for i in range(4)) / 4  # noqa: E731
    loop(watch, model, opt, 200, plain_step(model, opt, data, lambda out, _: out), val)


# ---------------------------------------------------------------- loss_spike
@_sc("spike22_length_warmup_untrained_positions", {SPK: LONG_SEQ_AT}, (), "transformer lm adamw")
def _spike_length_curriculum_learned_pos(watch, seed, bug=True):
    """Causal transformer LM (pre-LN, 2 layers) with learned absolute position embeddings sized for 64 positions,
    trained with a sequence-length warm-up: 16 tokens for 120 steps, then 64. Rows 16-63 of the position table were
    never trained, so at the switch 3/4 of the tokens sit at random positions. Task: a random 4-token block repeated.
    AdamW 3e-3. Val: held-out CE at the current length."""
    data = copy_sequences(seed)
    torch.manual_seed(seed)
    model = PosTransformerLM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def length(step):
        return 64 if step >= LONG_SEQ_AT or not bug else 16

    box = {"step": 0}

    def train_step(step):
        box["step"] = step
        x, y = data(step, length(step))
        return update(opt, lm_ce(model(x), y))

    def val():
        n = length(box["step"])
        return sum(float(lm_ce(model(x), y)) for x, y in (data(VAL + i, n) for i in range(2))) / 2

    loop(watch, model, opt, 200, train_step, val)


@_sc("spike22_resume_reinit_after_load", {SPK: RESUME_AT}, (), "mlp batchnorm adam resume")
def _spike_resume_reinit_after_load(watch, seed, bug=True):
    """Tabular MLP with BatchNorm (8-128-128-4), Adam 2e-3, built as model.apply(init_weights). At step 150 the job
    is resumed from its checkpoint; the resume branch of the build script calls load_state_dict() first and
    model.apply(init_weights) after it, so the freshly loaded weights are overwritten by a new initialisation while
    the optimizer state (Adam moments, step count) is restored. The model relearns. Val: held-out CE."""
    data = classify_data(seed, dim=8, salt=5)
    torch.manual_seed(seed)
    model = mlp([8, 128, 128, 4], nn.ReLU, batchnorm=True)
    model.apply(init_weights)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def before(step):
        if step == RESUME_AT:
            ckpt = ({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict())
            model.load_state_dict(ckpt[0])
            opt.load_state_dict(ckpt[1])
            if bug:
                model.apply(init_weights)

    loop(watch, model, opt, 300, plain_step(model, opt, data, ce, before=before), mean_val(model, data, ce))


# ---------------------------------------------------------------- overfitting
@_sc("overfit22_freeze_via_module_attribute", {OVF: AT_VAL_MINIMUM}, (), "finetune mlp adam")
def _overfit_freeze_attribute(watch, seed, bug=True):
    """Fine-tuning a pretrained encoder (32-256-16, tanh; its first layer already computes the task's latent factors)
    with a new linear head on 256 labelled samples (20% label noise). The recipe freezes the encoder with
    model.encoder.requires_grad = False, which only sets a plain attribute on the Module: every encoder weight still
    requires grad, the optimizer (built from params with requires_grad) gets all of them and the whole network is
    fine-tuned on 256 samples. Adam 3e-3, batches of 32. Val: held-out samples (same noise)."""
    g = torch.Generator().manual_seed(seed + 91)
    a = torch.randn(32, 8, generator=g) * 2 / 32**0.5
    b = torch.randn(8, 4, generator=g)

    def sample(n, gg):
        x = torch.randn(n, 32, generator=gg)
        y = (torch.tanh(x @ a) @ b).argmax(1)
        flip = torch.rand(n, generator=gg) < 0.2
        return x, torch.where(flip, torch.randint(0, 4, (n,), generator=gg), y)

    xs, ys = sample(256, gen(seed, 0, 15))
    val_sets = [sample(128, gen(seed, VAL + i, 15)) for i in range(2)]
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(32, 256), nn.Tanh(), nn.Linear(256, 16))
    with torch.no_grad():  # "pretrained" weights
        encoder[0].weight[:8] = a.T
        encoder[0].bias[:8] = 0
        encoder[2].weight.mul_(0.2)
        encoder[2].weight[:8, :8] += 3 * torch.eye(8)
    model = nn.Sequential()
    model.add_module("encoder", encoder)
    model.add_module("head", nn.Linear(16, 4))
    if bug:
        model.encoder.requires_grad = False
    else:
        model.encoder.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def train_step(step):
        epoch, k = divmod(step, 8)
        idx = torch.randperm(256, generator=gen(seed, epoch, 16))[k * 32 : (k + 1) * 32]
        return update(opt, ce(model(xs[idx]), ys[idx]))

    loop(watch, model, opt, 300, train_step, lambda: sum(float(ce(model(x), y)) for x, y in val_sets) / 2)


@_sc("overfit22_world_size_shard_single_process", {OVF: AT_VAL_MINIMUM}, (), "conv1d cnn adam distributed")
def _overfit_world_size_shard(watch, seed, bug=True):
    """1-D CNN on motif sequences, a pool of 2048 training sequences (15% label noise). The data module shards the
    dataset as indices[rank::world_size] for distributed training; run on one process with WORLD_SIZE=16 left in the
    environment by the cluster job template, rank 0 trains on 128 sequences. Adam 2e-3, batches of 32. Val: 256
    held-out sequences, clean labels."""
    n = 2048
    x, y = motif_sequences(seed, n)
    idx_all = torch.arange(n)[:: WORLD_SIZE if bug else 1]
    m = len(idx_all)
    torch.manual_seed(seed)
    model = Conv1dClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def train_step(step):
        epoch, k = divmod(step, m // 32)
        idx = idx_all[torch.randperm(m, generator=gen(seed, epoch, 17))[k * 32 : (k + 1) * 32]]
        return update(opt, ce(model(x[idx]), y[idx]))

    loop(watch, model, opt, 300, train_step, lambda: float(ce(model(x[n:]), y[n:])))


# ---------------------------------------------------------------- stagnation
@_sc("stagnant22_mse_target_broadcast", {STG: 0}, (), "lstm forecasting adam")
def _stagnant_mse_broadcast(watch, seed, bug=True):
    """LSTM forecaster (4-channel window of 24 steps -> next value of channel 0). The model returns (B, 1) and the
    target is (B,): F.mse_loss broadcasts them to (B, B) (PyTorch only warns), the loss is minimised by predicting
    the batch mean for every sample and the network never learns the dependence on its input. Adam 1e-3. Val: the
    same loss on held-out windows."""
    data = sensor_series(seed)
    torch.manual_seed(seed)
    model = LSTMForecaster()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def mse(out, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return F.mse_loss(out if bug else out.squeeze(1), y)

    loop(watch, model, opt, 250, plain_step(model, opt, data, mse), mean_val(model, data, mse))


@_sc("stagnant22_reentrant_checkpoint_no_input_grad", {STG: CKPT_AT}, (), "resmlp adam checkpointing")
def _stagnant_reentrant_checkpoint(watch, seed, bug=True):
    """Residual MLP encoder (stem, 4 pre-LN blocks) + fixed-prototype cosine classifier with a learned logit scale,
    10-class teacher task, Adam 3e-4. At step 100 the stage-2 config turns on activation checkpointing: the encoder is
    run through torch.utils.checkpoint(..., use_reentrant=True) with the raw batch as its only input; no input
    requires grad, so (PyTorch only warns) no encoder parameter gets a gradient and only the logit scale keeps
    training. Val: held-out CE."""
    data = classify_data(seed, classes=10, batch=128, salt=3)
    torch.manual_seed(seed)
    model = ResEncoderNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)

    def before(step):
        model.ckpt = bug and step >= CKPT_AT

    def step_fn(step):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return plain_step(model, opt, data, ce, before=before)(step)

    loop(watch, model, opt, 300, step_fn, mean_val(model, data, ce))
