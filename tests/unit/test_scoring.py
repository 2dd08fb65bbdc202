"""Scoring diagnoses against labels: recall, false alarms, delays, verdicts."""

from gradwatch.evaluation.runner import Outcome
from gradwatch.evaluation.scenario import Scenario
from gradwatch.evaluation.scoring import score, verdict


def _noop(watch, seed):
    pass


def _fired(**steps):
    return {k: {"first_detected_step": v} for k, v in steps.items()}


SPIKE = Scenario("spike", "", _noop, expect={"loss_spike": 200}, allow=frozenset({"exploding_gradient"}))
HEALTHY = Scenario("healthy", "", _noop)


def test_verdicts():
    assert verdict(SPIKE, Outcome("spike", 0, "r", 1.0, 10, _fired(loss_spike=205))) == "ok"
    assert verdict(SPIKE, Outcome("spike", 0, "r", 1.0, 10, _fired(loss_spike=205, exploding_gradient=203))) == "ok"
    assert verdict(SPIKE, Outcome("spike", 0, "r", 1.0, 10, _fired(loss_spike=230))) == "late loss_spike +30"
    assert verdict(SPIKE, Outcome("spike", 0, "r", 1.0, 10, {})) == "missed loss_spike"
    assert verdict(HEALTHY, Outcome("healthy", 0, "r", 1.0, 10, _fired(stagnation=50))) == "false alarm stagnation"
    assert verdict(HEALTHY, Outcome("healthy", 0, "r", 1.0, 0, {}, error="boom")) == "ERROR"


def test_scores_count_recall_false_alarms_and_delays():
    outcomes = [
        Outcome("spike", 0, "a", 1.0, 10, _fired(loss_spike=203)),
        Outcome("spike", 1, "b", 1.0, 10, {}),
        Outcome("healthy", 0, "c", 1.0, 10, _fired(loss_spike=7)),
    ]
    scores = score([SPIKE, HEALTHY], outcomes)
    spike = scores.by_symptom["loss_spike"]
    assert (spike.expected, spike.detected, spike.recall) == (2, 1, 0.5)
    assert spike.delays == [3] and spike.false_alarms_on_healthy == 1
    assert spike.missed == ["spike (seed 1)"]
    assert not scores.meets_targets


def test_a_diagnosis_first_fired_before_the_onset_is_an_early_alarm_and_the_onset_missed():
    early = Outcome("spike", 0, "a", 1.0, 10, _fired(loss_spike=120))
    assert verdict(SPIKE, early) == "early loss_spike -80"
    scores = score([SPIKE], [early, Outcome("spike", 1, "b", 1.0, 10, _fired(loss_spike=200))])
    spike = scores.by_symptom["loss_spike"]
    assert (spike.expected, spike.detected, spike.delays) == (2, 1, [0])
    assert spike.missed == spike.false_alarms == ["spike (seed 0)"]
    assert spike.false_alarms_on_healthy == 0


def test_the_recorder_waits_for_delivery_every_n_steps_and_notes_held_out_losses():
    from gradwatch.evaluation.runner import Recorder

    class Monitor:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def step(self, loss, *, val_loss=None, **scalars) -> None:
            self.calls.append("step")

        def flush(self, timeout: float) -> bool:
            self.calls.append("flush")
            return True

    for every, flushes in ((5, 2), (0, 0)):
        monitor, val_losses = Monitor(), []
        recorder = Recorder(monitor, val_losses, deliver_every=every)
        for step in range(12):
            recorder.step(1.0, val_loss=0.5 if step == 3 else None)
        assert monitor.calls.count("step") == 12 and monitor.calls.count("flush") == flushes
        if every:  # after the 5th and the 10th step
            assert [i for i, c in enumerate(monitor.calls) if c == "flush"] == [5, 11]
        assert val_losses == [(3, 0.5)]
