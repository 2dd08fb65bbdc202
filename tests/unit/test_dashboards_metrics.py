"""The two series the dashboards added to /metrics: layer depth (heatmap row order) and the service's process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.exposition import SnapshotCollector
from gradwatch.wire import LayerStats, Report, StepRecord


def _exposition(names: list[str]) -> str:
    n = len(names)
    layers = LayerStats(
        names=names,
        numel=[4] * n,
        grad_norm=[1.0] * n,
        grad_max_abs=[0.1] * n,
        weight_norm=[2.0] * n,
        weight_max_abs=[0.5] * n,
    )
    agg = Aggregator()
    agg.ingest(Report(run="deep", rank=0, world_size=1, steps=[StepRecord(step=0, loss=1.0, layers=layers)]))
    registry = CollectorRegistry()
    collector = SnapshotCollector()
    registry.register(collector)
    collector.update([agg.snapshot()])
    return generate_latest(registry).decode()


def test_layer_info_carries_the_model_order_zero_padded():
    # Names that sort differently from model order: the depth label must follow the model.
    names = [f"layers.{i}.weight" for i in range(12)]
    text = _exposition(names)
    lines = [line for line in text.splitlines() if line.startswith("gradwatch_layer_info{")]
    assert len(lines) == 12
    assert 'gradwatch_layer_info{depth="00000",layer="layers.0.weight",run="deep"} 1.0' in lines
    assert 'gradwatch_layer_info{depth="00011",layer="layers.11.weight",run="deep"} 1.0' in lines
    # Sorting by depth (what Prometheus' label order does) gives input first, output last.
    by_depth = sorted(lines, key=lambda line: line.split('depth="')[1])
    assert [line.split('layer="')[1].split('"')[0] for line in by_depth] == names


def test_the_service_exports_its_own_process_memory_once():
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from gradwatch.service.backends import LocalBackend
    from gradwatch.service.config import ServiceConfig
    from gradwatch.service.http import make_app

    agg = Aggregator()
    agg.ingest(Report(run="deep", rank=0, world_size=1, steps=[StepRecord(step=0, loss=1.0)]))

    async def scrape() -> str:
        async with TestClient(TestServer(make_app(LocalBackend(agg), ServiceConfig()))) as client:
            response = await client.get("/metrics")
            return await response.text()

    text = asyncio.run(scrape())
    assert text.count("# TYPE process_resident_memory_bytes gauge") == 1
    rss = next(line for line in text.splitlines() if line.startswith("process_resident_memory_bytes "))
    assert float(rss.split()[1]) > 10e6  # a Python process with numpy loaded
    # Existing names are unchanged next to the new ones.
    assert 'gradwatch_loss{run="deep"} 1.0' in text
