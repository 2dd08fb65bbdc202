"""The ``vanishing_gradient`` rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import VanishingGradientConfig
from .progress import FromStart
from .robust import as_float, as_floats, nanmedian, safe_ratio, trailing_run, trend, weighted_median
from .series import (
    clean_grad_norm,
    clean_layer_grads,
    clean_rms_quarters,
    clean_rms_row,
    depth_layers,
    finite_loss,
    has_converged,
    quarter_medians,
)
from .view import Finding, RunView

DEPTH_ADVICE = (
    "Lower layers receive almost no gradient: add residual connections or normalisation (LayerNorm/BatchNorm), "
    "prefer ReLU/GELU over sigmoid/tanh, and check the initialisation (He/Xavier)."
)
THROUGH_TIME_ADVICE = (
    "The gradient vanishes through time: almost none reaches the first steps of the sequence, so the network "
    "cannot learn from them. Use an LSTM/GRU instead of a plain (sigmoid/tanh) RNN, initialise recurrent "
    "weights orthogonally, shorten the sequences or add attention/skip connections across time."
)
STALLED_ADVICE = (
    "Most of the network gets a gradient over 1000x weaker, for its weights, than the few layers that learn, so it "
    "does not move and the loss has not left its start: check normalisation settings (a BatchNorm eps or momentum "
    "passed in the wrong position), saturating activations, gates or scales that shrink the signal, and the "
    "initialisation."
)
COLLAPSE_ADVICE = (
    "Gradients collapsed in every layer while the loss is stuck (dead ReLUs or saturated activations): "
    "restart from an earlier checkpoint with a lower learning rate, or use LeakyReLU/GELU and normalisation."
)
#: How many of the lowest layers the evidence lists.
LOWEST_LISTED = 5


def _depth(view: RunView, cfg: VanishingGradientConfig) -> tuple[int, str | None, dict[str, Any]] | None:
    """median over the last patience_rows rows of low-quarter / top-quarter median RMS gradient < depth_ratio."""
    low, top, n_present = clean_rms_quarters(view)
    # With fewer than min_layers layers a ratio of two noisy layers decides nothing, but a lower one whose
    # gradient is exactly 0 under a top one that has a gradient is no noise: nothing reaches it (a GRU whose
    # gates one raw input column of 1.7e9 saturated, under its head).
    cut_off = (n_present >= 2) & (low == 0) & (top > 0)
    ratio = np.where((n_present >= cfg.min_layers) | cut_off, safe_ratio(low, top), np.nan)
    rows = np.flatnonzero(np.isfinite(ratio))
    if rows.size < cfg.patience_rows:
        return None
    recent = ratio[rows[-cfg.patience_rows :]]
    med = nanmedian(recent)
    if not med < cfg.depth_ratio:
        return None
    below = ratio[rows] < cfg.depth_ratio
    run = trailing_run(below)
    if run:
        onset_row = rows[rows.size - run]
    else:
        onset_row = rows[-cfg.patience_rows :][np.argmax(recent < cfg.depth_ratio)]
    last = rows[-1]
    rms = clean_rms_row(view, last)
    cols = np.flatnonzero(np.isfinite(rms) & depth_layers(view.layer_numel))
    if not cols.size:  # summaries restored from a snapshot of a service that counted one-element layers
        return None
    vanished = cols[rms[cols] < cfg.depth_ratio * top[last]]
    layer_col = vanished[0] if vanished.size else cols[0]
    lowest = cols[:LOWEST_LISTED]
    evidence = {
        "depth_ratio": as_float(med),
        "recent_ratios": as_floats(recent),
        "low_quarter_rms": as_float(low[last]),
        "top_quarter_rms": as_float(top[last]),
        "lowest_layers": [{"layer": view.layers[int(c)], "rms_grad": as_float(rms[c])} for c in lowest],
    }
    return int(view.stat_steps[onset_row]), view.layers[int(layer_col)], evidence


@dataclass(frozen=True)
class _FrozenRow:
    """One sampled row's low/top quarter medians of the update ratio and of grad/weight."""

    row: int
    u_low: float
    u_top: float
    g_ratio: float
    first_layer: int

    @property
    def u_ratio(self) -> float:
        return safe_ratio(self.u_low, self.u_top)

    def below(self, cfg: VanishingGradientConfig, factor: float = 1.0) -> bool:
        return bool(self.u_ratio < cfg.update_ratio_ratio / factor and self.g_ratio < cfg.depth_ratio / factor)


