"""Backends the HTTP layer talks to: the Ray actor (the service) or an in-process aggregator (unit tests)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.columns import ColumnarReport
from gradwatch.service.config import ServiceConfig
from gradwatch.service.diagnoses import Change
from gradwatch.service.http import BackendUnavailable
from gradwatch.service.metrics_state import AggregatorSnapshot
from gradwatch.service.page.series import SeriesLimits
from gradwatch.wire import AGGREGATOR_NAMESPACE, aggregator_actor_name

NAMESPACE = AGGREGATOR_NAMESPACE
#: Ray's setting of the niceness its worker processes start with (15 by default).
WORKER_NICENESS_ENV = "RAY_worker_niceness"
actor_name = aggregator_actor_name


def start_aggregator(service_name: str, config: ServiceConfig, shard: int = 0, shards: int = 1) -> Any:
    """The named, detached, restartable aggregator actor; reused when it already exists.

    Detached so that on a Ray cluster it outlives the ``gradwatch serve``
    process that created it (a restarted front finds its state again);
    ``max_restarts=-1`` so that Ray brings it back if its process dies; it
    then restores its state from the newest snapshot (``config.snapshots``).
    Shard ``shard`` of ``shards`` is one of several, spread over the nodes.
    """
    import ray

    from gradwatch.service.snapshots import SnapshottingAggregator

    actor_class = ray.remote(_settled(SnapshottingAggregator))
    return actor_class.options(
        name=actor_name(service_name, shard, shards),
        scheduling_strategy="SPREAD" if shards > 1 else "DEFAULT",
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        # It needs no reserved CPU: on a small cluster it must never wait for one.
        num_cpus=0,
        # Ray starts worker processes at niceness 15, behind the raylet and the drivers. The
        # aggregator is the service's critical path: niced, it got a fraction of a core whenever
        # the HTTP front (niceness 0) and the agents on the machine were busy, so ingest slowed
        # and latency grew just under load. Ray's job supervisor unnices itself the same way.
        runtime_env={"env_vars": {WORKER_NICENESS_ENV: "0"}},
    ).remote(config)


def _settled(aggregator_class: type[Aggregator]) -> type[Aggregator]:
    """``aggregator_class`` made to take its process' garbage collector out of the ingest path once built.

    Everything alive when the actor is built (Ray's worker, numpy, pydantic, a restored state)
    lives as long as its process. Left to the collector, each full collection walks all of it
    again while the actor cannot answer; freezing moves it out of the collector's sight, and what
    the actor allocates later is collected as usual. (Not a p99 change on its own: see
    docs/benchmarks.md.) Only the actor's own process does this (tests build aggregators in theirs).
    """

    class Settled(aggregator_class):  # type: ignore[misc,valid-type]
        def __post_init__(self) -> None:
            super().__post_init__()
            gc.collect()
            gc.freeze()

    Settled.__name__ = Settled.__qualname__ = aggregator_class.__name__
    return Settled


class RayBackend:
    """Calls the aggregator actor; a call that cannot complete is BackendUnavailable.

    Ingest is batched: while one call to the actor is in flight, reports that
    arrive queue up and go in the next call together (at most ``max_batch``).
    An idle service therefore sends each report alone, and a loaded one pays
    the actor-call overhead, and the rule evaluation of each run, once per
    batch rather than once per report.
    """

    def __init__(self, actor: Any, max_batch: int = 256, max_in_flight: int = 2) -> None:
        self._actor = actor
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[ColumnarReport, asyncio.Future[list[Change]]]] = []
        self._draining = False

    async def _call(self, method: str, *args: Any) -> Any:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return await getattr(self._actor, method).remote(*args)
        except RayTaskError as exc:
            # An exception raised by the aggregator itself (IngestRefused):
            # hand back the original so the HTTP layer answers its status.
            cause = exc.as_instanceof_cause()
            if isinstance(cause, RayActorError):
                raise BackendUnavailable(str(exc)) from exc
            raise cause from None
        except RayActorError as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def ingest(self, report: ColumnarReport) -> list[Change]:
        future: asyncio.Future[list[Change]] = asyncio.get_running_loop().create_future()
        self._queue.append((report, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Send queued reports, one actor call per batch, until the queue is empty.

        Up to ``max_in_flight`` calls are outstanding: Ray runs an actor's
        calls from one caller in the order they were sent, so the next batch
        is already waiting in the actor when the current one ends, and the
        actor does not sit idle for a round trip between batches.
        """
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while self._queue or in_flight:
                while self._queue and len(in_flight) < self._max_in_flight:
                    batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                    in_flight.add(asyncio.get_running_loop().create_task(self._send(batch)))
                _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Normally the queue is empty here; if this task was cancelled
            # (the service is stopping), nobody may be left waiting forever.
            for task in in_flight:
                task.cancel()
            self._draining = False
            leftover, self._queue = self._queue, []
            for _, future in leftover:
                if not future.done():
                    future.set_exception(BackendUnavailable("the service is stopping"))

    async def _send(self, batch: list[tuple[ColumnarReport, asyncio.Future[list[Change]]]]) -> None:
        try:
            results = await self._call("ingest_many", [report for report, _ in batch])
        except asyncio.CancelledError:
            results = [BackendUnavailable("the service is stopping")] * len(batch)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which answers it
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the request timed out and stopped waiting
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def evaluate_due(self) -> list[Change]:
        return await self._call("evaluate_due")

    async def runs(self) -> list[dict[str, Any]]:
        return await self._call("runs")

    async def diagnoses(self, run: str) -> list[dict[str, Any]] | None:
        return await self._call("diagnoses", run)

    async def layers(self, run: str) -> dict[str, Any] | None:
        return await self._call("layers", run)

    async def series(self, run: str, limits: SeriesLimits) -> dict[str, Any] | None:
        return await self._call("series", run, limits)

    async def snapshots(self) -> list[AggregatorSnapshot]:
        return [await self._call("snapshot")]


class LocalBackend:
    """An aggregator in this process, for unit tests of the HTTP layer."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    async def ingest(self, report: ColumnarReport) -> list[Change]:
        return self.aggregator.ingest(report, caller_dispatches=True)

    async def evaluate_due(self) -> list[Change]:
        return self.aggregator.evaluate_due()

    async def runs(self) -> list[dict[str, Any]]:
        return self.aggregator.runs()

    async def diagnoses(self, run: str) -> list[dict[str, Any]] | None:
        return self.aggregator.diagnoses(run)

    async def layers(self, run: str) -> dict[str, Any] | None:
        return self.aggregator.layers(run)

    async def series(self, run: str, limits: SeriesLimits) -> dict[str, Any] | None:
        return self.aggregator.series(run, limits)

    async def snapshots(self) -> list[AggregatorSnapshot]:
        await asyncio.sleep(0)
        return [self.aggregator.snapshot()]
