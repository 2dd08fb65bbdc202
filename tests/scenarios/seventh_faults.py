"""Seventh set, pathologies: each run has one labelled symptom at a known onset.

Written apart from the rules and first run as a held-out set (2026-11-27): every fault was found
within its target.
"""

from __future__ import annotations

import torch
from _common import MeanPoolTransformer, fit, fixed_dataset, mlp, sequence_classification
from _seventh_lib import AttentionPoolClassifier
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

# --- nonfinite: an empty document (all padding) -> softmax over all -inf keys = NaN ----------
EMPTY_DOC_STEP = 170
VOCAB = 30


def _padded_docs(seed: int, batch: int = 32, length: int = 12):
    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        tokens = torch.randint(1, VOCAB, (batch, length), generator=g)
        lengths = torch.randint(3, length + 1, (batch,), generator=g)
        if step == EMPTY_DOC_STEP:
            lengths[5] = 0  # an empty document slipped through the tokenizer
        pad = torch.arange(length)[None] >= lengths[:, None]
        tokens = tokens.masked_fill(pad, 0)
        # label: more "positive" tokens (1..9) than "negative" ones (20..29)
        pos = ((tokens >= 1) & (tokens <= 9)).sum(1)
        neg = (tokens >= 20).sum(1)
        return tokens, (pos > neg).long()

    return batch_at


def _empty_doc(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = AttentionPoolClassifier(VOCAB, d=32, classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=_padded_docs(seed), loss_fn=F.cross_entropy)


# --- exploding: character-level LSTM LM, plain SGD, no clipping, lr raised 0.5 -> 20 ----------
LR_JUMP_STEP = 150


class CharLSTM(nn.Module):
    def __init__(self, vocab: int = 12, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        return self.out(h)


def _lstm_lm_lr_jump(watch, seed: int) -> None:
    torch.manual_seed(seed)
    V = 12
    gen = torch.Generator().manual_seed(seed + 41)
    trans = torch.softmax(3.0 * torch.randn(V, V, generator=gen), 1)  # a peaked Markov chain

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        seq = torch.empty(32, 25, dtype=torch.long)
        seq[:, 0] = torch.randint(0, V, (32,), generator=g)
        for t in range(1, 25):
            seq[:, t] = torch.multinomial(trans[seq[:, t - 1]], 1, generator=g).squeeze(1)
        return seq[:, :-1], seq[:, 1:]

    model = CharLSTM(V)

    def before_step(step, _m, opt):
        if step == LR_JUMP_STEP:
            for g in opt.param_groups:
                g["lr"] = 20.0  # resumed with a config meant for a per-token-summed loss

    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    fit(
        watch,
        model,
        opt,
        steps=260,
        batch_at=batch_at,
        loss_fn=lambda o, y: F.cross_entropy(o.reshape(-1, V), y.reshape(-1)),
        before_step=before_step,
    )


# --- vanishing: deep sigmoid autoencoder, no normalisation, plain SGD ------------------------
def _deep_sigmoid_ae(watch, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 3)
    mix = torch.randn(4, 32, generator=gen)

    def batch_at(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.sigmoid(torch.randn(64, 4, generator=g) @ mix)
        return x, x

    widths = [32, 64, 64, 64, 64, 64, 8, 64, 64, 64, 64, 64, 32]
    model = mlp(widths, activation=nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.mse_loss)


# --- loss spike: a collate bug gives one batch a single label for every sample ----------------
CONST_LABEL_STEP = 200


def _constant_label_batch(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = sequence_classification(seed=seed, dim=8)

    def batch_at(step: int):
        x, y = base(step)
        if step == CONST_LABEL_STEP:
            y = torch.full_like(y, int(y[0]))  # labels broadcast from the first sample
        return x, y

    model = MeanPoolTransformer(dim=8, d_model=32, layers=2, out=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    fit(watch, model, opt, steps=320, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- stagnation: MultiStepLR with gamma=0.0 (typo for 0.1) zeroes the lr at step 120 ----------
LR_ZERO_STEP = 120


class GRUClassifier(nn.Module):
    def __init__(self, dim: int = 4, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def _lr_zero(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[LR_ZERO_STEP], gamma=0.0)
    fit(
        watch,
        model,
        opt,
        steps=320,
        batch_at=sequence_classification(seed=seed, label_noise=0.05),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


# --- overfitting: token-embedding text classifier memorises 96 noisy documents ---------------
def _text_memorise(watch, seed: int) -> None:
    torch.manual_seed(seed)
    V = 60
    gen = torch.Generator().manual_seed(seed + 51)
    polarity = torch.randn(V, generator=gen)  # each token's true sentiment weight

    def base(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        tok = torch.randint(0, V, (32, 16), generator=g)
        y = (polarity[tok].sum(1) > 0).long()
        flip = torch.rand(32, generator=g) < 0.15
        return tok, torch.where(flip, 1 - y, y)

    class BagClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(V, 16)
            nn.init.normal_(self.emb.weight, std=0.1)
            self.mlp = mlp([16, 64, 2])

        def forward(self, tok):
            return self.mlp(self.emb(tok).mean(1))

    model = BagClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        watch,
        model,
        opt,
        steps=350,
        batch_at=fixed_dataset(base, 4),
        loss_fn=F.cross_entropy,
        val_at=lambda i: base(10**6 + i),
        val_every=5,
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        "nonfinite_empty_document_masked_attention",
        f"Attention-pooling text classifier with -inf padding masks (Adam); at step {EMPTY_DOC_STEP} one "
        "document is empty, every key is masked, softmax gives NaN.",
        _empty_doc,
        expect={"nonfinite": EMPTY_DOC_STEP},
        tags=frozenset({"attention", "adam"}),
    ),
    Scenario(
        "explode_char_lstm_lr_jump_sgd",
        f"Char-level LSTM LM, SGD momentum, no clipping; at step {LR_JUMP_STEP} lr goes 0.5 -> 20.",
        _lstm_lm_lr_jump,
        expect={"exploding_gradient": LR_JUMP_STEP},
        allow=frozenset({"loss_spike", "nonfinite", "stagnation", "vanishing_gradient"}),
        tags=frozenset({"lstm", "momentum"}),
    ),
    Scenario(
        "vanish_deep_sigmoid_autoencoder",
        "12-layer sigmoid autoencoder (32-64x5-8-64x5-32), default init, no normalisation, SGD momentum.",
        _deep_sigmoid_ae,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=frozenset({"mlp", "momentum", "autoencoder"}),
    ),
    Scenario(
        "spike_constant_label_batch_transformer",
        f"Mean-pool transformer sequence classifier (AdamW); at step {CONST_LABEL_STEP} a collate bug gives "
        "every sample the first sample's label; loss jumps then recovers.",
        _constant_label_batch,
        expect={"loss_spike": CONST_LABEL_STEP},
        allow=frozenset({"exploding_gradient"}),
        tags=frozenset({"transformer", "adamw"}),
    ),
    Scenario(
        "stagnant_multisteplr_gamma_zero",
        f"GRU classifier (Adam) with MultiStepLR(milestones=[{LR_ZERO_STEP}], gamma=0.0): lr is exactly 0 "
        "from then on, while the loss was still falling.",
        _lr_zero,
        expect={"stagnation": LR_ZERO_STEP},
        tags=frozenset({"gru", "adam"}),
    ),
    Scenario(
        "overfit_bag_of_embeddings_tiny_text",
        "Bag-of-embeddings text classifier (60-token vocab, Adam) memorises 128 documents with 15% flipped "
        "labels; held-out CE every 5 steps.",
        _text_memorise,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"embedding", "adam"}),
    ),
]
