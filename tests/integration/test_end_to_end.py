"""Real trainings → real agent → real HTTP → aggregator actor on real Ray → API and /metrics."""

from __future__ import annotations

import math
import time

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from tests.integration.training import mlp, train

pytestmark = pytest.mark.integration


def _samples(metrics_text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _diagnoses(http, run: str, wait_for: str | None = None, timeout: float = 10.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        status, items = http.get_json(f"/v1/runs/{run}/diagnoses")
        assert status == 200, items
        found = {item["symptom"]: item for item in items}
        if wait_for is None or wait_for in found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _active(http, run: str, symptom: str) -> float:
    return _samples(http.metrics(), "gradwatch_symptom_active")[(("run", run), ("symptom", symptom))]


def test_vanishing_gradients_in_a_deep_sigmoid_net_are_diagnosed(service, http):
    torch.manual_seed(1)
    model = mlp([16] + [24] * 10 + [2], nn.Sigmoid)
    train("it-vanishing", service.url, model, torch.optim.Adam(model.parameters(), lr=1e-3), 120)
    found = _diagnoses(http, "it-vanishing", wait_for="vanishing_gradient")
    item = found["vanishing_gradient"]
    assert item["active"] is True
    assert item["step"] <= 20
    assert item["layer"] in ("0", "2", "4")  # a lower layer is named
    assert item["evidence"] and item["advice"]
    assert "nonfinite" not in found and "exploding_gradient" not in found
    assert _active(http, "it-vanishing", "vanishing_gradient") == 1.0


def test_exploding_gradients_from_a_too_large_learning_rate_are_diagnosed(service, http):
    torch.manual_seed(2)
    model = mlp([16, 48, 48, 48, 1], nn.ReLU)
    train("it-exploding", service.url, model, torch.optim.SGD(model.parameters(), lr=0.03), 80, task="regress")
    found = _diagnoses(http, "it-exploding", wait_for="exploding_gradient")
    assert "exploding_gradient" in found
    exploding = found["exploding_gradient"]
    # It must come before the NaN it leads to, if there was one.
    if "nonfinite" in found:
        assert exploding["step"] <= found["nonfinite"]["step"]
    assert exploding["evidence"]
    assert _active(http, "it-exploding", "exploding_gradient") == 1.0


def test_nan_from_a_division_by_zero_names_the_first_step(service, http):
    torch.manual_seed(3)
    model = mlp([16, 32, 32, 2], nn.ReLU)

    def divide_by_zero_at_step_37(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss / 0.0 * 0.0 if step == 37 else loss  # inf * 0 = NaN, as a bad normaliser would make

    train(
        "it-nan",
        service.url,
        model,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        60,
        loss_hook=divide_by_zero_at_step_37,
    )
    found = _diagnoses(http, "it-nan", wait_for="nonfinite")
    item = found["nonfinite"]
    assert item["step"] == 37
    assert item["active"] is True
    assert item["rank"] == 0
    assert _active(http, "it-nan", "nonfinite") == 1.0
    loss = _samples(http.metrics(), "gradwatch_loss")[(("run", "it-nan"),)]
    assert math.isnan(loss)


def test_healthy_training_raises_nothing_and_exports_layer_series(service, http):
    torch.manual_seed(4)
    model = mlp([16, 64, 64, 2], nn.ReLU)
    mon = train("it-healthy", service.url, model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), 200)
    assert mon.dropped == 0 and mon.delivered == 200
    assert _diagnoses(http, "it-healthy") == {}
    text = http.metrics()
    actives = {k: v for k, v in _samples(text, "gradwatch_symptom_active").items() if ("run", "it-healthy") in k}
    assert len(actives) == 6 and set(actives.values()) == {0.0}
    grad_norms = {
        dict(k)["layer"]: v
        for k, v in _samples(text, "gradwatch_layer_grad_norm").items()
        if ("run", "it-healthy") in k
    }
    assert set(grad_norms) == {"0", "2", "4"} and all(v > 0 for v in grad_norms.values())
    assert _samples(text, "gradwatch_run_steps_total")[(("run", "it-healthy"),)] == 200
    status, runs = http.get_json("/v1/runs")
    assert status == 200
    entry = next(r for r in runs if r["run"] == "it-healthy")
    assert entry["step"] == 199 and entry["active_symptoms"] == []


def test_unknown_run_is_404(http):
    status, body = http.get_json("/v1/runs/never-seen/diagnoses")
    assert status == 404 and "never-seen" in body["error"]


def test_the_aggregator_actor_keeps_its_long_lived_objects_out_of_the_collector(service):
    """Full collections over Ray's and numpy's long-lived objects paused ingest; the actor freezes them once built."""
    import gc

    import ray

    (actor,) = service.service.actors
    frozen = ray.get(actor.__ray_call__.remote(lambda self: gc.get_freeze_count()))
    assert frozen > 10_000, f"only {frozen} objects frozen in the aggregator actor's process"
