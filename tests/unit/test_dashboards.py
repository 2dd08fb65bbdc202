"""The committed dashboards: generated from code, structurally sound for Grafana, and valid PromQL.

No Grafana server runs in CI; these checks stand in for Grafana loading the
JSON. The queries are executed on a real Prometheus in
tests/integration/test_dashboards_prometheus.py.
"""

from __future__ import annotations

import json
import subprocess
from itertools import combinations
from pathlib import Path

import pytest
import yaml

from gradwatch.dashboards import DASHBOARDS, DEFAULT_OUTPUT, generate_all, write_all
from gradwatch.dashboards.common import Grid
from gradwatch.dashboards.queries import queries, substitute, used_variables, variable_names
from tests.integration.external import binary

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
#: Values for the template variables when checking queries outside Grafana.
SAMPLE_VALUES = {"job": "gradwatch", "namespace": ".*", "run": "some-run", "layer": ".*"}


def _models() -> dict[str, dict]:
    return {name: json.loads((DEFAULT_OUTPUT / name).read_text()) for name in DASHBOARDS}


def _panels(model: dict) -> list[dict]:
    return [p for p in model["panels"] if p["type"] != "row"]


def _datasource_uids() -> set[str]:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    return {d["uid"] for d in provisioned["datasources"]}


def test_committed_json_is_what_the_code_generates(tmp_path):
    for name, text in generate_all().items():
        assert (DEFAULT_OUTPUT / name).read_text() == text, f"regenerate: python -m gradwatch.dashboards ({name})"
    # Twice in a row, byte for byte: nothing depends on dict order, time or ids drawn at random.
    first = {p.name: p.read_bytes() for p in write_all(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_all(tmp_path / "b")}
    assert first == second and sorted(first) == sorted(DASHBOARDS)


def test_every_dashboard_file_is_committed_and_nothing_else():
    assert sorted(p.name for p in DEFAULT_OUTPUT.glob("*.json")) == sorted(DASHBOARDS)


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_structure(name):
    model = _models()[name]
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    assert model["uid"] and len(model["uid"]) <= 40 and model["title"]
    assert "gradwatch" in model["tags"]
    panels = _panels(model)
    assert panels, "a dashboard without panels"
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    uids = _datasource_uids()
    for panel in panels:
        what = f"{name} panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"]["uid"] in uids, what
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), what
        assert len(panel["description"]) >= 60, f"{what}: describe how to read it"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{what}: no unit"
        assert panel["targets"], f"{what}: no queries"
        refs = [t["refId"] for t in panel["targets"]]
        assert all(refs) and len(refs) == len(set(refs)), f"{what}: refIds {refs}"
        assert isinstance(panel["options"], dict), what
    for item in model["annotations"]["list"]:
        assert item["datasource"]["uid"] in uids
    for variable in model["templating"]["list"]:
        if "datasource" in variable:
            assert variable["datasource"]["uid"] in uids


@pytest.mark.parametrize("name", DASHBOARDS)
def test_grid_positions_fit_in_24_columns_without_overlap(name):
    boxes = []
    for panel in _models()[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']!r} sticks out of the 24-column grid"
        boxes.append((panel["title"], pos))
    for (a, p), (b, q) in combinations(boxes, 2):
        apart = (
            p["x"] + p["w"] <= q["x"]
            or q["x"] + q["w"] <= p["x"]
            or p["y"] + p["h"] <= q["y"]
            or q["y"] + q["h"] <= p["y"]
        )
        assert apart, f"{a!r} overlaps {b!r}"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_variable_used_is_defined(name):
    model = _models()[name]
    defined = variable_names(model)
    texts = [q.expr for q in queries(model)]
    texts += [v.get("query", "") for v in model["templating"]["list"] if isinstance(v.get("query"), str)]
    texts += [link["url"] for link in model.get("links", [])]
    texts += [link["url"] for panel in _panels(model) for link in panel["fieldConfig"]["defaults"].get("links", [])]
    for text in texts:
        assert used_variables(text) <= defined, f"{text!r} uses undefined variables"
    assert {"job", "namespace", "run", "gradwatch_url"} <= defined


def test_the_dashboards_show_what_the_issue_asks_for():
    models = _models()
    exprs = {name: " ".join(q.expr for q in queries(m)) for name, m in models.items()}
    run, layers, fleet = (exprs[n] for n in DASHBOARDS)
    for metric in ("gradwatch_loss", "gradwatch_val_loss", "gradwatch_grad_norm", "gradwatch_learning_rate"):
        assert metric in run
    assert "gradwatch_step_seconds" in run and "ALERTS" in run and "gradwatch_diagnosis_active" in run
    overview = models["gradwatch-run.json"]
    assert any("/v1/runs/${run}/diagnoses" in link["url"] for link in overview["links"])
    assert any(p["type"] == "state-timeline" for p in overview["panels"])
    heatmap = next(p for p in models["gradwatch-layers.json"]["panels"] if p["type"] == "heatmap")
    assert (
        "log10(gradwatch_layer_grad_norm" in heatmap["targets"][0]["expr"] and "depth" in heatmap["targets"][0]["expr"]
    )
    assert heatmap["options"]["yAxis"]["reverse"] is False  # first (input) row at the bottom
    assert "layer" in variable_names(models["gradwatch-layers.json"])
    ratio = next(p for p in models["gradwatch-layers.json"]["panels"] if "gradwatch_layer_update_ratio" in str(p))
    band = [s["value"] for s in ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert band[1] < 1e-3 < band[2], "the update-ratio guide band must bracket 1e-3"
    for metric in ("gradwatch_layer_weight_norm", "gradwatch_layer_grad_max_abs", "gradwatch_layer_nonfinite"):
        assert metric in layers
    assert "by (run, rank)" in layers
    for metric in (
        "gradwatch_last_report_timestamp_seconds",
        "gradwatch_agent_dropped_steps_total",
        "gradwatch_ingested_reports_total",
        "gradwatch_ingest_seconds_bucket",
        "process_resident_memory_bytes",
    ):
        assert metric in fleet


def test_promtool_accepts_every_expression(tmp_path):
    promtool = binary("promtool")
    rules = []
    for model in _models().values():
        for i, query in enumerate(queries(model)):
            rules.append(
                {
                    "record": f"dashboard:check:{model['uid'].replace('-', '_')}_{i}",
                    "expr": substitute(query.expr, SAMPLE_VALUES),
                }
            )
    assert len(rules) >= 25
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path):
    # The check above can fail: a typo in a panel's PromQL is caught.
    promtool = binary("promtool")
    path = tmp_path / "broken.rules.yml"
    rule = {"record": "dashboard:check:broken", "expr": "sum by (run (gradwatch_loss)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [rule]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True).returncode != 0


def test_substitution_covers_grafana_syntaxes():
    expr = 'rate(x{run=~"$run", job=~"${job}", l=~"[[layer]]"}[$__rate_interval])'
    assert substitute(expr, {"run": "a", "job": "b", "layer": "c"}) == 'rate(x{run=~"a", job=~"b", l=~"c"}[20s])'
    with pytest.raises(KeyError, match="namespace"):
        substitute('x{namespace=~"$namespace"}', {})


def test_grid_refuses_a_panel_wider_than_the_dashboard():
    with pytest.raises(ValueError, match="1..24"):
        Grid().add(object(), w=25, h=4)


def test_provider_points_grafana_at_the_dashboards_folder():
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "gradwatch.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == "/var/lib/grafana/dashboards/gradwatch"
    assert entry["folder"] == "gradwatch"
