"""Lifecycle of the service: Ray, the aggregator actor and the HTTP front.

``gradwatch serve`` runs :func:`serve_forever`; the demo and the tests run a
:class:`BackgroundService` next to their training loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from gradwatch.service.alerting.pusher import AlertmanagerPusher
from gradwatch.service.auth import Token
from gradwatch.service.backends import NAMESPACE, RayBackend, start_aggregator
from gradwatch.service.config import ServiceConfig
from gradwatch.service.diagnoses import Change
from gradwatch.service.http import Backend, ChangeListener, log_change, make_app
from gradwatch.service.sharding import ShardedBackend
from gradwatch.wire import DEFAULT_PORT

#: How often the front collects deferred evaluations when evaluate_min_interval is 0 (seconds).
_DEFAULT_EVALUATION_PERIOD = 0.5

#: Batches of reports up to this size reach the aggregator actor inside the call's RPC (Ray's
#: ``max_direct_call_object_size``, 100 KB by default) instead of through the object store: a
#: 1,000-layer report pickles to ~80 KB, so with the default every batch of two or more was put into
#: shared memory, an exchange with the raylet on each side of every call. Inline (batches of up to ~12
#: reports), the half-load ingest latency of ``benchmarks/aggregator_ingest.py`` fell by 15-23% at the
#: median (22.1 -> 18.8 and 22.5 -> 17.3 ms; p99 72.4 -> 71.3 and 59.1 -> 47.4 ms; runs alternated on a
#: 2-core machine, without /metrics scrapes: the benchmark's scraper was broken then), for ~5 MB more
#: private memory in the front; a 4-8 MB limit cut it by a third and cost ~70 MB. A cluster started elsewhere takes it as the environment variable
#: RAY_max_direct_call_object_size on every node (deploy/kubernetes/raycluster.yaml sets it).
INLINE_CALL_BYTES = 1 << 20

logger = logging.getLogger("gradwatch.service")


def connect_ray(address: str | None) -> bool:
    """Join the Ray cluster at ``address``, or start a local one; True when this process started it.

    A process that already initialised Ray (a test session, a Ray Train
    driver) is reused as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address=address,
        namespace=NAMESPACE,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=False,
        # Ray refuses a system config when joining a running cluster: that one was configured at its start.
        _system_config={"max_direct_call_object_size": INLINE_CALL_BYTES} if address is None else None,
    )
    return address is None


