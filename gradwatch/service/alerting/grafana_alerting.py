"""Renders deploy/grafana/provisioning/alerting/gradwatch.yml: Grafana-managed alerting equivalent to the Prometheus rules.

For teams that alert from Grafana instead of Prometheus: the same alert names,
queries, severities and texts (from the one catalogue), a webhook contact
point and a notification policy with the Alertmanager routing's shape.

    python -m gradwatch.service.alerting.grafana_alerting > deploy/grafana/provisioning/alerting/gradwatch.yml
"""

from __future__ import annotations

from typing import Any

import yaml

from gradwatch.service.alerting.catalog import ALERTS
from gradwatch.service.alerting.prometheus_rules import SILENT_AFTER_SECONDS, SILENT_HORIZON_SECONDS

#: The Prometheus data source that deploy/grafana/provisioning/datasources provisions.
DATASOURCE_UID = "gradwatch-prometheus"


def _rule(
    uid: str, title: str, expr: str, severity: str, annotations: dict[str, str], pending: str = "0s"
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 300, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {"refId": "A", "expr": expr, "instant": True},
            },
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "A",
                    "conditions": [{"evaluator": {"type": "gt", "params": [0]}}],
                },
            },
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": pending,
        "labels": {"severity": severity},
        "annotations": annotations,
    }


def render(runbook_base: str = "docs/runbook.md") -> str:
    symptom_rules = [
        _rule(
            f"gradwatch-{symptom.replace('_', '-')}",
            spec.alertname,
            f'max by (run, symptom, layer, rank) (gradwatch_diagnosis_active{{symptom="{symptom}"}})',
            spec.severity,
            {
                "summary": f"{spec.title} in run {{{{ $labels.run }}}}",
                "description": f"{spec.title} diagnosed by gradwatch; evidence and advice: GET /v1/runs/{{{{ $labels.run }}}}/diagnoses",
                "runbook_url": f"{runbook_base}#{symptom.replace('_', '-')}",
            },
        )
        for symptom, spec in ALERTS.items()
    ]
    operations = [
        _rule(
            "gradwatch-agent-silent",
            "GradwatchAgentSilent",
            f"(time() - gradwatch_last_report_timestamp_seconds > {SILENT_AFTER_SECONDS})"
            f" and (time() - gradwatch_last_report_timestamp_seconds < {SILENT_HORIZON_SECONDS})"
            " and on (run) (gradwatch_run_finished == 0)",
            "warning",
            {"summary": "Run {{ $labels.run }} stopped reporting", "runbook_url": f"{runbook_base}#agent-silent"},
        ),
        _rule(
            "gradwatch-aggregator-down",
            "GradwatchAggregatorDown",
            'up{job="gradwatch"} == 0 or absent(up{job="gradwatch"})',
            "critical",
            {"summary": "The gradwatch aggregator is down", "runbook_url": f"{runbook_base}#aggregator-down"},
            pending="1m",
        ),
    ]
    document = {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "gradwatch-symptoms",
                "folder": "gradwatch",
                "interval": "10s",
                "rules": symptom_rules,
            },
            {"orgId": 1, "name": "gradwatch-operations", "folder": "gradwatch", "interval": "30s", "rules": operations},
        ],
        "contactPoints": [
            {
                "orgId": 1,
                "name": "gradwatch-webhook",
                "receivers": [
                    {
                        "uid": "gradwatch-webhook",
                        "type": "webhook",
                        "settings": {"url": "http://127.0.0.1:5001/gradwatch", "httpMethod": "POST"},
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
        "policies": [
            {
                "orgId": 1,
                "receiver": "gradwatch-webhook",
                "group_by": ["run"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
                "routes": [
                    {
                        "receiver": "gradwatch-webhook",
                        "object_matchers": [["symptom", "=", "nonfinite"]],
                        "group_by": ["run", "symptom"],
                        "group_wait": "0s",
                        "group_interval": "1m",
                        "repeat_interval": "1h",
                    }
                ],
            }
        ],
    }
    header = "# Generated by `python -m gradwatch.service.alerting.grafana_alerting`; do not edit by hand.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=True)


if __name__ == "__main__":
    print(render(), end="")
