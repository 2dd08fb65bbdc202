"""The deploy/ configs: generated files are current, and Prometheus/Alertmanager's own tools accept them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from gradwatch.service.alerting import prometheus_rules
from gradwatch.service.alerting.catalog import ALERTS
from tests.integration.external import binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _tool(name: str) -> str:
    # One rule for missing Debian tools: fail in CI (which installs them), skip elsewhere.
    return binary(name)


def test_committed_prometheus_rules_are_generated_from_the_alert_catalogue():
    committed = (DEPLOY / "prometheus" / "rules" / "gradwatch.rules.yml").read_text()
    assert committed == prometheus_rules.render(), (
        "regenerate: python -m gradwatch.service.alerting.prometheus_rules > deploy/prometheus/rules/gradwatch.rules.yml"
    )


def test_every_alert_has_a_promtool_test():
    tested = set()
    for path in (DEPLOY / "prometheus" / "tests").glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", [])}
    alerts = {spec.alertname for spec in ALERTS.values()} | {"GradwatchAgentSilent", "GradwatchAggregatorDown"}
    assert alerts <= tested, f"untested alerts: {sorted(alerts - tested)}"


def test_promtool_checks_config_and_runs_the_rule_tests():
    promtool = _tool("promtool")
    check = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted(str(p) for p in (DEPLOY / "prometheus" / "tests").glob("*.test.yml"))
    run = subprocess.run([promtool, "test", "rules", *tests], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("SUCCESS") == len(tests)


def test_amtool_accepts_the_alertmanager_configs():
    amtool = _tool("amtool")
    for name in ("alertmanager.yml", "alertmanager.examples.yml"):
        result = subprocess.run(
            [amtool, "check-config", str(DEPLOY / "alertmanager" / name)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_alerting_provisioning_is_generated_and_consistent():
    from gradwatch.service.alerting import grafana_alerting

    path = DEPLOY / "grafana" / "provisioning" / "alerting" / "gradwatch.yml"
    assert path.read_text() == grafana_alerting.render(), (
        "regenerate: python -m gradwatch.service.alerting.grafana_alerting > deploy/grafana/provisioning/alerting/gradwatch.yml"
    )
    document = yaml.safe_load(path.read_text())
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert len({r["uid"] for r in rules}) == len(rules)
    assert {r["title"] for r in rules} >= {spec.alertname for spec in ALERTS.values()}
    for rule in rules:
        refs = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in refs
        for query in rule["data"]:
            assert query["datasourceUid"] in uids | {"__expr__"}
    receivers = {c["name"] for c in document["contactPoints"]}
    assert all(p["receiver"] in receivers for p in document["policies"])
