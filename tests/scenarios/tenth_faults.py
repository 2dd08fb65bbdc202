"""Tenth held-out set, pathologies: each run has one labelled symptom at a known onset."""

from __future__ import annotations

import torch
from _common import fit, mlp, teacher_classification, teacher_regression
from _tenth_lib import gen
from torch import nn
from torch.nn import functional as F

from gradwatch.evaluation.scenario import AT_VAL_MINIMUM, Scenario

BLOWS_UP = frozenset({"loss_spike", "nonfinite"})


# --- exploding: ExponentialLR(gamma=1.03) where 0.97 was meant: the lr grows 3% per step ------------
# lr = 2e-3 * 1.03**t crosses the stability edge near step 165-175 (measured offline without gradwatch:
# grad norm > 3x its steps-80..140 median first at 169/176/164 for seeds 0/1/2; NaN at 210/210/192).
LR_GROWTH_ONSET = 165


def _lr_grows(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1], activation=nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=2e-3, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=1.03)
    fit(
        watch,
        model,
        opt,
        steps=260,
        batch_at=teacher_regression(seed=seed, noise=0.05),
        loss_fn=F.mse_loss,
        scheduler=sched,
    )


# --- exploding: phase 2 switches SGD -> Adam but reuses the SGD learning rate (0.1) ---------------
SWITCH_STEP = 120


def _adam_with_sgd_lr(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 1])
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = teacher_regression(seed=seed, noise=0.05)
    mon = watch(model, sgd)
    opt = sgd
    for step in range(240):
        if step == SWITCH_STEP:
            opt = torch.optim.Adam(model.parameters(), lr=sgd.param_groups[0]["lr"])
        x, y = data(step)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mon.step(loss.detach())


# --- nonfinite: pure fp16 training (model.half(), no autocast, no scaler); a batch in wrong units ----
FP16_UNITS_STEP = 150


def _fp16_units(watch, seed: int) -> None:
    torch.manual_seed(seed)
    base = teacher_regression(seed=seed, noise=0.1, scale=3.0)

    def batch_at(step):
        x, y = base(step)
        y = 20.0 + 5.0 * y  # raw units (e.g. degrees C)
        if step == FP16_UNITS_STEP:
            y = y * 100.0  # this shard was exported in centi-degrees
        return x.half(), y.half()

    model = mlp([16, 64, 64, 1]).half()
    with torch.no_grad():
        model[-1].bias.fill_(20.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    fit(watch, model, opt, steps=220, batch_at=batch_at, loss_fn=F.mse_loss)


# --- nonfinite: Adam(eps=0); embedding rows never seen get 0/0 = NaN at the first step -------------
RARE_TOKENS_STEP = 160


def _adam_eps0(watch, seed: int) -> None:
    torch.manual_seed(seed)
    vocab, common = 60, 40
    g0 = torch.Generator().manual_seed(seed + 17)
    tok_w = torch.randn(vocab, 3, generator=g0)

    def batch_at(step):
        g = gen(seed, step)
        hi = vocab if step >= RARE_TOKENS_STEP else common  # a new shard brings the rare tokens
        toks = torch.randint(0, hi, (32, 10), generator=g)
        y = tok_w[toks].sum(1).argmax(1)
        return toks, y

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, 16)
            self.head = mlp([16, 32, 3], activation=nn.Tanh)  # no dead units: every used weight gets a gradient

        def forward(self, toks):
            return self.head(self.emb(toks).mean(1))

    model = Bag()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, eps=0.0)
    fit(watch, model, opt, steps=220, batch_at=batch_at, loss_fn=F.cross_entropy)


