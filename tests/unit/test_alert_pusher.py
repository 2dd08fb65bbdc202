"""The Alertmanager pusher against an in-process HTTP server standing in for Alertmanager's API."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gradwatch.service.alerting.pusher import AlertmanagerPusher
from gradwatch.service.diagnoses import Change


def _change(kind: str) -> Change:
    return Change(
        kind,
        "run-a",
        {
            "symptom": "nonfinite",
            "summary": "nonfinite since step 7: loss=nan",
            "advice": "restore a checkpoint",
            "onset_step": 7,
            "fired_at": 1_700_000_000.0,
            "alert_layer": "fc1",
            "alert_rank": 2,
        },
    )


def test_fired_then_cleared_posts_firing_then_resolved_and_retries_failures():
    async def scenario() -> None:
        posts: list[list[dict]] = []
        fail_first = {"left": 1}

        async def alerts(request: web.Request) -> web.Response:
            if fail_first["left"]:
                fail_first["left"] -= 1
                return web.Response(status=503)
            posts.append(await request.json())
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/api/v2/alerts", alerts)
        async with TestServer(app) as server:

            async def no_active() -> dict:
                return {}

            pusher = AlertmanagerPusher(
                [str(server.make_url(""))],
                service_url="http://gw:8617",
                active_alerts=no_active,
                registry=CollectorRegistry(),
                resend_interval=60,
            )
            await pusher.start()
            pusher.notify(_change("fired"))
            for _ in range(100):
                if posts:
                    break
                await asyncio.sleep(0.02)
            pusher.notify(_change("cleared"))
            for _ in range(100):
                if len(posts) == 2:
                    break
                await asyncio.sleep(0.02)
            await pusher.stop()
        firing, resolved = posts[0][0], posts[1][0]
        assert firing["labels"] == {
            "alertname": "GradwatchNonfinite",
            "run": "run-a",
            "symptom": "nonfinite",
            "severity": "critical",
            "layer": "fc1",
            "rank": "2",
        }
        assert firing["annotations"]["description"] == "nonfinite since step 7: loss=nan"
        assert firing["startsAt"] == "2023-11-14T22:13:20Z"
        assert firing["generatorURL"] == "http://gw:8617/v1/runs/run-a/diagnoses"
        assert resolved["labels"] == firing["labels"]
        assert resolved["endsAt"] < firing["endsAt"]  # resolved: ends now, not in the future

    asyncio.run(scenario())


def test_active_alerts_are_re_sent_from_the_aggregator_state():
    async def scenario() -> None:
        posts: list[list[dict]] = []

        async def alerts(request: web.Request) -> web.Response:
            posts.append(await request.json())
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/api/v2/alerts", alerts)
        async with TestServer(app) as server:

            async def active() -> dict:
                return {("run-b", "stagnation"): {"summary": "stalled", "advice": "raise lr", "onset_step": "3"}}

            pusher = AlertmanagerPusher(
                [str(server.make_url(""))],
                service_url="http://gw",
                active_alerts=active,
                registry=CollectorRegistry(),
                resend_interval=0.05,
            )
            await pusher.start()
            await asyncio.sleep(0.3)
            await pusher.stop()
        assert len(posts) >= 2
        assert all(p[0]["labels"]["alertname"] == "GradwatchStagnation" for p in posts)

    asyncio.run(scenario())
