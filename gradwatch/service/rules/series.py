"""Derived series several rules read from a :class:`RunView`.

Kept apart from :mod:`robust` because these know the view's conventions
(nan = not measured, skipped steps, layer order), while ``robust`` is plain
statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from .robust import nanmedian, safe_ratio
from .view import RunView

T = TypeVar("T")


def memo(view: RunView, key: str, compute: Callable[[], T]) -> T:
    """``compute()``, once per view: several rules read the same derived (S, L) arrays.

    Cached arrays are made read-only so that a rule modifying one in place
    fails loudly instead of corrupting what the next rule reads.
    """
    if key not in view.cache:
        value: Any = compute()
        for array in value if isinstance(value, tuple) else (value,):
            if isinstance(array, np.ndarray):
                array.flags.writeable = False
        view.cache[key] = value
    return view.cache[key]


def skipped_rows(view: RunView) -> np.ndarray:
    """Per stats row: the optimizer skipped that step (AMP GradScaler found inf).

    A stats row whose step is not in the every-step window counts as not
    skipped: we cannot tell, and assuming a skip would hide real NaN gradients.
    """
    if view.stat_steps.size == 0 or view.loss_steps.size == 0:
        return np.zeros(view.stat_steps.shape, dtype=bool)
    return memo(view, "skipped_rows", lambda: np.isin(view.stat_steps, view.loss_steps[view.skipped.astype(bool)]))


def zero_loss_rows(view: RunView) -> np.ndarray:
    """Per stats row: the loss of that step was exactly 0 (a hinge or ranking loss with every margin met).

    Such a step's gradients are 0 by construction: they say nothing about whether gradients vanish
    or the network is dead. A row whose step is not in the every-step window counts as informative.
    """
    if view.stat_steps.size == 0 or view.loss_steps.size == 0:
        return np.zeros(view.stat_steps.shape, dtype=bool)
    return memo(view, "zero_loss_rows", lambda: np.isin(view.stat_steps, view.loss_steps[np.asarray(view.loss) == 0.0]))


def global_norm(norms: np.ndarray) -> np.ndarray:
    """Per row sqrt(sum over layers of norm^2), ignoring NaN; NaN if no layer measured.

    An inf layer norm (overflow on finite data) makes the global norm inf.
    """
    a = np.asarray(norms, dtype=float)
    if a.ndim != 2 or a.shape[1] == 0:
        return np.full(a.shape[:1], np.nan)
    missing = np.isnan(a)
    with np.errstate(over="ignore", invalid="ignore"):
        # The same pairwise sum as np.nansum, without its extra copies.
        total = np.sqrt(np.sum(np.where(missing, 0.0, a * a), axis=1))
    return np.where(missing.all(axis=1), np.nan, total)


def global_weight_norm(view: RunView) -> np.ndarray:
    """:func:`global_norm` of the layer weight norms, per row."""
    if view.row_summaries is not None:
        return view.row_summaries[:, 1]
    return memo(view, "global_weight_norm", lambda: global_norm(view.weight_norm))


#: Columns of :func:`row_summaries`.
SUMMARY_COLUMNS = ("grad_norm", "weight_norm", "low_quarter_rms", "top_quarter_rms", "layers_present", "update_ratio")


#: Layers of fewer elements take no part in a depth profile (the quarter medians): a learned temperature
#: or mixing weight alone in its layer (CLIP's ``logit_scale`` on the model itself, which comes first in
#: model order) is one number, not a stage of the network, and is often 0 by design (clamped).
DEPTH_MIN_NUMEL = 2


def depth_layers(layer_numel: Any) -> np.ndarray:
    """(L,) bool: the layers a depth profile reads (at least :data:`DEPTH_MIN_NUMEL` elements)."""
    return np.asarray(layer_numel, dtype=float) >= DEPTH_MIN_NUMEL


def row_summaries(
    grad_norm: np.ndarray, weight_norm: np.ndarray, layer_numel: np.ndarray, update_ratio: np.ndarray | None = None
) -> np.ndarray:
    """(S, 6) per-row values the rules need, each a function of its row alone (:data:`SUMMARY_COLUMNS`).

    The aggregator computes them once per row as rows arrive, so that an
    evaluation does not reduce the whole (S, L) window again for each.
    """
    g = np.atleast_2d(np.asarray(grad_norm, dtype=float))
    w = np.atleast_2d(np.asarray(weight_norm, dtype=float))
    rms = g / np.sqrt(np.maximum(np.asarray(layer_numel, dtype=float), 1.0))[None, :]
    low, top, n = quarter_medians(rms, np.isfinite(rms) & depth_layers(layer_numel)[None, :])
    u = np.full(g.shape, np.nan) if update_ratio is None else np.atleast_2d(np.asarray(update_ratio, dtype=float))
    return np.stack([global_norm(g), global_norm(w), low, top, n.astype(float), update_ratio_of_rows(u, w)], axis=1)


def clean_grad_norm(view: RunView) -> np.ndarray:
    """Global gradient norm per row; NaN on skipped rows, rows with NaN/Inf gradients and zero-loss rows.

    Non-finite gradients belong to the ``nonfinite`` rule, skipped steps did
    not update the weights, and a loss of exactly 0 has a zero gradient by
    construction, so none of them says anything about gradient size.
    """
    summary = view.row_summaries
    if summary is not None:
        return memo(view, "clean_grad_norm", lambda: np.where(_bad_grad_rows(view), np.nan, summary[:, 0]))
    return memo(view, "clean_grad_norm", lambda: global_norm(clean_layer_grads(view)))


def clean_layer_grads(view: RunView) -> np.ndarray:
    """(S, L) gradient norms with skipped and non-finite rows blanked (see clean_grad_norm)."""
    return memo(
        view,
        "clean_layer_grads",
        lambda: np.where(_bad_grad_rows(view)[:, None], np.nan, np.asarray(view.grad_norm, dtype=float)),
    )


def _bad_grad_rows(view: RunView) -> np.ndarray:
    bad = skipped_rows(view) | zero_loss_rows(view)
    if view.grad_nonfinite.size:
        bad = bad | np.any(view.grad_nonfinite, axis=1)
    return bad


def clean_rms_quarters(view: RunView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, top, n_present): :func:`quarter_medians` of the clean gradients' RMS (see :func:`rms_grad`), per row."""

    def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if view.row_summaries is None:
            rms = rms_grad(view, clean_layer_grads(view))
            return quarter_medians(rms, np.isfinite(rms) & depth_layers(view.layer_numel)[None, :])
        # A blanked row has no layer present: NaN medians and a count of 0.
        bad = _bad_grad_rows(view)
        summary = view.row_summaries
        low = np.where(bad, np.nan, summary[:, 2])
        top = np.where(bad, np.nan, summary[:, 3])
        return low, top, np.where(bad, 0, summary[:, 4]).astype(np.int64)

    return memo(view, "clean_rms_quarters", compute)


