"""Offline recorder for the held-out sets (plain PyTorch, no gradwatch), used for sets 18 to 20.

Trains each scenario of a file through a stand-in for watch() that records, at every mon.step() (after the
optimizer step): the loss, the held-out loss (when given), the L2 norm of every parameter's gradient grouped by
module (None = no gradient; sparse gradients are coalesced first), the size of the update since the previous call
(||w_t - w_{t-1}|| / ||w_{t-1}|| per module) and whether any loss/gradient/weight is NaN/Inf. Then prints a per-seed
summary, with whatever the train function left in the set's ``_SET_lib.DIAG`` (when it has one).

usage: python _measure.py SET [FILE.py ...] [name-substring ...] [--at=STEP] [--dump=A:B] [--seeds=0,1,2]

SET is the set's file prefix (eighteenth, nineteenth, twentieth). With no FILE.py, SET_faults.py and SET_healthy.py are
loaded; name substrings select scenarios (none = all of them).

--at=STEP   also summarise the windows [STEP-30, STEP) and [STEP, STEP+30) (default: the first integer onset > 0)
--dump=A:B  print, for each step A..B-1: loss, total grad norm, lowest/highest module grad norm, total update, val
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

torch.set_num_threads(1)


def _norm(t):
    if t is None:
        return None
    if t.is_sparse:
        t = t.coalesce().values()
    return float(t.detach().float().norm())


class Recorder:
    """Parameters are tracked by name at every step, so a run that swaps parameters mid-run (remove_weight_norm)
    is recorded too: a parameter that appears gets a grad norm and a zero update on its first step."""

    def __init__(self, model, optimizer):
        self.model, self.opt = model, optimizer
        self.names = [n for n, _ in model.named_parameters()]
        self.loss: list[float] = []
        self.val: dict[int, float] = {}
        self.grads: list[list[float | None]] = []
        self.upd: list[list[float]] = []
        self.wbad: list[bool] = []
        self.lr: list[float | None] = []
        self.clip: list[float | None] = []
        self.extra: dict[str, list[float]] = {}
        self.prev = {n: p.detach().clone() for n, p in model.named_parameters()}

    def step(self, loss, val_loss=None, grad_norm=None, **kw):
        s = len(self.loss)
        self.loss.append(float(loss))
        if val_loss is not None:
            self.val[s] = float(val_loss)
        params = dict(self.model.named_parameters())
        for n in params:
            if n not in self.names:
                self.names.append(n)
        self.grads.append([_norm(params[n].grad) if n in params else None for n in self.names])
        upd = []
        bad = False
        for n in self.names:
            if n not in params:
                upd.append((0.0, 0.0))
                continue
            w = params[n].detach()
            if not torch.isfinite(w).all():
                bad = True
            old = self.prev.get(n)
            if old is None or old.shape != w.shape:
                old = w
            upd.append((float((w - old).norm()), float(old.norm())))
            self.prev[n] = w.clone()
        self.upd.append(upd)
        self.wbad.append(bad)
        self.lr.append(self.opt.param_groups[0]["lr"] if self.opt is not None else None)
        self.clip.append(None if grad_norm is None else float(grad_norm))
        for k, v in kw.items():
            self.extra.setdefault(k, []).append(float(v))

    def close(self):
        pass


def _diag(set_name):
    """The set's DIAG dict (numbers its train functions leave for this script), or a throwaway one."""
    try:
        return importlib.import_module(f"_{set_name}_lib").DIAG
    except (ImportError, AttributeError):
        return {}


def record(scn, seed, set_name):
    diag = _diag(set_name)
    diag.clear()
    box = {}

    def watch(model, optimizer=None, **_):
        assert "r" not in box, "watch() called twice"
        box["r"] = Recorder(model, optimizer)
        return box["r"]

    t0 = time.time()
    scn.train(watch, seed)
    r = box["r"]
    r.seconds = time.time() - t0
    r.diag = dict(diag)
    return r


def groups(r):
    out: dict[str, list[int]] = {}
    for j, n in enumerate(r.names):
        out.setdefault(".".join(n.split(".")[:-1]) or n, []).append(j)
    return out