def _newest_sampled_rows(view: RunView, cfg: VanishingGradientConfig, count: int) -> list[_FrozenRow]:
    """The newest ``count`` rows that sampled the update ratio with a layer present, newest first.

    Only rows that sampled the update ratio can qualify (about one in update_ratio_every); the
    ratios are computed per row. None once a row has fewer than min_layers layers.
    """
    u_all = np.asarray(view.update_ratio, dtype=float)
    rows = np.flatnonzero(np.isfinite(u_all).any(axis=1)) if u_all.size else np.zeros(0, dtype=int)
    grads, weights = clean_layer_grads(view), np.asarray(view.weight_norm, dtype=float)
    depth = depth_layers(view.layer_numel)
    found: list[_FrozenRow] = []
    for row in rows[::-1]:
        u = u_all[row : row + 1]
        rel = np.reshape(safe_ratio(grads[row : row + 1], weights[row : row + 1]), u.shape)
        present = np.isfinite(u) & np.isfinite(rel) & depth[None, :]
        if not present.any():
            continue
        u_low, u_top, n = quarter_medians(u, present)
        g_low, g_top, _ = quarter_medians(rel, present)
        if n[0] < cfg.min_layers:
            break
        first = int(np.flatnonzero(present[0])[0])
        found.append(_FrozenRow(int(row), u_low[0], u_top[0], safe_ratio(g_low[0], g_top[0]), first))
        if len(found) == count:
            break
    return found


def _frozen(view: RunView, cfg: VanishingGradientConfig) -> tuple[int, str | None, dict[str, Any]] | None:
    """low/top update ratio < update_ratio_ratio and low/top grad/weight < depth_ratio at the newest two sampled rows
    (or at the newest alone, FROZEN_CLEAR_FACTOR times below both).

    Catches lower layers that do not move because their gradient is tiny
    relative to their weights (plain SGD); adaptive optimisers rescale tiny
    gradients, which is why the gradient condition is checked as well. One
    sampled row near the line is not enough: a small conv autoencoder's first
    and last layers start 9e-4 apart and move out of it within 20 steps.
    """
    rows = _newest_sampled_rows(view, cfg, 2)
    if not rows or not rows[0].below(cfg):
        return None
    if len(rows) == 2 and rows[1].below(cfg):
        onset_row = rows[1].row
    elif rows[0].below(cfg, FROZEN_CLEAR_FACTOR):
        onset_row = rows[0].row
    else:
        return None
    newest = rows[0]
    evidence = {
        "update_ratio_depth_ratio": as_float(newest.u_ratio),
        "relative_grad_depth_ratio": as_float(newest.g_ratio),
        "low_quarter_update_ratio": as_float(newest.u_low),
        "top_quarter_update_ratio": as_float(newest.u_top),
    }
    return int(view.stat_steps[onset_row]), view.layers[newest.first_layer], evidence


@dataclass(frozen=True)
class _StalledRow:
    """One sampled row's split of the trained layers into a bulk that does not move and the layers that do."""

    row: int
    share: float
    bulk_relative_grad: float
    moving_relative_grad: float
    first_stalled: int

    @property
    def ratio(self) -> float:
        return safe_ratio(self.bulk_relative_grad, self.moving_relative_grad)

    @classmethod
    def of(cls, view: RunView, cfg: VanishingGradientConfig, row: int) -> _StalledRow | None:
        u = np.asarray(view.update_ratio, dtype=float)[row]
        rel = safe_ratio(clean_layer_grads(view)[row], np.asarray(view.weight_norm, dtype=float)[row])
        numel = np.asarray(view.layer_numel, dtype=float)
        trained = np.isfinite(u) & np.isfinite(rel) & (numel > 0)
        stalled = trained & (u < cfg.stalled_update_ratio)
        moving = trained & ~stalled
        if not (stalled.any() and moving.any()):
            return None
        return cls(
            row=row,
            share=float(numel[stalled].sum() / numel[trained].sum()),
            bulk_relative_grad=weighted_median(rel[stalled], numel[stalled]),
            moving_relative_grad=float(np.max(rel[moving])),
            first_stalled=int(np.flatnonzero(stalled)[0]),
        )

    def holds(self, cfg: VanishingGradientConfig) -> bool:
        return bool(self.share >= cfg.stalled_fraction and self.ratio < cfg.depth_ratio)


