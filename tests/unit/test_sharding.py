"""Runs routed to aggregator shards by a stable hash; lists and metrics gathered from all."""

from __future__ import annotations

import asyncio
import zlib

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.backends import LocalBackend
from gradwatch.service.columns import ColumnarReport
from gradwatch.service.sharding import ShardedBackend
from gradwatch.wire import Report, StepRecord, aggregator_actor_name, shard_of


def test_shard_of_is_the_same_in_every_process_and_spreads_runs():
    assert shard_of("resnet-lr0.1", 4) == zlib.crc32(b"resnet-lr0.1") % 4  # not Python's salted hash()
    assert shard_of("anything", 1) == 0
    assert len({shard_of(f"run-{i}", 4) for i in range(100)}) == 4
    assert aggregator_actor_name("default") == "gradwatch-aggregator-default"
    assert aggregator_actor_name("default", 1, 2) == "gradwatch-aggregator-default-1of2"


def test_sharded_backend_routes_by_run_and_gathers_everything():
    aggregators = [Aggregator(), Aggregator(), Aggregator()]
    backend = ShardedBackend([LocalBackend(a) for a in aggregators])
    names = [f"run-{i}" for i in range(12)]

    async def scenario():
        for name in names:
            await backend.ingest(ColumnarReport.of(Report(run=name, steps=[StepRecord(step=0, loss=1.0)])))
        return await backend.runs(), await backend.snapshots(), await backend.diagnoses(names[3])

    runs, snapshots, diagnoses = asyncio.run(scenario())
    assert [r["run"] for r in runs] == sorted(names)
    assert sum(len(s.runs) for s in snapshots) == 12
    for name in names:  # each run lives on exactly its own shard
        holders = [i for i, a in enumerate(aggregators) if any(r["run"] == name for r in a.runs())]
        assert holders == [shard_of(name, 3)]
    assert diagnoses == []
