"""Offline recorder for set 16 (no gradwatch): loss, val and per-parameter grad norms per step, seeds 0,1,2.

usage: python _sixteenth_measure.py FILE.py [name-substring ...] [--onset=N] [--dump=STEP_A:STEP_B]
"""

import importlib.util
import json
import math
import statistics
import sys
import time

sys.path.insert(0, "/tmp/heldout16")
sys.path.insert(0, "/work/main")
import torch  # noqa: E402

torch.set_num_threads(1)


class Rec:
    def __init__(self, model, opt):
        self.model, self.opt = model, opt
        self.loss, self.val, self.gn, self.lr = [], {}, [], []
        self.names = [n for n, _ in model.named_parameters()]
        self.closed = False

    def step(self, loss, val_loss=None, grad_norm=None, **kw):
        s = len(self.loss)
        self.loss.append(float(loss))
        if val_loss is not None:
            self.val[s] = float(val_loss)
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
        self.lr.append(self.opt.param_groups[0]["lr"] if self.opt is not None else None)

    def close(self):
        self.closed = True


def run(scn, seed):
    holder = {}

    def watch(model, opt=None, **kw):
        assert "r" not in holder, "watch called twice"
        holder["r"] = Rec(model, opt)
        return holder["r"]

    t = time.time()
    scn.train(watch, seed)
    r = holder["r"]
    r.time = time.time() - t
    return r


def group_of(name):
    if name.startswith("rnn."):
        return name
    parts = name.split(".")
    # group by module path minus the parameter leaf, collapsed to two levels
    return ".".join(parts[:-1][:2]) or parts[0]


def fmt(x):
    if x is None:
        return "None"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.2g}"


def group_norms(r, a, b):
    """Per group: median and [min, max] of the group's grad norm over steps a..b-1; 'None' if never a grad."""
    groups = {}
    for j, n in enumerate(r.names):
        groups.setdefault(group_of(n), []).append(j)
    out = {}
    for gname, idx in groups.items():
        vals, nones = [], 0
        for row in r.gn[a:b]:
            xs = [row[j] for j in idx]
            if all(v is None for v in xs):
                nones += 1
                continue
            vals.append(math.sqrt(sum((v or 0.0) ** 2 for v in xs)))
        if not vals:
            out[gname] = "None"
        else:
            fin = [v for v in vals if math.isfinite(v)]
            med = statistics.median(fin) if fin else float("nan")
            s = f"{fmt(med)}[{fmt(min(fin) if fin else None)},{fmt(max(fin) if fin else None)}]"
            if len(fin) < len(vals):
                s += f" nonfinite{len(vals) - len(fin)}"
            if nones:
                s += f" none{nones}"
            out[gname] = s
    return out


def summarize(r, onset):
    L = r.loss
    n = len(L)
    nonfin_loss = [i for i, x in enumerate(L) if not math.isfinite(x)]
    nonfin_grad = [i for i, row in enumerate(r.gn) if any(v is not None and not math.isfinite(v) for v in row)]
    tot = [math.sqrt(sum(v * v for v in row if v is not None)) for row in r.gn]
    sp, spi = 0.0, -1
    for t in range(20, n):
        med = statistics.median(L[t - 20 : t])
        if math.isfinite(L[t]) and math.isfinite(med) and med > 0 and L[t] / med > sp:
            sp, spi = L[t] / med, t

    def m(a, b):
        xs = [x for x in L[max(0, a) : b] if math.isfinite(x)]
        return sum(xs) / len(xs) if xs else float("nan")

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
        loss=" ".join(fmt(x) for x in q),
        nonfin_loss=f"{len(nonfin_loss)} first {nonfin_loss[:3]}",
        nonfin_grad=f"{len(nonfin_grad)} first {nonfin_grad[:3]}",
        maxratio=f"{sp:.2f}@{spi}",
    )
    finite_tot = [(v, i) for i, v in enumerate(tot) if math.isfinite(v)]
    mx = max(finite_tot) if finite_tot else (float("nan"), -1)
    out["gtot"] = (
        f"first10 {fmt(statistics.median(tot[:10]))} max {fmt(mx[0])}@{mx[1]} last20 {fmt(statistics.median(tot[-20:]))}"
    )
    if r.val:
        ks = sorted(r.val)
        fin = [k for k in ks if math.isfinite(r.val[k])]
        vmin = min(fin, key=lambda k: r.val[k]) if fin else -1
        out["val"] = (
            f"first {fmt(r.val[ks[0]])} min {fmt(r.val.get(vmin))}@{vmin} last {fmt(r.val[ks[-1]])} "
            f"| " + " ".join(fmt(r.val[k]) for k in ks[:: max(1, len(ks) // 10)])
        )
    if onset is not None and onset > 0:
        a = max(0, onset - 30)
        out["pre"] = group_norms(r, a, onset)
        out["post"] = group_norms(r, onset, min(n, onset + 30))
        out["loss_around"] = " ".join(fmt(x) for x in L[max(0, onset - 5) : onset + 10])
        out["loss_pre30/post30/end"] = (
            f"{fmt(m(onset - 30, onset))} / {fmt(m(onset, onset + 30))} / {fmt(m(n - 20, n))}"
        )
        out["gtot_around"] = " ".join(fmt(x) for x in tot[max(0, onset - 3) : onset + 12])
    else:
        out["first20"] = group_norms(r, 0, 20)
        out["last20"] = group_norms(r, n - 20, n)
    lrs = [x for x in r.lr if x is not None]
    if lrs:
        out["lr"] = f"{fmt(lrs[0])} .. {fmt(lrs[n // 2])} .. {fmt(lrs[-1])}"
    return out


if __name__ == "__main__":
    path = sys.argv[1]
    args = sys.argv[2:]
    onset_override = None
    dump = None
    only = []
    for a in args:
        if a.startswith("--onset="):
            onset_override = int(a.split("=")[1])
        elif a.startswith("--dump="):
            dump = tuple(int(v) for v in a.split("=")[1].split(":"))
        else:
            only.append(a)
    spec = importlib.util.spec_from_file_location("m", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for scn in mod.SCENARIOS:
        if only and not any(o in scn.name for o in only):
            continue
        onset = onset_override
        if onset is None:
            ints = [v for v in scn.expect.values() if isinstance(v, int)]
            onset = ints[0] if ints else None
        print("==", scn.name, "expect", scn.expect, "allow", sorted(scn.allow), flush=True)
        for seed in (0, 1, 2):
            r = run(scn, seed)
            s = summarize(r, onset)
            print(f"  seed{seed}:")
            for k, v in s.items():
                print(f"    {k}: {json.dumps(v) if isinstance(v, dict) else v}")
            if dump:
                a, b = dump
                for t in range(a, min(b, len(r.loss))):
                    tot = math.sqrt(sum(v * v for v in r.gn[t] if v is not None))
                    print(f"      step {t} loss {fmt(r.loss[t])} gtot {fmt(tot)} val {fmt(r.val.get(t))}")
            sys.stdout.flush()
