"""Several aggregator actors behind one HTTP front: runs assigned to shards by a stable hash.

One aggregator actor holds every run it is given in memory and evaluates them
on one core. When one is not enough, ``gradwatch serve --shards N`` starts N
actors (spread over the Ray cluster's nodes) and routes each run to
``shard_of(run, N)``: a hash that every process computes alike (CRC-32, not
Python's salted ``hash``), so the HTTP front, Ray Train workers writing to the
actors directly, and a restarted front all agree without asking anyone.

The front stays one ingest endpoint and one ``/metrics`` view: run queries go
to the run's shard, run lists and metrics are gathered from all shards. A
shard that is restarting answers 503 for its own runs only; the others go on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gradwatch.service.columns import ColumnarReport
from gradwatch.service.diagnoses import Change
from gradwatch.service.metrics_state import AggregatorSnapshot
from gradwatch.service.page.series import SeriesLimits
from gradwatch.wire import shard_of


class ShardedBackend:
    """A :class:`~gradwatch.service.http.Backend` over one backend per shard, shard i at index i."""

    def __init__(self, shards: list[Any]) -> None:
        if not shards:
            raise ValueError("a sharded backend needs at least one shard")
        self.shards = shards

    def _for(self, run: str) -> Any:
        return self.shards[shard_of(run, len(self.shards))]

    async def ingest(self, report: ColumnarReport) -> list[Change]:
        return await self._for(report.report.run).ingest(report)

    async def evaluate_due(self) -> list[Change]:
        lists = await asyncio.gather(*(shard.evaluate_due() for shard in self.shards), return_exceptions=True)
        # A restarting shard's deferred evaluations wait for the next round; the others go on.
        return [change for changes in lists if isinstance(changes, list) for change in changes]

    async def runs(self) -> list[dict[str, Any]]:
        lists = await asyncio.gather(*(shard.runs() for shard in self.shards))
        return sorted((run for runs in lists for run in runs), key=lambda run: run["run"])

    async def diagnoses(self, run: str) -> list[dict[str, Any]] | None:
        return await self._for(run).diagnoses(run)

    async def layers(self, run: str) -> dict[str, Any] | None:
        return await self._for(run).layers(run)

    async def series(self, run: str, limits: SeriesLimits) -> dict[str, Any] | None:
        return await self._for(run).series(run, limits)

    async def snapshots(self) -> list[AggregatorSnapshot]:
        lists = await asyncio.gather(*(shard.snapshots() for shard in self.shards))
        return [snapshot for snapshots in lists for snapshot in snapshots]