def gnorm(row, idx):
    xs = [row[j] if j < len(row) else None for j in idx]
    if all(v is None for v in xs):
        return None
    return math.sqrt(sum((v or 0.0) ** 2 for v in xs))


def unorm(row, idx):
    d = math.sqrt(sum(row[j][0] ** 2 for j in idx if j < len(row)))
    w = math.sqrt(sum(row[j][1] ** 2 for j in idx if j < len(row)))
    return d / w if w > 0 else d


def total(row):
    xs = [v for v in row if v is not None]
    return math.sqrt(sum(v * v for v in xs)) if xs else None


def f(x):
    if x is None:
        return "None"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.2g}"


def fmean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def window(r, a, b, upd=False):
    parts = []
    for name, idx in groups(r).items():
        if upd:
            vals = [unorm(row, idx) for row in r.upd[a:b]]
        else:
            vals = [gnorm(row, idx) for row in r.grads[a:b]]
        none = sum(v is None for v in vals)
        fin = [v for v in vals if v is not None and math.isfinite(v)]
        nonfin = len(vals) - none - len(fin)
        s = f"{name}={f(statistics.median(fin)) if fin else '-'}"
        if not upd:
            s += f"[{f(min(fin)) if fin else '-'},{f(max(fin)) if fin else '-'}]"
        if none:
            s += f"N{none}"
        if nonfin:
            s += f"!{nonfin}"
        parts.append(s)
    return " ".join(parts)


