"""Eleventh held-out set, healthy controls: realistic runs that should raise nothing.

Each was checked offline with _measure_healthy.py (output: measure_healthy.txt) (the plain recorder in _eleventh_lib, seeds 0-2):
finite everywhere, the task is learned (loss or the run's own quality measure improves), and where a
held-out loss is reported it does not rise from its minimum.
"""

from __future__ import annotations

import math

import torch
from _common import fit, held_out, mlp, quadrant_images, sequence_classification, teacher_classification
from _eleventh_lib import gen
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gradwatch.evaluation.scenario import Scenario


# --- MoCo-style contrastive learning: EMA key encoder + a queue of negatives, InfoNCE ----------------
def _moco(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 3)
    centers = 2.0 * torch.randn(40, 24, generator=g0)
    query = mlp([24, 128, 32])
    key = mlp([24, 128, 32])
    key.load_state_dict(query.state_dict())
    for p in key.parameters():
        p.requires_grad_(False)
    queue = F.normalize(torch.randn(512, 32, generator=g0), dim=1)
    opt = torch.optim.Adam(query.parameters(), lr=1e-3)
    mon = watch(query, opt)
    for step in range(250):
        g = gen(seed, step)
        c = centers[torch.randint(0, 40, (64,), generator=g)]
        x1 = c + 0.7 * torch.randn(64, 24, generator=g)  # two "augmented views" of each sample
        x2 = c + 0.7 * torch.randn(64, 24, generator=g)
        q = F.normalize(query(x1), dim=1)
        with torch.no_grad():
            k = F.normalize(key(x2), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
        loss = F.cross_entropy(logits, torch.zeros(64, dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pk, pq in zip(key.parameters(), query.parameters(), strict=True):
                pk.mul_(0.99).add_(pq, alpha=0.01)
            queue = torch.cat([k, queue[:-64]])
        mon.step(loss.detach())


# --- sparse mixture of experts: top-1 routing with a Switch-style load-balancing loss -----------------
class Top1MoE(nn.Module):
    def __init__(self, dim: int = 16, experts: int = 4, hidden: int = 64, out: int = 4):
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.router = nn.Linear(hidden, experts)
        self.experts = nn.ModuleList(mlp([hidden, 2 * hidden, hidden]) for _ in range(experts))
        self.head = nn.Linear(hidden, out)
        self.aux = torch.zeros(())

    def forward(self, x):
        h = F.relu(self.inp(x))
        probs = self.router(h).softmax(-1)
        top = probs.argmax(-1)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            sel = top == e
            if sel.any():  # an expert that gets no token this batch gets no gradient either
                out[sel] = expert(h[sel]) * probs[sel, e : e + 1]
        n = len(self.experts)
        frac = torch.bincount(top, minlength=n).float() / len(x)
        self.aux = n * (frac * probs.mean(0)).sum()
        return self.head(h + out)


def _moe(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = Top1MoE()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(
        watch,
        model,
        opt,
        steps=250,
        batch_at=teacher_classification(dim=16, classes=4, batch=64, seed=seed),
        loss_fn=lambda out, y: F.cross_entropy(out, y) + 0.01 * model.aux,
    )


# --- GRU language model on packed variable-length sequences, tied input/output embeddings ------------
VOCAB = 24
PAD = VOCAB  # padding index, ignored by the loss


class TiedGRULM(nn.Module):
    def __init__(self, d: int = 32):
        super().__init__()
        self.emb = nn.Embedding(VOCAB + 1, d, padding_idx=PAD)
        self.rnn = nn.GRU(d, 64, batch_first=True)
        self.proj = nn.Linear(64, d)

    def forward(self, inputs):
        toks, lengths = inputs
        packed = pack_padded_sequence(self.emb(toks), lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=toks.shape[1])
        return self.proj(out) @ self.emb.weight[:VOCAB].T  # tied output layer


def _packed_lm(watch, seed: int) -> None:
    torch.manual_seed(seed)
    trans = torch.softmax(2.5 * torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(seed + 8)), -1)

    def batch_at(step):
        g = gen(seed, step)
        lengths = torch.randint(4, 25, (32,), generator=g)
        toks = torch.empty((32, 25), dtype=torch.long)
        toks[:, 0] = torch.randint(0, VOCAB, (32,), generator=g)
        for i in range(1, 25):
            toks[:, i] = torch.multinomial(trans[toks[:, i - 1]], 1, generator=g).squeeze(1)
        toks[torch.arange(25)[None, :] > lengths[:, None]] = PAD
        targets = toks[:, 1:].clone()
        targets[torch.arange(24)[None, :] >= lengths[:, None]] = PAD
        return (toks[:, :-1], lengths), targets

    model = TiedGRULM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    fit(
        watch,
        model,
        opt,
        steps=220,
        batch_at=batch_at,
        loss_fn=lambda out, y: F.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1), ignore_index=PAD),
        clip=1.0,
    )


# --- large-batch training with a LARS optimizer (layer-wise trust ratio), warmup + polynomial decay ----
class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-4, eta=0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:  # no trust ratio / decay for biases, as usual
                    d = d.add(p, alpha=group["weight_decay"])
                    w_norm, d_norm = p.norm(), d.norm()
                    if w_norm > 0 and d_norm > 0:
                        d = d * (group["eta"] * w_norm / d_norm)
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])