def clean_rms_row(view: RunView, row: int) -> np.ndarray:
    """(L,) RMS gradient of one row's clean gradients (all NaN on a blanked row)."""
    return rms_grad(view, clean_layer_grads(view)[row : row + 1])[0]


def global_update_ratio(view: RunView) -> np.ndarray:
    """Per row ||update|| / ||weights|| over layers with a sample; NaN on unsampled rows.

    ||update_l|| = update_ratio_l * weight_norm_l, so the global ratio is
    sqrt(sum u_l^2 w_l^2) / sqrt(sum w_l^2). Layers with zero or unknown weight
    norm are left out (their ratio is undefined).
    """
    return memo(view, "global_update_ratio", lambda: _global_update_ratio(view))


def _global_update_ratio(view: RunView) -> np.ndarray:
    if view.row_summaries is not None and view.row_summaries.shape[1] > 5:
        return view.row_summaries[:, 5]
    return update_ratio_of_rows(np.asarray(view.update_ratio, dtype=float), np.asarray(view.weight_norm, dtype=float))


def update_ratio_of_rows(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per row of (S, L) layer update ratios ``u`` and weight norms ``w``: the global update ratio (NaN unsampled)."""
    if u.ndim != 2 or u.shape[1] == 0:
        return np.full(u.shape[:1], np.nan)
    sampled = np.isfinite(u).any(axis=1)
    if not sampled.any():
        return np.full(u.shape[:1], np.nan)  # the usual row: no update ratio sampled
    ok = np.isfinite(u) & np.isfinite(w) & (w > 0)
    with np.errstate(over="ignore", invalid="ignore"):
        upd = np.sqrt(np.sum(np.where(ok, (u * w) ** 2, 0.0), axis=1))
        wn = np.sqrt(np.sum(np.where(ok, w * w, 0.0), axis=1))
    return np.where(ok.any(axis=1), safe_ratio(upd, wn), np.nan)


def rms_grad(view: RunView, grads: np.ndarray) -> np.ndarray:
    """(S, L) root-mean-square gradient per element: grad_norm / sqrt(numel).

    Dividing by sqrt(numel) makes a 50k x 768 embedding comparable to a 768-wide
    bias: a norm grows with the layer's size even at the same per-element scale.
    """
    numel = np.maximum(np.asarray(view.layer_numel, dtype=float), 1.0)
    return grads / np.sqrt(numel)[None, :]


def quarter_medians(values: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: median over the lowest quarter and over the top quarter of present layers.

    "Lowest" is model order (input side first). A quarter has at least one
    layer. Medians over quarters keep one odd layer (an embedding, a norm
    scale) from deciding the depth profile. Returns (low, top, n_present).
    """
    p = np.asarray(present, dtype=bool)
    v = np.asarray(values, dtype=float)
    if p.shape[0] and p.shape[1] and (p == p[0]).all():
        # Every row has the same layers present (the usual case): the quarters
        # are the same columns in each row, so only those columns are reduced.
        cols = np.flatnonzero(p[0])
        n = np.full(p.shape[0], cols.size)
        if cols.size == 0:
            nan = np.full(p.shape[0], np.nan)
            return nan, nan.copy(), n
        k = max(1, cols.size // 4)
        return nanmedian(v[:, cols[:k]], axis=1), nanmedian(v[:, cols[cols.size - k :]], axis=1), n
    n = p.sum(axis=1)
    rank = np.cumsum(p, axis=1) - 1
    k = np.maximum(1, n // 4)[:, None]
    low = p & (rank < k)
    top = p & (rank >= n[:, None] - k)
    return nanmedian(np.where(low, v, np.nan), axis=1), nanmedian(np.where(top, v, np.nan), axis=1), n


def finite_loss(view: RunView, last: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) of the finite every-step losses, the last ``last`` of them if given."""
    ok = np.isfinite(view.loss)
    steps, loss = view.loss_steps[ok], np.asarray(view.loss, dtype=float)[ok]
    if last is not None:
        steps, loss = steps[-last:], loss[-last:]
    return steps, loss


def has_converged(view: RunView, fraction: float, recent: int = 16) -> bool:
    """The loss fell to at most ``fraction`` of where the run started: it learned its task.

    Median of the newest ``recent`` finite losses against ``view.initial_loss``
    (positive and finite only: a ratio means nothing across zero). Such a run
    has little gradient left and small updates, which are not symptoms.
    """
    initial = view.initial_loss
    if not (fraction > 0 and np.isfinite(initial) and initial > 0):
        return False
    _, loss = finite_loss(view, recent)
    return bool(loss.size and np.median(loss) <= fraction * initial)
