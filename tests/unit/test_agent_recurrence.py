"""The agent's through-time gradient probe (gradwatch/agents/recurrence.py) and what the monitor sends of it."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as module_hooks

from gradwatch.agents import recurrence
from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions
from gradwatch.agents.recurrence import RecurrenceProbe


class _Recorder:
    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def __call__(self, body: bytes, timeout: float) -> tuple[int, str]:
        self.bodies.append(json.loads(body))
        return 202, "{}"

    @property
    def steps(self) -> list[dict]:
        return [s for b in self.bodies for s in b["steps"]]


class _LoopRNN(nn.Module):
    """A hand-written Elman RNN: ``rec`` is called once per time step."""

    def __init__(self, recurrent_gain: float, nonlinearity=torch.tanh) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 16)
        self.rec = nn.Linear(16, 16, bias=False)
        nn.init.orthogonal_(self.rec.weight, gain=recurrent_gain)
        self.head = nn.Linear(16, 1)
        self.nonlinearity = nonlinearity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 16)
        proj = self.inp(x)
        for t in range(x.shape[1]):
            h = self.nonlinearity(proj[:, t] + self.rec(h))
        return self.head(h)


class _FusedRNN(nn.Module):
    def __init__(self, kind: type[nn.RNNBase], recurrent_std: float | None = None) -> None:
        super().__init__()
        self.rnn = kind(3, 16, batch_first=True)
        if recurrent_std is not None:
            nn.init.normal_(self.rnn.weight_hh_l0, std=recurrent_std)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _measure(model: nn.Module, probe: RecurrenceProbe, length: int = 30) -> tuple[float, str] | None:
    """One armed forward and backward, as the monitor runs it on a statistics step."""
    probe.arm()
    x = torch.randn(4, length, 3)
    model(x).pow(2).mean().backward()
    taken = probe.take()
    if taken is None:
        return None
    ratio, index = taken
    return float(ratio), probe.names[int(index)]


def test_a_fused_rnn_with_weak_recurrence_reads_vanishing_an_lstm_does_not():
    torch.manual_seed(0)
    weak = _FusedRNN(nn.RNN, recurrent_std=0.02)
    ratio, module = _measure(weak, RecurrenceProbe(weak))
    assert module == "rnn" and ratio < 1e-10
    lstm = _FusedRNN(nn.LSTM)
    lstm_ratio, _ = _measure(lstm, RecurrenceProbe(lstm), length=10)
    assert lstm_ratio > 1e-4


def test_the_input_sequence_is_left_as_the_user_made_it():
    torch.manual_seed(0)
    model = _FusedRNN(nn.GRU)
    probe = RecurrenceProbe(model)
    probe.arm()
    x = torch.randn(4, 20, 3)
    model(x).pow(2).mean().backward()
    assert probe.take() is not None
    assert not x.requires_grad and x.grad is None


def test_a_frozen_recurrence_on_an_input_without_gradient_is_left_out_of_autograd():
    # A pretrained, frozen encoder: giving its input a gradient would make its output require one, so the
    # user's `features.numpy()` would raise and every measured step would pay a backward through it.
    torch.manual_seed(0)
    model = _FusedRNN(nn.LSTM)
    model.rnn.requires_grad_(False)
    probe = RecurrenceProbe(model)
    probe.arm()
    features, _ = model.rnn(torch.randn(4, 20, 3))
    assert not features.requires_grad
    features.numpy()
    assert probe.take() is None


def test_a_long_lived_input_leaf_gets_no_hook_of_its_own():
    # A learned input sequence (a prompt parameter) lives across steps: a hook on it would stay, one per step.
    torch.manual_seed(0)
    model = _FusedRNN(nn.GRU)
    prompt = nn.Parameter(torch.randn(4, 20, 3))
    probe = RecurrenceProbe(model)
    for _ in range(3):
        probe.arm()
        model(prompt).pow(2).mean().backward()
        assert probe.take() is not None
    assert not prompt._backward_hooks
    assert prompt.grad is not None


def test_a_loop_is_found_by_counting_calls_then_measured_per_call():
    torch.manual_seed(0)
    model = _LoopRNN(recurrent_gain=0.05, nonlinearity=torch.sigmoid)
    probe = RecurrenceProbe(model)
    # The first armed forward only counts calls.
    assert _measure(model, probe) is None
    assert probe.names == ["rec"]
    ratio, module = _measure(model, probe)
    assert module == "rec" and ratio < 1e-10
    healthy = _LoopRNN(recurrent_gain=1.0)
    healthy_probe = RecurrenceProbe(healthy)
    _measure(healthy, healthy_probe)
    healthy_ratio, _ = _measure(healthy, healthy_probe, length=10)
    assert healthy_ratio > 1e-3


def _global_hooks() -> int:
    return len(module_hooks._global_forward_pre_hooks) + len(module_hooks._global_forward_hooks)


def test_a_model_without_recurrence_keeps_no_hook_after_the_first_forward():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    probe = RecurrenceProbe(model)
    before = _global_hooks()
    probe.arm()
    assert _global_hooks() == before + 2
    model(torch.randn(4, 3)).sum().backward()
    assert probe.take() is None
    assert not probe.active
    probe.arm()
    assert _global_hooks() == before


@pytest.mark.parametrize("rnn", [nn.LSTM, nn.GRU])
def test_an_armed_model_pickles_and_copies_as_it_would_unwatched(rnn, tmp_path):
    # A checkpoint of the whole module (torch.save(model)) or an EMA copy taken between mon.step() and the
    # next forward: the model holds none of the probe's hooks, so it pickles, and the copy is not measured.
    torch.manual_seed(0)
    model = _FusedRNN(rnn)
    probe = RecurrenceProbe(model)
    probe.arm()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    torch.save(model, tmp_path / "model.pt")
    twin = copy.deepcopy(model)
    twin(torch.randn(4, 20, 3)).pow(2).mean().backward()
    assert probe.take() is None  # the copy's forward was not the watched model's
    before = _global_hooks()
    probe.arm()
    assert _global_hooks() == before + 2
    loss = model(torch.randn(4, 20, 3)).pow(2).mean()
    assert _global_hooks() == before  # off once the measured forward ends: other models run without them
    loss.backward()
    assert probe.take() is not None


def test_a_model_with_a_compiled_part_is_not_probed(recwarn):
    model = _FusedRNN(nn.GRU)
    model.rnn = torch.compile(model.rnn, backend="eager")
    probe = RecurrenceProbe(model)
    assert not probe.active
    before = _global_hooks()
    probe.arm()
    assert _global_hooks() == before
    model(torch.randn(4, 20, 3)).pow(2).mean().backward()
    assert not [w for w in recwarn if "global hooks" in str(w.message)]


def test_a_bare_rnn_as_the_model_is_named_as_the_layer_list_names_the_root():
    model = nn.GRU(3, 8, batch_first=True)
    probe = RecurrenceProbe(model)
    probe.arm()
    model(torch.randn(4, 20, 3))[0][:, -1].pow(2).mean().backward()
    assert probe.take() is not None
    assert probe.names == ["(root)"]


def test_a_short_sequence_is_not_judged():
    model = _FusedRNN(nn.RNN)
    assert _measure(model, RecurrenceProbe(model), length=recurrence.MIN_STEPS - 1) is None


def test_a_failing_measurement_is_logged_and_training_goes_on(monkeypatch, caplog):
    model = _FusedRNN(nn.RNN)
    probe = RecurrenceProbe(model)

    def broken(*args):
        raise RuntimeError("probe bug")

    monkeypatch.setattr(probe, "_fused", [recurrence._Probe("rnn", model.rnn)])
    monkeypatch.setattr(torch.Tensor, "movedim", broken)
    with caplog.at_level(logging.ERROR, logger="gradwatch.agent"):
        probe.arm()
        loss = model(torch.randn(4, 20, 3)).pow(2).mean()
        loss.backward()  # must not raise
    assert probe.take() is None
    assert "recurrence probe failed" in caplog.text


@pytest.mark.parametrize("stats_every", [1, 3])
def test_the_monitor_sends_the_ratio_and_module_on_statistics_steps_only(stats_every):
    torch.manual_seed(0)
    model = _FusedRNN(nn.RNN, recurrent_std=0.02)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recorder = _Recorder()
    options = AgentOptions(flush_interval=0.01, stats_every=stats_every)
    mon = Monitor(model, optimizer, run="unit", endpoint="http://unused:1", options=options, transport=recorder)
    for _ in range(7):
        loss = F.mse_loss(model(torch.randn(4, 20, 3)), torch.zeros(4, 1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)
    mon.close()
    measured = [s for s in recorder.steps if "recurrent_grad_ratio" in s]
    assert [s["step"] for s in measured] == list(range(0, 7, stats_every))
    assert all(s["recurrent_module"] == "rnn" and s["recurrent_grad_ratio"] < 1e-10 for s in measured)
    assert all(s["recurrent_gated"] is False for s in measured)
    # No hook stays behind a closed monitor.
    assert not model.rnn._forward_pre_hooks and not model._forward_pre_hooks


def test_gated_recurrences_are_told_apart_from_plain_ones():
    # A GRU or LSTM can learn to open its gates and carry gradient back; a plain RNN cannot.
    for kind, gated in ((nn.GRU, True), (nn.LSTM, True), (nn.RNN, False)):
        model = _FusedRNN(kind)
        probe = RecurrenceProbe(model)
        _measure(model, probe)
        assert probe.gated == [gated]
    loop = _LoopRNN(recurrent_gain=1.0)
    loop_probe = RecurrenceProbe(loop)
    _measure(loop, loop_probe)
    assert loop_probe.names == ["rec"] and loop_probe.gated == [False]


def test_a_forward_without_gradient_between_steps_leaves_the_probe_armed_for_the_training_forward():
    # A PPO rollout, a DQN choosing actions, a validation pass: run under no_grad after mon.step().
    torch.manual_seed(0)
    model = _FusedRNN(nn.RNN)
    probe = RecurrenceProbe(model)
    probe.arm()
    with torch.no_grad():
        model(torch.randn(4, 20, 3))
    model(torch.randn(4, 20, 3)).pow(2).mean().backward()
    assert probe.take() is not None


@pytest.mark.parametrize("where", ["root", "block"])
def test_a_recurrence_under_reentrant_checkpointing_is_measured_in_its_recompute(where):
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    model = _FusedRNN(nn.RNN)
    probe = RecurrenceProbe(model)
    probe.arm()
    x = torch.randn(4, 20, 3, requires_grad=True)  # reentrant checkpointing wants an input with a gradient
    if where == "root":
        out = checkpoint(model, x, use_reentrant=True)
    else:
        inner = model.rnn
        out = checkpoint(lambda t: inner(t)[0], x, use_reentrant=True).sum()
    out.pow(2).mean().backward()
    assert probe.take() is not None


def test_a_probe_whose_monitor_is_dropped_while_armed_takes_its_global_hooks_and_the_model_with_it():
    import gc
    import weakref

    model = _FusedRNN(nn.GRU)
    probe = RecurrenceProbe(model)
    before = _global_hooks()
    probe.arm()
    alive = weakref.ref(model)
    del model, probe  # a run that ends armed, its monitor never closed
    gc.collect()
    assert _global_hooks() == before and alive() is None