def _lars(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp([32, 256, 256, 10])
    opt = LARS(model.parameters(), lr=8.0)
    warm, total = 20, 200
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, 1 - (s - warm) / (total - warm)) ** 2
    )
    fit(
        watch,
        model,
        opt,
        steps=total,
        batch_at=teacher_classification(dim=32, classes=10, batch=1024, seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


# --- knowledge distillation: KL at temperature 4 (x T^2) + hard-label CE, held-out CE every 10 steps ---
def _distill(watch, seed: int) -> None:
    torch.manual_seed(seed)
    data = teacher_classification(dim=20, classes=6, batch=64, label_noise=0.1, seed=seed)
    teacher = mlp([20, 256, 256, 6])
    t_opt = torch.optim.Adam(teacher.parameters(), lr=2e-3)
    for step in range(300):  # the teacher was trained beforehand (not monitored)
        x, y = data(50_000 + step)
        t_loss = F.cross_entropy(teacher(x), y)
        t_opt.zero_grad()
        t_loss.backward()
        t_opt.step()
    teacher.eval()
    student = mlp([20, 48, 6])
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    temp = 4.0

    def loss_fn(out, y):
        return F.cross_entropy(out, y)

    mon = watch(student, opt)
    val = held_out(data)
    for step in range(300):
        x, y = data(step)
        with torch.no_grad():
            soft = F.softmax(teacher(x) / temp, -1)
        out = student(x)
        kd = F.kl_div(F.log_softmax(out / temp, -1), soft, reduction="batchmean") * temp**2
        loss = 0.7 * kd + 0.3 * F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        val_loss = None
        if step % 10 == 9:
            with torch.no_grad():
                val_loss = sum(float(loss_fn(student(vx), vy)) for vx, vy in (val(i) for i in range(4))) / 4
        mon.step(loss.detach(), val_loss=val_loss)


# --- advantage actor-critic on a small chain MDP, 16 parallel environments ------------------------------
def _a2c(watch, seed: int) -> None:
    torch.manual_seed(seed)
    n_states, n_envs, horizon = 10, 16, 8
    net = mlp([n_states, 64, 3], activation=nn.Tanh)  # 2 action logits + 1 value
    opt = torch.optim.RMSprop(net.parameters(), lr=2e-3, alpha=0.99, eps=1e-5)
    mon = watch(net, opt)
    state = torch.zeros(n_envs, dtype=torch.long)
    for step in range(300):
        g = gen(seed, step)
        logps, values, rewards, entropies, dones = [], [], [], [], []
        for _ in range(horizon):
            out = net(F.one_hot(state, n_states).float())
            logp_all = out[:, :2].log_softmax(-1)
            a = torch.multinomial(logp_all.exp().detach(), 1, generator=g).squeeze(1)
            slip = torch.rand(n_envs, generator=g) < 0.2  # noisy dynamics
            move = torch.where(slip, 1 - a, a) * 2 - 1
            state = (state + move).clamp(0, n_states - 1)
            done = state == n_states - 1
            reward = done.float() - 0.02 + 0.1 * torch.randn(n_envs, generator=g)
            logps.append(logp_all.gather(1, a[:, None]).squeeze(1))
            values.append(out[:, 2])
            rewards.append(reward)
            entropies.append(-(logp_all.exp() * logp_all).sum(-1))
            dones.append(done.float())
            state = torch.where(done, torch.zeros_like(state), state)
        with torch.no_grad():
            ret = net(F.one_hot(state, n_states).float())[:, 2]
        returns = []
        for r, d in zip(reversed(rewards), reversed(dones), strict=True):
            ret = r + 0.95 * ret * (1 - d)
            returns.append(ret)
        returns = torch.stack(returns[::-1])
        values_t, logps_t = torch.stack(values), torch.stack(logps)
        adv = (returns - values_t).detach()
        loss = -(logps_t * adv).mean() + 0.5 * (returns - values_t).pow(2).mean() - 0.01 * torch.stack(entropies).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        mon.step(loss.detach(), mean_reward=float(torch.stack(rewards).mean()))


# --- sparse autoencoder with an L1 penalty on the codes (many latents are dead by design) -------------
def _sae(watch, seed: int) -> None:
    torch.manual_seed(seed)
    g0 = torch.Generator().manual_seed(seed + 19)
    dictionary = F.normalize(torch.randn(48, 16, generator=g0), dim=1)

    def batch_at(step):
        g = gen(seed, step)
        active = (torch.rand(128, 48, generator=g) < 0.06).float()
        codes = active * torch.rand(128, 48, generator=g) * 2
        x = codes @ dictionary + 0.02 * torch.randn(128, 16, generator=g)
        return x, x

    class SAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(16, 256)
            self.dec = nn.Linear(256, 16)
            self.codes = None

        def forward(self, x):
            self.codes = F.relu(self.enc(x))
            return self.dec(self.codes)

    model = SAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=batch_at,
        loss_fn=lambda out, x: F.mse_loss(out, x) + 3e-3 * model.codes.abs().sum(1).mean(),
    )


# --- VQ autoencoder: nearest-codebook quantisation with a straight-through estimator ------------------
# l2-normalised codes and codebook (cosine-similarity lookup, as in ViT-VQGAN).
class VQAE(nn.Module):
    def __init__(self, dim: int = 16, code_dim: int = 8, codes: int = 32):
        super().__init__()
        self.enc = mlp([dim, 64, code_dim])
        self.codebook = nn.Embedding(codes, code_dim)
        self.dec = mlp([code_dim, 64, dim])
        self.vq_loss = torch.zeros(())

    def forward(self, x):
        z = F.normalize(self.enc(x), dim=1)
        book = F.normalize(self.codebook.weight, dim=1)
        zq = book[(z @ book.T).argmax(1)]  # codes no sample picks get no gradient this step
        self.vq_loss = F.mse_loss(zq, z.detach()) + 0.25 * F.mse_loss(z, zq.detach())
        return self.dec(z + (zq - z).detach())


def _vq(watch, seed: int) -> None:
    torch.manual_seed(seed)
    centers = 1.5 * torch.randn(20, 16, generator=torch.Generator().manual_seed(seed + 23))

    def batch_at(step):
        g = gen(seed, step)
        x = centers[torch.randint(0, 20, (128,), generator=g)] + 0.3 * torch.randn(128, 16, generator=g)
        return x, x

    model = VQAE()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=lambda out, x: F.mse_loss(out, x) + model.vq_loss)


