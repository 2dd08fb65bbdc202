"""From rule findings to diagnoses people can act on: onset, hysteresis, clearing.

Rules say whether a symptom is present *now*. A diagnosis turns that into an
incident: it fires on the first finding (recording the finding's onset step),
stays active while findings keep coming, and clears only after the rule has
been silent for ``clear_after_steps`` optimizer steps, so a symptom that
flickers around its threshold does not flap. The first onset step is kept
after clearing; a later recurrence reopens the same diagnosis and counts an
episode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gradwatch.service.rules.view import Finding


@dataclass
class Diagnosis:
    """One symptom of one run: the JSON item of ``GET /v1/runs/{run}/diagnoses``."""

    symptom: str
    step: int
    active: bool
    evidence: dict[str, Any]
    advice: str
    layer: str | None = None
    rank: int | None = None
    #: Onset of the current (or last) episode; equals ``step`` for the first.
    onset_step: int = 0
    #: Newest step the service had received when the current episode fired:
    #: detection delay is detected_step - onset.
    detected_step: int = 0
    #: detected_step of the first episode (kept when the symptom recurs).
    first_detected_step: int = 0
    #: Newest step at which the rule still found the symptom.
    last_seen_step: int = 0
    cleared_step: int | None = None
    episodes: int = 1
    #: Wall-clock seconds (server time) when the current episode fired.
    fired_at: float = 0.0
    #: One line for people (alerts, logs), written when the episode fired and
    #: kept for it, so that an alert's identity does not change while it lasts.
    summary: str = ""
    #: Layer and rank as first attributed in this episode (alert labels).
    alert_layer: str | None = None
    alert_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Change:
    """A diagnosis that fired or cleared in one update."""

    kind: str  # "fired" or "cleared"
    run: str
    diagnosis: dict[str, Any]


@dataclass
class DiagnosisTracker:
    """The diagnoses of one run."""

    clear_after_steps: int
    by_symptom: dict[str, Diagnosis] = field(default_factory=dict)

    def update(self, run: str, findings: dict[str, Finding | None], latest_step: int, now: float) -> list[Change]:
        """Apply one evaluation's findings; returns what fired or cleared."""
        changes = []
        for symptom, finding in findings.items():
            diagnosis = self.by_symptom.get(symptom)
            if finding is not None:
                if diagnosis is None:
                    diagnosis = Diagnosis(
                        symptom=symptom,
                        step=finding.step,
                        active=True,
                        evidence=finding.evidence,
                        advice=finding.advice,
                        layer=finding.layer,
                        rank=finding.rank,
                        onset_step=finding.step,
                        detected_step=latest_step,
                        first_detected_step=latest_step,
                        last_seen_step=latest_step,
                        fired_at=now,
                        summary=summarize(finding),
                        alert_layer=finding.layer,
                        alert_rank=finding.rank,
                    )
                    self.by_symptom[symptom] = diagnosis
                    changes.append(Change("fired", run, diagnosis.to_json()))
                    continue
                reopened = not diagnosis.active
                kept_origin = {k: v for k, v in diagnosis.evidence.items() if k.startswith("origin_")}
                diagnosis.evidence = finding.evidence
                if not reopened and finding.step > diagnosis.onset_step and kept_origin:
                    diagnosis.evidence = {**finding.evidence, **kept_origin}
                diagnosis.advice = finding.advice
                # Layer and rank say where the episode began: a finding that places
                # its start later (a run stuck at NaN, seen again) does not move them.
                if reopened or finding.step <= diagnosis.onset_step:
                    diagnosis.layer = finding.layer if finding.layer is not None else diagnosis.layer
                    diagnosis.rank = finding.rank if finding.rank is not None else diagnosis.rank
                diagnosis.last_seen_step = latest_step
                if not reopened and finding.step < diagnosis.onset_step:
                    # Data from a slower rank showed an earlier start of this episode.
                    diagnosis.onset_step = finding.step
                    if diagnosis.episodes == 1:
                        diagnosis.step = finding.step
                if reopened:
                    diagnosis.active = True
                    diagnosis.cleared_step = None
                    diagnosis.onset_step = finding.step
                    diagnosis.detected_step = latest_step
                    diagnosis.episodes += 1
                    diagnosis.fired_at = now
                    diagnosis.summary = summarize(finding)
                    diagnosis.alert_layer = finding.layer
                    diagnosis.alert_rank = finding.rank
                    changes.append(Change("fired", run, diagnosis.to_json()))
            elif (
                diagnosis is not None
                and diagnosis.active
                and latest_step - diagnosis.last_seen_step >= self.clear_after_steps
            ):
                diagnosis.active = False
                diagnosis.cleared_step = latest_step
                changes.append(Change("cleared", run, diagnosis.to_json()))
        return changes

    def reset_clock(self, latest_step: int) -> None:
        """The run's step counter restarted: measure silence from the new counter."""
        for diagnosis in self.by_symptom.values():
            diagnosis.last_seen_step = min(diagnosis.last_seen_step, latest_step)

    def items(self) -> list[dict[str, Any]]:
        """Diagnoses in onset order."""
        return [d.to_json() for d in sorted(self.by_symptom.values(), key=lambda d: (d.step, d.symptom))]

    def active_symptoms(self) -> set[str]:
        return {s for s, d in self.by_symptom.items() if d.active}


def summarize(finding: Finding, max_items: int = 4) -> str:
    """``"nonfinite since step 37 in layer fc1: quantities=[loss, grad], ..."`` for alerts and logs."""
    where = f" in layer {finding.layer}" if finding.layer else ""
    rank = f" on rank {finding.rank}" if finding.rank is not None else ""
    items = [f"{k}={_short(v)}" for k, v in list(finding.evidence.items())[:max_items]]
    return f"{finding.symptom} since step {finding.step}{where}{rank}: {', '.join(items)}"[:400]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_short(v) for v in value[:3])
        return f"[{shown}{', ...' if len(value) > 3 else ''}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:3]) + "}"
    return str(value)


def alert_labels(diagnosis: Diagnosis) -> dict[str, str]:
    """The identity and text of an active diagnosis's alert (frozen for the episode)."""
    labels = {
        "summary": diagnosis.summary,
        "advice": diagnosis.advice,
        "onset_step": str(diagnosis.onset_step),
        "fired_at": repr(diagnosis.fired_at),
    }
    if diagnosis.alert_layer is not None:
        labels["layer"] = diagnosis.alert_layer
    if diagnosis.alert_rank is not None:
        labels["rank"] = str(diagnosis.alert_rank)
    return labels
