"""Offline recorder (no gradwatch): runs a scenario's train() with a fake watch and records
loss, val_loss, per-parameter grad norms, total grad norm, lr and relative update size per step.

usage: python _thirteenth_measure.py NAME [NAME...]   (prefix match), prints summaries for seeds 0,1,2
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


class Rec:
    def __init__(self, model, optimizer):
        self.model, self.opt = model, optimizer
        self.names = [n for n, _ in model.named_parameters()]
        self.loss, self.val, self.gn, self.pgn, self.lr, self.upd = [], [], [], [], [], []
        self.prev = [p.detach().clone() for p in model.parameters()]

    def step(self, loss=None, val_loss=None, grad_norm=None, **kw):
        self.extra = getattr(self, "extra", []) + [kw]
        self.loss.append(float(loss))
        self.val.append(None if val_loss is None else float(val_loss))
        norms = {}
        for n, p in self.model.named_parameters():
            norms[n] = float(p.grad.norm()) if p.grad is not None else 0.0
        self.pgn.append(norms)
        self.gn.append(math.sqrt(sum(v * v for v in norms.values())))
        self.lr.append(self.opt.param_groups[0]["lr"] if self.opt is not None else None)
        num = den = 0.0
        cur = []
        for p, q in zip(self.model.parameters(), self.prev, strict=True):
            d = p.detach()
            num += float((d - q).norm()) ** 2
            den += float(q.norm()) ** 2
            cur.append(d.clone())
        self.prev = cur
        self.upd.append(math.sqrt(num) / (math.sqrt(den) + 1e-12))


def record(scenario, seed):
    recs = []

    def watch(model, optimizer=None, **opts):
        r = Rec(model, optimizer)
        recs.append(r)
        return r

    torch.manual_seed(seed)
    t0 = time.time()
    scenario.train(watch, seed)
    r = recs[0]
    r.seconds = time.time() - t0
    return r


def median(xs):
    xs = sorted(x for x in xs if x == x)
    return xs[len(xs) // 2] if xs else float("nan")


def first(pred, xs, start=0):
    for i in range(start, len(xs)):
        if pred(xs[i]):
            return i
    return None


def load(prefixes):
    from gradwatch.evaluation.scenario import load_suite

    suite = load_suite(Path(__file__).parent)
    return [s for s in suite if any(s.name.startswith(p) for p in prefixes)]


def summary(r, every=50):
    n = len(r.loss)
    out = []
    for i in list(range(0, n, every)) + [n - 1]:
        out.append(f"{i}:L={r.loss[i]:.4g} g={r.gn[i]:.3g} u={r.upd[i]:.2e} lr={r.lr[i]}")
    vals = [(i, v) for i, v in enumerate(r.val) if v is not None]
    if vals:
        vmin = min(vals, key=lambda t: t[1])
        out.append(f"val_min at {vmin[0]} ({vmin[1]:.4g}); val first {vals[0][1]:.4g} last {vals[-1][1]:.4g}")
    nanstep = first(lambda v: not math.isfinite(v), r.loss)
    out.append(
        f"first nonfinite loss: {nanstep}; first nonfinite grad: {first(lambda v: not math.isfinite(v), r.gn)}; {r.seconds:.1f}s"
    )
    return "\n   ".join(out)


if __name__ == "__main__":
    for s in load(sys.argv[1:]):
        for seed in (0, 1, 2):
            r = record(s, seed)
            print(f"== {s.name} seed {seed}\n   {summary(r)}")
