"""Scoring diagnoses against scenario labels: recall, false alarms, detection delay.

Definitions (also in docs/evaluation.md):

- A labelled symptom is *detected* when the run has a diagnosis for it that
  first fired at or after the labelled onset.
- Its *detection delay* is ``first_detected_step - onset``: how many optimizer
  steps after the labelled onset the service had received when the diagnosis
  first fired.
- A diagnosis that first fired *before* the labelled onset fired on something
  else (a fault is injected at its onset; a held-out loss cannot overfit before
  its minimum): it is an *early* alarm, counted as a false alarm, and the
  labelled symptom as missed.
- A *false alarm* is a diagnosis for a symptom the scenario neither expects
  nor allows, or an early one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gradwatch.evaluation.runner import Outcome
from gradwatch.evaluation.scenario import Scenario
from gradwatch.service.rules.view import SYMPTOMS

#: Targets of the evaluation (issue: "Diagnoses people can trust").
TARGET_RECALL = 0.95
TARGET_NONFINITE_DELAY = 0
TARGET_DELAY = 20


@dataclass
class SymptomScore:
    symptom: str
    expected: int = 0
    detected: int = 0
    delays: list[int] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    false_alarms_on_healthy: int = 0

    @property
    def recall(self) -> float | None:
        return self.detected / self.expected if self.expected else None

    @property
    def max_delay(self) -> int | None:
        return max(self.delays) if self.delays else None

    @property
    def median_delay(self) -> float | None:
        if not self.delays:
            return None
        ordered = sorted(self.delays)
        mid = len(ordered) // 2
        return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def delay_target(self) -> int:
        return delay_target(self.symptom)

    @property
    def meets_targets(self) -> bool:
        recall_ok = self.recall is None or self.recall >= TARGET_RECALL
        delay_ok = self.max_delay is None or self.max_delay <= self.delay_target
        return recall_ok and delay_ok and self.false_alarms_on_healthy == 0


@dataclass
class Scores:
    by_symptom: dict[str, SymptomScore]
    outcomes: list[Outcome]
    errors: list[str]

    @property
    def total_expected(self) -> int:
        return sum(s.expected for s in self.by_symptom.values())

    @property
    def total_detected(self) -> int:
        return sum(s.detected for s in self.by_symptom.values())

    @property
    def total_false_alarms(self) -> int:
        return sum(len(s.false_alarms) for s in self.by_symptom.values())

    @property
    def healthy_false_alarms(self) -> int:
        return sum(s.false_alarms_on_healthy for s in self.by_symptom.values())

    @property
    def meets_targets(self) -> bool:
        return not self.errors and all(s.meets_targets for s in self.by_symptom.values())


def delay_target(symptom: str) -> int:
    return TARGET_NONFINITE_DELAY if symptom == "nonfinite" else TARGET_DELAY


def _delay(outcome: Outcome, symptom: str, label: int | str) -> int | None:
    """``first_detected_step - onset`` (negative: fired early), or None when it did not fire or has no onset."""
    onset = outcome.onset(label)
    item = outcome.fired.get(symptom)
    return None if item is None or onset is None else int(item["first_detected_step"]) - onset


def verdict(scenario: Scenario, outcome: Outcome) -> str:
    """ "ok", or what went wrong with one run: missed, false alarm, late, error."""
    if outcome.error:
        return "ERROR"
    problems = []
    missed = [k for k in scenario.expect if k not in outcome.fired]
    extra = [k for k in outcome.fired if k not in scenario.expect and k not in scenario.allow]
    early, late = [], []
    for k, label in scenario.expect.items():
        delay = _delay(outcome, k, label)
        if delay is not None and delay < 0:
            early.append(f"{k} {delay}")
        elif delay is not None and delay > delay_target(k):
            late.append(f"{k} +{delay}")
    if missed:
        problems.append(f"missed {', '.join(missed)}")
    if extra:
        problems.append(f"false alarm {', '.join(extra)}")
    if early:
        problems.append(f"early {', '.join(early)}")
    if late:
        problems.append(f"late {', '.join(late)}")
    return "; ".join(problems) or "ok"


def score(scenarios: list[Scenario], outcomes: list[Outcome]) -> Scores:
    by_name = {s.name: s for s in scenarios}
    table = {symptom: SymptomScore(symptom) for symptom in SYMPTOMS}
    errors = []
    for outcome in outcomes:
        scenario = by_name[outcome.scenario]
        label = f"{outcome.scenario} (seed {outcome.seed})"
        if outcome.error:
            errors.append(f"{label}: {outcome.error.strip().splitlines()[-1]}")
        for symptom, onset_label in scenario.expect.items():
            entry = table[symptom]
            entry.expected += 1
            item = outcome.fired.get(symptom)
            if item is None:
                entry.missed.append(label)
                continue
            delay = _delay(outcome, symptom, onset_label)
            if delay is not None and delay < 0:
                entry.missed.append(label)
                entry.false_alarms.append(label)
                continue
            entry.detected += 1
            if delay is not None:
                entry.delays.append(delay)
        for symptom in outcome.fired:
            if symptom not in scenario.expect and symptom not in scenario.allow:
                table[symptom].false_alarms.append(label)
                if scenario.healthy:
                    table[symptom].false_alarms_on_healthy += 1
    return Scores(table, outcomes, errors)
