"""/metrics rendered in a child process: the same text, out of the front's process, and a dead child replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import time

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


def _render(worker: RenderWorker, aggregator: Aggregator, tail: bytes = b"", gzipped: bool = False) -> bytes:
    async def snapshots():
        return [aggregator.snapshot()]

    return asyncio.run(worker.render(snapshots, lambda: tail, gzipped))


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped counts as gone
            if f.read().split(") ")[-1].startswith("Z"):
                return True
        time.sleep(0.05)
    return False


def test_the_child_renders_the_same_text_in_its_own_session_at_lower_priority(monkeypatch):
    aggregator = _aggregator()
    expected = _in_process(aggregator)

    def not_here(*args):
        raise AssertionError("rendered in the front's process")

    monkeypatch.setattr(render_worker, "_body", not_here)  # the child has its own
    worker = RenderWorker()
    try:
        body = _render(worker, aggregator)
        assert body == expected
        assert b'gradwatch_layer_grad_norm{layer="block.3.weight",run="run-1"}' in body
        pid = worker.child_pid
        assert pid is not None and pid != os.getpid()
        assert _render(worker, aggregator) == body  # the same child, its templates kept
        assert worker.child_pid == pid
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(ours + render_worker.RENDER_NICE, 19)
        assert os.getsid(pid) != os.getsid(0)  # a Ctrl-C meant for the front does not reach it
    finally:
        worker.close()
    assert _gone(pid)


def test_a_killed_child_is_replaced_at_the_next_scrape():
    aggregator = _aggregator()
    worker = RenderWorker()
    try:
        expected = _render(worker, aggregator)
        first = worker.child_pid
        os.kill(first, signal.SIGKILL)
        assert _gone(first)
        assert _render(worker, aggregator) == expected
        assert worker.child_pid not in (None, first)
    finally:
        worker.close()


def test_a_stuck_child_is_killed_and_that_scrape_rendered_here(monkeypatch):
    monkeypatch.setattr(render_worker, "RENDER_TIMEOUT_SECONDS", 1.0)
    aggregator = _aggregator()
    worker = RenderWorker()
    try:
        expected = _render(worker, aggregator)
        stuck = worker.child_pid
        os.kill(stuck, signal.SIGSTOP)
        started = time.monotonic()
        assert _render(worker, aggregator) == expected
        assert time.monotonic() - started < 5
        assert _gone(stuck)
        assert _render(worker, aggregator) == expected  # a new child
        assert worker.child_pid not in (None, stuck)
    finally:
        worker.close()


def test_the_child_exits_when_the_front_goes_away():
    aggregator = _aggregator()
    worker = RenderWorker()
    _render(worker, aggregator)
    child = worker._child
    assert child is not None and child.stdin is not None
    child.stdin.close()  # what the front's death does to the pipe, however it dies
    assert _gone(child.pid)
    worker.close()


def test_without_children_scrapes_are_rendered_here_and_children_retried_later(monkeypatch):
    starts = []

    def no_child(*args, **kwargs):
        starts.append(args)
        raise OSError("no processes left")

    monkeypatch.setattr(render_worker.subprocess, "Popen", no_child)
    monkeypatch.setattr(render_worker, "CHILD_RETRY_SECONDS", 1.0)
    aggregator = _aggregator()
    expected = _in_process(aggregator)
    worker = RenderWorker()
    for _ in range(render_worker.MAX_CHILD_FAILURES + 3):
        assert _render(worker, aggregator) == expected
    assert len(starts) == render_worker.MAX_CHILD_FAILURES  # then it stopped trying...
    time.sleep(1.1)
    assert _render(worker, aggregator) == expected
    assert len(starts) == render_worker.MAX_CHILD_FAILURES + 1  # ...until CHILD_RETRY_SECONDS passed


def test_gzipped_on_request_with_the_front_series_after_the_layers():
    import gzip

    aggregator = _aggregator()
    worker = RenderWorker()
    tail = b"# HELP front_series x\n# TYPE front_series gauge\nfront_series 1.0\n"
    try:
        plain = _render(worker, aggregator, tail)
        packed = _render(worker, aggregator, tail, gzipped=True)
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
    assert _accepts_gzip("x-gzip")
    assert _accepts_gzip("br, *")
    assert not _accepts_gzip("gzip;q=0, *")
    assert not _accepts_gzip("*;q=0")
    assert not _accepts_gzip("gzip;q=nan")
    assert not _accepts_gzip("gzip;q=2")
    assert not _accepts_gzip("gzip;q=high")


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


def test_head_metrics_is_refused_rather_than_rendered():
    from aiohttp.test_utils import TestClient, TestServer

    from gradwatch.service.backends import LocalBackend
    from gradwatch.service.config import ServiceConfig
    from gradwatch.service.http import make_app

    async def head() -> int:
        async with TestClient(TestServer(make_app(LocalBackend(_aggregator()), ServiceConfig()))) as client:
            return (await client.head("/metrics")).status

    assert asyncio.run(head()) == 405
