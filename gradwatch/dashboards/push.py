"""Upload the gradwatch dashboards to a Grafana over its HTTP API, idempotently.

The folder is looked up by uid and created when missing; each dashboard is
posted to ``/api/dashboards/db`` with ``overwrite`` and its fixed uid, so a
second push updates the same dashboards instead of adding copies.

Errors (all :class:`PushError`, one line each, meant for a terminal)::

    PushError
    ├── bad URL             (not http(s)://host[:port][/path])
    ├── unreachable server  (connection refused, DNS, TLS, timeout)
    ├── not a Grafana       (no buildInfo, or answers that are not JSON)
    ├── bad token           (HTTP 401)
    ├── missing permission  (HTTP 403)
    └── anything else Grafana refuses, with its status and message
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_FOLDER = "gradwatch"
_MESSAGE = "gradwatch dashboards push"


class PushError(Exception):
    """A push failed; the message is one line saying what to fix."""


@dataclass(frozen=True)
class Pushed:
    """One dashboard as Grafana answered it."""

    uid: str
    title: str
    version: int
    url: str


def folder_uid(title: str) -> str:
    """A stable folder uid from its title (Grafana uids: at most 40 of [A-Za-z0-9_-])."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", title).strip("-").lower() or "gradwatch"
    return slug[:40]


def check_url(url: str) -> str:
    """``url`` without a trailing slash, or a :class:`PushError` saying why it is not a Grafana base URL."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - evaluated for its ValueError on a bad port
    except ValueError as exc:
        raise PushError(f"bad Grafana URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(f"bad Grafana URL {url!r}: expected http(s)://host[:port][/path]")
    if parts.query or parts.fragment:
        raise PushError(f"bad Grafana URL {url!r}: no query or fragment, just the base URL")
    return url.rstrip("/")


def push(
    url: str,
    token: str,
    dashboards: Mapping[str, str],
    *,
    folder: str = DEFAULT_FOLDER,
    timeout: float = 10.0,
) -> list[Pushed]:
    """Create or update ``folder`` and every dashboard (file name -> JSON text) in it."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException
    from niquests.exceptions import InvalidJSONError, RequestException

    base = check_url(url)
    if not token:
        raise PushError("no API token: pass --token or set GRAFANA_TOKEN (a service account token, Editor role)")
    api = GrafanaApi.from_url(base, credential=token, timeout=timeout)
    try:
        # GET /api/frontend/settings: proves it is a Grafana and that the token works, before any write.
        # (health.check() does the same GET but crashes on a non-JSON answer, so ask directly.)
        settings = api.client.GET("/frontend/settings")
        info = settings.get("buildInfo") if isinstance(settings, dict) else None
        if not isinstance(info, dict) or "version" not in info:
            raise PushError(f"{base} does not look like Grafana (no buildInfo at /api/frontend/settings)")
        uid = _ensure_folder(api, folder, GrafanaClientError)
        pushed = []
        for name, text in dashboards.items():
            model: dict[str, Any] = json.loads(text)
            # id null: Grafana matches on uid, so the same uid is updated in place.
            body = {
                "dashboard": {**model, "id": None},
                "folderUid": uid,
                "overwrite": True,
                "message": _MESSAGE,
            }
            answer = api.dashboard.update_dashboard(body)
            if not isinstance(answer, dict) or "uid" not in answer:
                raise PushError(f"{base} answered POST /api/dashboards/db for {name} with {str(answer)[:200]!r}")
            pushed.append(
                Pushed(answer["uid"], model.get("title", name), int(answer.get("version", 0)), answer.get("url", ""))
            )
        return pushed
    except GrafanaException as exc:
        raise PushError(_describe(base, exc)) from exc
    except InvalidJSONError as exc:
        raise PushError(f"{base} does not look like Grafana (its answer is not JSON)") from exc
    except RequestException as exc:
        raise PushError(f"cannot reach Grafana at {base}: {_network_reason(exc)}") from exc


def _ensure_folder(api: Any, title: str, client_error: type[Exception]) -> str:
    uid = folder_uid(title)
    try:
        found = api.folder.get_folder(uid)
    except client_error as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
    else:
        return str(found["uid"])
    created = api.folder.create_folder(title, uid=uid)
    return str(created["uid"])


def _describe(base: str, exc: Any) -> str:
    status = getattr(exc, "status_code", 0)
    response = getattr(exc, "response", None)
    detail = response.get("message") if isinstance(response, dict) else None
    detail = _first_line(detail or exc)
    if status == 401:
        return f"Grafana at {base} refused the token (HTTP 401 {detail}): check --token / GRAFANA_TOKEN"
    if status == 403:
        return (
            f"the token may not do this on {base} (HTTP 403 {detail}): it needs the Editor role "
            "(dashboards:write and folders:create)"
        )
    if status == 0:
        return f"cannot reach Grafana at {base}: {_network_reason(exc)}"
    return f"Grafana at {base} answered HTTP {status}: {detail}"


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else type(value).__name__


def _network_reason(exc: object) -> str:
    """The useful part of a connection error (urllib3 nests it inside a long repr)."""
    text = str(exc)
    if match := re.search(r"Failed to resolve '([^']+)'", text):
        return f"cannot resolve host {match.group(1)!r}"
    if match := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return match.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return _first_line(text)
