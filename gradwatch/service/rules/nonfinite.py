"""The ``nonfinite`` rule: NaN/Inf in the loss, the val loss, gradients or weights."""

from __future__ import annotations

import numpy as np

from .config import NonfiniteConfig
from .robust import as_float, run_lengths, trailing_run
from .series import skipped_rows
from .view import Finding, RunView


def _new_onset(bad: np.ndarray, new_from: int) -> int | None:
    """Index where the first non-finite stretch touching the new data begins.

    The first bad entry at or after ``new_from``, moved back over bad entries
    immediately before it: an incident that continues from data already seen
    keeps its original onset.
    """
    hits = np.flatnonzero(bad[new_from:])
    if hits.size == 0:
        return None
    i = new_from + int(hits[0])
    return i - int(run_lengths(bad)[i]) + 1


def _stuck_onset(bad: np.ndarray) -> int | None:
    """Index where the unbroken bad stretch at the end of ``bad`` begins, if the newest entry is bad."""
    run = trailing_run(bad)
    return bad.size - run if run else None


def _first_new_incident(view: RunView) -> int | None:
    """Index of the earliest-step sighting among those new since the last evaluation."""
    new = np.asarray(view.incident_steps[view.new_incident_from :])
    return None if new.size == 0 else view.new_incident_from + int(np.argmin(new))


def _origin_ranks(view: RunView, onset_step: int) -> list[int]:
    """The ranks whose own values went non-finite first, at or after the incident's onset.

    After a gradient all-reduce every rank holds the NaN, so only the earliest
    step's sightings say where it began.
    """
    steps = np.asarray(view.incident_steps)
    later = steps >= onset_step
    if not later.any():
        return []
    first = steps[later].min()
    return sorted({int(r) for r in np.asarray(view.incident_ranks)[later & (steps == first)]})


def _first(*indices: int | None) -> int | None:
    present = [i for i in indices if i is not None]
    return min(present) if present else None