def _stalled_bulk(view: RunView, cfg: VanishingGradientConfig) -> tuple[int, str | None, dict[str, Any]] | None:
    """At the newest two sampled rows: at least stalled_fraction of the trained parameters barely move (update
    ratio < stalled_update_ratio) and their median grad/weight is below depth_ratio x the largest among the layers
    that do move; and the loss has not left its start.

    The depth profile compares quarters of the layers by count: when every layer below the head is starved alike
    (a BatchNorm given 0.99 as its eps scales each one's signal down), the quarters agree and the profile is flat.
    Judged by parameters instead, the picture is a bulk that does not move because its gradient is a thousandth
    of the learning layers' (for its weights), beside a loss still at its start. A tiny learning rate stalls the
    bulk too, but leaves its gradient level with the others'; parameters left out of the optimizer have no update
    ratio of their own to sample, or one of exactly 0 with a normal gradient.
    """
    u = np.asarray(view.update_ratio, dtype=float)
    sampled = np.flatnonzero(np.isfinite(u).any(axis=1)) if u.size else np.zeros(0, dtype=int)
    if sampled.size < 2:
        return None
    rows = [_StalledRow.of(view, cfg, int(r)) for r in sampled[-2:]]
    if not all(r is not None and r.holds(cfg) for r in rows):
        return None
    _, loss = finite_loss(view, cfg.loss_window_steps)
    if loss.size < 6 or not _loss_stuck(view, cfg):
        return None
    if not FromStart.of(view.initial_loss, loss, trend(loss).sigma).never_learned(cfg.no_progress_rel):
        return None
    older, newest = rows
    assert older is not None and newest is not None
    evidence = {
        "stalled_share": as_float(newest.share),
        "stalled_relative_grad": as_float(newest.bulk_relative_grad),
        "moving_relative_grad": as_float(newest.moving_relative_grad),
        "stalled_ratio": as_float(newest.ratio),
    }
    return int(view.stat_steps[older.row]), view.layers[newest.first_stalled], evidence


def _loss_stuck(view: RunView, cfg: VanishingGradientConfig) -> bool:
    """The loss does not improve over loss_window_steps and the run has not solved its task."""
    _, loss = finite_loss(view, cfg.loss_window_steps)
    if loss.size < 6 or trend(loss).improving(cfg.min_improvement):
        return False
    return not has_converged(view, cfg.converged_fraction)


#: A single sampled row decides the frozen trigger only this many times below both of its lines.
FROZEN_CLEAR_FACTOR = 10.0
#: Statistics rows a gated recurrence needs before its through-time ratio is judged (20 steps at the
#: default interval; patience_rows for a plain RNN), and the most over which its rise is judged.
GATED_RISE_ROWS = 5
GATED_HISTORY_ROWS = 12


