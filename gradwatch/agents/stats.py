"""Per-layer gradient and weight statistics with fused multi-tensor kernels.

Every function here only *enqueues* device work and returns device tensors;
nothing calls ``.item()``, ``.cpu()`` or synchronises. On a GPU with Triton a
layer's sum of squares and max-abs come from one pass (:mod:`.fused`), else
from two fused multi-tensor norms. The monitor gathers the
results of a whole report into one tensor and copies it to the host once.

Per layer we keep the sum of squares (not the norm) until the end, so that a
layer's norm over several tensors, or later over several shards, is exact:
||w|| = sqrt(sum over tensors of ||w_i||^2). Max-abs decides whether a layer
holds a NaN/Inf; an L2 norm can overflow to inf on finite values.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from gradwatch.agents import fused
from gradwatch.agents.distributed import local_tensor
from gradwatch.agents.layout import DeviceGroup

_INF = float("inf")


def _as_real(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Complex tensors as (..., 2) real views: the same L2 norm, and a max-abs that still sees NaN/Inf.

    The float32 norms below refuse complex inputs; without this a model with
    one complex parameter would lose all its statistics.
    """
    if not any(t.is_complex() for t in tensors):
        return tensors
    return [torch.view_as_real(t.resolve_conj()) if t.is_complex() else t for t in tensors]


def _per_layer(
    group: DeviceGroup, tensors: list[torch.Tensor], param_layers: list[int], num_layers: int, plain: bool = False
) -> torch.Tensor:
    """Shape (2, L): per-layer sum of squares and max-abs of ``tensors``.

    Layers with no tensor in ``tensors`` get 0 and 0; the caller knows which
    layers were present and masks them on the host. ``plain``: the caller vouches
    that every tensor is real and non-empty (no per-tensor check).
    """
    device = group.device
    if not plain and any(t.numel() == 0 for t in tensors):
        # An empty tensor (a rank's empty FSDP shard of a small parameter) adds
        # nothing, and the fused max-abs kernel refuses it.
        kept = [(t, layer) for t, layer in zip(tensors, param_layers, strict=True) if t.numel()]
        tensors, param_layers = [t for t, _ in kept], [layer for _, layer in kept]
    if not tensors:
        return torch.zeros(2, num_layers, device=device, dtype=torch.float32)
    if device.type != "cpu":
        one_pass = fused.per_layer_stats(tensors, param_layers, num_layers)
        if one_pass is not None:
            return one_pass
    norms, max_abs = _norms_and_max_abs(tensors if plain else _as_real(tensors))
    if len(tensors) == len(group.params):
        index = group.layer_index
    else:
        index = torch.tensor(param_layers, dtype=torch.long).to(device, non_blocking=True)
    out = torch.zeros(2, num_layers, device=device, dtype=torch.float32)
    out[0].index_add_(0, index, norms * norms)
    out[1].scatter_reduce_(0, index, max_abs, "amax", include_self=True)
    return out


