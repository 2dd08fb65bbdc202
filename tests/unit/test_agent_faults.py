"""The agent never breaks the training loop: dead endpoints, rejections, bad values, fork."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

import gradwatch
from gradwatch.agents import gather
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


def _recording(model, optimizer, **options):
    bodies: list[dict] = []

    def record(body, timeout):
        bodies.append(json.loads(body))
        return 202, "{}"

    opts = AgentOptions(flush_interval=0.01, **options)
    return Monitor(model, optimizer, run="rec", endpoint="http://x:1", options=opts, transport=record), bodies


def _steps(bodies):
    return [s for b in bodies for s in b["steps"]]


def test_one_bad_value_loses_nothing_else(caplog):
    # Each of these used to cost more than itself: an integer past float's range raised (and a failure drops the
    # steps not yet sent), a scalar name or count the service refuses took the whole report with it.
    model = nn.Linear(3, 1)
    mon, bodies = _recording(model, None)
    with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
        for step in range(12):
            scalars = {"ok": 1.0}
            if step == 4:
                scalars["acc/top1"] = 0.5
            if step == 6:
                scalars.update({f"s{i}": float(i) for i in range(40)})
            mon.step(10**400 if step == 5 else -(10**5000) if step == 7 else float(step), **scalars)
        mon.close(timeout=5)
    steps = _steps(bodies)
    assert [s["step"] for s in steps] == list(range(12)) and mon.dropped == 0
    assert steps[5]["loss"] == float("inf") and steps[7]["loss"] == float("-inf")
    assert "acc/top1" not in steps[4]["scalars"] and steps[4]["scalars"]["ok"] == 1.0
    assert len(steps[6]["scalars"]) == 32
    assert "acc/top1" in caplog.text and "first 32 scalars" in caplog.text


def test_a_tensor_updated_in_place_is_recorded_as_it_was_at_its_step():
    model = nn.Linear(3, 1)
    mon, bodies = _recording(model, None)
    seen = torch.zeros(())
    for _ in range(4):
        seen += 1  # a running count the loop keeps on the device
        mon.step(1.0, samples=seen)
    mon.close(timeout=5)
    assert [s["scalars"]["samples"] for s in _steps(bodies)] == [1.0, 2.0, 3.0, 4.0]


def test_an_optimizer_step_that_raises_costs_only_its_own_statistics():
    # A loop that catches an out-of-memory error in optimizer.step() and skips the batch: the pre-hook had taken
    # the gradients, the post-hook never ran, and a row without weights took its whole report down with it.
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, bodies = _recording(model, optimizer, stats_every=1)
    for step in range(6):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        if step == 2:
            with pytest.raises(RuntimeError):
                optimizer.step(closure=lambda: (_ for _ in ()).throw(RuntimeError("out of memory")))
        else:
            optimizer.step()
        optimizer.zero_grad()
        mon.step(1.0)
    mon.close(timeout=5)
    steps = _steps(bodies)
    assert [s["step"] for s in steps] == list(range(6)) and mon.dropped == 0
    assert ["layers" in s for s in steps] == [True, True, False, True, True, True]


def test_several_optimizer_steps_per_mon_step_take_statistics_once(caplog):
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, bodies = _recording(model, optimizer, stats_every=1)
    taken, after_first = [], []
    mon._take_gradient_stats = lambda *a, _take=mon._take_gradient_stats: (taken.append(1), _take(*a))[1]
    with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
        for step in range(20):
            model(torch.randn(4, 3)).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            if step % 10 == 0:  # the first optimizer step after a mon.step(): the record's statistics are its own
                after_first.append([model.weight.detach().norm().item(), model.bias.detach().norm().item()])
            if step % 10 == 9:  # logged every 10 optimizer steps
                mon.step(1.0)
        mon.close(timeout=5)
    assert len(taken) == 2
    assert "optimizer.step() ran again before mon.step()" in caplog.text
    rows = [s["layers"] for s in _steps(bodies)]
    assert len(rows) == 2
    # One set of weight statistics per record (the layer's weight and bias make its norm), not one per step.
    for row, (weight, bias) in zip(rows, after_first, strict=True):
        assert row["weight_norm"][0] == pytest.approx((weight**2 + bias**2) ** 0.5, rel=1e-6)


def test_close_from_a_signal_handler_in_the_middle_of_a_step_does_not_hang():
    # A preemption handler (SIGTERM under SLURM) runs on the training thread, possibly inside mon.step().
    model = nn.Linear(3, 1)
    mon, _ = _recording(model, None)
    value = mon._value

    def interrupted(*args):
        mon._value = value
        mon.close(timeout=1)  # what the handler does, re-entering the monitor on the same thread
        return value(*args)

    mon._value = interrupted
    stepping = threading.Thread(target=mon.step, args=(1.0,), daemon=True)
    stepping.start()
    stepping.join(10)
    assert not stepping.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
@pytest.mark.parametrize("trains", [False, True], ids=["checkpoint-writer", "worker"])
def test_a_forked_helper_that_exits_normally_sends_nothing_of_the_parents(trains):
    # A checkpoint writer forked mid-run, ending with sys.exit (so atexit runs): it used to send the parent's
    # unsent steps and a final report, which marks the run finished while the parent trains on.
    read, write = os.pipe()
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def record(body, timeout):
        report = json.loads(body)
        steps = [s["step"] for s in report["steps"]]
        os.write(write, f"{os.getpid()} {report.get('final', False)} {json.dumps(steps)}\n".encode())
        return 202, "{}"

    options = AgentOptions(flush_interval=0.01)
    mon = Monitor(model, optimizer, run="helper", endpoint="http://x:1", options=options, transport=record)
    _train(mon, model, optimizer, 3)  # 3 steps recorded, not yet submitted (stats_every=5)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if trains:  # a worker that trains and reports: its own steps, not the run's end
                _train(mon, model, optimizer, 2)
                mon.flush(5)
            mon.close()  # what atexit runs at a normal exit (the monitor's hook first, then the sender's)
            mon._sender._at_exit()
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    mon.close(timeout=5)
    os.close(write)
    with os.fdopen(read) as lines:
        bodies = [line.split(maxsplit=2) for line in lines]
    child = [(final, steps) for sender, final, steps in bodies if int(sender) == pid]
    assert all(final == "False" for final, _ in child)
    assert {step for _, steps in child for step in json.loads(steps)} == ({3, 4} if trains else set())
    assert mon.delivered == 3


def test_a_model_with_more_layers_than_a_report_carries_still_reports_its_steps(monkeypatch, caplog):
    # The service refuses a report past MAX_LAYERS_PER_REPORT layers, and every step in it with it.
    monkeypatch.setattr("gradwatch.agents.monitor.MAX_LAYERS_PER_REPORT", 2)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
        mon, bodies = _recording(model, optimizer, stats_every=1)
    _train(mon, model, optimizer, 4)
    mon.close(timeout=5)
    steps = _steps(bodies)
    assert len(steps) == 4 and not any("layers" in s for s in steps)
    assert "per-layer statistics are off" in caplog.text


def test_watching_an_optimizer_twice_without_closing_is_warned_of(caplog):
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
        first, _ = _recording(model, optimizer)
        first.close()
        second, _ = _recording(model, optimizer)  # the first was closed: nothing to say
        assert "already watched" not in caplog.text
        _recording(model, optimizer)  # a notebook cell run again
    assert "already watched" in caplog.text
    second.close()


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


def test_copy_is_awaited_by_polling_with_growing_sleeps_not_by_synchronize():
    # event.synchronize() spin-waits a CPU core for up to a whole training step; polling must not.
    class Event:
        checks = 0

        def query(self):
            Event.checks += 1
            return Event.checks > 12

        def synchronize(self):
            raise AssertionError("spin-waits")

    sleeps: list[float] = []
    gather._wait(Event(), sleep=sleeps.append)
    assert Event.checks == 13 and len(sleeps) == 12
    assert sleeps[0] == gather.POLL_FIRST_S and max(sleeps) == gather.POLL_MAX_S
    assert sleeps == sorted(sleeps)


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