def summary(r, at):
    L = r.loss
    n = len(L)
    out = {"steps": n, "sec": round(r.seconds, 1)}
    q = [
        (0, 10),
        (n // 4 - 10, n // 4 + 10),
        (n // 2 - 10, n // 2 + 10),
        (3 * n // 4 - 10, 3 * n // 4 + 10),
        (n - 20, n),
    ]
    out["loss(0-9|25%|50%|75%|last20)"] = " ".join(f(fmean(L[a:b])) for a, b in q)
    out["loss 20-step means (0,20,40,..)"] = " ".join(f(fmean(L[a : a + 20])) for a in range(0, n, 20))
    bad_loss = [i for i, x in enumerate(L) if not math.isfinite(x)]
    bad_grad = [i for i, row in enumerate(r.grads) if any(v is not None and not math.isfinite(v) for v in row)]
    bad_w = [i for i, b in enumerate(r.wbad) if b]
    out["nonfinite loss/grad/weight"] = (
        f"{len(bad_loss)} first {bad_loss[:2]} / {len(bad_grad)} first {bad_grad[:2]} / {len(bad_w)} first {bad_w[:2]}"
    )
    best, best_at = 0.0, -1
    for t in range(20, n):
        med = statistics.median(L[t - 20 : t])
        if math.isfinite(L[t]) and math.isfinite(med) and med > 0 and L[t] / med > best:
            best, best_at = L[t] / med, t
    out["max loss/median(prev20)"] = f"{best:.2f}@{best_at}"
    if at:
        pre = [
            (L[t] / statistics.median(L[t - 20 : t]), t)
            for t in range(20, min(at, n))
            if math.isfinite(L[t])
            and math.isfinite(statistics.median(L[t - 20 : t]))
            and statistics.median(L[t - 20 : t]) > 0
        ]
        if pre:
            best_pre, at_pre = max(pre)
            out["max ratio before onset"] = f"{best_pre:.2f}@{at_pre}"
    tot = [total(row) for row in r.grads]
    ft = [(v, i) for i, v in enumerate(tot) if v is not None and math.isfinite(v)]
    if ft:
        mx, mn = max(ft), min(ft)
        out["grad total"] = (
            f"first10 {f(statistics.median([v for v, _ in ft[:10]]))} max {f(mx[0])}@{mx[1]} min {f(mn[0])}@{mn[1]}"
            f" last20 {f(statistics.median([v for v, _ in ft[-20:]]))}"
        )
    cn = [v for v in r.clip if v is not None]
    if cn:
        out["grad_norm passed"] = f"median {f(statistics.median(cn))} min {f(min(cn))} max {f(max(cn))}"
    if r.val:
        ks = sorted(r.val)
        fin = [k for k in ks if math.isfinite(r.val[k])]
        vmin = min(fin, key=lambda k: r.val[k]) if fin else None
        out["val"] = f"first {f(r.val[ks[0]])} min {f(r.val.get(vmin))}@{vmin} last {f(r.val[ks[-1]])} | " + " ".join(
            f(r.val[k]) for k in ks[:: max(1, len(ks) // 12)]
        )
    lrs = [x for x in r.lr if x is not None]
    if lrs:
        out["lr"] = f"{f(lrs[0])} .. max {f(max(lrs))} .. {f(lrs[n // 2])} .. {f(lrs[-1])}"
    for k, v in r.extra.items():
        out[f"extra {k}"] = " ".join(f(fmean(v[a:b])) for a, b in q)
    if at:
        out["pre30 grads"] = window(r, max(0, at - 30), at)
        out["post30 grads"] = window(r, at, min(n, at + 30))
        out["pre30 / post30 rel. update"] = window(r, max(0, at - 30), at, True) + " || " + window(r, at, at + 30, True)
        out["loss pre30/post30/last20"] = (
            f"{f(fmean(L[max(0, at - 30) : at]))} / {f(fmean(L[at : at + 30]))} / {f(fmean(L[-20:]))}"
        )
        out["loss around"] = " ".join(f(x) for x in L[max(0, at - 4) : at + 8])
        out["grad total around"] = " ".join(f(x) for x in tot[max(0, at - 4) : at + 8])
    for k, v in getattr(r, "diag", {}).items():
        out[f"diag {k}"] = v
    out["first20 grads"] = window(r, 0, 20)
    out["last20 grads"] = window(r, n - 20, n)
    out["first20 / last20 rel. update"] = window(r, 1, 20, True) + " || " + window(r, n - 20, n, True)
    return out


def dump(r, a, b):
    g = groups(r)
    for t in range(a, min(b, len(r.loss))):
        per = [(gnorm(r.grads[t], idx), name) for name, idx in g.items()]
        per = [(v, nm) for v, nm in per if v is not None]
        lo = min(per) if per else (None, "-")
        hi = max(per) if per else (None, "-")
        upd = unorm(r.upd[t], list(range(len(r.names))))
        print(
            f"      {t:4d} loss {f(r.loss[t])} gtot {f(total(r.grads[t]))} lo {lo[1]}={f(lo[0])} hi {hi[1]}={f(hi[0])}"
            f" upd {f(upd)} val {f(r.val.get(t))} lr {f(r.lr[t])}"
        )


def main(argv):
    here = Path(__file__).resolve().parent
    if not argv or argv[0].startswith("-") or argv[0].endswith(".py"):
        sys.exit(__doc__)
    set_name, argv = argv[0], argv[1:]
    at_override, span, seeds, only, files = None, None, (0, 1, 2), [], []
    for a in argv:
        if a.startswith("--at="):
            at_override = int(a[5:])
        elif a.startswith("--dump="):
            span = tuple(int(v) for v in a[7:].split(":"))
        elif a.startswith("--seeds="):
            seeds = tuple(int(v) for v in a[8:].split(","))
        elif a.endswith(".py"):
            files.append(a)
        else:
            only.append(a)
    files = files or [str(here / f"{set_name}_faults.py"), str(here / f"{set_name}_healthy.py")]
    scenarios = []
    for i, path in enumerate(files):
        if not Path(path).exists():
            continue
        spec = importlib.util.spec_from_file_location(f"measured_{set_name}_{i}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        scenarios.extend(mod.SCENARIOS)
    t_all = time.time()
    for scn in scenarios:
        if only and not any(o in scn.name for o in only):
            continue
        at = at_override
        if at is None:
            ints = [v for v in scn.expect.values() if isinstance(v, int) and v > 0]
            at = ints[0] if ints else None
        print(f"== {scn.name} expect={scn.expect} allow={sorted(scn.allow)}", flush=True)
        for seed in seeds:
            r = record(scn, seed, set_name)
            print(f"  seed {seed}:")
            for k, v in summary(r, at).items():
                print(f"    {k}: {v}")
            if span:
                dump(r, *span)
            sys.stdout.flush()
    print(f"total {time.time() - t_all:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
