"""The agent's fused statistics against plain per-tensor torch computations."""

import json
import math

import pytest
import torch
from torch import nn

from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions


class Recorder:
    """A transport that keeps every posted body (the unit-test seam of the sender)."""

    def __init__(self, status=202):
        self.bodies = []
        self.status = status

    def __call__(self, body, timeout):
        self.bodies.append(json.loads(body))
        return self.status, "{}"

    @property
    def steps(self):
        return [s for b in self.bodies for s in b["steps"]]


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


def _monitor(model, optimizer, **options):
    recorder = Recorder()
    opts = AgentOptions(flush_interval=0.01, **options)
    return Monitor(model, optimizer, run="unit", endpoint="http://unused:1", options=opts, transport=recorder), recorder


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
    mon, recorder = _monitor(model, optimizer, stats_every=1, update_ratio_every=1)
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
    mon, recorder = _monitor(model, optimizer, stats_every=1)
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
    mon, recorder = _monitor(model, optimizer, stats_every=3)
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
    mon, recorder = _monitor(model, watched, stats_every=2)
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
    mon, recorder = _monitor(model, None, stats_every=1)
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
    mon, recorder = _monitor(model, optimizer, stats_every=1)
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
    mon, recorder = _monitor(model, optimizer, stats_every=1)
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
    mon, recorder = _monitor(model, None, stats_every=1)
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
    mon, recorder = _monitor(model, optimizer, stats_every=5)
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
    mon, recorder = _monitor(model, optimizer, stats_every=5)
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
    mon, recorder = _monitor(model, optimizer, stats_every=1)
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


def test_cpu_norms_and_max_abs_match_the_fused_kernels_and_keep_nan_and_inf():
    from gradwatch.agents.stats import _as_real, _norms_and_max_abs

    torch.manual_seed(0)
    tensors = [
        torch.tensor([1.0, -7.0, 2.0]),
        torch.tensor([float("nan"), 1.0]),
        torch.tensor([float("-inf"), 1.0]),
        torch.randn(4, 3, dtype=torch.float16),
        torch.randn(5, dtype=torch.bfloat16),
        torch.randn(3, 3, dtype=torch.float64),
    ]
    norms, max_abs = _norms_and_max_abs(tensors)
    expected_norms = torch.stack([t.double().norm() for t in tensors]).float()
    expected_max = torch.stack([t.double().abs().max() for t in tensors]).float()
    assert norms.dtype == max_abs.dtype == torch.float32
    # Half-precision inputs: the fused kernel rounds partial sums to the input's precision, and bfloat16
    # keeps 8 bits (2^-8 = 3.9e-3 relative), hence 8e-3.
    assert torch.allclose(norms.nan_to_num(-1.0), expected_norms.nan_to_num(-1.0), rtol=8e-3)
    assert torch.equal(max_abs.nan_to_num(-1.0), expected_max.nan_to_num(-1.0))
    # Complex parameters arrive as real views (_as_real): the same norm, and |re|,|im| for max-abs.
    complex_norms, complex_max = _norms_and_max_abs(_as_real([torch.tensor([3 + 4j]), torch.tensor([-3.0])]))
    assert complex_norms.tolist() == pytest.approx([5.0, 3.0]) and complex_max.tolist() == pytest.approx([4.0, 3.0])


@pytest.mark.parametrize(
    "dtypes", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16)], ids=["one", "mixed"]
)
def test_weight_snapshot_is_a_copy_that_the_step_does_not_touch(dtypes):
    from gradwatch.agents import stats
    from gradwatch.agents.layout import LayerLayout

    model = torch.nn.Sequential(torch.nn.Linear(3, 4).to(dtypes[0]), torch.nn.Linear(4, 2).to(dtypes[1]))
    (group,) = LayerLayout.from_model(model).groups
    before = stats.snapshot_weights(group)
    expected = [p.detach().clone() for p in group.params]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for copy, value, param in zip(before, expected, group.params, strict=True):
        assert copy.shape == (param.numel(),) and copy.dtype == param.dtype  # small tensors: read whole
        assert torch.equal(copy, value.reshape(-1))


def test_update_ratio_of_a_large_tensor_is_estimated_from_a_stride_sample():
    """A tensor of more than UPDATE_MIN_STRIDE x UPDATE_SAMPLE_NUMEL elements is read at a stride: the copy is small, the sums are scaled
    to the whole tensor (also beside a small tensor in the same layer), and zeros stay exact."""
    from gradwatch.agents import stats
    from gradwatch.agents.layout import UPDATE_SAMPLE_NUMEL, LayerLayout

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4096, 1100), torch.nn.Linear(1100, 8))  # 4,505,600 + 1,100
    for p in model.parameters():
        p.requires_grad_(False)
    (group,) = LayerLayout.from_model(model).groups
    assert group.update_stride[0] == 69 and group.update_stride[1:] == (1, 1, 1)
    before = stats.snapshot_weights(group)
    assert sum(t.numel() for t in before) < 3 * UPDATE_SAMPLE_NUMEL  # not a copy of the 1M weights
    exact_before = [p.detach().clone() for p in model.parameters()]
    # Adam-like steps: every element moves by lr times a factor between 0.5 and 1.5; the second layer's
    # weight not at all (frozen), its bias by a constant.
    with torch.no_grad():
        model[0].weight.add_(torch.empty_like(model[0].weight).uniform_(0.5, 1.5) * 1e-3)
        model[0].bias.add_(torch.empty_like(model[0].bias).uniform_(-1.5, 1.5) * 1e-3)
        model[1].bias.add_(0.25)
    out = stats.update_sumsq(group, before, 2).double()
    after = [p.detach() for p in model.parameters()]
    delta = [(a - b).double().pow(2).sum() for a, b in zip(after, exact_before, strict=True)]
    weight = [b.double().pow(2).sum() for b in exact_before]
    assert out[0, 0].item() == pytest.approx((delta[0] + delta[1]).item(), rel=0.03)
    assert out[1, 0].item() == pytest.approx((weight[0] + weight[1]).item(), rel=0.03)
    assert out[0, 1].item() == pytest.approx(delta[3].item(), rel=1e-5)  # read whole: exact
    assert out[1, 1].item() == pytest.approx((weight[2] + weight[3]).item(), rel=1e-5)


