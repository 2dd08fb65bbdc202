"""The agent against a real, sick service over real sockets: down, dying, hanging, failing, crawling."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import gradwatch
from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions
from gradwatch.service.columns import LayoutCache
from gradwatch.service.packed import decode as decode_packed
from gradwatch.wire import PACKED_CONTENT_TYPE


def _dead_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _train(mon, model, optimizer, steps):
    for _ in range(steps):
        loss = model(torch.randn(4, 3)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)


# --- real sockets: the service is down, dies, hangs, fails or crawls ---------------------------------------------


class FaultyService:
    """A real HTTP endpoint on loopback whose behaviour the test switches: ok, 503, slow, down."""

    def __init__(self, port: int = 0) -> None:
        from aiohttp import web

        self.mode = "ok"
        self.delay = 0.0
        self.steps: list[int] = []
        self.dropped_reported = 0
        self.requests = 0
        self.packed_bodies = 0

        async def ingest(request: web.Request) -> web.Response:
            import asyncio

            self.requests += 1
            raw = await request.read()
            if request.content_type == PACKED_CONTENT_TYPE:
                if self.mode == "json-only":  # a service from before the packed encoding
                    return web.json_response({"error": "unsupported content type"}, status=415)
                self.packed_bodies += 1
                body = decode_packed(raw, LayoutCache()).report.model_dump()
            else:
                body = json.loads(raw)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.mode == "5xx":
                return web.json_response({"error": "overloaded"}, status=503)
            self.steps += [s["step"] for s in body["steps"]]
            self.dropped_reported += body.get("dropped", 0)
            return web.json_response({"accepted": len(body["steps"])}, status=202)

        app = web.Application()
        app.router.add_post("/v1/reports", ingest)
        self._app = app
        self.live = None
        self.port = port

    def start(self) -> FaultyService:
        from tests.unit.live_app import LiveApp

        self.live = LiveApp(self._app)
        self.live.start() if not self.port else self._start_on(self.port)
        self.port = self.live.port
        return self

    def _start_on(self, port: int) -> None:
        import asyncio

        from aiohttp import web

        async def start() -> None:
            self.live._runner = web.AppRunner(self._app, access_log=None)
            await self.live._runner.setup()
            await web.TCPSite(self.live._runner, "127.0.0.1", port, reuse_address=True).start()
            self.live.port = port

        self.live._thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.live._loop).result(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.live.stop()


class HangingEndpoint:
    """Accepts connections and never answers (a wedged proxy, a paused process)."""

    def __init__(self) -> None:
        import threading

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


def _timed_train(mon, model, optimizer, steps: int) -> list[float]:
    """Train ``steps`` steps; the wall time of each (after three warm-up steps), sorted."""
    times = []
    for i in range(steps):
        started = time.perf_counter()
        loss = model(torch.randn(8, 3)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)
        if i >= 3:
            times.append(time.perf_counter() - started)
    return sorted(times)


def _p99(times: list[float]) -> float:
    return times[int(0.99 * (len(times) - 1))]


#: request_timeout is long on purpose: a step that waited on the network would take that long, far above the
#: noise of a busy CI machine, so "no step took request_timeout / 2" is a check that cannot pass by luck.
FAST = {"flush_interval": 0.02, "max_backoff": 0.1, "request_timeout": 2.0, "stats_every": 1}


def _baseline_step_times() -> list[float]:
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradwatch.watch(model, optimizer, run="baseline", enabled=False)
    return _timed_train(mon, model, optimizer, 200)


@pytest.mark.parametrize("fault", ["down", "hanging", "5xx", "slow"])
def test_training_never_waits_for_a_sick_service(fault, caplog):
    baseline = _baseline_step_times()
    service = hanging = None
    if fault == "hanging":
        hanging = HangingEndpoint()
        endpoint = hanging.url
    elif fault == "down":
        endpoint = _dead_endpoint()
    else:
        service = FaultyService().start()
        service.mode = "5xx" if fault == "5xx" else "ok"
        service.delay = 0.3 if fault == "slow" else 0.0  # under request_timeout: slow, not dead
        endpoint = service.url
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
            mon = gradwatch.watch(model, optimizer, run=f"sick-{fault}", endpoint=endpoint, buffer_steps=64, **FAST)
            times = _timed_train(mon, model, optimizer, 300)
            started = time.perf_counter()
            mon.close(timeout=1.0)
            close_seconds = time.perf_counter() - started
    finally:
        if hanging:
            hanging.close()
        if service:
            service.stop()
    # Every step ran; none waited on the network; close() kept to its timeout; nothing is unaccounted for.
    added_p99 = _p99(times) - _p99(baseline)
    added_median = times[len(times) // 2] - baseline[len(baseline) // 2]
    assert times[-1] < FAST["request_timeout"] / 2, f"a step took {times[-1] * 1000:.0f} ms"
    # The median, not the tail, measures the agent's own cost: the tail is other jobs on a shared CI machine.
    assert added_median < 0.005, f"the median step time grew by {added_median * 1000:.1f} ms"
    assert close_seconds < 1.2
    assert mon.delivered + mon.dropped == 300
    if fault == "slow":
        assert mon.delivered > 0 and mon.dropped > 0  # a crawling service gets the newest steps
    else:
        assert mon.dropped == 300
    # This run's warnings only: an earlier case's sender may still log while it gives up.
    warnings = sum("cannot deliver" in r.getMessage() and f"'sick-{fault}'" in r.getMessage() for r in caplog.records)
    # One warning at most; a hanging request may not even have timed out by close().
    assert warnings == 1 if fault in ("down", "5xx") else warnings <= 1
    print(
        f"\n{fault}: median step time +{added_median * 1000:.2f} ms, p99 +{added_p99 * 1000:.1f} ms, slowest step {times[-1] * 1000:.0f} ms, "
        f"close(timeout=1) took {close_seconds:.2f} s, "
        f"delivered {mon.delivered}, dropped {mon.dropped}"
    )


def test_a_service_that_dies_and_comes_back_hears_about_the_drops():
    service = FaultyService().start()
    port = service.port
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradwatch.watch(model, optimizer, run="dies", endpoint=service.url, buffer_steps=32, **FAST)
    _timed_train(mon, model, optimizer, 50)
    assert mon.flush(5.0)
    service.stop()  # killed mid-run
    times = _timed_train(mon, model, optimizer, 200)
    mon.flush(0.5)
    revived = FaultyService(port=port).start()
    try:
        _timed_train(mon, model, optimizer, 10)
        assert mon.flush(5.0)
        mon.close(timeout=2)
    finally:
        revived.stop()
    assert times[-1] < FAST["request_timeout"] / 2, f"a step took {times[-1] * 1000:.0f} ms while the service was down"
    assert mon.delivered + mon.dropped == 260
    # At most buffer_steps (32) of the outage's 200 steps were kept; the 10 after it all arrived.
    assert 200 - 32 <= mon.dropped <= 200
    # The oldest were dropped: what arrived after the outage is the newest of it, in order.
    assert revived.steps == sorted(revived.steps) and revived.steps[-1] == 259
    assert revived.steps[0] >= 250 - 32
    # The service learns how many it never saw (a report can still reach the old process while it shuts down).
    assert service.dropped_reported + revived.dropped_reported == mon.dropped
    assert len(service.steps) + len(revived.steps) == mon.delivered


def _twenty_steps_to(service: FaultyService, run: str):
    """Train 20 steps reporting to ``service``, deliver them, close; the monitor (the service is stopped)."""
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    try:
        mon = gradwatch.watch(model, optimizer, run=run, endpoint=service.url, **FAST)
        _timed_train(mon, model, optimizer, 20)
        assert mon.flush(5.0)
        mon.close(timeout=2)
    finally:
        service.stop()
    return mon


def test_a_service_that_reads_only_json_gets_json_and_loses_nothing(caplog):
    service = FaultyService().start()
    service.mode = "json-only"
    with caplog.at_level(logging.INFO, logger="gradwatch.agent"):
        mon = _twenty_steps_to(service, "older")
    # The first body was packed and refused with 415; it and everything after went again as JSON.
    assert service.packed_bodies == 0 and service.steps == list(range(20))
    assert mon.delivered == 20 and mon.dropped == 0
    assert sum("sending JSON" in r.getMessage() for r in caplog.records) == 1


def test_a_service_that_reads_packed_bodies_gets_them():
    service = FaultyService().start()
    _twenty_steps_to(service, "packed")
    assert service.packed_bodies > 0 and service.steps == list(range(20))


def test_a_process_that_never_calls_close_exits_promptly_and_delivers_what_it_can():
    service = FaultyService().start()
    hanging = HangingEndpoint()
    # Three trials in one process, none closed: the exit waits close_timeout once, not once per monitor.
    script = (
        "import sys, torch, gradwatch\n"
        "for trial in range(3):\n"
        "    m = torch.nn.Linear(3, 1); o = torch.optim.SGD(m.parameters(), lr=0.01)\n"
        "    mon = gradwatch.watch(m, o, run=f'no-close-{trial}', endpoint=sys.argv[1], flush_interval=5.0,\n"
        "                          close_timeout=2.0)\n"
        "    for _ in range(40):\n"
        "        l = m(torch.randn(4, 3)).pow(2).mean(); l.backward(); o.step(); o.zero_grad(); mon.step(l)\n"
        "print('trained', flush=True)\n"  # and exits without close()
    )
    try:
        timings = {}
        for name, endpoint in (("working", service.url), ("hanging", hanging.url)):
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", script, endpoint],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "PYTHONPATH": os.getcwd()},
            )
            timings[name] = time.perf_counter() - started
            assert result.returncode == 0 and "trained" in result.stdout, result.stderr
    finally:
        service.stop()
        hanging.close()
    assert sorted(service.steps) == sorted(list(range(40)) * 3)  # the atexit hooks flushed the last batches
    baseline = timings["working"]
    assert timings["hanging"] - baseline < 3.0, timings  # close_timeout (2 s) bounds the exit


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_forked_children_report_over_their_own_connections():
    service = FaultyService().start()
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradwatch.watch(model, optimizer, run="fork-live", endpoint=service.url, **FAST)
    try:
        _timed_train(mon, model, optimizer, 5)
        assert mon.flush(5.0)
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    _timed_train(mon, model, optimizer, 5)
                    mon.close(timeout=5)
                    code = 0 if mon.delivered == 5 + 5 else 3  # inherited count + its own steps
                finally:
                    os._exit(code)
            children.append(pid)
        _timed_train(mon, model, optimizer, 5)
        mon.close(timeout=5)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    finally:
        service.stop()
    assert codes == [0, 0, 0]
    assert mon.delivered == 10
    assert sorted(service.steps) == sorted(list(range(10)) + [5, 6, 7, 8, 9] * 3)


def test_close_keeps_retrying_a_busy_service_within_its_timeout():
    # 429/503 mean "alive, retry": close() must not give up on the first one (that loses steps the service
    # would take a moment later); an unreachable service still ends close() early.
    answers = iter([429, 503, 429])

    def busy_then_ok(body, timeout):
        return next(answers, 202), "{}"

    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    options = AgentOptions(flush_interval=0.01, max_backoff=0.05)
    mon = Monitor(model, optimizer, run="busy", endpoint="http://x:1", options=options, transport=busy_then_ok)
    _train(mon, model, optimizer, 20)
    started = time.perf_counter()
    mon.close(timeout=5)
    assert mon.delivered == 20 and mon.dropped == 0
    assert time.perf_counter() - started < 2