# --- SIREN (sine activations, omega_0 = 30) fitting a 2-D signal from coordinates -----------------------
class Sine(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, omega: float = 30.0, first: bool = False):
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out)
        self.omega = omega
        bound = 1 / fan_in if first else math.sqrt(6 / fan_in) / omega
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, x):
        return torch.sin(self.omega * self.linear(x))


def _siren(watch, seed: int) -> None:
    torch.manual_seed(seed)
    side = torch.linspace(-1, 1, 48)
    yy, xx = torch.meshgrid(side, side, indexing="ij")
    coords = torch.stack([xx, yy], -1).reshape(-1, 2)
    r = coords.norm(dim=1)
    image = (torch.sin(10 * r) * torch.exp(-2 * r) + 0.5 * torch.sign(coords[:, 0] * coords[:, 1])).unsqueeze(1)

    def batch_at(step):
        g = gen(seed, step)
        i = torch.randint(0, len(coords), (1024,), generator=g)
        return coords[i], image[i]

    model = nn.Sequential(Sine(2, 128, first=True), Sine(128, 128), Sine(128, 128), nn.Linear(128, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fit(watch, model, opt, steps=300, batch_at=batch_at, loss_fn=F.mse_loss)


# --- masked autoencoder: transformer encoder sees 25% of the patches, loss on the masked ones ----------
class TinyMAE(nn.Module):
    def __init__(self, patches: int = 16, patch_dim: int = 16, d: int = 48):
        super().__init__()
        self.embed = nn.Linear(patch_dim, d)
        self.pos = nn.Parameter(torch.randn(patches, d))
        layer = nn.TransformerEncoderLayer(d, 4, 96, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.mask_token = nn.Parameter(torch.zeros(d))
        dec_layer = nn.TransformerEncoderLayer(d, 4, 96, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(dec_layer, 1, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, patch_dim))

    def forward(self, inputs):
        patches, keep = inputs  # keep: (B, k) indices of visible patches
        b, n, _ = patches.shape
        tokens = self.embed(patches) + self.pos
        visible = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        encoded = self.encoder(visible)
        full = self.mask_token.expand(b, n, -1).clone() + self.pos
        full = full.scatter(1, keep[..., None].expand(-1, -1, full.shape[-1]), encoded)
        return self.out(self.decoder(full))  # a light transformer decoder over all 16 tokens


def _mae(watch, seed: int) -> None:
    torch.manual_seed(seed)
    images = quadrant_images(batch=32, size=16, noise=0.3, seed=seed)

    def batch_at(step):
        x, _ = images(step)
        patches = x.reshape(32, 4, 4, 4, 4).permute(0, 1, 3, 2, 4).reshape(32, 16, 16)
        g = gen(seed, step, salt=1)
        order = torch.argsort(torch.rand(32, 16, generator=g), dim=1)
        return (patches, order[:, :4]), (patches, order[:, 4:])

    def loss_fn(out, target):
        patches, masked = target
        idx = masked[..., None].expand(-1, -1, patches.shape[-1])
        return F.mse_loss(out.gather(1, idx), patches.gather(1, idx))

    model = TinyMAE()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.05, total_iters=20)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=230)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[20])
    fit(watch, model, opt, steps=250, batch_at=batch_at, loss_fn=loss_fn, scheduler=sched)


