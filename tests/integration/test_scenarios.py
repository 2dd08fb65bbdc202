"""The quick subset of the labelled suite, as hard assertions (the full table: `gradwatch eval`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradwatch.evaluation.runner import run_scenario
from gradwatch.evaluation.scenario import load_suite
from gradwatch.evaluation.scoring import TARGET_DELAY, TARGET_NONFINITE_DELAY
from gradwatch.service.rules import SYMPTOMS

pytestmark = pytest.mark.integration

SUITE = Path(__file__).resolve().parents[1] / "scenarios"
QUICK = [s for s in load_suite(SUITE) if "quick" in s.tags]


def test_the_quick_subset_covers_every_symptom_and_healthy_controls():
    labelled = {symptom for s in QUICK for symptom in s.expect}
    assert labelled == set(SYMPTOMS)
    assert sum(s.healthy for s in QUICK) >= 3


@pytest.mark.parametrize("scenario", QUICK, ids=lambda s: s.name)
def test_scenario(scenario, service):
    # Delivered every 5 steps, as `gradwatch eval` does by default: diagnoses dated to within 5 steps.
    outcome = run_scenario(scenario, seed=0, endpoint=service.url, tag="ci", deliver_every=5)
    assert outcome.error is None, outcome.error
    fired = {k: v["first_detected_step"] for k, v in outcome.fired.items()}
    for symptom, label in scenario.expect.items():
        assert symptom in fired, f"missed {symptom}; fired {fired}"
        onset = outcome.onset(label)
        limit = TARGET_NONFINITE_DELAY if symptom == "nonfinite" else TARGET_DELAY
        assert 0 <= fired[symptom] - onset <= limit, f"{symptom} detected at {fired[symptom]}, onset {onset}"
    false_alarms = set(fired) - set(scenario.expect) - set(scenario.allow)
    assert not false_alarms, f"false alarm(s) {false_alarms}; fired {fired}"
