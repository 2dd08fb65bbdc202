"""Symptom rules: pure functions from a run's recent history to findings.

``evaluate(view, config)`` runs every rule and returns one entry per symptom
in :data:`SYMPTOMS`: a :class:`Finding` while the symptom is present at the
newest data, ``None`` otherwise. Rules keep no state; the service adds
hysteresis (onset tracking, clearing after a quiet period).
"""

from __future__ import annotations

from collections.abc import Callable
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


#: While the key symptom is present, these are not reported: an exploding
#: network's huge weights make every gradient look small next to them (a
#: "vanishing" or "dead" artefact), and it is anything but stagnant.
_MASKED_BY = {"exploding_gradient": ("vanishing_gradient", "stagnation")}


def evaluate(view: RunView, config: RulesConfig | None = None) -> dict[str, Finding | None]:
    """Run every rule on ``view``; one key per symptom in :data:`SYMPTOMS` order."""
    cfg = config if config is not None else RulesConfig()
    findings = {name: _RULES[name](view, getattr(cfg, name)) for name in SYMPTOMS}
    for cause, masked in _MASKED_BY.items():
        if findings[cause] is not None:
            findings.update(dict.fromkeys(masked))
    return findings