def test_the_update_witness_tells_only_on_a_cpu():
    from gradwatch.agents.witness import UpdateWitness

    weight = nn.Parameter(torch.zeros(3))
    witness = UpdateWitness([weight])
    assert witness.moved() is False  # first look
    assert witness.moved() is False
    with torch.no_grad():
        weight.add_(1e-7)
    assert witness.moved() is True and witness.moved() is False
    with torch.no_grad():
        weight.add_(1.0)
    witness.remember()  # a step the optimizer took: the comparison starts from here
    assert witness.moved() is False
    with torch.no_grad():
        weight.sub_(1.0)
    assert witness.moved() is True
    weight.data = torch.zeros(5)  # replaced by a tensor of another shape: a fresh copy, no error
    witness.remember()
    assert witness.moved() is False
    assert UpdateWitness([nn.Parameter(torch.zeros(3, device="meta"))]).moved() is None


def test_on_a_cpu_the_weights_max_abs_is_measured_every_fourth_statistics_step_and_carried_between():
    from gradwatch.agents import stats

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def spoil(optimizer, args, kwargs):  # registered first: runs before the monitor reads the weights
        if len(truth) == 6:  # not a measuring step: a NaN weight brings the max-abs back on its own step
            with torch.no_grad():
                model[1].weight[0, 2] = math.nan

    optimizer.register_step_post_hook(spoil)
    mon, recorder = _monitor(model, optimizer, stats_every=1)
    truth = []
    for _ in range(7):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        truth.append([m.weight.abs().max().item() for m in model])  # each layer's max-abs (weights > biases here)
        mon.step(1.0)
    mon.close()
    seen = [s["layers"]["weight_max_abs"] for s in recorder.steps]
    every = stats.WEIGHT_MAX_ABS_EVERY_CPU
    for step in range(6):
        measured_at = step - step % every
        assert seen[step] == pytest.approx(truth[measured_at], rel=1e-6), step
    assert seen[6][0] == pytest.approx(truth[6][0]) and math.isnan(seen[6][1])
    assert all(math.isfinite(s["layers"]["weight_norm"][0]) for s in recorder.steps)


def test_weight_statistics_without_max_abs_keep_the_exact_sums_of_squares():
    from gradwatch.agents import stats
    from gradwatch.agents.layout import LayerLayout

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    group = LayerLayout.from_model(model).groups[0]
    full, light = stats.weight_stats(group, 2), stats.weight_stats(group, 2, max_abs=False)
    assert torch.allclose(full[0], light[0], rtol=1e-6)
    assert light[1].tolist() == [stats.NOT_MEASURED] * 2


def test_the_carried_weight_max_abs_is_never_a_nan_from_before_nor_a_value_never_measured():
    from gradwatch.agents.pending import CarriedMaxAbs
    from gradwatch.agents.stats import NOT_MEASURED

    carry = CarriedMaxAbs()
    assert carry.fill([NOT_MEASURED, NOT_MEASURED]) == [None, None]  # the measured report was lost
    assert carry.fill([2.0, math.nan]) == [2.0, pytest.approx(math.nan, nan_ok=True)]
    # The run restored its weights: a layer last measured NaN is not measured now, not NaN.
    assert carry.fill([NOT_MEASURED, NOT_MEASURED]) == [2.0, None]
    assert carry.fill([]) == []  # a record without weights leaves the carry alone
    assert carry.fill([NOT_MEASURED, 3.0]) == [2.0, 3.0]


def test_statistics_survive_a_parameter_emptied_after_watch():
    from gradwatch.agents import stats
    from gradwatch.agents.layout import LayerLayout

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    group = LayerLayout.from_model(model).groups[0]
    assert group.plain
    model(torch.randn(2, 4)).sum().backward()
    model[1].bias.data, model[1].bias.grad = torch.zeros(0), torch.zeros(0)  # partitioned away (ZeRO-3 style)
    grads, present, _ = stats.gradient_stats(group, 2)
    assert present == {0, 1} and grads[0, 1].item() == pytest.approx(model[1].weight.grad.pow(2).sum().item())
    for max_abs in (True, False):
        weights = stats.weight_stats(group, 2, max_abs)
        assert weights[0, 1].item() == pytest.approx(model[1].weight.pow(2).sum().item(), rel=1e-5)


def test_statistics_under_a_float64_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        mon, recorder = _monitor(model, optimizer, stats_every=1, update_ratio_every=1)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(2, 4)).sum().backward()
            optimizer.step()
            mon.step(1.0)
        mon.close()
    finally:
        torch.set_default_dtype(previous)
    layers = [s["layers"] for s in recorder.steps]
    assert len(layers) == 3 and all(g > 0 for row in layers for g in row["grad_norm"])
    assert all(u > 0 for row in layers for u in row["update_ratio"])


def test_the_update_witness_starts_over_after_the_model_changes_dtype():
    from gradwatch.agents.witness import UpdateWitness

    weight = nn.Parameter(torch.zeros(3))
    witness = UpdateWitness([weight])
    witness.remember()
    weight.data = torch.full((3,), 0.1, dtype=torch.float64)  # model.double() after watch(): 0.1 is not a float32
    witness.remember()
    assert witness.moved() is False  # a float32 buffer holding float64 values would never compare equal
