"""The agent's fused statistics against plain per-tensor torch computations."""

import math

import pytest
import torch
from agent_recording import recording_monitor
from torch import nn


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.register_buffer("counts", torch.zeros(3, dtype=torch.long))

    def forward(self, idx):
        return self.head(self.body(self.embed(idx)) + self.frozen(self.embed(idx)).detach())


def _expected_layers(model):
    """Per-module stats computed the slow, obvious way."""
    seen, out = set(), {}
    for name, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            entry = out.setdefault(
                name or "(root)", {"g2": 0.0, "gmax": 0.0, "w2": 0.0, "wmax": 0.0, "has_grad": False}
            )
            entry["w2"] += p.detach().double().pow(2).sum().item()
            entry["wmax"] = max(entry["wmax"], p.detach().abs().max().item())
            if p.grad is not None:
                entry["has_grad"] = True
                entry["g2"] += p.grad.double().pow(2).sum().item()
                entry["gmax"] = max(entry["gmax"], p.grad.abs().max().item())
    return out


def test_layer_stats_match_per_tensor_reference():
    torch.manual_seed(0)
    model = Tied()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    mon, recorder = recording_monitor(model, optimizer, stats_every=1, update_ratio_every=1)
    idx = torch.randint(0, 10, (4, 5))
    loss = model(idx).logsumexp(-1).mean()
    loss.backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads_reference = _expected_layers(model)  # gradients exist now
    optimizer.step()
    mon.step(loss)
    mon.close()
    after_reference = _expected_layers(model)
    (record,) = recorder.steps
    layers = record["layers"]
    assert layers["names"] == list(grads_reference)  # model order, tied weight counted once
    assert "head" not in layers["names"]
    for i, name in enumerate(layers["names"]):
        ref = grads_reference[name]
        if ref["has_grad"]:
            assert layers["grad_norm"][i] == pytest.approx(math.sqrt(ref["g2"]), rel=1e-5)
            assert layers["grad_max_abs"][i] == pytest.approx(ref["gmax"], rel=1e-6)
        else:
            assert layers["grad_norm"][i] is None and layers["grad_max_abs"][i] is None
        assert layers["weight_norm"][i] == pytest.approx(math.sqrt(after_reference[name]["w2"]), rel=1e-5)
        assert layers["weight_max_abs"][i] == pytest.approx(after_reference[name]["wmax"], rel=1e-6)
    # Update ratio per layer: ||w_after - w_before|| / ||w_before||.
    named = {k: p.detach() for k, p in model.named_parameters()}
    keys = ("body.0.weight", "body.0.bias")
    delta2 = sum((named[k] - before[k]).pow(2).sum().item() for k in keys)
    before2 = sum(before[k].pow(2).sum().item() for k in keys)
    i = layers["names"].index("body.0")
    assert layers["update_ratio"][i] == pytest.approx(math.sqrt(delta2 / before2), rel=1e-4)
    assert layers["update_ratio"][layers["names"].index("frozen")] == 0.0
    global_norm = math.sqrt(sum(v["g2"] for v in grads_reference.values()))
    assert record["grad_norm"] == pytest.approx(global_norm, rel=1e-5)
    assert record["loss"] == pytest.approx(loss.item())
    assert record["lr"] == 0.1


def test_non_finite_gradients_show_in_max_abs_even_when_the_norm_overflows():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    mon, recorder = recording_monitor(model, optimizer, stats_every=1)
    model(torch.ones(1, 3)).sum().backward()
    model[0].weight.grad[0, 0] = float("nan")
    model[1].weight.grad.fill_(1e30)  # finite, but its L2 norm overflows fp32
    optimizer.step()
    mon.step(1.0)
    mon.close()
    layers = recorder.steps[0]["layers"]
    assert math.isnan(layers["grad_max_abs"][0])
    assert layers["grad_max_abs"][1] == pytest.approx(1e30, rel=1e-6)


def test_loss_every_step_layer_stats_every_n_and_skipped_steps():
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, recorder = recording_monitor(model, optimizer, stats_every=3)
    for step in range(7):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        if step != 4:  # step 4: a GradScaler would skip optimizer.step()
            optimizer.step()
        optimizer.zero_grad()
        mon.step(loss, val_loss=0.5 if step == 5 else None, tokens=100 * step)
    mon.close()
    steps = recorder.steps
    assert [s["step"] for s in steps] == list(range(7))
    assert all("loss" in s for s in steps)
    assert [s["step"] for s in steps if "layers" in s] == [0, 3, 6]
    assert [s["skipped"] for s in steps] == [False] * 4 + [True] + [False] * 2
    # Steps without statistics carry the small tensors' gradient check, except a skipped one (nothing stepped).
    assert [s.get("local_grad_nonfinite") for s in steps] == [None, False, False, None, None, False, None]
    assert steps[5]["val_loss"] == 0.5 and steps[5]["scalars"]["tokens"] == 500


