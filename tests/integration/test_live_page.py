"""The live page in a real headless browser (Debian's chromium) over the real service and a real training run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.integration.external import binary
from tests.integration.training import mlp, train

pytestmark = pytest.mark.integration

RUN = "it-live-page-vanishing"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Node:
    """One element of the rendered DOM: tag, attributes, children and its own text."""

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs = tag, attrs
        self.children: list[Node] = []
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts) + "".join(child.text for child in self.children)

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        found = (
            [self]
            if self.tag == tag and all(self.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
            else []
        )
        for child in self.children:
            found += child.find_all(tag, **attrs)
        return found

    def find(self, tag: str, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}> in the rendered page"
        return found[0]


class DomBuilder(HTMLParser):
    """Chromium's --dump-dom output (serialised, well-formed HTML) into a tree of :class:`Node`."""

    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1 and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


def chromium(url: str, *args: str, budget_ms: int = 8000) -> subprocess.CompletedProcess:
    """Run headless chromium once on ``url`` with a fresh profile; ``--virtual-time-budget`` lets polls run."""
    exe = binary("chromium", "chromium-browser")
    profile = tempfile.mkdtemp(prefix="gw-chromium-")
    try:
        return subprocess.run(
            [
                exe,
                "--headless=new",
                "--no-sandbox",  # required as root (CI containers)
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def vanishing_run(service, http):
    """A deep sigmoid MLP trained for real until the service diagnoses vanishing gradients."""
    torch.manual_seed(1)
    model = mlp([16] + [24] * 10 + [2], nn.Sigmoid)
    train(RUN, service.url, model, torch.optim.Adam(model.parameters(), lr=1e-3), 150)
    deadline = time.monotonic() + 15
    while True:
        status, items = http.get_json(f"/v1/runs/{RUN}/diagnoses")
        assert status == 200, items
        found = {item["symptom"]: item for item in items}
        if "vanishing_gradient" in found or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found["vanishing_gradient"]["active"] is True
    status, series = http.get_json(f"/v1/runs/{RUN}/series")
    assert status == 200
    return found, series


def test_live_page_shows_the_run_its_vanishing_diagnosis_and_a_heatmap_row_per_layer(service, vanishing_run):
    diagnoses, series = vanishing_run
    result = chromium(f"{service.url}/#run={RUN}", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    parser = DomBuilder()
    parser.feed(result.stdout)
    page = parser.root

    body = page.find("body")
    assert body.attrs.get("data-run") == RUN, "the page did not load the run (no successful poll)"
    # It keeps polling: several refreshes within the virtual time budget.
    assert int(body.attrs.get("data-polls", "0")) >= 2
    assert "error" not in page.find("span", id="status").attrs.get("class", "")

    row = page.find("tr", data_run=RUN)
    assert "vanishing_gradient" in row.text and "finished" in row.text

    card = page.find("article", data_symptom="vanishing_gradient")
    vanishing = diagnoses["vanishing_gradient"]
    assert "active" in card.attrs["class"]
    assert vanishing["advice"] in card.text and vanishing["summary"] in card.text
    assert all(key in card.text for key in vanishing["evidence"])

    # One heatmap row per layer (11 linear layers), input layers at the bottom.
    layers = series["layers"]
    assert len(layers) == 11 and series["layer_count"] == 11
    canvas = page.find("canvas", id="heatmap")
    assert canvas.attrs["data-rows"] == "11"
    assert canvas.attrs["data-columns"] == str(len(series["stat_steps"])) and len(series["stat_steps"]) >= 20
    labels = [li.attrs["data-layer"] for li in page.find("ol", id="heatmap-labels").find_all("li")]
    assert labels == list(reversed(layers)) and labels[-1] == "0"
    # Vanishing means a wide colour range: the lower layers' norms are orders of magnitude below the top's.
    assert float(canvas.attrs["data-log-max"]) - float(canvas.attrs["data-log-min"]) > 2

    loss_chart = page.find("canvas", id="loss-chart")
    assert int(loss_chart.attrs["data-points"]) >= 100 and loss_chart.attrs["data-nonfinite"] == "0"
    assert int(page.find("canvas", id="grad-chart").attrs["data-points"]) >= 20


def test_live_page_screenshot_of_a_vanishing_run(service, vanishing_run, tmp_path):
    shot = tmp_path / "live-page.png"
    result = chromium(f"{service.url}/#run={RUN}", f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 1000)
    # A blank or error page compresses to a few KB; the drawn page (heatmap, charts, text) does not.
    assert len(data) > 40_000, len(data)
    artifacts = os.environ.get("GRADWATCH_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "live-page.png")
