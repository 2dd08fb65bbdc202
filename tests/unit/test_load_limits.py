"""Back-pressure at the HTTP front: beyond limits.max_pending_ingests a report is a 429 that never reached the actor."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.backends import LocalBackend
from gradwatch.service.config import LimitsConfig, ServiceConfig
from gradwatch.service.http import make_app


class SlowBackend(LocalBackend):
    """The aggregator behind a call that takes a while (an actor with a queue)."""

    def __init__(self, aggregator: Aggregator) -> None:
        super().__init__(aggregator)
        self.calls = 0

    async def ingest(self, report):
        self.calls += 1
        await asyncio.sleep(0.3)
        return await super().ingest(report)


def test_reports_beyond_the_pending_limit_are_refused_before_the_actor():
    async def scenario():
        backend = SlowBackend(Aggregator())
        app = make_app(backend, ServiceConfig(limits=LimitsConfig(max_pending_ingests=2)))
        async with TestClient(TestServer(app)) as client:

            async def post(step: int) -> int:
                body = json.dumps({"v": 1, "run": "bp", "session": "s", "steps": [{"step": step, "loss": 1.0}]})
                response = await client.post("/v1/reports", data=body, headers={"Content-Type": "application/json"})
                return response.status

            statuses = await asyncio.gather(*(post(i) for i in range(5)))
            assert sorted(statuses) == [202, 202, 429, 429, 429]
            assert backend.calls == 2  # the refused ones never reached the aggregator
            assert backend.aggregator.runs()[0]["reports"] == 2
            assert await post(10) == 202  # room again once the first ones finished
            text = await (await client.get("/metrics")).text()
            assert 'gradwatch_ingest_rejected_reports_total{reason="busy"} 3.0' in text

    asyncio.run(scenario())


def test_a_slow_metrics_render_in_process_does_not_hold_up_ingest(monkeypatch):
    """/metrics of a big service takes a while to render; reports posted meanwhile are answered meanwhile.

    The render runs in a child process (tests/unit/test_render_worker.py); where no child can be
    started, in a thread of the front's, which must not hold up the event loop either.
    """
    import time

    from gradwatch.service import render_worker
    from gradwatch.service.exposition import SnapshotCollector

    def no_child(*args, **kwargs):
        raise OSError("no child processes here")

    monkeypatch.setattr(render_worker.subprocess, "Popen", no_child)

    render = SnapshotCollector.render

    def slow_render(self):
        until = time.perf_counter() + 0.6
        while time.perf_counter() < until:  # Python work holding the interpreter, as rendering 64k layer series is
            pass
        return render(self)

    monkeypatch.setattr(SnapshotCollector, "render", slow_render)

    async def scenario():
        app = make_app(LocalBackend(Aggregator()), ServiceConfig())
        async with TestClient(TestServer(app)) as client:
            scrape = asyncio.ensure_future(client.get("/metrics"))
            await asyncio.sleep(0.1)  # the render has begun
            body = json.dumps({"v": 1, "run": "during-scrape", "session": "s", "steps": [{"step": 0, "loss": 1.0}]})
            started = time.perf_counter()
            response = await client.post("/v1/reports", data=body, headers={"Content-Type": "application/json"})
            answered = time.perf_counter() - started
            assert response.status == 202
            assert not scrape.done(), "the scrape should still be rendering"
            assert answered < 0.3, f"a report waited {answered:.2f} s behind a /metrics render"
            assert (await scrape).status == 200

    asyncio.run(scenario())
