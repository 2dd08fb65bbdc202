"""The agent never breaks the training loop: dead endpoints, rejections, bad values, fork."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import gradwatch
from gradwatch.agents.gather import PinnedPool
from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions


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


def test_dead_endpoint_costs_one_warning_and_training_goes_on(caplog):
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
        mon = gradwatch.watch(
            model, optimizer, run="dead", endpoint=_dead_endpoint(), flush_interval=0.01, max_backoff=0.05
        )
        started = time.perf_counter()
        _train(mon, model, optimizer, 200)
        time.sleep(0.3)  # let the sender fail several times
        mon.close(timeout=1.0)
        elapsed = time.perf_counter() - started
    warnings = [r for r in caplog.records if "cannot deliver" in r.getMessage()]
    assert len(warnings) == 1
    assert mon.delivered == 0
    assert elapsed < 5


def test_buffer_is_bounded_and_drops_the_oldest_counting_them():
    sent = []

    def refuse_then_accept(body, timeout):
        if len(sent) == 0 and not refuse_then_accept.open:
            raise OSError("connection refused")
        sent.append(body)
        return 202, "{}"

    refuse_then_accept.open = False
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    options = AgentOptions(buffer_steps=16, flush_interval=0.01, max_backoff=0.02)
    mon = Monitor(model, optimizer, run="bounded", endpoint="http://x:1", options=options, transport=refuse_then_accept)
    _train(mon, model, optimizer, 100)
    mon.flush(1.0)
    refuse_then_accept.open = True
    assert mon.flush(5.0)
    mon.close()
    import json

    steps = [s["step"] for body in sent for s in json.loads(body)["steps"]]
    assert steps == list(range(84, 100))  # the newest 16 survive, in order
    assert mon.dropped == 84 and mon.delivered == 16
    assert json.loads(sent[0])["dropped"] == 84  # the service learns about the loss


def test_rejected_reports_are_dropped_and_counted_not_retried_forever(caplog):
    calls = []

    def reject(body, timeout):
        calls.append(body)
        return 422, '{"error": "no"}'

    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = Monitor(
        model, optimizer, run="rej", endpoint="http://x:1", options=AgentOptions(flush_interval=0.01), transport=reject
    )
    with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
        _train(mon, model, optimizer, 10)
        mon.close()
    assert mon.dropped == 10 and mon.delivered == 0
    assert sum("rejected a report" in r.getMessage() for r in caplog.records) == 1


def test_odd_values_never_raise():
    model = nn.Linear(3, 1)
    mon = Monitor(
        model, None, run="odd", endpoint="http://x:1", options=AgentOptions(), transport=lambda b, t: (202, "")
    )
    mon.step("not a number")
    mon.step(torch.ones(5), val_loss=object(), acc=[1, 2])
    mon.step(float("nan"))
    mon.step()
    mon.close()
    mon.close()  # idempotent
    mon.step(1.0)  # after close: ignored


def test_watch_rejects_mistakes_before_training_starts():
    model = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="run name"):
        gradwatch.watch(model, run="has spaces")
    with pytest.raises(ValueError, match="stats_evry"):
        gradwatch.watch(model, run="ok", stats_evry=3)
    with pytest.raises(ValueError, match="stats_every"):
        gradwatch.watch(model, run="ok", stats_every=0)
    with pytest.raises(TypeError, match="nn.Module"):
        gradwatch.watch("model", run="ok")
    assert isinstance(gradwatch.watch(model, run="ok", enabled=False), gradwatch.NullMonitor)


def test_importing_the_agent_starts_nothing_and_never_imports_ray():
    code = (
        "import sys, threading, gradwatch; gradwatch.watch; gradwatch.Monitor;"
        "assert 'ray' not in sys.modules, 'ray imported';"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported';"
        "assert threading.active_count() == 1, threading.enumerate()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_public_api_is_pinned():
    assert sorted(gradwatch.__all__) == ["AgentOptions", "Monitor", "NullMonitor", "__version__", "watch"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_a_forked_child_can_train_and_exit_cleanly():
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = Monitor(
        model,
        optimizer,
        run="fork",
        endpoint="http://x:1",
        options=AgentOptions(flush_interval=0.01),
        transport=lambda b, t: (202, ""),
    )
    _train(mon, model, optimizer, 3)
    pid = os.fork()
    if pid == 0:  # a dataloader worker, say
        try:
            _train(mon, model, optimizer, 3)
            mon.close(timeout=2)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    mon.close()
    assert mon.delivered >= 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: checks that no step adds a host sync")
def test_cuda_steps_add_no_host_synchronisation():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = Monitor(
        model,
        optimizer,
        run="cuda",
        endpoint="http://x:1",
        options=AgentOptions(stats_every=1, update_ratio_every=1),
        transport=lambda b, t: (202, ""),
    )
    x = torch.randn(32, 64, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            loss = model(x).pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            mon.step(loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    mon.close()
    assert mon.delivered == 5
    # Every report had the same size: its page-locked buffer was reused, not pinned anew each time.
    assert mon._pinned.allocated <= 2


def test_actor_endpoint_is_checked_at_watch_time_and_a_missing_actor_is_only_unreachable():
    import gradwatch
    from gradwatch.agents.ray_transport import RayActorTransport

    with pytest.raises(ValueError, match="actor://NAME"):
        gradwatch.watch(torch.nn.Linear(2, 2), run="r", endpoint="actor://")
    transport = RayActorTransport("actor://nobody")
    assert transport(b"{not json", 1.0)[0] == 400  # validated here, before any Ray call


def test_pinned_pool_reuses_buffers_by_size_and_keeps_a_few():
    pool = PinnedPool(keep=2, allocate=lambda n: torch.empty(n, dtype=torch.float64))
    a, b, c = pool.take(8), pool.take(8), pool.take(8)
    for buffer in (a, b, c):
        pool.give(buffer)
    assert pool.allocated == 3
    again = [pool.take(8), pool.take(8)]
    assert pool.allocated == 3 and {id(t) for t in again} <= {id(a), id(b), id(c)}
    pool.take(8)  # only two were kept
    pool.take(16)  # another size is another buffer
    assert pool.allocated == 5


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

        async def ingest(request: web.Request) -> web.Response:
            import asyncio

            self.requests += 1
            body = json.loads(await request.read())
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


def test_a_process_that_never_calls_close_exits_promptly_and_delivers_what_it_can():
    service = FaultyService().start()
    hanging = HangingEndpoint()
    script = (
        "import sys, torch, gradwatch\n"
        "m = torch.nn.Linear(3, 1); o = torch.optim.SGD(m.parameters(), lr=0.01)\n"
        "mon = gradwatch.watch(m, o, run='no-close', endpoint=sys.argv[1], flush_interval=5.0, close_timeout=2.0)\n"
        "for _ in range(40):\n"
        "    l = m(torch.randn(4, 3)).pow(2).mean(); l.backward(); o.step(); o.zero_grad(); mon.step(l)\n"
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
    assert service.steps == list(range(40))  # the atexit hook flushed the last batch
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


# --- models the agent must take as they come ------------------------------------------------------------------------


class _Odd(nn.Module):
    """Complex and integer state, a module never used in forward, a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.real = nn.Linear(4, 4)
        self.phase = nn.Parameter(torch.randn(4, dtype=torch.complex64))
        self.unused = nn.Linear(4, 4)  # its parameters never get a gradient
        self.frozen = nn.Linear(4, 1).requires_grad_(False)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("spectrum", torch.zeros(4, dtype=torch.complex128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps_seen += 1
        h = self.real(x) * (self.phase * self.phase.conj()).real
        return self.frozen(h)


def _recording_monitor(model, optimizer, **options):
    bodies: list[dict] = []

    def record(body, timeout):
        bodies.append(json.loads(body))
        return 202, "{}"

    opts = AgentOptions(flush_interval=0.01, stats_every=1, update_ratio_every=1, **options)
    mon = Monitor(model, optimizer, run="models", endpoint="http://unused:1", options=opts, transport=record)
    return mon, bodies


def _layer_rows(bodies):
    return [s for b in bodies for s in b["steps"] if "layers" in s]


def test_complex_parameters_integer_buffers_and_unused_modules():
    model = _Odd()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    mon, bodies = _recording_monitor(model, optimizer)
    for _ in range(6):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)
    mon.close(timeout=5)
    assert mon.delivered == 6 and mon.dropped == 0
    rows = _layer_rows(bodies)
    assert len(rows) == 6
    layers = rows[-1]["layers"]
    by_name = dict(zip(layers["names"], layers["grad_norm"], strict=True))
    assert set(by_name) == {"real", "(root)", "unused", "frozen"}
    assert by_name["unused"] is None and by_name["frozen"] is None  # absent, not zero
    assert by_name["real"] > 0 and by_name["(root)"] > 0  # the complex parameter has a real-valued norm
    assert all(math.isfinite(v) for v in layers["weight_norm"])


def test_gradient_accumulation_reports_once_per_optimizer_step():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, bodies = _recording_monitor(model, optimizer)
    accumulate = 4
    for step in range(5):
        for _ in range(accumulate):
            (model(torch.randn(8, 4)).pow(2).mean() / accumulate).backward()
        expected = math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in model.parameters()))
        optimizer.step()
        optimizer.zero_grad()
        mon.step(1.0)
        mon.flush(5)
        assert _layer_rows(bodies)[step]["grad_norm"] == pytest.approx(expected, rel=1e-5)
    mon.close(timeout=5)
    assert [s["step"] for b in bodies for s in b["steps"]] == list(range(5))


def test_a_torch_compiled_model():
    # The "aot_eager" backend runs the same graph capture (Dynamo) and autograd tracing (AOTAutograd) as the
    # default one; it only skips Inductor's C++ code generation, which takes ~80 s on a 2-core CI runner.
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    compiled = torch.compile(model, backend="aot_eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, bodies = _recording_monitor(compiled, optimizer)
    for _ in range(5):
        loss = compiled(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)
    mon.close(timeout=5)
    assert mon.delivered == 5 and mon.dropped == 0
    rows = _layer_rows(bodies)
    assert len(rows) == 5 and all(r["grad_norm"] > 0 for r in rows)
    # The compiled wrapper's parameters are the model's: layers are named as in the original model.
    assert {name.removeprefix("_orig_mod.") for name in rows[0]["layers"]["names"]} == {"0", "2"}


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
