"""Renders deploy/prometheus/rules/gradwatch.rules.yml from the alert catalogue.

Run ``python -m gradwatch.service.alerting.prometheus_rules > deploy/prometheus/rules/gradwatch.rules.yml``;
a test fails when the committed file and this output differ, so the Prometheus
path and the direct push cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import yaml

from gradwatch.service.alerting.catalog import ALERTS

#: Seconds without a report after which a run that has not finished is "silent".
SILENT_AFTER_SECONDS = 120
#: Runs silent for longer than this are abandoned, not paged about.
SILENT_HORIZON_SECONDS = 6 * 3600


def _label_of_diagnosis(label: str) -> str:
    # Prometheus templates: read a label of the matching gradwatch_diagnosis_active series.
    return (
        '{{ with printf "gradwatch_diagnosis_active{run=%q,symptom=%q}" $labels.run $labels.symptom | query }}'
        f'{{{{ . | first | label "{label}" }}}}{{{{ end }}}}'
    )


def symptom_rules(runbook_base: str = "docs/runbook.md") -> list[dict[str, Any]]:
    rules = []
    for symptom, spec in ALERTS.items():
        rules.append(
            {
                "alert": spec.alertname,
                # Keep exactly the identity labels the direct push uses
                # (alertname, run, symptom, severity, layer, rank), so that
                # Alertmanager sees one alert whichever path delivers it.
                "expr": f'max by (run, symptom, layer, rank) (gradwatch_diagnosis_active{{symptom="{symptom}"}}) == 1',
                "labels": {"severity": spec.severity},
                "annotations": {
                    "summary": f"{spec.title} in run {{{{ $labels.run }}}}",
                    "description": _label_of_diagnosis("summary"),
                    "advice": _label_of_diagnosis("advice"),
                    "onset_step": _label_of_diagnosis("onset_step"),
                    "runbook_url": f"{runbook_base}#{symptom.replace('_', '-')}",
                },
            }
        )
    return rules


def operational_rules(runbook_base: str = "docs/runbook.md") -> list[dict[str, Any]]:
    return [
        {
            "alert": "GradwatchAgentSilent",
            "expr": (
                f"(time() - gradwatch_last_report_timestamp_seconds > {SILENT_AFTER_SECONDS})"
                f" and (time() - gradwatch_last_report_timestamp_seconds < {SILENT_HORIZON_SECONDS})"
                " and on (run) (gradwatch_run_finished == 0)"
            ),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Run {{ $labels.run }} stopped reporting",
                "description": (
                    "No report from run {{ $labels.run }} for {{ $value | humanizeDuration }} although it did not "
                    "finish: the job may have hung or died, or its agent cannot reach gradwatch."
                ),
                "runbook_url": f"{runbook_base}#agent-silent",
            },
        },
        {
            "alert": "GradwatchAggregatorDown",
            "expr": 'up{job="gradwatch"} == 0 or absent(up{job="gradwatch"})',
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The gradwatch aggregator is down",
                "description": "Prometheus cannot scrape gradwatch: no diagnoses or alerts are produced meanwhile.",
                "runbook_url": f"{runbook_base}#aggregator-down",
            },
        },
        {
            # Pacing itself is a designed response to bursts; only a shard that stays paced
            # delays every run's diagnoses and can move onsets, which is worth a person's time.
            "alert": "GradwatchAggregatorPaced",
            "expr": "gradwatch_aggregator_load >= 0.5",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "gradwatch aggregator shard {{ $labels.shard }} is pacing rule evaluations",
                "description": (
                    "Evaluating every report would take {{ $value | humanizePercentage }} of shard "
                    "{{ $labels.shard }}'s time, so it evaluates each run at most every evaluate_min_interval: "
                    "diagnoses arrive later and some onsets move."
                ),
                "runbook_url": f"{runbook_base}#aggregator-paced",
            },
        },
    ]


def recording_rules() -> list[dict[str, Any]]:
    return [
        {"record": "run:gradwatch_symptoms_active:count", "expr": "count by (run) (gradwatch_symptom_active == 1)"},
        {"record": "gradwatch:layer_grad_norm:log10", "expr": "log10(gradwatch_layer_grad_norm > 0)"},
        {"record": "gradwatch:ingested_steps:rate1m", "expr": "sum(rate(gradwatch_ingested_steps_total[1m]))"},
        {
            "record": "gradwatch:agent_dropped_steps:rate5m",
            "expr": "sum by (run) (rate(gradwatch_agent_dropped_steps_total[5m]))",
        },
    ]


def render(runbook_base: str = "docs/runbook.md") -> str:
    document = {
        "groups": [
            {"name": "gradwatch-symptoms", "rules": symptom_rules(runbook_base)},
            {"name": "gradwatch-operations", "rules": operational_rules(runbook_base)},
            {"name": "gradwatch-recording", "rules": recording_rules()},
        ]
    }
    header = "# Generated by `python -m gradwatch.service.alerting.prometheus_rules`; do not edit by hand.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=True)


if __name__ == "__main__":
    print(render(), end="")
