"""The alerts gradwatch raises: names, severities and texts, defined once.

The direct push to Alertmanager and the generated Prometheus rules both read
this table, so an alert has the same name and labels whichever path delivers
it, and Alertmanager de-duplicates the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradwatch.service.rules.view import SYMPTOMS

RUNBOOK_BASE = "https://github.com/gradwatch/gradwatch/blob/main/docs/runbook.md"


@dataclass(frozen=True)
class AlertSpec:
    symptom: str
    alertname: str
    severity: str
    title: str

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}#{self.symptom.replace('_', '-')}"


ALERTS: dict[str, AlertSpec] = {
    spec.symptom: spec
    for spec in (
        AlertSpec("nonfinite", "GradwatchNonfinite", "critical", "NaN/Inf in training"),
        AlertSpec("exploding_gradient", "GradwatchExplodingGradient", "warning", "Exploding gradients"),
        AlertSpec("vanishing_gradient", "GradwatchVanishingGradient", "warning", "Vanishing gradients"),
        AlertSpec("loss_spike", "GradwatchLossSpike", "warning", "Loss spike"),
        AlertSpec("overfitting", "GradwatchOverfitting", "info", "Overfitting"),
        AlertSpec("stagnation", "GradwatchStagnation", "warning", "Training has stalled"),
    )
}
assert set(ALERTS) == set(SYMPTOMS), "every symptom needs an alert"

#: Labels that identify an alert (besides alertname and severity). Both paths
#: must produce exactly these, or Alertmanager sees two alerts.
IDENTITY_LABELS = ("run", "symptom", "layer", "rank")
