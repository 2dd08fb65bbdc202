"""The one-pass statistics kernel: the same numbers as the two-norm path, and a failure only falls back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gradwatch.agents import fused, stats
from gradwatch.agents.layout import LayerLayout

ROOT = Path(__file__).resolve().parents[2]

try:
    import triton  # noqa: F401

    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

# Tensors around the chunk size (65,536), several dtypes in one call, a 2-D one, a NaN and an Inf.
CHECK = textwrap.dedent(
    """
    import torch
    from gradwatch.agents import fused
    device = {device!r}
    torch.manual_seed(0)
    tensors = [torch.randn(n, device=device) for n in (1, 7, 65536, 65537, 200001)]
    tensors.append(torch.randn(300, 5, device=device).bfloat16())
    tensors.append(torch.randn(70000, device=device).half())
    layers = [0, 1, 1, 2, 0, 3, 3]
    cases = [(tensors, layers, 5)]
    poisoned = [t.clone() for t in tensors[:3]]
    poisoned[2][40000] = float("nan")
    poisoned[1][3] = float("inf")
    cases.append((poisoned, [0, 1, 2], 3))
    for tensors, layers, num_layers in cases:
        out = fused.per_layer_stats(tensors, layers, num_layers)
        assert out is not None, fused.describe()
        ref = torch.zeros(2, num_layers, dtype=torch.float64)
        for t, layer in zip(tensors, layers):
            t = t.double().cpu()
            ref[0, layer] += (t * t).sum()
            ref[1, layer] = torch.maximum(ref[1, layer], t.abs().max())
        out = out.double().cpu()
        assert out.isnan().equal(ref.isnan()), (out, ref)
        assert torch.allclose(out.nan_to_num(), ref.nan_to_num(), rtol=1e-5), (out, ref)
    # The update ratio's pass: sum((before - after)^2) and sum(before^2) per layer.
    before = [torch.randn(n, device=device) for n in (5, 65536, 131073)]
    after = [b + 0.01 * torch.randn_like(b) for b in before]
    out = fused.update_sumsq(before, after, [0, 1, 1], 2).double().cpu()
    b, a = [t.double().cpu() for t in before], [t.double().cpu() for t in after]
    ref = torch.tensor(
        [
            [((b[0] - a[0]) ** 2).sum(), ((b[1] - a[1]) ** 2).sum() + ((b[2] - a[2]) ** 2).sum()],
            [(b[0] ** 2).sum(), (b[1] ** 2).sum() + (b[2] ** 2).sum()],
        ]
    )
    assert torch.allclose(out, ref, rtol=1e-5), (out, ref)
    # Addresses unchanged: the chunk table is reused, not rebuilt.
    before = len(fused._cache)
    fused.per_layer_stats(cases[0][0], cases[0][1], 5)
    assert len(fused._cache) == before
    print("ok")
    """
)


@pytest.mark.skipif(not HAVE_TRITON, reason="needs Triton (CUDA builds of torch ship it; `pip install triton` adds it)")
def test_one_pass_kernel_matches_float64_reference_in_triton_interpreter():
    # Triton's interpreter runs the kernel on CPU tensors; it must be chosen before Triton is imported.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(device="cpu")], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_pass_kernel_matches_float64_reference_on_cuda():
    exec(CHECK.format(device="cuda"), {})
    assert fused.describe() == "one pass (Triton)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_statistics_agree_with_and_without_one_pass_kernel():
    model = torch.nn.Sequential(torch.nn.Linear(300, 400), torch.nn.LayerNorm(400), torch.nn.Linear(400, 3)).cuda()
    model(torch.randn(8, 300, device="cuda")).sum().backward()
    layout = LayerLayout.from_model(model)
    group = layout.groups[0]
    one_pass, _, _ = stats.gradient_stats(group, layout.num_layers)
    fused._state["disabled"] = True
    try:
        two_norms, _, _ = stats.gradient_stats(group, layout.num_layers)
    finally:
        fused._state["disabled"] = False
    assert torch.allclose(one_pass, two_norms, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampled_update_ratio_agrees_with_and_without_one_pass_kernel():
    # 4,505,600 weights: read at a stride of 69 (a contiguous copy of the strided view feeds the kernel).
    model = torch.nn.Sequential(torch.nn.Linear(4096, 1100), torch.nn.Linear(1100, 3)).cuda()
    layout = LayerLayout.from_model(model)
    group = layout.groups[0]
    assert group.update_stride[0] > 1
    steps = [torch.randn_like(p) * 1e-3 for p in model.parameters()]
    sums = []
    for disabled in (False, True):  # the same step twice: the one-pass kernel, then two foreach norms
        fused._state["disabled"] = disabled
        try:
            before = stats.snapshot_weights(group)
            with torch.no_grad():
                torch._foreach_add_(list(model.parameters()), steps)
            sums.append(stats.update_sumsq(group, before, layout.num_layers))
            with torch.no_grad():
                torch._foreach_sub_(list(model.parameters()), steps)
        finally:
            fused._state["disabled"] = False
    assert sums[0].isfinite().all() and (sums[0] > 0).all()
    assert torch.allclose(sums[0], sums[1], rtol=1e-3)
    exact = sum((s.double() ** 2).sum() for s in steps[:2])  # layer 0's whole update
    assert sums[0][0, 0].item() == pytest.approx(exact.item(), rel=0.03)


def test_a_failing_kernel_switches_itself_off_and_the_caller_falls_back(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets the CPU take the kernel path
    monkeypatch.setitem(fused._state, "disabled", False)
    monkeypatch.setitem(fused._state, "aligned", True)
    monkeypatch.setitem(fused._state, "why", "")
    monkeypatch.setattr(fused, "_cache", type(fused._cache)())

    class Launcher:
        def __getitem__(self, grid):
            return broken

    monkeypatch.setitem(fused._state, "kernel", Launcher())
    with caplog.at_level("INFO", logger="gradwatch"):
        assert fused.per_layer_stats([torch.ones(10)], [0], 1) is None
    assert fused._state["disabled"] and "no compiler here" in fused.describe()
    assert "one-pass statistics kernel off" in caplog.text
    # Off for good: later calls do not try again.
    assert fused.per_layer_stats([torch.ones(10)], [0], 1) is None


def test_unsupported_tensors_take_the_two_norm_path(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(fused._state, "disabled", False)
    monkeypatch.setitem(fused._state, "kernel", object())  # never launched for these
    assert fused.per_layer_stats([torch.ones(4, dtype=torch.float64)], [0], 1) is None
    assert fused.per_layer_stats([torch.ones(4, 4).t()[:, :2]], [0], 1) is None  # not contiguous
    assert fused.per_layer_stats([], [], 1) is None
