"""Alerts: one catalogue of alert names and severities, pushed to Alertmanager and rendered as Prometheus rules."""
