"""Third set, healthy controls: runs that train normally but stress the rules (first run as a held-out set).

Written apart from gradwatch's suite: a GRU language model with SGD-Nesterov and step decay, a denoising
conv autoencoder with Adam and cosine warm restarts (T_mult=2), sparse parity (a long plateau, then a
sudden drop), batch-2 Poisson count regression with Adagrad (a loss that is very noisy and can be
negative), a 1-D conv net on a curriculum whose noise ramps up mid-run, FIR-filter identification whose
loss legitimately falls to its noise floor of ~1e-6, and a tiny multi-task ViT with label smoothing, dropout and OneCycle.
"""

from __future__ import annotations

import torch
from _common import fit, mlp
from _third_lib import (
    Conv1dNet,
    ConvAutoencoder,
    GRULanguageModel,
    PatchViT,
    bigram_tokens,
    blob_images,
    fir_signals,
    lm_loss,
    motif_sequences,
    poisson_counts,
    shape_patches,
    sparse_parity,
)
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import Scenario


def train_gru_lm_nesterov_step_decay(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = GRULanguageModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[150, 250], gamma=0.1)
    fit(watch, model, opt, steps=320, batch_at=bigram_tokens(seed=seed), loss_fn=lm_loss, scheduler=sched, clip=1.0)


def train_conv_ae_cosine_restarts(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = ConvAutoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # restarts at steps 40, 120, 280: the lr jumps from ~1e-5 back to 3e-3
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=40, T_mult=2, eta_min=1e-5)
    fit(watch, model, opt, steps=300, batch_at=blob_images(seed=seed), loss_fn=F.mse_loss, scheduler=sched)


def train_sparse_parity_plateau(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([40, 128, 128, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    fit(watch, model, opt, steps=500, batch_at=sparse_parity(bits=40, seed=seed), loss_fn=F.cross_entropy)


def train_poisson_batch2_adagrad(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([8, 32, 1], activation=nn.Tanh)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
    # log-rate output; PoissonNLLLoss(log_input) = exp(o) - y*o: no log(y!) term, so it can go negative
    fit(watch, model, opt, steps=400, batch_at=poisson_counts(seed=seed), loss_fn=nn.PoissonNLLLoss(log_input=True))


RAMP_START, RAMP_END = 150, 200


def curriculum_noise(step: int) -> float:
    """Noise 0.5 until step 150, ramped linearly to 0.8 at step 200, then held (the data gets harder)."""
    return 0.5 + 0.3 * min(max((step - RAMP_START) / (RAMP_END - RAMP_START), 0.0), 1.0)


def train_conv1d_curriculum(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = Conv1dNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    data = motif_sequences(seed=seed)
    fit(watch, model, opt, steps=320, batch_at=lambda s: data(s, curriculum_noise(s)), loss_fn=F.cross_entropy)


def train_fir_identification_to_1e6(watch, seed: int) -> None:
    torch.manual_seed(seed)
    # 4 learned 9-tap filters mixed by a 1x1 conv: a linear model that can realise the unknown filter exactly
    model = nn.Sequential(nn.Conv1d(1, 4, 9, padding=4), nn.Conv1d(4, 1, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.5)
    fit(watch, model, opt, steps=400, batch_at=fir_signals(seed=seed), loss_fn=F.mse_loss, scheduler=sched)


def multitask_loss(out, target):
    logits, bright = out
    y, b = target
    return F.cross_entropy(logits, y, label_smoothing=0.1) + 0.5 * F.mse_loss(bright, b)


def train_vit_multitask_onecycle(watch, seed: int) -> None:
    torch.manual_seed(seed)
    steps = 250
    model = PatchViT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.25)
    fit(watch, model, opt, steps=steps, batch_at=shape_patches(seed=seed), loss_fn=multitask_loss, scheduler=sched)


H = frozenset({"healthy", "third"})

SCENARIOS: list[Scenario] = [
    Scenario(
        name="healthy_gru_lm_nesterov_step_decay",
        description="GRU LM (embedding dropout) on a peaked bigram grammar, loss at every position; SGD Nesterov "
        "lr 0.5, wd 1e-4, clip 1.0, lr x0.1 at steps 150 and 250.",
        train=train_gru_lm_nesterov_step_decay,
        tags=H | {"gru", "lm", "nesterov", "decay", "clip"},
    ),
    Scenario(
        name="healthy_conv_ae_cosine_restarts",
        description="Denoising conv autoencoder (strided conv / transposed conv), MSE, Adam 3e-3 with "
        "CosineAnnealingWarmRestarts(T_0=40, T_mult=2): lr jumps back up at 40, 120 and 280.",
        train=train_conv_ae_cosine_restarts,
        tags=H | {"autoencoder", "cnn", "adam", "sgdr"},
    ),
    Scenario(
        name="healthy_sparse_parity_plateau",
        description="ReLU MLP on 3-sparse parity of 40 bits, AdamW: the loss sits at ln 2 for a long plateau, "
        "then drops sharply (grokking-like).",
        train=train_sparse_parity_plateau,
        tags=H | {"mlp", "adamw", "plateau"},
    ),
    Scenario(
        name="healthy_poisson_batch2_adagrad",
        description="Tanh MLP, Poisson NLL (log input, no Stirling term: can be negative) on count data, batch 2, "
        "Adagrad: a very noisy per-step loss.",
        train=train_poisson_batch2_adagrad,
        tags=H | {"mlp", "adagrad", "poisson", "batch2"},
    ),
    Scenario(
        name="healthy_conv1d_curriculum_ramp",
        description=f"1-D conv net (no norm) finds class motifs in 3-channel signals, SGD momentum; curriculum: "
        f"noise 0.5 until step {RAMP_START}, ramped to 0.8 by step {RAMP_END} (the loss rises with the difficulty).",
        train=train_conv1d_curriculum,
        tags=H | {"conv1d", "momentum", "curriculum"},
    ),
    Scenario(
        name="healthy_fir_identification_to_1e-6",
        description="System identification: a linear 2-layer conv net learns an unknown 9-tap FIR filter from "
        "signals whose targets carry noise of std 1e-3; Adam 1e-2, lr x0.5 every 100 steps. The loss falls from "
        "~1 to its noise floor 1e-6 by step ~150 and stays there.",
        train=train_fir_identification_to_1e6,
        tags=H | {"conv1d", "linear", "adam", "decay", "tiny-loss"},
    ),
    Scenario(
        name="healthy_vit_multitask_onecycle",
        description="Tiny pre-LN ViT (3x3 patches, CLS token, dropout 0.1) with two heads: shape class "
        "(label smoothing 0.1) + brightness regression; AdamW wd 0.05 with OneCycleLR.",
        train=train_vit_multitask_onecycle,
        tags=H | {"vit", "transformer", "multitask", "adamw", "onecycle"},
    ),
]
