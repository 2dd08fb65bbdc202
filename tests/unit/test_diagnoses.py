"""Hysteresis: fire on the first finding, clear after silence, keep the first onset."""

from gradwatch.service.diagnoses import DiagnosisTracker
from gradwatch.service.rules.view import Finding


def _finding(step, layer=None):
    return Finding(symptom="loss_spike", step=step, evidence={"z": 12.0}, advice="lower the lr", layer=layer)


def test_fires_once_stays_active_then_clears_after_silence_and_reopens():
    tracker = DiagnosisTracker(clear_after_steps=10)
    fired = tracker.update("r", {"loss_spike": _finding(40)}, latest_step=42, now=1.0)
    assert [c.kind for c in fired] == ["fired"] and fired[0].diagnosis["step"] == 40
    assert tracker.update("r", {"loss_spike": _finding(40)}, latest_step=45, now=2.0) == []
    assert tracker.update("r", {"loss_spike": None}, latest_step=54, now=3.0) == []  # 9 steps of silence
    cleared = tracker.update("r", {"loss_spike": None}, latest_step=55, now=4.0)
    assert [c.kind for c in cleared] == ["cleared"]
    (item,) = tracker.items()
    assert item["active"] is False and item["step"] == 40 and item["cleared_step"] == 55
    again = tracker.update("r", {"loss_spike": _finding(90, layer="fc")}, latest_step=91, now=5.0)
    assert [c.kind for c in again] == ["fired"]
    (item,) = tracker.items()
    assert item["step"] == 40 and item["onset_step"] == 90 and item["episodes"] == 2 and item["layer"] == "fc"


def test_a_flickering_finding_does_not_flap():
    tracker = DiagnosisTracker(clear_after_steps=10)
    kinds = []
    for step in range(0, 60, 2):
        finding = _finding(0) if step % 4 == 0 else None
        kinds += [c.kind for c in tracker.update("r", {"loss_spike": finding}, latest_step=step, now=float(step))]
    assert kinds == ["fired"]


def test_a_restarted_step_counter_does_not_freeze_an_active_diagnosis():
    tracker = DiagnosisTracker(clear_after_steps=5)
    tracker.update("r", {"loss_spike": _finding(500)}, latest_step=500, now=0.0)
    tracker.reset_clock(0)
    assert tracker.update("r", {"loss_spike": None}, latest_step=6, now=1.0)[0].kind == "cleared"
