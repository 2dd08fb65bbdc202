"""/metrics rendered in a child process: the same text, out of the front's process, and a dead child replaced."""

from __future__ import annotations

import asyncio
import os
import signal

from gradwatch.service import render_worker
from gradwatch.service.aggregator import Aggregator
from gradwatch.service.exposition import SnapshotCollector
from gradwatch.service.render_worker import RenderWorker
from gradwatch.wire import LayerStats, Report, StepRecord


def _aggregator(runs: int = 3, layers: int = 40) -> Aggregator:
    aggregator = Aggregator()
    for r in range(runs):
        stats = LayerStats(
            names=[f"block.{i}.weight" for i in range(layers)],
            numel=[64] * layers,
            grad_norm=[0.1 * (i + 1) for i in range(layers)],
            grad_max_abs=[0.01] * layers,
            weight_norm=[1.0] * layers,
            weight_max_abs=[0.2] * layers,
        )
        aggregator.ingest(Report(run=f"run-{r}", steps=[StepRecord(step=0, loss=1.5 + r, layers=stats)]))
    return aggregator


def _in_process(aggregator: Aggregator) -> bytes:
    collector = SnapshotCollector()
    collector.update([aggregator.snapshot()])
    return collector.render()


def _child_pid(worker: RenderWorker) -> int:
    async def ask() -> int:
        return await asyncio.get_running_loop().run_in_executor(worker._child(), os.getpid)

    return asyncio.run(ask())


def test_the_child_renders_the_same_text_in_another_process_at_lower_priority():
    aggregator = _aggregator()
    worker = RenderWorker()
    try:
        body = asyncio.run(worker.render([aggregator.snapshot()]))
        assert body == _in_process(aggregator)
        assert b'gradwatch_layer_grad_norm{layer="block.3.weight",run="run-1"}' in body
        again = asyncio.run(worker.render([aggregator.snapshot()]))  # the child's templates, kept
        assert again == body
        pid = _child_pid(worker)
        assert pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) >= os.getpriority(os.PRIO_PROCESS, 0) + min(
            render_worker.RENDER_NICE, 19 - os.getpriority(os.PRIO_PROCESS, 0)
        )
    finally:
        worker.close()


def test_a_killed_child_costs_one_scrape_rendered_here_then_a_new_child_takes_over():
    aggregator = _aggregator()
    expected = _in_process(aggregator)
    worker = RenderWorker()
    try:
        assert asyncio.run(worker.render([aggregator.snapshot()])) == expected
        first = _child_pid(worker)
        os.kill(first, signal.SIGKILL)
        assert asyncio.run(worker.render([aggregator.snapshot()])) == expected  # in-process this once
        assert asyncio.run(worker.render([aggregator.snapshot()])) == expected
        assert _child_pid(worker) not in (first, os.getpid())
    finally:
        worker.close()


def test_without_children_every_scrape_is_rendered_here(monkeypatch):
    def no_child(self):
        raise OSError("no processes left")

    monkeypatch.setattr(RenderWorker, "_child", no_child)
    aggregator = _aggregator()
    worker = RenderWorker()
    for _ in range(render_worker.MAX_CHILD_FAILURES + 2):
        assert asyncio.run(worker.render([aggregator.snapshot()])) == _in_process(aggregator)
    assert worker._failures == render_worker.MAX_CHILD_FAILURES  # it stopped trying


def test_gzipped_on_request_with_the_front_series_after_the_layers():
    import gzip

    aggregator = _aggregator()
    worker = RenderWorker()
    tail = b"# HELP front_series x\n# TYPE front_series gauge\nfront_series 1.0\n"
    try:
        plain = asyncio.run(worker.render([aggregator.snapshot()], tail))
        packed = asyncio.run(worker.render([aggregator.snapshot()], tail, gzipped=True))
    finally:
        worker.close()
    assert plain == _in_process(aggregator) + tail
    assert packed[:2] == b"\x1f\x8b" and gzip.decompress(packed) == plain


def test_accept_encoding_is_read_as_http_says():
    from gradwatch.service.http import _accepts_gzip

    assert _accepts_gzip("gzip")
    assert _accepts_gzip("deflate, gzip;q=0.5")
    assert _accepts_gzip("GZIP")
    assert not _accepts_gzip("")
    assert not _accepts_gzip("identity")
    assert not _accepts_gzip("gzip;q=0")
    assert not _accepts_gzip("gzip;q=0.0, identity")
    assert not _accepts_gzip("x-gzip2")


def test_metrics_over_http_are_gzipped_for_scrapers_that_accept_it():
    from aiohttp.test_utils import TestClient, TestServer

    from gradwatch.service.backends import LocalBackend
    from gradwatch.service.config import ServiceConfig
    from gradwatch.service.http import make_app

    aggregator = _aggregator()

    async def scrape(accept: str) -> tuple[str | None, str]:
        async with TestClient(TestServer(make_app(LocalBackend(aggregator), ServiceConfig()))) as client:
            response = await client.get("/metrics", headers={"Accept-Encoding": accept})
            assert response.status == 200
            return response.headers.get("Content-Encoding"), await response.text()  # the client decompresses

    for accept, encoding in (("gzip", "gzip"), ("identity", None)):
        sent_as, text = asyncio.run(scrape(accept))
        assert sent_as == encoding
        assert 'gradwatch_layer_grad_norm{layer="block.3.weight",run="run-1"} 0.4' in text
        assert text.count("# TYPE process_resident_memory_bytes gauge") == 1  # the front's own, once