class Service:
    """The aggregator actor and the HTTP front, running on the current event loop."""

    def __init__(
        self,
        config: ServiceConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        address: str | None = None,
        name: str = "default",
        shards: int = 1,
        keep_actor: bool | None = None,
        on_change: ChangeListener | None = None,
        token: Token | None = None,
        protect_metrics: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config or ServiceConfig()
        # The token stays in this process: it is never part of the config the
        # aggregator actor receives, nor of anything logged.
        self._token = token
        self._protect_metrics = protect_metrics
        self._ssl_context = ssl_context
        self.host = host
        self.port = port
        self.address = address
        self.name = name
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.shards = shards
        # On a cluster the detached actor (and its state) outlives this front.
        self.keep_actor = address is not None if keep_actor is None else keep_actor
        self._listeners: list[ChangeListener] = [on_change] if on_change is not None else []
        self._pusher: AlertmanagerPusher | None = None
        self._runner: web.AppRunner | None = None
        self.actors: list[Any] = []
        self._started_ray = False
        self._snapshot_task: asyncio.Task[None] | None = None
        self._evaluation_task: asyncio.Task[None] | None = None
        self._private_state_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def connect(self) -> None:
        """Start or join Ray. Call from the main thread, before :meth:`start`."""
        self._started_ray = connect_ray(self.address)

    async def start(self) -> None:
        import ray

        if not ray.is_initialized():
            self.connect()
        self.config = self._with_snapshot_dir(self.config)
        self.actors = [
            start_aggregator(self.name, self._shard_config(i), shard=i, shards=self.shards) for i in range(self.shards)
        ]
        await asyncio.gather(*(actor.ping.remote() for actor in self.actors))
        backend: Backend = (
            RayBackend(self.actors[0])
            if self.shards == 1
            else ShardedBackend([RayBackend(actor) for actor in self.actors])
        )
        if self.config.snapshots.enabled:
            self._snapshot_task = asyncio.create_task(self._snapshot_loop(), name="gradwatch-snapshots")
        self._evaluation_task = asyncio.create_task(self._evaluation_loop(backend), name="gradwatch-evaluations")
        registry = CollectorRegistry()
        app = make_app(
            backend,
            self.config,
            registry=registry,
            on_change=self._dispatch,
            token=self._token,
            protect_metrics=self._protect_metrics,
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=self._ssl_context)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        alerting = self.config.alerting
        if alerting.alertmanagers:
            self._pusher = AlertmanagerPusher(
                alerting.alertmanagers,
                service_url=self.url,
                active_alerts=lambda: active_alerts(backend),
                registry=registry,
                resend_interval=alerting.resend_interval,
                timeout=alerting.timeout,
                runbook_base=alerting.runbook_url,
            )
            await self._pusher.start()
            self._listeners.insert(0, self._pusher.notify)

    def _with_snapshot_dir(self, config: ServiceConfig) -> ServiceConfig:
        """The config with this service's own snapshot directory filled in."""
        settings = config.snapshots
        if not settings.enabled:
            return config
        if settings.dir is None:
            # Private to this process: it survives restarts of the actor, and
            # a later, unrelated service does not inherit old runs.
            self._private_state_dir = tempfile.TemporaryDirectory(prefix="gradwatch-state-")
            base = self._private_state_dir.name
        else:
            base = settings.dir
        directory = str(Path(base) / self.name)
        return config.model_copy(update={"snapshots": settings.model_copy(update={"dir": directory})})

    def _shard_config(self, shard: int) -> ServiceConfig:
        """Shard ``shard``'s config: with several shards, each snapshots into a directory of its own."""
        settings = self.config.snapshots
        if self.shards == 1 or not settings.enabled or settings.dir is None:
            return self.config
        directory = str(Path(settings.dir) / f"shard-{shard}of{self.shards}")
        return self.config.model_copy(update={"snapshots": settings.model_copy(update={"dir": directory})})

    async def _evaluation_loop(self, backend: Backend) -> None:
        """Collect deferred evaluations and changes that did not pass through an HTTP request."""
        period = self.config.evaluate_min_interval or _DEFAULT_EVALUATION_PERIOD
        while True:
            await asyncio.sleep(period)
            try:
                changes = await backend.evaluate_due()
            except Exception:  # noqa: BLE001 - a restarting actor: its runs wait for the next round
                logger.debug("gradwatch: deferred evaluations failed this round", exc_info=True)
                continue
            for change in changes:
                log_change(change)
                await self._dispatch(change)

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshots.interval)
            await self.save_snapshot()

    async def save_snapshot(self, force: bool = False) -> bool:
        """Ask every shard's actor to write its snapshot now; False when one could not (restarting, say)."""
        if not self.actors:
            return False
        saved = True
        for actor in self.actors:
            try:
                saved = bool(await actor.save_snapshot.remote(force)) and saved
            except Exception:  # noqa: BLE001 - a restarting actor or a full disk must not stop the service
                logger.warning("gradwatch: could not snapshot an aggregator shard", exc_info=True)
                saved = False
        return saved

    async def _dispatch(self, change: Change) -> None:
        for listener in self._listeners:
            try:
                result = listener(change)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001 - a listener must not fail an ingest
                logger.exception("gradwatch: a diagnosis listener failed")

    async def stop(self) -> None:
        """Stop serving; kill the actor unless it is meant to outlive us."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._evaluation_task is not None:
            self._evaluation_task.cancel()
            await asyncio.gather(self._evaluation_task, return_exceptions=True)
            self._evaluation_task = None
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
            self._snapshot_task = None
            await self.save_snapshot(force=True)
        if self._pusher is not None:
            await self._pusher.stop()
            self._pusher = None
        if self.actors and not self.keep_actor:
            import ray

            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            self.actors = []
        if self._private_state_dir is not None and not self.actors:
            self._private_state_dir.cleanup()
            self._private_state_dir = None

    def disconnect(self) -> None:
        """Shut Ray down if this service started it (no Ray process is left behind)."""
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


async def active_alerts(backend: Backend) -> dict[tuple[str, str], dict[str, str]]:
    """(run, symptom) -> alert labels of every active diagnosis, from the aggregator(s)."""
    return {
        (run.run, symptom): labels
        for snapshot in await backend.snapshots()
        for run in snapshot.runs
        for symptom, labels in run.alerts.items()
    }


def serve_forever(service: Service) -> None:
    """Run until SIGINT or SIGTERM, then shut everything down cleanly."""
    service.connect()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.start()
        # Everything alive now (Ray, aiohttp, pydantic, the app) lives as long as the process:
        # left to the collector, each full collection walks all of it again, an 80 ms pause of
        # every ingest once every few seconds under load (the half-load p99). Only this
        # dedicated process does this; a service started beside training leaves its GC alone.
        gc.freeze()
        logger.info("gradwatch serving on %s (metrics at %s/metrics)", service.url, service.url)
        print(f"gradwatch: serving on {service.url}  (API /v1/runs, metrics /metrics; Ctrl-C to stop)", flush=True)
        await stop.wait()
        logger.info("gradwatch: shutting down")
        await service.stop()

    try:
        asyncio.run(main())
    finally:
        service.disconnect()


class BackgroundService:
    """A :class:`Service` on its own thread and event loop, beside a training loop."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gradwatch-service", daemon=True)

    @property
    def url(self) -> str:
        return self.service.url

    def start(self, timeout: float = 120.0) -> BackgroundService:
        self.service.connect()
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        try:
            if self._thread.is_alive():
                asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(timeout)
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)
        finally:
            self.service.disconnect()

    def __enter__(self) -> BackgroundService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
