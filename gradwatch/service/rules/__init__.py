"""Symptom rules: pure functions from a run's recent history to findings.

``evaluate(view, config)`` runs every rule and returns one entry per symptom
in :data:`SYMPTOMS`: a :class:`Finding` while the symptom is present at the
newest data, ``None`` otherwise. Rules keep no state; the service adds
hysteresis (onset tracking, clearing after a quiet period).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from .config import RulesConfig
from .exploding import detect_exploding_gradient
from .nonfinite import detect_nonfinite
from .overfitting import detect_overfitting
from .spike import detect_loss_spike
from .stagnation import detect_stagnation
from .vanishing import detect_vanishing_gradient
from .view import SYMPTOMS, Finding, RunView

__all__ = [
    "SYMPTOMS",
    "Finding",
    "RulesConfig",
    "RunView",
    "detect_exploding_gradient",
    "detect_loss_spike",
    "detect_nonfinite",
    "detect_overfitting",
    "detect_stagnation",
    "detect_vanishing_gradient",
    "evaluate",
]

#: Symptom name -> rule. The config section has the same name as the symptom.
_RULES: dict[str, Callable[[RunView, Any], Finding | None]] = {
    "exploding_gradient": detect_exploding_gradient,
    "vanishing_gradient": detect_vanishing_gradient,
    "nonfinite": detect_nonfinite,
    "loss_spike": detect_loss_spike,
    "overfitting": detect_overfitting,
    "stagnation": detect_stagnation,
}


#: While the key symptom is found, these are not reported: an exploding
#: network's huge weights make every gradient look small next to them (a
#: "vanishing" or "dead" artefact), and it is anything but stagnant. A run
#: whose loss or gradients are NaN/Inf has no gradient to judge.
_MASKED_BY = {
    "exploding_gradient": ("vanishing_gradient", "stagnation"),
    "nonfinite": ("vanishing_gradient", "stagnation"),
}
#: Causes that keep masking while their diagnosis is still active (not cleared),
#: though no longer found. Units an overflow killed read as vanishing until the
#: NaN incident clears. An explosion that stopped growing does not mask: the dead
#: network it leaves is worth its own diagnosis at once.
_MASKS_WHILE_ACTIVE = frozenset({"nonfinite"})


def evaluate(
    view: RunView, config: RulesConfig | None = None, active: Collection[str] = ()
) -> dict[str, Finding | None]:
    """Run every rule on ``view``; one key per symptom in :data:`SYMPTOMS` order.

    ``active``: the run's diagnoses still active from earlier evaluations (see
    _MASKS_WHILE_ACTIVE).
    """
    cfg = config if config is not None else RulesConfig()
    findings: dict[str, Finding | None] = {}
    for name in SYMPTOMS:
        settings = getattr(cfg, name)
        findings[name] = _RULES[name](view, settings) if settings.enabled else None
    for cause, masked in _MASKED_BY.items():
        if findings[cause] is not None or (cause in _MASKS_WHILE_ACTIVE and cause in active):
            findings.update(dict.fromkeys(masked))
    return findings
