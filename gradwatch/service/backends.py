"""Backends the HTTP layer talks to: the Ray actor (the service) or an in-process aggregator (unit tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from gradwatch.service.aggregator import Aggregator, AggregatorSnapshot
from gradwatch.service.config import ServiceConfig
from gradwatch.service.diagnoses import Change
from gradwatch.service.http import BackendUnavailable
from gradwatch.wire import Report

NAMESPACE = "gradwatch"


def actor_name(service_name: str) -> str:
    return f"gradwatch-aggregator-{service_name}"


def start_aggregator(service_name: str, config: ServiceConfig) -> Any:
    """The named, detached, restartable aggregator actor; reused when it already exists.

    Detached so that on a Ray cluster it outlives the ``gradwatch serve``
    process that created it (a restarted front finds its state again);
    ``max_restarts=-1`` so that Ray brings it back if its process dies; it
    then restores its state from the newest snapshot (``config.snapshots``).
    """
    import ray

    from gradwatch.service.snapshots import SnapshottingAggregator

    actor_class = ray.remote(SnapshottingAggregator)
    return actor_class.options(
        name=actor_name(service_name),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        # It needs no reserved CPU: on a small cluster it must never wait for one.
        num_cpus=0,
    ).remote(config)


class RayBackend:
    """Calls the aggregator actor; a call that cannot complete is BackendUnavailable."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

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

    async def ingest(self, report: Report) -> list[Change]:
        return await self._call("ingest", report)

    async def runs(self) -> list[dict[str, Any]]:
        return await self._call("runs")

    async def diagnoses(self, run: str) -> list[dict[str, Any]] | None:
        return await self._call("diagnoses", run)

    async def layers(self, run: str) -> dict[str, Any] | None:
        return await self._call("layers", run)

    async def snapshots(self) -> list[AggregatorSnapshot]:
        return [await self._call("snapshot")]


class LocalBackend:
    """An aggregator in this process, for unit tests of the HTTP layer."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    async def ingest(self, report: Report) -> list[Change]:
        return self.aggregator.ingest(report)

    async def runs(self) -> list[dict[str, Any]]:
        return self.aggregator.runs()

    async def diagnoses(self, run: str) -> list[dict[str, Any]] | None:
        return self.aggregator.diagnoses(run)

    async def layers(self, run: str) -> dict[str, Any] | None:
        return self.aggregator.layers(run)

    async def snapshots(self) -> list[AggregatorSnapshot]:
        await asyncio.sleep(0)
        return [self.aggregator.snapshot()]
