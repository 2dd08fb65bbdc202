"""Scoring the rules on labelled training scenarios (``gradwatch eval``)."""
