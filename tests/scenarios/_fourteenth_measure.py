"""Offline recorder (no gradwatch): loss, val and per-parameter grad norms per step, seeds 0,1,2."""

import importlib.util
import json
import math
import sys
import time

import torch

sys.path.insert(0, "/tmp/heldout14")
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)


class Rec:
    def __init__(self, model, opt):
        self.model, self.opt = model, opt
        self.loss, self.val, self.gn, self.gnames, self.passed = [], {}, [], None, []
        names = [n for n, _ in model.named_parameters()]
        self.gnames = names

    def step(self, loss, val_loss=None, grad_norm=None, **kw):
        s = len(self.loss)
        self.loss.append(float(loss))
        if val_loss is not None:
            self.val[s] = float(val_loss)
        self.passed.append(None if grad_norm is None else float(grad_norm))
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
        pass


def run(scn, seed):
    holder = {}

    def watch(model, opt=None, **kw):
        holder["r"] = Rec(model, opt)
        return holder["r"]

    t = time.time()
    scn.train(watch, seed)
    r = holder["r"]
    r.time = time.time() - t
    return r


def summarize(r):
    L = r.loss
    n = len(L)
    nonfin_loss = [i for i, x in enumerate(L) if not math.isfinite(x)]
    nonfin_grad = [i for i, row in enumerate(r.gn) if any(v is not None and not math.isfinite(v) for v in row)]
    tot = [math.sqrt(sum(v * v for v in row if v is not None and math.isfinite(v))) for row in r.gn]
    # spike: max loss[t] / median(loss[t-20:t])
    sp, spi = 0, -1
    for t in range(20, n):
        w = sorted(L[t - 20 : t])
        med = w[10]
        if math.isfinite(L[t]) and med > 0 and L[t] / med > sp:
            sp, spi = L[t] / med, t

    def m(a, b):
        xs = [x for x in L[a:b] if math.isfinite(x)]
        return sum(xs) / max(1, len(xs))

    q = [
        m(0, 10),
        m(n // 4 - 10, n // 4 + 10),
        m(n // 2 - 10, n // 2 + 10),
        m(3 * n // 4 - 10, 3 * n // 4 + 10),
        m(n - 20, n),
    ]
    out = dict(
        n=n,
        t=round(r.time, 1),
        loss=" ".join(f"{x:.3g}" for x in q),
        nonfin_loss=nonfin_loss[:3],
        nonfin_grad=nonfin_grad[:3],
        spike=f"{sp:.2f}@{spi}",
        gnorm=f"first10 {sum(tot[:10]) / 10:.3g} max {max(tot):.3g}@{tot.index(max(tot))} last20 {sum(tot[-20:]) / 20:.3g}",
    )
    if r.val:
        ks = sorted(r.val)
        vmin = min(ks, key=lambda k: r.val[k])
        out["val"] = f"first {r.val[ks[0]]:.3g} min {r.val[vmin]:.3g}@{vmin} last {r.val[ks[-1]]:.3g}"

    # first vs last param grad norm (mean over run, finite, non-None)
    def meanp(j):
        xs = [row[j] for row in r.gn if row[j] is not None and math.isfinite(row[j])]
        return sum(xs) / len(xs) if xs else float("nan")

    out["g_first/last"] = f"{r.gnames[0]} {meanp(0):.3g} / {r.gnames[-2]} {meanp(len(r.gnames) - 2):.3g}"
    skipped = [i for i, v in enumerate(r.passed) if v is not None and not math.isfinite(v)]
    if skipped:
        out["passed_inf_gradnorm_steps"] = f"{len(skipped)} {skipped[:12]}"
    return out


if __name__ == "__main__":
    path = sys.argv[1]
    only = sys.argv[2:]
    spec = importlib.util.spec_from_file_location("m", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for scn in mod.SCENARIOS:
        if only and not any(o in scn.name for o in only):
            continue
        print("==", scn.name, "expect", scn.expect, "allow", set(scn.allow), flush=True)
        for seed in (0, 1, 2):
            r = run(scn, seed)
            print(f"  seed{seed}", json.dumps(summarize(r)), flush=True)
