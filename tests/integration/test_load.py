"""256 concurrent agents against one real service: every step is ingested or counted as dropped, exactly.

``GRADWATCH_LOAD_AGENTS`` (default 256) and ``GRADWATCH_LOAD_SECONDS`` (default 20) size the run; the
numbers in docs/operations.md come from ``GRADWATCH_LOAD_SECONDS=60``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gradwatch.service.config import LimitsConfig, ServiceConfig
from gradwatch.service.server import BackgroundService, Service
from tests.conftest import Http

pytestmark = pytest.mark.integration

AGENTS = int(os.environ.get("GRADWATCH_LOAD_AGENTS", "256"))
SECONDS = float(os.environ.get("GRADWATCH_LOAD_SECONDS", "20"))
PROCESSES = 4


@pytest.fixture(scope="module")
def load_service(ray_session):
    config = ServiceConfig(limits=LimitsConfig(ingest_timeout=45.0))
    background = BackgroundService(Service(config, port=0, name="load")).start()
    yield background
    background.stop()


def _per_run(metrics_text: str, name: str) -> dict[str, float]:
    return {
        sample.labels["run"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name
    }


def test_every_step_of_256_concurrent_agents_is_ingested_or_counted_as_dropped(load_service):
    per_process = [AGENTS // PROCESSES + (1 if i < AGENTS % PROCESSES else 0) for i in range(PROCESSES)]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.load_agents", load_service.url, f"load{p}", str(n), str(SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p, n in enumerate(per_process)
    ]
    agents = []
    for process in processes:
        out, err = process.communicate(timeout=SECONDS + 600)
        assert process.returncode == 0, err[-3000:]
        agents += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    elapsed = time.monotonic() - started
    assert len(agents) == AGENTS

    text = Http(load_service.url).metrics()
    ingested = _per_run(text, "gradwatch_run_steps_total")
    reported_dropped = _per_run(text, "gradwatch_agent_dropped_steps_total")
    recorded = sum(a["recorded"] for a in agents)
    unaccounted = []
    for a in agents:
        # Per agent: everything it recorded was delivered or dropped, and the service ingested exactly
        # what the agent counts as delivered (no loss, no duplicate).
        if a["delivered"] + a["dropped"] != a["recorded"] or ingested.get(a["run"], 0) != a["delivered"]:
            unaccounted.append((a, ingested.get(a["run"])))
    assert not unaccounted, unaccounted[:5]
    total_ingested = sum(ingested.get(a["run"], 0) for a in agents)
    total_dropped = sum(a["dropped"] for a in agents)
    assert recorded == total_ingested + total_dropped
    assert recorded > AGENTS * SECONDS  # each agent really trained: ~4 steps a second
    slowest = max(a["slowest"] for a in agents)
    print(
        f"\nload: {AGENTS} agents in {PROCESSES} processes for {SECONDS:.0f} s ({elapsed:.0f} s with start and close): "
        f"{recorded} steps recorded = {int(total_ingested)} ingested + {total_dropped} dropped, 0 unaccounted; "
        f"dropped reported to the service: {int(sum(reported_dropped.get(a['run'], 0) for a in agents))}; "
        f"slowest training step {slowest * 1000:.0f} ms"
    )
