"""The PromQL inside a dashboard, and Grafana's variable substitution, for checking queries outside Grafana.

Tests use these to validate every expression with ``promtool`` and to run it
against a real Prometheus; nothing here talks to Grafana.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: Grafana's built-in interval variables, as Grafana would expand them for a
#: Prometheus scraping every 5 s (deploy/prometheus/prometheus.yml) over an hour.
BUILTINS = {"__rate_interval": "20s", "__interval": "5s", "__range": "1h"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard and where it sits."""

    where: str
    expr: str
    instant: bool = False


def queries(model: Mapping[str, Any]) -> Iterator[Query]:
    """Every PromQL expression of a dashboard: panel targets (rows included) and annotations."""
    for panel in _panels(model.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield Query(
                    f"{model.get('uid')} panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}",
                    target["expr"],
                    bool(target.get("instant")) and not target.get("range"),
                )
    for item in model.get("annotations", {}).get("list", []):
        if item.get("expr"):
            yield Query(f"{model.get('uid')} annotation {item.get('name')!r}", item["expr"])


def variable_names(model: Mapping[str, Any]) -> set[str]:
    """Names of the dashboard's template variables."""
    return {v["name"] for v in model.get("templating", {}).get("list", [])}


def used_variables(text: str) -> set[str]:
    """Variables referenced in ``text`` ($x, ${x}, ${x:format}, [[x]]), Grafana's built-ins excluded."""
    names = {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}
    return {n for n in names if not n.startswith("__")}


def substitute(expr: str, values: Mapping[str, str], builtins: Mapping[str, str] = BUILTINS) -> str:
    """``expr`` with template and built-in variables replaced, as Grafana sends it to Prometheus."""
    merged = {**builtins, **values}

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in merged:
            raise KeyError(f"no value for variable ${name} in {expr!r}")
        return merged[name]

    return _VARIABLE.sub(replace, expr)


def _panels(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))