# --- dilated causal TCN with CyclicLR (exp_range) and cycled momentum ---------------------------------
class TCN(nn.Module):
    def __init__(self, dim: int = 4, ch: int = 32, classes: int = 4):
        super().__init__()
        self.inp = nn.Conv1d(dim, ch, 1)
        self.convs = nn.ModuleList(nn.Conv1d(ch, ch, 2, dilation=d) for d in (1, 2, 4, 8))
        self.head = nn.Linear(ch, classes)

    def forward(self, x):
        h = self.inp(x.transpose(1, 2))
        for conv in self.convs:
            h = h + F.relu(conv(F.pad(h, (conv.dilation[0], 0))))
        return self.head(h[:, :, -1])


def _tcn(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = TCN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=0.005, max_lr=0.05, step_size_up=25, mode="exp_range", gamma=0.995, cycle_momentum=True
    )
    fit(
        watch,
        model,
        opt,
        steps=300,
        batch_at=sequence_classification(batch=32, length=16, dim=4, seed=seed),
        loss_fn=F.cross_entropy,
        scheduler=sched,
    )


# --- delayed recall: an LSTM must remember the first token over 10 noisy steps (plateau, then drop) ----
def _delayed_recall(watch, seed: int) -> None:
    torch.manual_seed(seed)

    def batch_at(step):
        g = gen(seed, step)
        y = torch.randint(0, 8, (32,), generator=g)
        x = 0.5 * torch.randn(32, 10, 9, generator=g)
        x[:, 0, :8] += 2.0 * F.one_hot(y, 8).float()
        x[:, -1, 8] = 1.0  # "recall now" marker
        return x, y

    class Recall(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(9, 48, batch_first=True)
            self.head = nn.Linear(48, 8)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    model = Recall()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(watch, model, opt, steps=350, batch_at=batch_at, loss_fn=F.cross_entropy, clip=1.0)


SCENARIOS: list[Scenario] = [
    Scenario(
        "healthy11_moco_queue_ema_infonce",
        "MoCo-style contrastive learning: MLP query encoder (Adam), EMA key encoder (0.99), 512-key queue, "
        "InfoNCE at temperature 0.2 on two noisy views of 40 clusters.",
        _moco,
        tags=frozenset({"mlp", "contrastive", "ema", "adam", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_top1_moe_load_balance",
        "Top-1 routed mixture of 4 MLP experts with a Switch-style load-balancing loss (Adam): experts that get "
        "no token in a batch get no gradient that step.",
        _moe,
        tags=frozenset({"moe", "routing", "adam", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_packed_gru_tied_lm",
        "GRU language model on packed variable-length (4-24) Markov-chain sequences, tied input/output "
        "embeddings, padding ignored in the loss, AdamW with clip_grad_norm_(1.0).",
        _packed_lm,
        tags=frozenset({"rnn", "gru", "lm", "packed", "tied", "adamw", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_lars_batch1024_poly",
        "Batch-1024 MLP classifier with a hand-written LARS optimizer (trust ratio 0.001, lr 8) behind a 20-step "
        "warmup and quadratic polynomial decay to 0.",
        _lars,
        tags=frozenset({"mlp", "lars", "large-batch", "scheduler", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_distillation_kl_t4",
        "Small student MLP distilled from a trained teacher: 0.7 * KL(T=4) * T^2 + 0.3 * CE (10% label noise), "
        "Adam; held-out CE every 10 steps.",
        _distill,
        tags=frozenset({"mlp", "distillation", "adam", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_a2c_chain_mdp",
        "Advantage actor-critic (RMSprop, clip 0.5) on a slippery 10-state chain, 16 envs x 8-step rollouts: "
        "noisy, sign-changing loss while the reward rate rises.",
        _a2c,
        tags=frozenset({"mlp", "rl", "rmsprop", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_sparse_autoencoder_l1",
        "Overcomplete sparse autoencoder (16 -> 256 ReLU codes) with an L1 code penalty, Adam: many latents go dead "
        "by design while reconstruction improves.",
        _sae,
        tags=frozenset({"autoencoder", "sparse", "adam", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_vq_straight_through",
        "VQ autoencoder: 32-entry l2-normalised codebook, nearest-code quantisation with straight-through "
        "gradients, codebook + 0.25 commitment loss, Adam; unused codes get no gradient.",
        _vq,
        tags=frozenset({"autoencoder", "vq", "adam", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_siren_coordinate_fit",
        "SIREN (sine activations, omega_0 = 30, SIREN init) fitting a 48x48 2-D signal from coordinates, Adam 1e-4: "
        "large first-layer gradients, loss falls by orders of magnitude.",
        _siren,
        tags=frozenset({"mlp", "siren", "adam", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_masked_autoencoder_patches",
        "Tiny masked autoencoder: pre-LN transformer encoder on 4 of 16 image patches, 1-layer transformer decoder, "
        "loss on the 12 masked ones, AdamW 3e-3 with warmup + cosine: plateau at the mean-patch loss ~75 steps, then drops.",
        _mae,
        tags=frozenset({"transformer", "mae", "adamw", "scheduler", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_tcn_cyclic_exp_range",
        "Dilated causal residual TCN (Conv1d) on sequence classification, SGD with CyclicLR exp_range "
        "(0.005-0.05, 50-step cycles, decaying amplitude) and cycled momentum.",
        _tcn,
        tags=frozenset({"cnn", "tcn", "momentum", "cyclic", "healthy", "eleventh"}),
    ),
    Scenario(
        "healthy11_delayed_recall_lstm_plateau",
        "LSTM must output the class shown in the first of 10 noisy steps (Adam, clip 1.0): the loss sits at "
        "ln 8 for ~50-75 steps, then drops once the memory forms.",
        _delayed_recall,
        tags=frozenset({"rnn", "lstm", "plateau", "adam", "healthy", "eleventh"}),
    ),
]
