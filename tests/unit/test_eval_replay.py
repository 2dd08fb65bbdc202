"""``gradwatch eval --record/--replay``: a run trained once, its kept reports scored again under other rules."""

from __future__ import annotations

import json

import torch
from torch import nn

from gradwatch.evaluation.replay import recording_path, replay_run, replay_suite
from gradwatch.evaluation.scenario import Scenario
from gradwatch.evaluation.scoring import verdict
from gradwatch.service.config import ServiceConfig
from gradwatch.service.rules.config import ExplodingGradientConfig, RulesConfig

NAN_AT = 40


def _nan_from_step_40(watch, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = watch(model, optimizer)
    for step in range(60):
        x = torch.randn(16, 4)
        if step >= NAN_AT:
            x[0, 0] = float("nan")
        loss = nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mon.step(loss, val_loss=loss.detach() if step % 10 == 9 else None)


SCENARIO = Scenario(
    "nan_from_step_40", "A poisoned input from step 40.", _nan_from_step_40, expect={"nonfinite": NAN_AT}
)


def test_a_recorded_run_replays_to_the_diagnoses_of_the_real_path(tmp_path):
    (outcome,) = replay_suite([SCENARIO], [0], tmp_path, ServiceConfig(), record=True)
    assert outcome.error is None and outcome.steps == 60
    assert verdict(SCENARIO, outcome) == "ok"
    assert outcome.fired["nonfinite"]["step"] == NAN_AT
    assert outcome.val_losses[0][0] == 9  # held-out losses are kept with the reports
    kept = json.loads(recording_path(tmp_path, SCENARIO.name, 0).read_text())
    assert kept["bodies"] and kept["error"] is None

    # The same reports again: the same diagnoses. Under other rules, without training again: a
    # gradient_scale line that every run crosses.
    def onsets(fired: dict) -> dict:
        return {symptom: (item["step"], item["first_detected_step"]) for symptom, item in fired.items()}

    assert onsets(replay_run(SCENARIO, 0, tmp_path, ServiceConfig()).fired) == onsets(outcome.fired)
    strict = ServiceConfig(rules=RulesConfig(exploding_gradient=ExplodingGradientConfig(max_grad_weight_ratio=1e-9)))
    assert "exploding_gradient" not in outcome.fired
    assert "exploding_gradient" in replay_run(SCENARIO, 0, tmp_path, strict).fired
    # Runs are named as on the real path, so [[run_rules]] select them by scenario (and seed).
    per_run = ServiceConfig.model_validate(
        {"run_rules": [{"match": "*-nan_from_*-s0", "nonfinite": {"enabled": False}}]}
    )
    assert "nonfinite" not in replay_run(SCENARIO, 0, tmp_path, per_run).fired


def test_a_missing_recording_is_an_error_that_names_the_flag(tmp_path):
    outcome = replay_run(SCENARIO, 3, tmp_path, ServiceConfig())
    assert outcome.error is not None and "--record" in outcome.error
    assert verdict(SCENARIO, outcome) == "ERROR"