# --- stagnation: logits detached by mistake; only an L2 penalty gives gradients ---------------------
def _detached_logits(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def loss_fn(out, y):
        l2 = sum((p**2).sum() for p in model.parameters())
        return F.cross_entropy(out.detach(), y) + 1e-4 * l2  # .detach() copied from the logging code

    fit(watch, model, opt, steps=220, batch_at=teacher_classification(seed=seed), loss_fn=loss_fn)


# --- vanishing: tanh MLP whose biases were initialised N(0, 4^2): units saturate ---------------------
def _tanh_big_bias(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([16] + [64] * 8 + [1], activation=nn.Tanh)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.normal_(m.bias, std=4.0)  # meant for the output scale, applied to every layer
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fit(watch, model, opt, steps=220, batch_at=teacher_regression(seed=seed, noise=0.05), loss_fn=F.mse_loss)


# --- overfitting: the row id leaks in as a categorical feature; the id embedding memorises --------
class WithRowId(nn.Module):
    def __init__(self, n_ids: int, dim: int = 12):
        super().__init__()
        self.ids = nn.Embedding(n_ids, 16)
        self.net = mlp([dim + 16, 64, 3])

    def forward(self, inputs):
        x, ids = inputs
        return self.net(torch.cat([x, self.ids(ids)], 1))


def _row_id_leak(watch, seed: int) -> None:
    torch.manual_seed(seed)
    n_train, n_val, dim = 128, 128, 12
    g0 = torch.Generator().manual_seed(seed + 29)
    teacher = torch.randn(dim, 3, generator=g0)
    x = torch.randn(n_train + n_val, dim, generator=g0)
    y = (x @ teacher + 1.5 * torch.randn(n_train + n_val, 3, generator=g0)).argmax(1)  # noisy labels
    ids = torch.arange(n_train + n_val)  # "customer_id" kept in the feature table

    def batch_at(step):
        i = torch.arange(32) + 32 * (step % 4)
        return (x[i], ids[i]), y[i]

    def val_at(k):
        i = n_train + torch.arange(32) + 32 * k
        return (x[i], ids[i]), y[i]

    model = WithRowId(n_train + n_val, dim)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.cross_entropy, val_at=val_at, val_every=5)


# --- loss spike: resume picks the lexicographically last checkpoint, ckpt_9 (step 45), at step 200 --
RESUME_STEP = 200


def _wrong_checkpoint(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = teacher_classification(dim=16, classes=4, seed=seed)
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    saved = {}

    def before(step, model, optimizer):
        if step % 5 == 0 and step < RESUME_STEP:
            saved[f"ckpt_{step // 5}"] = (
                {k: v.clone() for k, v in model.state_dict().items()},
                __import__("copy").deepcopy(optimizer.state_dict()),
            )
        if step == RESUME_STEP:  # preempted; "latest" = max(os.listdir(...)) -> "ckpt_9"
            m, o = saved[max(saved)]
            model.load_state_dict(m)
            optimizer.load_state_dict(o)

    fit(watch, model, opt, steps=300, batch_at=data, loss_fn=F.cross_entropy, before_step=before)


SCENARIOS: list[Scenario] = [
    Scenario(
        "explode10_exponentiallr_gamma_above_one",
        "Tanh regression MLP, SGD momentum lr 2e-3 with ExponentialLR(gamma=1.03) (meant 0.97): the lr grows 3%/step, "
        f"crosses the stability edge near step {LR_GROWTH_ONSET}; gradients grow, NaN by ~192-210.",
        _lr_grows,
        expect={"exploding_gradient": LR_GROWTH_ONSET},
        allow=BLOWS_UP,
        tags=frozenset({"mlp", "momentum", "scheduler", "tenth"}),
    ),
    Scenario(
        "explode10_adam_reuses_sgd_lr",
        f"ReLU regression MLP, SGD momentum lr 0.1; at step {SWITCH_STEP} phase 2 switches to Adam but reuses lr 0.1: "
        "loss 0.05 -> 8-47 and grad norm 0.25 -> 30-130 at once, grads 10-100x for ~15 steps, 3-10x after.",
        _adam_with_sgd_lr,
        expect={"exploding_gradient": SWITCH_STEP, "loss_spike": SWITCH_STEP},
        allow=frozenset({"nonfinite"}),
        tags=frozenset({"mlp", "adam", "optimizer-switch", "tenth"}),
    ),
    Scenario(
        "nonfinite10_pure_fp16_units_batch",
        f"Pure fp16 training (model.half(), no autocast, no GradScaler) of a regression in raw units; the batch at "
        f"step {FP16_UNITS_STEP} has targets x100 (wrong units): MSE overflows fp16 -> inf loss, NaN weights next.",
        _fp16_units,
        expect={"nonfinite": FP16_UNITS_STEP},
        allow=frozenset({"loss_spike", "exploding_gradient"}),
        tags=frozenset({"mlp", "fp16", "momentum", "tenth"}),
    ),
    Scenario(
        "nonfinite10_adam_eps0_unseen_embedding_rows",
        "Bag-of-embeddings classifier with Adam(eps=0): embedding rows of tokens absent from the first batch get "
        f"0/0 = NaN at step 0 (weights only; loss and grads finite); tokens 40-59 first appear at step {RARE_TOKENS_STEP}: NaN loss.",
        _adam_eps0,
        expect={"nonfinite": 0},
        allow=frozenset({"loss_spike", "exploding_gradient"}),
        tags=frozenset({"embedding", "adam", "tenth"}),
    ),
    Scenario(
        "stagnant10_detached_logits_l2_only",
        "ReLU MLP classifier, SGD momentum; the loss is cross_entropy(logits.detach()) + 1e-4*L2, so only the "
        "penalty has gradients (norm ~1e-3): the loss sits at ln 4.",
        _detached_logits,
        expect={"stagnation": 0},
        allow=frozenset({"vanishing_gradient"}),
        tags=frozenset({"mlp", "momentum", "detach", "tenth"}),
    ),
    Scenario(
        "vanish10_tanh_saturating_bias_init",
        "8-hidden-layer tanh MLP (Xavier weights) whose biases were all initialised N(0, 4^2): most units saturate; "
        "first-layer grads ~1e-5..1e-4 vs output layer ~0.1-1.",
        _tanh_big_bias,
        expect={"vanishing_gradient": 0},
        allow=frozenset({"stagnation"}),
        tags=frozenset({"mlp", "tanh", "momentum", "tenth"}),
    ),
    Scenario(
        "overfit10_row_id_leak_embedding",
        "Noisy 3-class tabular data where the row id leaked in as a categorical feature; its embedding memorises "
        "the 128 training rows (Adam): train CE -> 0.004, held-out CE rises from ~0.7 to 1.0-1.4.",
        _row_id_leak,
        expect={"overfitting": AT_VAL_MINIMUM},
        tags=frozenset({"mlp", "embedding", "adam", "tenth"}),
    ),
    Scenario(
        "spike10_resume_wrong_checkpoint",
        f"ReLU MLP classifier, SGD momentum; preempted at step {RESUME_STEP} and resumed from max(os.listdir()) = "
        "'ckpt_9' (step 45) instead of 'ckpt_39': loss 0.1-0.2 -> ~1.0, then relearns over ~75 steps.",
        _wrong_checkpoint,
        expect={"loss_spike": RESUME_STEP},
        tags=frozenset({"mlp", "momentum", "resume", "tenth"}),
    ),
]
