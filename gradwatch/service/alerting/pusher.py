"""Direct push of diagnoses to Alertmanager's ``/api/v2/alerts``, the moment they fire.

Prometheus would need a scrape interval plus an evaluation interval to notice
a NaN; the aggregator already knows, so it tells Alertmanager itself. As that
API requires, active alerts are re-sent periodically (their ``endsAt`` moves
forward each time) and a cleared diagnosis is sent once more with ``endsAt``
set to now, which resolves it.

Nothing here may slow ingest: ``notify`` only enqueues, each Alertmanager
(an HA pair is two URLs) has its own queue and task, failures are retried with
backoff, and a target that stays down only costs log lines and a counter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from gradwatch.service.alerting.catalog import ALERTS
from gradwatch.service.diagnoses import Change

logger = logging.getLogger("gradwatch.alerting")

#: Active alerts: (run, symptom) -> the labels of service/diagnoses.alert_labels.
ActiveAlerts = Callable[[], Awaitable[dict[tuple[str, str], dict[str, str]]]]

_MAX_QUEUE = 10_000
_RETRIES = 5


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def build_alert(
    run: str, symptom: str, info: dict[str, str], *, ends_at: float, generator_url: str, runbook_base: str
) -> dict[str, Any]:
    """One postable alert in Alertmanager's v2 format."""
    spec = ALERTS[symptom]
    labels = {"alertname": spec.alertname, "run": run, "symptom": symptom, "severity": spec.severity}
    for key in ("layer", "rank"):
        if info.get(key):
            labels[key] = info[key]
    annotations = {
        "summary": f"{spec.title} in run {run}",
        "description": info.get("summary", ""),
        "advice": info.get("advice", ""),
        "onset_step": info.get("onset_step", ""),
        "runbook_url": f"{runbook_base}#{symptom.replace('_', '-')}",
    }
    alert = {"labels": labels, "annotations": annotations, "endsAt": _iso(ends_at), "generatorURL": generator_url}
    if info.get("fired_at"):
        alert["startsAt"] = _iso(float(info["fired_at"]))
    return alert


class AlertmanagerPusher:
    """Keeps every configured Alertmanager told about gradwatch's active diagnoses."""

    def __init__(
        self,
        urls: Iterable[str],
        *,
        service_url: str,
        active_alerts: ActiveAlerts,
        registry: CollectorRegistry,
        resend_interval: float = 30.0,
        timeout: float = 2.0,
        runbook_base: str = "docs/runbook.md",
    ) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self._service_url = service_url
        self._active_alerts = active_alerts
        self._resend_interval = resend_interval
        self._timeout = timeout
        self._runbook_base = runbook_base
        self._queues: dict[str, asyncio.Queue[list[dict[str, Any]]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._posts = Counter(
            "gradwatch_alertmanager_posts",
            "Alert batches posted to Alertmanager, by target and outcome.",
            ["alertmanager", "outcome"],
            registry=registry,
        )

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        for url in self.urls:
            queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=_MAX_QUEUE)
            self._queues[url] = queue
            self._tasks.append(asyncio.create_task(self._deliver(url, queue), name=f"gradwatch-alerts[{url}]"))
        self._tasks.append(asyncio.create_task(self._resend_loop(), name="gradwatch-alerts-resend"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()

    def notify(self, change: Change) -> None:
        """Queue the alert for a diagnosis that fired or cleared; returns at once."""
        d = change.diagnosis
        now = time.time()
        fired = change.kind == "fired"
        info = {
            "summary": d.get("summary", ""),
            "advice": d.get("advice", ""),
            "onset_step": str(d.get("onset_step", "")),
            "fired_at": repr(d.get("fired_at") or now),
        }
        if d.get("alert_layer") is not None:
            info["layer"] = str(d["alert_layer"])
        if d.get("alert_rank") is not None:
            info["rank"] = str(d["alert_rank"])
        alert = self._alert(change.run, d["symptom"], info, ends_at=now + 4 * self._resend_interval if fired else now)
        self._enqueue([alert])

    def _alert(self, run: str, symptom: str, info: dict[str, str], ends_at: float) -> dict[str, Any]:
        return build_alert(
            run,
            symptom,
            info,
            ends_at=ends_at,
            generator_url=f"{self._service_url}/v1/runs/{run}/diagnoses",
            runbook_base=self._runbook_base,
        )

    def _enqueue(self, batch: list[dict[str, Any]]) -> None:
        for url, queue in self._queues.items():
            try:
                queue.put_nowait(batch)
            except asyncio.QueueFull:
                self._posts.labels(url, "dropped").inc()

    async def _resend_loop(self) -> None:
        # Active alerts are read from the aggregator each time, not remembered
        # here: a restarted front (or a second one) re-sends the same alerts.
        while True:
            await asyncio.sleep(self._resend_interval)
            try:
                active = await self._active_alerts()
            except Exception:  # noqa: BLE001 - the aggregator may be restarting; try next time
                logger.warning("gradwatch: cannot read active alerts for re-sending", exc_info=True)
                continue
            ends_at = time.time() + 4 * self._resend_interval
            batch = [self._alert(run, symptom, info, ends_at) for (run, symptom), info in active.items()]
            if batch:
                self._enqueue(batch)

    async def _deliver(self, url: str, queue: asyncio.Queue[list[dict[str, Any]]]) -> None:
        while True:
            batch = await queue.get()
            while not queue.empty() and len(batch) < 500:
                batch = batch + queue.get_nowait()
            await self._post_with_retries(url, batch)

    async def _post_with_retries(self, url: str, batch: list[dict[str, Any]]) -> None:
        assert self._session is not None
        delay = 0.1
        body = json.dumps(batch)
        for attempt in range(1, _RETRIES + 1):
            try:
                async with self._session.post(
                    f"{url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status < 300:
                        self._posts.labels(url, "ok").inc()
                        return
                    reason = f"HTTP {response.status}: {(await response.text())[:200]}"
                    if 400 <= response.status < 500 and response.status != 429:
                        self._posts.labels(url, "rejected").inc()
                        logger.error("gradwatch: Alertmanager %s rejected %d alerts: %s", url, len(batch), reason)
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self._posts.labels(url, "retry").inc()
            if attempt == _RETRIES:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._resend_interval / 2)
        self._posts.labels(url, "failed").inc()
        logger.warning(
            "gradwatch: could not deliver %d alerts to %s (%s); will re-send active ones", len(batch), url, reason
        )
