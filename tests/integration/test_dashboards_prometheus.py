"""Every dashboard query, executed on a real Prometheus scraping a real gradwatch fed by real training.

Grafana itself cannot run here. What Grafana would do is reproduced at the
HTTP level: its variables substituted (``$run`` as a user would pick it,
``$__rate_interval`` as Grafana computes it for a 5 s scrape), then each
panel's and annotation's expression sent to ``/api/v1/query_range`` (or
``/api/v1/query`` for instant table queries), and each variable's
``label_values`` to ``/api/v1/label/<name>/values``. Every one must return data.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request

import pytest
import torch
from torch import nn

import gradwatch
from gradwatch.dashboards import DASHBOARDS, DEFAULT_OUTPUT
from gradwatch.dashboards.queries import queries, substitute
from tests.integration.external import Prometheus, free_port
from tests.integration.training import mlp

pytestmark = pytest.mark.integration

VANISHING = "dash-vanishing"
NAN = "dash-nan"
#: Which run each dashboard is looked at with (the fleet dashboard: all runs).
RUN_FOR = {"gradwatch-run.json": VANISHING, "gradwatch-layers.json": NAN, "gradwatch-fleet.json": ".*"}
SCRAPE_SECONDS = 5  # deploy/prometheus/prometheus.yml


def _paced_training(run: str, endpoint: str, model: nn.Module, lr: float, steps: int, *, nan_at: int | None = None):
    """Train with a validation loss every 10 steps, slowly enough to span several scrapes."""
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(16, 1, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with gradwatch.watch(model, optimizer, run=run, endpoint=endpoint, flush_interval=0.1) as mon:
        for step in range(steps):
            x = torch.randn(32, 16, generator=gen)
            loss = nn.functional.cross_entropy(model(x), (x @ teacher > 0).long().squeeze(1))
            if step == nan_at:
                loss = loss * float("nan")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            val_loss = None
            if step % 10 == 0:
                with torch.no_grad():
                    xv = torch.randn(64, 16, generator=gen)
                    val_loss = float(nn.functional.cross_entropy(model(xv), (xv @ teacher > 0).long().squeeze(1)))
            mon.step(loss, val_loss=val_loss)
            time.sleep(0.04)
        mon.flush(10)


@pytest.fixture(scope="module")
def scraped(service):
    """A Prometheus that scraped the session's service through two trainings; yields (prometheus, start)."""
    prometheus = Prometheus([service.service.port], alertmanager_port=free_port())
    start = time.time()
    try:
        torch.manual_seed(1)
        _paced_training(VANISHING, service.url, mlp([16] + [24] * 10 + [2], nn.Sigmoid), 1e-3, 160)
        torch.manual_seed(0)
        # The NaN comes late enough (about 10 s in) for scrapes to see finite layer values first.
        _paced_training(NAN, service.url, mlp([16, 32, 32, 2], nn.ReLU), 1e-2, 240, nan_at=200)
        # Enough scrapes and rule evaluations after the last report for rates and ALERTS.
        time.sleep(4 * SCRAPE_SECONDS)
        yield prometheus, start
    finally:
        prometheus.stop()


def _get(prometheus: Prometheus, path: str, params: list[tuple[str, str]]) -> dict:
    url = f"{prometheus.url}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def _values(name: str) -> dict[str, str]:
    return {"job": "gradwatch", "namespace": ".*", "run": RUN_FOR[name], "layer": ".*", "gradwatch_url": ""}


def _finite(series: list[dict]) -> bool:
    samples = [s["value"] for s in series if "value" in s] + [v for s in series for v in s.get("values", [])]
    return any(math.isfinite(float(value)) for _, value in samples)


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_query_of_the_dashboard_returns_data(scraped, name):
    prometheus, start = scraped
    model = json.loads((DEFAULT_OUTPUT / name).read_text())
    end = time.time()
    empty, checked = [], 0
    for query in queries(model):
        expr = substitute(query.expr, _values(name))
        if query.instant:
            data = _get(prometheus, "/api/v1/query", [("query", expr), ("time", f"{end:.3f}")])
        else:
            params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"), ("step", "5")]
            data = _get(prometheus, "/api/v1/query_range", params)
        checked += 1
        if not data["result"] or not _finite(data["result"]):
            empty.append(f"{query.where}: {expr}")
    assert checked >= 8
    assert not empty, "queries without data:\n" + "\n".join(empty)


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_variable_lists_the_runs_and_layers(scraped, name):
    prometheus, start = scraped
    model = json.loads((DEFAULT_OUTPUT / name).read_text())
    values = _values(name)
    for variable in model["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        selector, label = substitute(match.group(1), values), match.group(2)
        found = _get(
            prometheus,
            f"/api/v1/label/{label}/values",
            [("match[]", selector), ("start", f"{start:.3f}"), ("end", f"{time.time():.3f}")],
        )
        if label == "namespace":
            assert found == [], "no scrape here adds a namespace label"  # "All" (.*) then matches its absence
        elif label == "run":
            assert {VANISHING, NAN} <= set(found)
        elif label == "layer":
            assert {"0", "2", "4"} <= set(found), found
        else:
            assert found == ["gradwatch"]


def test_the_heatmap_rows_come_back_in_model_order_input_first(scraped):
    prometheus, start = scraped
    model = json.loads((DEFAULT_OUTPUT / "gradwatch-layers.json").read_text())
    heatmap = next(p for p in model["panels"] if p["type"] == "heatmap")
    expr = substitute(heatmap["targets"][0]["expr"], {**_values("gradwatch-layers.json"), "run": VANISHING})
    params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{time.time():.3f}"), ("step", "5")]
    rows = [series["metric"]["layer"] for series in _get(prometheus, "/api/v1/query_range", params)["result"]]
    # Linear layers of the 11-layer sigmoid MLP are modules 0, 2, ..., 20: "10" sorts before "2" by name.
    assert rows == [str(i) for i in range(0, 21, 2)]
