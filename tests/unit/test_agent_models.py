"""Models the agent must take as they come: complex, integer, unused, accumulated, compiled."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions

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


def _train(model, optimizer, mon, steps=4):
    for _ in range(steps):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)
    mon.close(timeout=5)


def test_complex_parameters_integer_buffers_and_unused_modules():
    model = _Odd()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    mon, bodies = _recording_monitor(model, optimizer)
    _train(model, optimizer, mon, 6)
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


def test_double_precision_model_gets_statistics_and_update_ratio():
    # The fused norm kernels may not narrow float64 to their float32 accumulator: the statistics must still come.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    mon, bodies = _recording_monitor(model, optimizer)
    for _ in range(3):
        model(torch.randn(16, 4, dtype=torch.float64)).pow(2).mean().backward()
        expected = float(model[0].weight.grad.norm().hypot(model[0].bias.grad.norm()))
        optimizer.step()
        optimizer.zero_grad()
        mon.step(1.0)
    mon.close(5)
    rows = _layer_rows(bodies)
    assert len(rows) == 3
    assert rows[-1]["layers"]["grad_norm"][0] == pytest.approx(expected, rel=1e-5)
    assert all(0 < r < 1 for r in rows[-1]["layers"]["update_ratio"])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_torchscript_model_is_watched_without_the_through_time_probe():
    # A ScriptModule takes no forward hooks: watch() used to raise there.
    model = torch.jit.script(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, bodies = _recording_monitor(model, optimizer)
    _train(model, optimizer, mon)
    assert mon.delivered == 4 and mon.dropped == 0
    assert all(r["grad_norm"] > 0 for r in _layer_rows(bodies))


@pytest.mark.filterwarnings("ignore:Lazy modules are a new feature:UserWarning")
def test_lazy_parameters_not_yet_initialised_are_left_out_with_a_warning(caplog):
    # watch() before the first forward of a model with a LazyLinear used to raise: the layer has no shape yet.
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LazyLinear(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, bodies = _recording_monitor(model, optimizer)
    assert "lazy modules" in caplog.text
    _train(model, optimizer, mon)
    assert mon.delivered == 4 and mon.dropped == 0
    rows = _layer_rows(bodies)
    assert len(rows) == 4 and all(r["layers"]["names"] == ["0"] for r in rows)


# --- a watched DDP model stays an ordinary DDP model --------------------------------------------------------------


@pytest.fixture
def one_rank_group(tmp_path):
    """A one-process gloo group (DDP needs one), torn down after the test."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield dist
    finally:
        dist.destroy_process_group()


def test_a_watched_ddp_model_can_still_be_copied_and_saved(one_rank_group, tmp_path):
    import copy

    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, bodies = _recording_monitor(model, optimizer)
    origin = mon._nan_origin
    assert origin is not None and origin.process_group is model.process_group
    _train(model, optimizer, mon, steps=2)
    # EMA copies and whole-model checkpoints: DDP pickles its hooks' states, and a process group cannot be.
    twin = copy.deepcopy(model)
    torch.save(model, tmp_path / "model.pt")
    assert b"gradwatch" not in (tmp_path / "model.pt").read_bytes()  # loads where gradwatch is not installed
    reloaded = torch.load(tmp_path / "model.pt", weights_only=False)
    for other in (twin, reloaded):
        other(torch.randn(8, 4)).pow(2).mean().backward()  # the copy reduces as an unpickled DDP does
    calls = []

    def user_hook(state, bucket):  # a stand-in for fp16 compression: records, reduces nothing (one rank)
        calls.append(state)
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    # A copy is DDP's own again: a hook registered on it is DDP's, and runs.
    twin.register_comm_hook("twin", user_hook)
    twin(torch.randn(8, 4)).pow(2).mean().backward()
    # The original still reduces through gradwatch's hook, and a user's hook registered later still nests in it.
    model.register_comm_hook("mine", user_hook)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    assert calls == ["twin", "mine"]
    assert origin.take() is not None
    assert [s["step"] for b in bodies for s in b["steps"]] == [0, 1]
