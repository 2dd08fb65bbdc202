"""What a rule sees: an immutable window of one run's history, and what it says back.

Rules are pure functions ``(RunView, config) -> Finding | None``. They read
numpy arrays, do no I/O, keep no state and read no clock; everything they need
(including which data is new since the previous evaluation) is in the view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SYMPTOMS = (
    "exploding_gradient",
    "vanishing_gradient",
    "nonfinite",
    "loss_spike",
    "overfitting",
    "stagnation",
)


#: How many of a run's first finite losses make its ``initial_loss``.
INITIAL_LOSSES = 5


@dataclass(frozen=True)
class RunView:
    """A window of one run's history, oldest first.

    Every-step series (``loss_steps``, ``loss``, ``lr``, ``skipped``) have one
    entry per optimizer step the agent reported. Layer statistics (``stat_*``
    and the 2-D arrays) have one row per step that carried layer statistics,
    one column per layer in model order (input side first).

    Conventions: ``nan`` in a layer array means "not measured" (a frozen layer
    has no gradient; the update ratio is sampled). Non-finite *data* is
    carried by the boolean ``*_nonfinite`` arrays, decided from max-abs, and by
    the raw ``loss``/``val_loss`` values, which keep their NaN/Inf.
    """

    layers: tuple[str, ...]
    #: Parameter elements per layer, shape (L,).
    layer_numel: np.ndarray
    #: Every-step series, shape (T,).
    loss_steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    skipped: np.ndarray
    #: Held-out loss, shape (V,), at the steps the user passed one.
    val_steps: np.ndarray
    val_loss: np.ndarray
    #: Steps that carried layer statistics, shape (S,).
    stat_steps: np.ndarray
    #: Shape (S, L). Norms are L2 over the layer's parameters; inf is kept
    #: (a norm can overflow on finite data); nan means not measured.
    grad_norm: np.ndarray
    weight_norm: np.ndarray
    update_ratio: np.ndarray
    #: Shape (S, L): the layer held a NaN/Inf (its max-abs was non-finite).
    grad_nonfinite: np.ndarray
    weight_nonfinite: np.ndarray
    #: Shape (S, L): the layer got no gradient although the optimizer trains it
    #: (see ``LayerStats.grad_missing``); all False where the agent did not say,
    #: and empty (0, L) in views built without it.
    grad_missing: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    #: Index into the every-step series of the first entry not yet seen by a
    #: previous evaluation; the same for the layer rows and the val series.
    new_loss_from: int = 0
    new_stat_from: int = 0
    new_val_from: int = 0
    #: Per every-step entry (shape (T,)): the step's total gradient norm was
    #: NaN/Inf (the caller's ``mon.step(grad_norm=...)``, or the agent's own on
    #: statistics steps); False where none was given.
    step_grad_nonfinite: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Rank that sent each every-step entry (shape (T,)), for attribution.
    loss_rank: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Non-finite sightings from every rank (shape (I,)): the step and the rank
    #: whose own loss or pre-reduction gradients held NaN/Inf; and the host of
    #: each rank seen.
    incident_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    incident_ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    new_incident_from: int = 0
    rank_hosts: dict[int, str] = field(default_factory=dict)
    #: Median of the run's first INITIAL_LOSSES finite losses (kept after they
    #: leave the window): where training started, to tell "never learned" from "converged".
    initial_loss: float = float("nan")
    #: Per stats row, computed once when the row arrived (see
    #: :func:`series.row_summaries`); None makes the rules compute them from
    #: the (S, L) arrays. Shape (S, 5): global grad norm, global weight norm,
    #: and the low-quarter median, top-quarter median and count of the
    #: layers' RMS gradients -- all of the raw row, before any row is blanked.
    row_summaries: np.ndarray | None = None
    #: Per stats row, shape (S,): RMS gradient reaching the first time step of
    #: the model's worst recurrence over that at the last (see
    #: ``StepRecord.recurrent_grad_ratio``); nan where not measured.
    recurrent_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: The module the newest ratio was measured on.
    recurrent_module: str | None = None
    #: Whether that module is gated (an LSTM or GRU); None where the agent did not say.
    recurrent_gated: bool | None = None
    #: Derived arrays several rules read (see :func:`series.memo`), computed
    #: once per view instead of once per rule. Not part of the data.
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Results of earlier evaluations of the same run, kept by the aggregator
    #: between views. A rule may reuse an entry only where it checked that the
    #: inputs it was computed from are the same, so results never depend on
    #: it (an empty dict gives the same findings, only slower).
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def latest_step(self) -> int:
        """The newest step in the view, or -1 when it is empty."""
        candidates = [int(a[-1]) for a in (self.loss_steps, self.stat_steps, self.val_steps) if a.size]
        return max(candidates) if candidates else -1


@dataclass(frozen=True)
class Finding:
    """A rule's verdict that a symptom is present now.

    ``step`` is the first step of the evidence (the onset as far as the rule
    can tell), not the step at which the rule ran.
    """

    symptom: str
    step: int
    evidence: dict[str, Any]
    advice: str
    layer: str | None = None
    rank: int | None = None