def _norms_and_max_abs(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tensor L2 norm and max |x| (NaN when it holds one), both float32, shape (N,).

    The norm is one fused multi-tensor kernel everywhere. Max-abs is another on
    accelerators; on the CPU that kernel (the inf-norm) is not vectorised,
    about 10x slower than the L2 norm, while ``aminmax`` is: max |x| =
    max(|min|, |max|), and NaN propagates through both. Its per-tensor results
    are combined in whole-vector operations, not per tensor (small operations
    cost ~8 us each on a CPU, more than reducing a 100k-element tensor).
    """
    norms = _fused_norms(tensors, 2)
    if tensors[0].device.type != "cpu":
        return norms, _fused_norms(tensors, _INF)
    try:
        extremes = [torch.aminmax(t) for t in tensors]
    except RuntimeError:  # a dtype aminmax does not take
        return norms, torch.stack([t.abs().max().float() for t in tensors])
    # (min, max) of each tensor side by side, in one stack: max-abs is the larger magnitude of the two.
    low_high = torch.stack([bound for pair in extremes for bound in pair]).view(len(tensors), 2)
    return norms, low_high.abs().amax(dim=1).float()


def _fused_norms(tensors: list[torch.Tensor], order: float) -> torch.Tensor:
    """One multi-tensor norm kernel, accumulated in float32 (the kernel may not narrow float64: cast after)."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.stack(torch._foreach_norm(tensors, order)).float()
    return torch.stack(torch._foreach_norm(tensors, order, dtype=torch.float32))


def gradient_stats(
    group: DeviceGroup, num_layers: int, trained: frozenset[int] = frozenset()
) -> tuple[torch.Tensor, set[int], set[int]]:
    """Per-layer gradient (sum of squares, max-abs), the layers that had a gradient, and the layers with a
    parameter in ``trained`` (ids of the parameters the optimizer holds) that requires a gradient and has none.

    Sparse gradients are densified on their values only (their norm is the norm
    of the stored values). A parameter frozen with ``requires_grad_(False)`` has
    no gradient this step even when its ``.grad`` still holds one from before it
    was frozen (a model trained, then frozen for a linear probe, in one process).
    """
    if group.plain:
        # The usual step: every parameter trained and given a dense gradient. Checked in one pass over
        # the tensors, then they go to the kernels as they are (no per-tensor Python work besides).
        fresh = [param.grad if param.requires_grad else None for param in group.params]
        if not any(grad is None or grad.is_sparse for grad in fresh):
            try:
                with torch.no_grad():
                    dense = cast(list[torch.Tensor], fresh)
                    values = _per_layer(group, dense, list(group.layer_of_param), num_layers, plain=True)
                return values, set(group.layers), set()
            except RuntimeError:  # a parameter changed since watch() (emptied, made complex): the general path
                pass
    grads: list[torch.Tensor] = []
    layers: list[int] = []
    wanting: set[int] = set()
    for param, layer in zip(group.params, group.layer_of_param, strict=True):
        grad = param.grad
        if grad is None or not param.requires_grad:
            if grad is None and param.requires_grad and id(param) in trained:
                wanting.add(layer)
            continue
        grad = local_tensor(grad)
        if grad.is_sparse:
            grad = grad.coalesce().values()
        grads.append(grad.detach())
        layers.append(layer)
    return _per_layer(group, grads, layers, num_layers), set(layers), wanting


#: Max-abs of the weights "not measured on this step" (a max-abs is never negative).
NOT_MEASURED = -1.0
#: On a CPU the weights' max-abs is read on every this many statistics steps. It costs a second pass
#: over every weight (~0.4 ms for the 2.2M weights of benchmarks/hook_costs.py, 1% of its step), feeds no rule but the
#: NaN/Inf check, which the sum of squares decides as well (a NaN/Inf weight makes it NaN/Inf, and a
#: non-finite sum brings the max-abs back on its step), and weights move by about 1e-3 of themselves a
#: step. On accelerators the one-pass kernel gives it with the norm, so it is read every time.
WEIGHT_MAX_ABS_EVERY_CPU = 4


def weight_stats(group: DeviceGroup, num_layers: int, max_abs: bool = True) -> torch.Tensor:
    """Per-layer weight (sum of squares, max-abs). ``max_abs=False`` on a CPU group: row 1 is
    :data:`NOT_MEASURED` unless a sum of squares is not finite (then it is measured)."""
    if group.plain:
        try:
            with torch.no_grad():  # the parameters as they are: no detached view made per tensor
                if not max_abs and group.device.type == "cpu":
                    sumsq = _fused_norms(list(group.params), 2).square()
                    if bool(sumsq.isfinite().all()):  # a host read, free on a CPU
                        out = torch.full((2, num_layers), NOT_MEASURED, dtype=torch.float32, device=group.device)
                        out[0].zero_().index_add_(0, group.layer_index, sumsq)
                        return out
                return _per_layer(group, list(group.params), list(group.layer_of_param), num_layers, plain=True)
        except RuntimeError:  # a parameter changed since watch() (emptied, made complex): the general path
            pass
    weights = [local_tensor(p.detach()) for p in group.params]
    return _per_layer(group, weights, list(group.layer_of_param), num_layers)


#: Gradients checked for NaN/Inf on every step, not only on statistics steps: the
#: small tensors (biases, norm scales, gates, temperatures), in model order, up to
#: a total size. A NaN/Inf that arises in the backward pass flows on to every
#: layer nearer the input, and such layers' biases and norm scales sum it over the
#: batch; a singular derivative of a parameter of its own (sqrt(0) of a gate) is
#: one of these small tensors. Reading them costs microseconds, where reading
#: every gradient each step would cost the statistics step's time again.
SENTINEL_MAX_NUMEL = 8192
SENTINEL_MAX_TOTAL = 1 << 20


def sentinel_params(group: DeviceGroup) -> list[torch.Tensor]:
    """The small trainable tensors of ``group`` whose gradients are checked every step."""
    picked: list[torch.Tensor] = []
    total = 0
    for param in group.params:
        size = param.numel()
        if param.requires_grad and 0 < size <= SENTINEL_MAX_NUMEL and total + size <= SENTINEL_MAX_TOTAL:
            picked.append(param)
            total += size
    return picked


def nonfinite_sentinel(params: list[torch.Tensor]) -> torch.Tensor | float | None:
    """0 when the gradients of ``params`` are finite, NaN when one holds NaN/Inf; None without gradients.

    On an accelerator a 0-dim device tensor, enqueued and not read: one fused
    max-abs kernel and two tiny reductions (max-abs, unlike a sum of squares,
    cannot overflow on finite values; times 0 it is 0, while inf * 0 and
    NaN * 0 are NaN). On a CPU, where reading a result costs no synchronisation
    and small kernels cost microseconds each, a number: the sum of all the
    gradients in one buffer, and an element-wise check only when that sum is
    not finite (it can overflow, in float16 easily, on finite values).
    """
    dense = [grad for param in params if (grad := param.grad) is not None]
    if not dense:
        return None
    if dense[0].device.type == "cpu":
        # Right after the backward every tensor touched is cold: each step of Python per tensor shows,
        # so the usual case (plain dense real gradients) goes straight to one buffer.
        try:
            flat = torch.cat([grad if grad.dim() == 1 else grad.reshape(-1) for grad in dense])
            if not flat.is_complex() and flat.layout == torch.strided:
                return _cpu_nonfinite(flat)
        except Exception:  # noqa: BLE001 - a sparse or sharded gradient among them: the general path below
            pass
    grads = _as_real([local_tensor(g) for g in dense if not g.is_sparse])
    if not grads:
        return None
    if grads[0].device.type != "cpu":
        return _fused_norms(grads, _INF).amax().mul(0.0)
    return _cpu_nonfinite(torch.cat([g.reshape(-1) for g in grads]))


def _cpu_nonfinite(flat: torch.Tensor) -> float:
    """0.0 when every element of ``flat`` is finite, else NaN."""
    if math.isfinite(flat.sum().item()):
        return 0.0
    return 0.0 if bool(flat.isfinite().all()) else math.nan


def _update_samples(group: DeviceGroup) -> list[torch.Tensor]:
    """Each parameter, flat, at its update stride: views, not copies (a non-contiguous one is copied whole)."""
    flat = [local_tensor(p.detach()).reshape(-1) for p in group.params]
    return [t if k == 1 else t[::k] for t, k in zip(flat, group.update_stride, strict=True)]


def _copies(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Contiguous copies of ``tensors``: one flat buffer (``torch.cat``) seen as one view per tensor when
    they share a dtype. One allocation instead of one per tensor; on a CPU each fresh allocation is
    paid in page faults (1.0 ms instead of 4.9 ms for the 52 tensors of the benchmark model)."""
    if len({t.dtype for t in tensors}) != 1:
        return [t.clone(memory_format=torch.contiguous_format) for t in tensors]
    flat = torch.cat(tensors)
    return list(flat.split([t.numel() for t in tensors]))


def snapshot_weights(group: DeviceGroup) -> list[torch.Tensor]:
    """A temporary copy of the weights the update ratio reads (flat, sampled at each one's update
    stride), held only across one optimizer step."""
    return _copies(_update_samples(group))


def update_sumsq(group: DeviceGroup, before: list[torch.Tensor], num_layers: int) -> torch.Tensor:
    """Shape (2, L): per-layer sum of squares of (before - after), and of before.

    Each tensor's sums are over its sampled elements, times its stride: an estimate
    of the whole tensor's. On a GPU with Triton, one pass reads each of the two
    once; else ``before`` is consumed (overwritten in place) to avoid a second copy.
    """
    device = group.device
    after = _update_samples(group)
    per_param: torch.Tensor | None = None
    if device.type != "cpu":
        sampled = [i for i, k in enumerate(group.update_stride) if k > 1]
        if sampled:  # the kernel reads contiguous tensors
            for i, copy in zip(sampled, _copies([after[i] for i in sampled]), strict=True):
                after[i] = copy
        per_param = fused.update_sumsq(before, after, list(range(len(after))), len(after))
    if per_param is None:
        before_norms = _fused_norms(_as_real(before), 2)
        torch._foreach_sub_(before, after)
        delta_norms = _fused_norms(_as_real(before), 2)
        per_param = torch.stack([delta_norms * delta_norms, before_norms * before_norms])
    out = torch.zeros(2, num_layers, device=per_param.device, dtype=torch.float32)
    out.index_add_(1, group.layer_index, per_param * group.update_weight)
    return out
