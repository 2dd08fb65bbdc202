"""Shared fixtures: one Ray instance and one service per test session (Ray takes seconds and ~1.5 GB to start)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(
        namespace="gradwatch",
        include_dashboard=False,
        num_cpus=2,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def service(ray_session):
    """The real service: aggregator actor on Ray, HTTP front on loopback."""
    from gradwatch.service.server import BackgroundService, Service

    background = BackgroundService(Service(port=0, name="itest")).start()
    yield background
    background.stop()


class Http:
    """A tiny HTTP client for assertions (status and parsed JSON, no exceptions on 4xx)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str):
        status, body = self.request("GET", path)
        return status, json.loads(body) if body else None

    def metrics(self) -> str:
        status, body = self.request("GET", "/metrics")
        assert status == 200
        return body.decode()


@pytest.fixture(scope="session")
def http(service):
    return Http(service.url)
