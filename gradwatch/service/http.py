"""The service's HTTP API: ingest, queries and /metrics (aiohttp).

Bad input is answered at this boundary with a 4xx that says what was wrong,
before anything reaches the aggregator; nothing a client sends produces a 5xx.
Responses are strict JSON: non-finite floats (which are data here) are written
as the strings "NaN", "Infinity" and "-Infinity".
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from gradwatch.service.aggregator import IngestRefused
from gradwatch.service.auth import Token, token_middleware
from gradwatch.service.columns import ColumnarReport, LayoutCache
from gradwatch.service.config import ServiceConfig
from gradwatch.service.diagnoses import Change
from gradwatch.service.metrics_state import AggregatorSnapshot
from gradwatch.service.packed import PackedError
from gradwatch.service.packed import decode as decode_packed
from gradwatch.service.page import ASSETS, asset
from gradwatch.service.page.series import SeriesLimits
from gradwatch.service.render_worker import RenderWorker
from gradwatch.wire import PACKED_CONTENT_TYPE, SUPPORTED_VERSIONS, Report, is_valid_run_name

logger = logging.getLogger("gradwatch.service")

_MAX_ERRORS_SHOWN = 10
#: Content types ingest reads as JSON: a missing header (aiohttp says
#: application/octet-stream), text/plain, and curl's default form type, so that
#: ``curl -d @report.json`` works. Besides these, only the packed encoding
#: (PACKED_CONTENT_TYPE) is read; any other declared format is refused.
_JSON_TYPES = frozenset(
    {"application/json", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)
#: The aggregator's refusals (IngestRefused.status) as reasons of gradwatch_ingest_rejected_reports.
_REFUSED_REASONS = {413: "too_many_layers", 429: "too_many_runs"}
#: /metrics bodies are written this much at a time (see metrics_endpoint).
_WRITE_SLICE_BYTES = 1 << 20


class Backend(Protocol):
    """Where the HTTP layer sends work: one or more aggregators."""

    async def ingest(self, report: ColumnarReport) -> list[Change]: ...
    async def evaluate_due(self) -> list[Change]: ...
    async def runs(self) -> list[dict[str, Any]]: ...
    async def diagnoses(self, run: str) -> list[dict[str, Any]] | None: ...
    async def layers(self, run: str) -> dict[str, Any] | None: ...
    async def series(self, run: str, limits: SeriesLimits) -> dict[str, Any] | None: ...
    async def snapshots(self) -> list[AggregatorSnapshot]: ...


class BackendUnavailable(Exception):
    """The aggregator did not answer in time (restarting, or overloaded)."""


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their names, for strict JSON."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(json_safe(data), allow_nan=False), status=status, content_type="application/json"
    )


def _error(status: int, reason: str, details: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": reason}
    if details:
        body["details"] = details
    return _json(body, status)


def describe_validation_error(exc: ValidationError) -> tuple[int, str, list[str]]:
    """(status, reason, details) for a report that failed to validate."""
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return 400, f"body is not valid JSON: {errors[0]['msg']}", []
    if any(e["loc"] in (("v",), ("report", "v")) for e in errors):
        return 400, f"unsupported schema version; this service reads v in {list(SUPPORTED_VERSIONS)}", []
    details = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in errors[:_MAX_ERRORS_SHOWN]]
    if len(errors) > _MAX_ERRORS_SHOWN:
        details.append(f"... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return 422, "report does not match the gradwatch wire schema", details


class HttpMetrics:
    """The service's own metrics, on the service's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gradwatch_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "code"],
            registry=registry,
        )
        self.rejected = Counter(
            "gradwatch_ingest_rejected_reports", "Reports refused at ingest, by reason.", ["reason"], registry=registry
        )
        self.ingest_seconds = Histogram(
            "gradwatch_ingest_seconds",
            "Seconds from receiving a report to its rules being evaluated.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )


ChangeListener = Callable[[Change], Awaitable[None] | None]


def make_app(
    backend: Backend,
    config: ServiceConfig,
    *,
    registry: CollectorRegistry | None = None,
    on_change: ChangeListener | None = None,
    token: Token | None = None,
    protect_metrics: bool = False,
) -> web.Application:
    """The aiohttp application serving the gradwatch API over ``backend``.

    With ``token``, every route but ``/healthz`` (and ``/metrics`` unless
    ``protect_metrics``) answers 401 without ``Authorization: Bearer <token>``.
    """
    registry = registry or CollectorRegistry()
    # The layer series: not a registered collector (it writes the same text ten times faster than the
    # registry would for thousands of series), ahead of the registry's, in a child process.
    renderer = RenderWorker()
    metrics = HttpMetrics(registry)
    # The service process' standard process_* series (memory, CPU, open files).
    ProcessCollector(registry=registry)
    timeout = config.limits.ingest_timeout
    pending_ingests = [0]  # one event loop: no lock needed
    layouts = LayoutCache()

    async def ingest(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.rejected.labels("too_large").inc()
            return _error(413, f"body exceeds {config.limits.max_body_bytes} bytes (limits.max_body_bytes)")
        if not body:
            metrics.rejected.labels("empty").inc()
            return _error(400, "empty body; POST a JSON report")
        packed = request.content_type == PACKED_CONTENT_TYPE
        if not packed and request.content_type not in _JSON_TYPES:
            # JSON and the packed arrays are the only formats read on any
            # path: nothing here can deserialise code (no pickle, no YAML tags).
            metrics.rejected.labels("content_type").inc()
            return _error(
                415,
                f"Content-Type {request.content_type!r} is not accepted; send application/json "
                f"(or {PACKED_CONTENT_TYPE}, the agent's)",
            )
        if pending_ingests[0] >= config.limits.max_pending_ingests:
            # Refused before it reaches the actor, so the agent knows it was not
            # ingested (a timed-out call may still land later) and retries; and
            # before parsing, so that refusing costs an overloaded front little.
            metrics.rejected.labels("busy").inc()
            return _error(429, "aggregator busy, retry later (limits.max_pending_ingests)")
        try:
            columnar = (
                decode_packed(body, layouts) if packed else ColumnarReport.of(Report.model_validate_json(body), layouts)
            )
        except ValidationError as exc:
            status, reason, details = describe_validation_error(exc)
            metrics.rejected.labels("invalid_json" if status == 400 else "schema").inc()
            return _error(status, reason, details)
        except PackedError as exc:
            metrics.rejected.labels("invalid_packed" if exc.status == 400 else "schema").inc()
            return _error(exc.status, exc.reason)
        report = columnar.report
        pending_ingests[0] += 1
        try:
            changes = await asyncio.wait_for(backend.ingest(columnar), timeout)
        except IngestRefused as exc:
            metrics.rejected.labels(_REFUSED_REASONS.get(exc.status, "refused")).inc()
            return _error(exc.status, exc.reason)
        except (asyncio.TimeoutError, BackendUnavailable) as exc:
            metrics.rejected.labels("unavailable").inc()
            return _error(503, f"aggregator unavailable, retry later ({type(exc).__name__})")
        finally:
            pending_ingests[0] -= 1
        metrics.ingest_seconds.observe(time.perf_counter() - started)
        for change in changes:
            log_change(change)
            if on_change is not None:
                result = on_change(change)
                if asyncio.iscoroutine(result):
                    await result
        return _json({"accepted": len(report.steps), "run": report.run}, status=202)

    async def runs(request: web.Request) -> web.Response:
        return _json(await backend.runs())

    def per_run(fetch: Callable[[str], Awaitable[Any]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A GET handler for /v1/runs/{run}/...: 400 for a malformed name, 404 for an unknown run."""

        async def handler(request: web.Request) -> web.Response:
            run = request.match_info["run"]
            if not is_valid_run_name(run):
                return _error(400, f"invalid run name {run[:140]!r}")
            data = await fetch(run)
            if data is None:
                return _error(404, f"no run named {run!r} has reported to this service")
            return _json(data)

        return handler

    async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
        gzipped = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
        # The aggregators' series, then this process' own few; rendered out of this process (render_worker.py).
        body = await renderer.render(backend.snapshots, lambda: generate_latest(registry), gzipped)
        headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        response = web.StreamResponse(headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        # In slices: the transport copies what the socket does not take at once, and one copy of
        # 40 MB would hold the loop (and ingest) for that long.
        view = memoryview(body)
        for start in range(0, len(view), _WRITE_SLICE_BYTES):
            await response.write(view[start : start + _WRITE_SLICE_BYTES])
        await response.write_eof()
        return response

    async def health(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def series(request: web.Request) -> web.Response:
        try:
            limits = SeriesLimits.model_validate(dict(request.query))
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            return _error(400, "bad query parameters", [f"{e['loc'][0]}: {e['msg']}" for e in errors])
        return await per_run(lambda run: backend.series(run, limits))(request)

    async def index(request: web.Request) -> web.Response:
        # Browsers get the live page; API clients (Accept without text/html) keep the JSON index.
        if "text/html" in request.headers.get("Accept", ""):
            return _asset_response("index.html")
        return _json(
            {
                "service": "gradwatch",
                "endpoints": [
                    "POST /v1/reports",
                    "GET /v1/runs",
                    "GET /v1/runs/{run}/diagnoses",
                    "GET /v1/runs/{run}/series",
                    "GET /metrics",
                ],
            }
        )

    async def page_asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            return _error(404, f"no page file named {name[:80]!r}")
        return _asset_response(name)

    @web.middleware
    async def count_and_shield(request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.requests.labels(route, str(exc.status)).inc()
            raise
        except (BackendUnavailable, asyncio.TimeoutError):
            response = _error(503, "aggregator unavailable, retry later")
        metrics.requests.labels(route, str(response.status)).inc()
        return response

    def refused(request: web.Request) -> None:
        if request.path == "/v1/reports":
            metrics.rejected.labels("unauthorized").inc()

    middlewares: list[Any] = [count_and_shield]
    if token is not None:
        middlewares.append(token_middleware(token, protect_metrics=protect_metrics, on_refused=refused))
    app = web.Application(client_max_size=config.limits.max_body_bytes, middlewares=middlewares)
    app.router.add_post("/v1/reports", ingest)
    app.router.add_get("/v1/runs", runs)
    app.router.add_get("/v1/runs/{run:.+}/diagnoses", per_run(backend.diagnoses))
    app.router.add_get("/v1/runs/{run:.+}/layers", per_run(backend.layers))
    app.router.add_get("/v1/runs/{run:.+}/series", series)
    # No HEAD: its answer would cost a whole render, and Prometheus does not send it.
    app.router.add_get("/metrics", metrics_endpoint, allow_head=False)
    app.router.add_get("/healthz", health)
    app.router.add_get("/", index)
    app.router.add_get("/page/{name}", page_asset)

    async def stop_renderer(app: web.Application) -> None:
        await asyncio.to_thread(renderer.close)  # waits for the child to exit

    app.on_cleanup.append(stop_renderer)
    return app


#: The page loads only its own files and data: no inline script, nothing from elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 12.5.3; Prometheus sends ``gzip``).

    ``gzip`` or ``x-gzip`` by name, else ``*``, with a q-value above 0; a malformed q-value refuses.
    """
    weights: dict[str, float] = {}
    for part in accept_encoding.split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        weights.setdefault(coding.lower(), q)
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


def _asset_response(name: str) -> web.Response:
    return web.Response(body=asset(name), content_type=ASSETS[name], charset="utf-8", headers=_PAGE_HEADERS)


def log_change(change: Change) -> None:
    """One log line per diagnosis fired or cleared (the service's own record of what it told people)."""
    d = change.diagnosis
    if change.kind == "fired":
        logger.warning(
            "DIAGNOSIS run=%s symptom=%s step=%s layer=%s rank=%s evidence=%s advice=%s",
            change.run,
            d["symptom"],
            d["onset_step"],
            d.get("layer"),
            d.get("rank"),
            json.dumps(json_safe(d["evidence"]), allow_nan=False),
            d["advice"],
        )
    else:
        logger.warning("CLEARED run=%s symptom=%s step=%s", change.run, d["symptom"], d["cleared_step"])
