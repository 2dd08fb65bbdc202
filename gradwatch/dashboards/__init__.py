"""Grafana dashboards as code: built with grafana-foundation-sdk, committed as JSON in ``dashboards/``.

``python -m gradwatch.dashboards`` (or ``gradwatch dashboards generate``)
rewrites the committed files; a test checks that doing so changes nothing.
``gradwatch dashboards push`` uploads them to a Grafana over its HTTP API.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["DASHBOARDS", "DEFAULT_OUTPUT", "generate_all", "write_all"]

#: Where the committed JSON lives (top-level ``dashboards/`` of the repository).
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "dashboards"


def _generators() -> dict[str, Callable[[], str]]:
    # Imported here: the SDK is only needed by whoever generates or pushes.
    from gradwatch.dashboards import fleet, layers, overview

    return {
        "gradwatch-run.json": overview.generate,
        "gradwatch-layers.json": layers.generate,
        "gradwatch-fleet.json": fleet.generate,
    }


#: File names of the generated dashboards, in the order they are written and pushed.
DASHBOARDS = ("gradwatch-run.json", "gradwatch-layers.json", "gradwatch-fleet.json")


def generate_all() -> dict[str, str]:
    """File name -> dashboard JSON text, for every gradwatch dashboard."""
    generators = _generators()
    return {name: generators[name]() for name in DASHBOARDS}


def write_all(output: Path = DEFAULT_OUTPUT) -> list[Path]:
    """Write every dashboard's JSON into ``output``; returns the paths written."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate_all().items():
        path = output / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
