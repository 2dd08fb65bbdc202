"""Ray restarts a killed aggregator actor; its state comes back from the snapshot, agents reconnect."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
import ray
import torch
from torch import nn

import gradwatch
from gradwatch.service.config import AlertingConfig, ServiceConfig, SnapshotConfig
from gradwatch.service.server import BackgroundService, Service
from tests.integration.external import Alertmanager, Webhook
from tests.integration.training import mlp, train

pytestmark = pytest.mark.integration

SNAPSHOT_INTERVAL = 0.5


@pytest.fixture(scope="module")
def alertmanager():
    hook = Webhook()
    am = Alertmanager(hook.url)
    yield am
    am.stop()
    hook.close()


@pytest.fixture(scope="module")
def restartable(ray_session, alertmanager):
    config = ServiceConfig(
        snapshots=SnapshotConfig(interval=SNAPSHOT_INTERVAL),
        alerting=AlertingConfig(alertmanagers=[alertmanager.url], resend_interval=1),
    )
    background = BackgroundService(Service(config, port=0, name="restart")).start()
    yield background
    background.stop()


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return None, None


def _am_alerts(am: Alertmanager, run: str) -> list[dict]:
    _, alerts = _get(f"{am.url}/api/v2/alerts")
    return [a for a in alerts or [] if a["labels"].get("run") == run]


class _LiveTraining(threading.Thread):
    """Trains a healthy model through the restart, recording when reports get delivered."""

    def __init__(self, url: str) -> None:
        super().__init__(name="live-training", daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.timeline: list[tuple[float, int]] = []  # (time, delivered so far)
        self.max_step_seconds = 0.0
        self.steps = 0
        self.mon = None

    def run(self) -> None:
        torch.manual_seed(0)
        model = mlp([8, 16, 1], nn.ReLU)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        mon = gradwatch.watch(model, optimizer, run="rs-live", endpoint=self.url, flush_interval=0.1)
        self.mon = mon
        while not self.stop.is_set():
            started = time.perf_counter()
            loss = model(torch.randn(16, 8)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mon.step(loss)
            self.max_step_seconds = max(self.max_step_seconds, time.perf_counter() - started)
            self.steps += 1
            self.timeline.append((time.monotonic(), mon.delivered))
            time.sleep(0.02)
        mon.close(timeout=10)


def test_a_killed_aggregator_comes_back_with_its_diagnoses_and_alerts(restartable, alertmanager):
    url = restartable.url
    torch.manual_seed(3)
    model = mlp([16, 32, 32, 2], nn.ReLU)
    train(
        "rs-nan",
        url,
        model,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        60,
        loss_hook=lambda step, loss: loss / 0.0 * 0.0 if step == 37 else loss,
    )
    live = _LiveTraining(url)
    live.start()
    deadline = time.monotonic() + 30
    while not _am_alerts(alertmanager, "rs-nan") and time.monotonic() < deadline:
        time.sleep(0.2)
    [alert_before] = _am_alerts(alertmanager, "rs-nan")
    _, before = _get(f"{url}/v1/runs/rs-nan/diagnoses")
    _, layers_before = _get(f"{url}/v1/runs/rs-nan/layers")
    assert [(d["symptom"], d["step"], d["active"]) for d in before] == [("nonfinite", 37, True)]
    time.sleep(3 * SNAPSHOT_INTERVAL)  # at least one snapshot holds the diagnosis

    (actor,) = restartable.service.actors
    # A forked child wrote those snapshots: the actor did not fall back to writing in-line.
    assert ray.get(actor.snapshot_info.remote())["background"] is True
    killed_at = time.monotonic()
    ray.kill(actor, no_restart=False)
    while _get(f"{url}/v1/runs")[0] == 200 and time.monotonic() - killed_at < 5:
        time.sleep(0.05)  # the kill takes effect
    while _get(f"{url}/v1/runs")[0] != 200:
        assert time.monotonic() - killed_at < 60, "Ray did not restart the aggregator"
        time.sleep(0.1)
    back_at = time.monotonic()
    info = ray.get(actor.snapshot_info.remote())
    assert info["restored_from"] is not None, "the restarted actor did not read its snapshot"

    # The diagnosis survived with its onset step and alert identity; the windows came back too.
    _, after = _get(f"{url}/v1/runs/rs-nan/diagnoses")
    assert after == before
    _, layers_after = _get(f"{url}/v1/runs/rs-nan/layers")
    assert json.dumps(layers_after, sort_keys=True) == json.dumps(layers_before, sort_keys=True)

    # The live agent reconnects by itself within 5 s of the service being back.
    delivered_at_back = max(d for t, d in live.timeline if t <= back_at)
    deadline = back_at + 10
    while time.monotonic() < deadline and not any(t > back_at and d > delivered_at_back for t, d in live.timeline):
        time.sleep(0.05)
    resumed = next(t for t, d in live.timeline if t > back_at and d > delivered_at_back)
    assert resumed - back_at < 5.0, f"the agent took {resumed - back_at:.1f} s to deliver again"

    # The alert is re-sent as the same incident, not a new one.
    time.sleep(2.5)  # two re-send intervals
    alerts_after = _am_alerts(alertmanager, "rs-nan")
    assert len(alerts_after) == 1
    assert alerts_after[0]["startsAt"] == alert_before["startsAt"]
    assert alerts_after[0]["labels"] == alert_before["labels"]
    assert alerts_after[0]["status"]["state"] == "active"

    live.stop.set()
    live.join(30)
    assert live.steps > 50 and live.max_step_seconds < 0.5  # training never stalled on the restart
    _, runs = _get(f"{url}/v1/runs")
    entry = next(r for r in runs if r["run"] == "rs-live")
    assert entry["step"] == live.steps - 1  # nothing sent after the restart was lost
    print(
        f"\nrestart: service back {back_at - killed_at:.1f} s after the kill; agent delivered again "
        f"{resumed - back_at:.2f} s later; slowest training step {live.max_step_seconds * 1000:.0f} ms; "
        f"agent dropped {live.mon.dropped}"
    )
