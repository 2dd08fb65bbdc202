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
