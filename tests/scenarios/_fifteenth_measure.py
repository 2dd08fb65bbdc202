"""Offline recorder for set 15 (no gradwatch): a fake ``watch`` whose ``.step(loss, val_loss=None, grad_norm=None)``
records the loss, the held-out loss and every parameter's gradient norm (None where .grad is None) each step.

Usage: python _fifteenth_measure.py FILE.py [name-substring ...]
Prints one summary line per seed (0, 1, 2) and writes the raw series to measure/<scenario>_s<seed>.json.
"""

import importlib.util
import json
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)


class Rec:
    def __init__(self, model, opt):
        self.model, self.opt = model, opt
        self.loss, self.val, self.gn, self.passed, self.lr = [], {}, [], [], []
        self.gnames = [n for n, _ in model.named_parameters()]
        self.closed = False

    def step(self, loss, val_loss=None, grad_norm=None, **kw):
        s = len(self.loss)
        self.loss.append(float(loss))
        if val_loss is not None:
            self.val[s] = float(val_loss)
        self.passed.append(None if grad_norm is None else float(grad_norm))
        self.lr.append(self.opt.param_groups[0]["lr"] if self.opt is not None else None)
        row = []
        for _, p in self.model.named_parameters():
            g = p.grad
            if g is None:
                row.append(None)
            else:
                if g.is_sparse:
                    g = g.coalesce()._values()
                row.append(float(g.float().norm()))
        self.gn.append(row)

    def close(self):
        self.closed = True


def run(scn, seed):
    holder = {}

    def watch(model, opt=None, **kw):
        holder["r"] = Rec(model, opt)
        return holder["r"]

    torch.manual_seed(12345)  # the harness's global RNG state is not ours to rely on
    t = time.time()
    scn.train(watch, seed)
    r = holder["r"]
    r.time = time.time() - t
    return r


def total_norms(r):
    return [math.sqrt(sum(v * v for v in row if v is not None and math.isfinite(v))) for row in r.gn]


def spike_ratio(L, window=20):
    sp, spi = 0.0, -1
    for t in range(window, len(L)):
        w = sorted(x for x in L[t - window : t] if math.isfinite(x))
        if not w or not math.isfinite(L[t]):
            continue
        med = w[len(w) // 2]
        if med > 0 and L[t] / med > sp:
            sp, spi = L[t] / med, t
    return sp, spi


def summarize(r):
    L = r.loss
    n = len(L)
    nonfin_loss = [i for i, x in enumerate(L) if not math.isfinite(x)]
    nonfin_grad = [i for i, row in enumerate(r.gn) if any(v is not None and not math.isfinite(v) for v in row)]
    tot = total_norms(r)
    sp, spi = spike_ratio(L)

    def m(a, b):
        xs = [x for x in L[max(0, a) : b] if math.isfinite(x)]
        return sum(xs) / max(1, len(xs))

    q = [m(0, 10), m(n // 4 - 10, n // 4 + 10), m(n // 2 - 10, n // 2 + 10)]
    q += [m(3 * n // 4 - 10, 3 * n // 4 + 10), m(n - 20, n)]
    fin = [x for x in tot if math.isfinite(x)]
    out = dict(
        n=n,
        t=round(r.time, 1),
        loss=" ".join(f"{x:.3g}" for x in q),
        nonfin_loss=f"{len(nonfin_loss)} {nonfin_loss[:3]}",
        nonfin_grad=f"{len(nonfin_grad)} {nonfin_grad[:3]}",
        spike=f"{sp:.2f}@{spi}",
        gnorm=f"first10 {sum(tot[:10]) / 10:.3g} min {min(fin):.3g}@{tot.index(min(fin))} "
        f"max {max(fin):.3g}@{tot.index(max(fin))} last20 {sum(tot[-20:]) / 20:.3g}",
    )
    if r.val:
        ks = sorted(r.val)
        vmin = min(ks, key=lambda k: r.val[k])
        out["val"] = f"first {r.val[ks[0]]:.3g} min {r.val[vmin]:.3g}@{vmin} last {r.val[ks[-1]]:.3g}"
        # slope of val over the last half of checks vs train over the same span
        half = ks[len(ks) // 2 :]
        out["val_2nd_half"] = f"{r.val[half[0]]:.3g}->{r.val[half[-1]]:.3g} (max {max(r.val[k] for k in half):.3g})"

    def meanp(j):
        xs = [row[j] for row in r.gn if row[j] is not None and math.isfinite(row[j])]
        return sum(xs) / len(xs) if xs else float("nan")

    j_last = max(0, len(r.gnames) - 2)
    out["g_first/last"] = f"{r.gnames[0]} {meanp(0):.3g} / {r.gnames[j_last]} {meanp(j_last):.3g}"
    never = [nm for j, nm in enumerate(r.gnames) if all(row[j] is None for row in r.gn)]
    if never:
        out["grad_never"] = f"{len(never)}/{len(r.gnames)}"
    none_steps = sum(1 for row in r.gn if any(v is None for v in row))
    if none_steps and not never:
        out["steps_with_some_None"] = none_steps
    skipped = [i for i, v in enumerate(r.passed) if v is not None and not math.isfinite(v)]
    if skipped:
        out["passed_inf_gradnorm_steps"] = f"{len(skipped)} {skipped[:12]}"
    return out


def dump(r, name, seed):
    os.makedirs(os.path.join(HERE, "measure"), exist_ok=True)
    with open(os.path.join(HERE, "measure", f"{name}_s{seed}.json"), "w") as f:
        json.dump(dict(loss=r.loss, val=r.val, gn=r.gn, names=r.gnames, lr=r.lr, passed=r.passed), f)


if __name__ == "__main__":
    path = sys.argv[1]
    only = sys.argv[2:]
    spec = importlib.util.spec_from_file_location("m", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for scn in mod.SCENARIOS:
        if only and not any(o in scn.name for o in only):
            continue
        print("==", scn.name, "expect", scn.expect, "allow", sorted(scn.allow), flush=True)
        for seed in (0, 1, 2):
            r = run(scn, seed)
            dump(r, scn.name, seed)
            print(f"  seed{seed}", json.dumps(summarize(r)), flush=True)