def _advice(quantities: list[str]) -> str:
    if "weight" in quantities:
        return (
            "Weights hold NaN/Inf and the run cannot recover: restore the last good checkpoint, then "
            "lower the learning rate or enable gradient clipping, or use bf16/GradScaler if training in fp16."
        )
    # rank_local alone: a rank's own gradients, with the loss still finite.
    if "grad" in quantities or "grad_norm" in quantities or quantities == ["rank_local"]:
        return (
            "Gradients hold NaN/Inf on steps the optimizer applied: enable gradient clipping or AMP loss "
            "scaling (GradScaler skips such steps), and look for log(0), division by zero or fp16 overflow."
        )
    return (
        "The loss is NaN/Inf: check the batch for bad inputs or labels and the loss for log(0) or division "
        "by zero; compute the loss in fp32 if training in reduced precision."
    )


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_nonfinite(view: RunView, config: NonfiniteConfig) -> Finding | None:
    """Report NaN/Inf in new data, or a run that is still stuck at NaN/Inf.

    Sources: the every-step loss, the val loss, the every-step total gradient
    norm when the loop passes one (``mon.step(grad_norm=...)``), every rank's
    own non-finite sightings (its loss, or its gradients before the all-reduce,
    ``rank_local``), and per-layer
    ``grad_nonfinite`` / ``weight_nonfinite`` flags (decided from max-abs by the agent, so an L2
    norm that merely overflowed on finite data does not count). A gradient flag
    on a step the optimizer skipped is routine AMP loss scaling and is ignored
    (``config.ignore_skipped_steps``); a skipped step alone never fires.

    Present when a new entry of any source is non-finite, or the newest loss
    or the newest stats row's weights are still non-finite. The onset is the
    first non-finite entry of the new data, moved back over an unbroken
    non-finite stretch that leads into it; for a run that is merely still stuck,
    the first step of the trailing non-finite stretch.
    """
    loss_bad = ~np.isfinite(np.asarray(view.loss, dtype=float))
    val_bad = ~np.isfinite(np.asarray(view.val_loss, dtype=float))
    grad_flags = np.asarray(view.grad_nonfinite, dtype=bool)
    weight_flags = np.asarray(view.weight_nonfinite, dtype=bool)
    skipped = skipped_rows(view)
    if config.ignore_skipped_steps:
        ignored_rows = int(np.sum(grad_flags[view.new_stat_from :].any(axis=1) & skipped[view.new_stat_from :]))
        grad_flags = grad_flags & ~skipped[:, None]
    else:
        ignored_rows = 0
    grad_rows = np.asarray(grad_flags.any(axis=1), dtype=bool)
    # The total gradient norm on every step (when the loop passes the one it
    # clips with): a NaN/Inf only in the gradients shows there on the step it
    # happens, while the layer flags exist only on statistics steps.
    norm_bad = np.asarray(view.step_grad_nonfinite, dtype=bool)
    if norm_bad.size != view.loss.size:
        norm_bad = np.zeros(view.loss.size, dtype=bool)
    elif config.ignore_skipped_steps:
        norm_bad = norm_bad & ~np.asarray(view.skipped, dtype=bool)
    weight_rows = np.asarray(weight_flags.any(axis=1), dtype=bool)

    onsets: dict[str, int | None] = {
        "loss": _first(_new_onset(loss_bad, view.new_loss_from), _stuck_onset(loss_bad)),
        "val_loss": _new_onset(val_bad, view.new_val_from),
        "grad": _new_onset(grad_rows, view.new_stat_from),
        "grad_norm": _new_onset(norm_bad, view.new_loss_from),
        "rank_local": _first_new_incident(view),
        "weight": _first(_new_onset(weight_rows, view.new_stat_from), _stuck_onset(weight_rows)),
    }
    step_of = {
        "loss": view.loss_steps,
        "val_loss": view.val_steps,
        "grad": view.stat_steps,
        "grad_norm": view.loss_steps,
        "rank_local": view.incident_steps,
        "weight": view.stat_steps,
    }
    first_step = {q: int(step_of[q][i]) for q, i in onsets.items() if i is not None}
    if not first_step:
        return None
    quantities: list[str] = [q for q in ("loss", "val_loss", "grad", "grad_norm", "weight") if q in first_step]
    # A rank's own sighting is listed as the quantity only when nothing run-wide
    # shows the NaN yet (it is in one rank's gradients, about to be all-reduced).
    if not quantities:
        quantities = ["rank_local"]

    # Layer attribution from the earliest non-finite stats row involved.
    row0 = _first(onsets["grad"], onsets["weight"])
    layer: str | None = None
    affected: list[str] = []
    n_affected = 0
    if row0 is not None:
        bad = grad_flags | weight_flags
        first_row_cols = np.flatnonzero(bad[row0])
        layer = view.layers[int(first_row_cols[0])] if first_row_cols.size else None
        cols = np.flatnonzero(bad[row0:].any(axis=0))
        n_affected = int(cols.size)
        affected = [view.layers[int(c)] for c in cols[: config.max_layers_listed]]

    onset_step = min(first_step.values())
    origin = _origin_ranks(view, onset_step)
    rank: int | None = origin[0] if origin else None
    loss_i = onsets["loss"]
    if rank is None and loss_i is not None and view.loss_rank.size == view.loss.size:
        rank = int(view.loss_rank[loss_i])

    evidence = {
        "quantities": quantities,
        "first_step": first_step,
        "layers": affected,
        "n_layers": n_affected,
        "loss_now": as_float(view.loss[-1]) if view.loss.size else float("nan"),
        "still_nonfinite": bool(loss_bad[-1:].any() or weight_rows[-1:].any()),
        "ignored_skipped_rows": ignored_rows,
    }
    if origin:
        evidence["origin_ranks"] = origin[: config.max_layers_listed]
        evidence["origin_hosts"] = sorted({view.rank_hosts[r] for r in origin if r in view.rank_hosts})
    return Finding(
        symptom="nonfinite",
        step=onset_step,
        evidence=evidence,
        advice=_advice(quantities),
        layer=layer,
        rank=rank,
    )