def test_steps_of_an_optimizer_watch_was_not_given_are_not_skipped_and_carry_statistics():
    """Phase two of a loop builds a new optimizer and never re-watches: the watched one stops stepping,
    but the weights keep changing, so those steps were not skipped; statistics are read in mon.step()."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    watched = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, recorder = recording_monitor(model, watched, stats_every=2)
    replacement = torch.optim.Adam(model.parameters(), lr=0.1)
    for step in range(8):
        watched.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        if step < 3:
            watched.step()
        elif step != 6:  # step 6: nothing steps at all (a GradScaler skip)
            replacement.step()
        mon.step(1.0)
    mon.close()
    steps = recorder.steps
    assert [s["skipped"] for s in steps] == [False] * 6 + [True, False]
    assert [s["step"] for s in steps if "layers" in s] == [0, 2, 4]  # 6 was skipped: nothing to read
    layers = steps[4]["layers"]  # read in mon.step(): the gradients of the step, the weights after it
    assert all(g > 0 for g in layers["grad_norm"]) and all(w > 0 for w in layers["weight_norm"])


def test_optimizer_free_mode_reads_gradients_at_step_time():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    mon, recorder = recording_monitor(model, None, stats_every=1)
    model(torch.randn(2, 4)).sum().backward()
    mon.step(torch.tensor(2.5))
    mon.close()
    (record,) = recorder.steps
    assert record["loss"] == 2.5 and "lr" not in record
    assert all(g is not None and g > 0 for g in record["layers"]["grad_norm"])


def test_a_frozen_parameters_stale_gradient_is_not_reported():
    """Trained, then frozen for a linear probe in the same process: .grad still holds the last gradient."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    model(torch.randn(2, 4)).sum().backward()
    model[0].requires_grad_(False)
    assert model[0].weight.grad is not None
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.01)
    mon, recorder = recording_monitor(model, optimizer, stats_every=1)
    optimizer.zero_grad()
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    mon.step(1.0)
    mon.close()
    (record,) = recorder.steps
    frozen, head = record["layers"]["grad_norm"]
    assert frozen is None and head is not None and head > 0


class _PartlyCut(nn.Module):
    """An encoder run under torch.no_grad() (a cut graph), a layer frozen on purpose, one the optimizer does
    not hold, and a head that trains."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.outside = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        with torch.no_grad():
            x = self.encoder(x)
        return self.head(x + self.frozen(x)) + 0 * self.outside.bias.sum()


def test_layers_the_optimizer_trains_that_get_no_gradient_are_listed_and_layers_frozen_on_purpose_are_not():
    model = _PartlyCut()
    trained = [p for name, p in model.named_parameters() if not name.startswith("outside")]
    optimizer = torch.optim.SGD(trained, lr=0.01)
    mon, recorder = recording_monitor(model, optimizer, stats_every=1)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        model.outside.zero_grad(set_to_none=True)
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        mon.step(1.0)
    mon.close()
    names = recorder.steps[0]["layers"]["names"]
    for record in recorder.steps:
        assert [names[i] for i in record["layers"]["grad_missing"]] == ["encoder"]


def test_without_a_watched_optimizer_no_layer_is_said_to_miss_a_gradient():
    model = _PartlyCut()
    mon, recorder = recording_monitor(model, None, stats_every=1)
    model(torch.randn(2, 4)).sum().backward()
    mon.step(1.0)
    mon.close()
    (record,) = recorder.steps
    assert "grad_missing" not in record["layers"]


def test_callers_grad_norm_reaches_the_aggregator_and_flags_a_gradient_only_inf_at_once():
    """clip_grad_norm_'s result, passed to step(), shows an Inf in one parameter's gradient on that very step."""
    from gradwatch.service.aggregator import Aggregator
    from gradwatch.wire import Report

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, recorder = recording_monitor(model, optimizer, stats_every=5)
    for step in range(13):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        if step == 12:  # not a statistics step; the loss itself is finite
            model[0].bias.grad[0] = math.inf
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss, grad_norm=norm)
    mon.close()
    steps = recorder.steps
    assert math.isfinite(steps[11]["grad_norm"]) and steps[12]["grad_norm"] == math.inf
    assert math.isfinite(steps[12]["loss"])

    aggregator = Aggregator()
    for body in recorder.bodies:
        aggregator.ingest(Report.model_validate(body))
    (diagnosis,) = [d for d in aggregator.diagnoses("unit") if d["symptom"] == "nonfinite"]
    assert diagnosis["onset_step"] == 12 and diagnosis["detected_step"] == 12
    assert diagnosis["evidence"]["quantities"] == ["grad_norm"]


class _Gated(nn.Module):
    """h = sqrt(gate) * tanh(fc(x)): sqrt(0) is harmless forward, but its derivative is inf."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(300, 300)  # a weight too large to be checked every step
        self.gate = nn.Parameter(torch.ones(300))
        self.head = nn.Linear(300, 1)

    def forward(self, x):
        return self.head(torch.sqrt(self.gate.clamp(min=0)) * torch.tanh(self.fc(x)))