def _through_time(view: RunView, cfg: VanishingGradientConfig) -> tuple[int, str | None, dict[str, Any]] | None:
    """median recurrent ratio of the last patience_rows rows < through_time_ratio, not rising, loss not improving."""
    ratio_all = np.asarray(view.recurrent_ratio, dtype=float)
    rows = np.flatnonzero(np.isfinite(ratio_all))
    if rows.size < cfg.patience_rows:
        return None
    ratio = ratio_all[rows]
    recent = ratio[-cfg.patience_rows :]
    med = nanmedian(recent)
    if not med < cfg.through_time_ratio:
        return None
    # An underflowed (exactly 0) ratio is the deepest vanishing, not a missing value. A gated
    # recurrence (an LSTM or GRU) may start with its gates half shut and the ratio underflowed, and
    # open them as it learns: a young run is judged once it has GATED_RISE_ROWS rows and a whole
    # loss window (a GRU forecaster's ratio sat at 5e-7 from initialisation while its loss was flat
    # for 25 steps, then fell 0.7 -> 0.3 by step 55: it learns from the recent steps).
    floor = np.maximum(ratio, np.finfo(float).tiny)
    if view.recurrent_gated:
        if rows.size < GATED_RISE_ROWS or finite_loss(view, cfg.loss_window_steps)[1].size < cfg.loss_window_steps:
            return None
        # Learning to open the gates is not monotone (a GRU's ratio went 0 -> 3e-14 -> 1e-16 -> 0.1 over
        # 85 steps): the newer half of the last GATED_HISTORY_ROWS rows must not reach recovery-fold
        # above the older half's highest.
        span = floor[-GATED_HISTORY_ROWS:]
        older, newer = span[: span.size // 2], span[span.size // 2 :]
        if newer.max() >= cfg.through_time_recovery * older.max():
            return None  # the network is learning to carry gradient back through time
    elif floor[-1] >= cfg.through_time_recovery * floor[-cfg.patience_rows]:
        return None  # the network is learning to carry gradient back through time
    if not _loss_stuck(view, cfg):
        return None  # it learns from the recent steps; an attenuated past is not (yet) a symptom
    run = trailing_run(ratio < cfg.through_time_ratio)
    onset = rows[rows.size - run] if run else rows[-cfg.patience_rows]
    evidence = {
        "through_time_ratio": as_float(med),
        "recent_through_time_ratios": as_floats(recent),
        "recurrent_module": view.recurrent_module,
    }
    return int(view.stat_steps[onset]), view.recurrent_module, evidence


def _collapse(view: RunView, cfg: VanishingGradientConfig) -> tuple[int, str | None, dict[str, Any]] | None:
    """Global gradient norm fell >= collapse_factor from the window's first rows while the loss is stuck."""
    g_all = clean_grad_norm(view)
    rows = np.flatnonzero(~np.isnan(g_all))
    g = g_all[rows]
    if g.size < cfg.patience_rows + 1:
        return None
    base = nanmedian(g[: min(cfg.baseline_rows, max(1, g.size // 4))])
    now = nanmedian(g[-cfg.patience_rows :])
    if not (np.isfinite(base) and base > 0 and now * cfg.collapse_factor <= base):
        return None
    if not _loss_stuck(view, cfg):
        return None  # still learning, or gradients fell because the loss did: nothing vanished
    run = trailing_run(g * cfg.collapse_factor <= base)
    onset = rows[g.size - run] if run else rows[-cfg.patience_rows]
    cols = np.flatnonzero(np.isfinite(np.asarray(view.grad_norm, dtype=float)[rows[-1]]))
    evidence = {
        "grad_norm_now": as_float(now),
        "grad_norm_baseline": as_float(base),
        "fall_factor": as_float(safe_ratio(base, now)) if now > 0 else float("inf"),
    }
    return int(view.stat_steps[onset]), (view.layers[int(cols[0])] if cols.size else None), evidence


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_vanishing_gradient(view: RunView, config: VanishingGradientConfig) -> Finding | None:
    """Report lower layers (or the whole network) that get almost no gradient now.

    Triggers (any one suffices; the onset is the earliest present, the layer
    comes from the first trigger in this order):

    * depth: r_l = grad_norm_l / sqrt(numel_l); per row
      ratio = median(r over the lowest quarter of layers with a gradient) /
      median(r over the top quarter); median of ratio over the last
      patience_rows rows < depth_ratio; needs >= min_layers layers;
    * frozen: at the latest sampled row, the lowest quarter's median update
      ratio < update_ratio_ratio * the top quarter's, and its median
      grad_norm/weight_norm < depth_ratio * the top quarter's;
    * collapse: median global grad norm of the last patience_rows rows <=
      (median of the window's first rows) / collapse_factor and the loss is not
      improving (first-third vs last-third median over loss_window_steps),
      unless the loss is at most converged_fraction of the initial loss (a
      solved task has little gradient left).
    * through_time: for a model with a recurrence (an RNN/LSTM/GRU, or a
      module a loop calls repeatedly), the median over the last patience_rows
      rows of RMS gradient at its first time step / at its last <
      through_time_ratio, the ratio did not rise by through_time_recovery
      across those rows, and the loss is not improving (as for collapse).
      Per-layer norms cannot see this: the shared weights still get gradient
      from the last steps.
    * stalled_bulk: at the newest two sampled rows, >= stalled_fraction of
      the trained parameters have an update ratio < stalled_update_ratio and
      a median grad/weight < depth_ratio x the largest of the layers that
      move, and the loss is not improving and has not left its start
      (within no_progress_rel); see _stalled_bulk.

    Uniform shrinkage (a converging run) leaves the depth ratio near 1 and
    the loss improving, so it stays silent.
    """
    hits = {
        name: hit
        for name, hit in (
            ("depth", _depth(view, config)),
            ("frozen", _frozen(view, config)),
            ("collapse", _collapse(view, config)),
            ("through_time", _through_time(view, config)),
            ("stalled_bulk", _stalled_bulk(view, config)),
        )
        if hit is not None
    }
    if not hits:
        return None
    first = next(iter(hits.values()))
    evidence: dict[str, Any] = {"triggers": list(hits)}
    for _, _, ev in hits.values():
        evidence.update(ev)
    if list(hits) == ["collapse"]:
        advice = COLLAPSE_ADVICE
    elif list(hits) == ["through_time"]:
        advice = THROUGH_TIME_ADVICE
    elif list(hits) == ["stalled_bulk"]:
        advice = STALLED_ADVICE
    else:
        advice = DEPTH_ADVICE
    return Finding(
        symptom="vanishing_gradient",
        step=min(h[0] for h in hits.values()),
        evidence=evidence,
        advice=advice,
        layer=first[1],
    )
