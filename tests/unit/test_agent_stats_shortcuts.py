"""The agent's shortcuts give the plain computation's answers: CPU norms and max-abs, the weights' max-abs read
every fourth statistics step and carried, the update ratio's stride sample and the update witness, and the fast
paths falling back when the model changes after watch()."""

import math

import pytest
import torch
from agent_recording import recording_monitor
from torch import nn


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
    mon, recorder = recording_monitor(model, optimizer, stats_every=1)
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
        mon, recorder = recording_monitor(model, optimizer, stats_every=1, update_ratio_every=1)
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