def test_a_gradient_only_inf_between_statistics_steps_is_flagged_on_its_step_without_clipping():
    from gradwatch.agents import stats
    from gradwatch.service.aggregator import Aggregator
    from gradwatch.wire import Report

    model = _Gated()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon, recorder = recording_monitor(model, optimizer, stats_every=5)
    checked = {id(p) for p in mon._sentinels}
    assert checked == {id(model.fc.bias), id(model.gate), id(model.head.weight), id(model.head.bias)}
    assert not any(id(p) == id(model.fc.weight) for p in stats.sentinel_params(mon._layout.groups[0]))
    for step in range(13):
        if step == 12:  # not a statistics step: pruning zeroes a gate (the next step's loss would be NaN)
            with torch.no_grad():
                model.gate[3] = 0.0
        loss = model(torch.randn(8, 300)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)
    mon.close()
    steps = recorder.steps
    assert math.isfinite(steps[12]["loss"]) and "layers" not in steps[12]
    assert [s.get("local_grad_nonfinite") for s in steps[10:13]] == [None, False, True]

    aggregator = Aggregator()
    for body in recorder.bodies:
        aggregator.ingest(Report.model_validate(body))
    (diagnosis,) = [d for d in aggregator.diagnoses("unit") if d["symptom"] == "nonfinite"]
    assert diagnosis["onset_step"] == 12 and diagnosis["detected_step"] == 12
    assert diagnosis["evidence"]["quantities"] == ["rank_local"] and diagnosis["advice"].startswith("Gradients")


def test_nonfinite_sentinel_is_zero_when_finite_and_nan_otherwise():
    from gradwatch.agents import stats

    a, b = nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(3, dtype=torch.float16))
    assert stats.nonfinite_sentinel([a, b]) is None  # no gradients yet
    a.grad, b.grad = torch.full((4,), 3e38), torch.full((3,), 6e4, dtype=torch.float16)
    assert stats.nonfinite_sentinel([a, b]) == 0.0  # finite, however large (the sum overflows; the elements do not)
    assert stats.nonfinite_sentinel([b]) == 0.0
    for bad in (math.inf, -math.inf, math.nan):
        b.grad[1] = bad
        assert math.isnan(stats.nonfinite_sentinel([a, b]))
        assert math.isnan(stats.nonfinite_sentinel([b]))


def test_nonfinite_sentinel_takes_sparse_and_complex_gradients():
    from gradwatch.agents import stats

    table, phase = nn.Parameter(torch.zeros(5, 2)), nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    dense = nn.Parameter(torch.zeros(2))
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), torch.ones(2, 2), (5, 2), check_invariants=True)
    phase.grad, dense.grad = torch.ones(3, dtype=torch.complex64), torch.ones(2)
    assert stats.nonfinite_sentinel([dense, table, phase]) == 0.0
    phase.grad[1] = complex(0.0, math.inf)
    assert math.isnan(stats.nonfinite_sentinel([dense, table, phase]))
    assert stats.nonfinite_sentinel([table]) is None  # only a sparse gradient: nothing dense to check


def test_empty_parameters_such_as_an_empty_fsdp_shard_are_measured_without_error():
    with pytest.warns(UserWarning):  # torch: "Initializing zero-element tensors is a no-op"
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(0, 4))  # the second weight has no elements
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mon, recorder = recording_monitor(model, optimizer, stats_every=1)
    loss = model[0](torch.randn(8, 4)).pow(2).mean() + model[1](torch.randn(8, 0)).sum()
    loss.backward()
    optimizer.step()
    mon.step(loss)
    mon.close()
    (record,) = recorder.steps
    assert record["layers"]["names"] == ["0", "1"]
    assert record["layers"]["grad_max_abs"][0] > 0
    # The empty weight adds nothing: layer 1's norm is its bias's.
    assert math.isclose(record["layers"]["weight_norm"][1], float(model[1].bias.detach().norm()), rel_tol=1e-6)
