"""Sum of squares and max-abs of many tensors in one pass, with one Triton kernel per dtype.

On a GPU, per-layer statistics are bound by memory bandwidth: the floor is reading every
gradient and weight once. ``torch._foreach_norm`` computes one reduction per pass, so a norm
and a max-abs read everything twice. This kernel reads each element once and produces both;
in its other mode it gives the update ratio's two sums, sum(before^2) and sum((before -
after)^2), reading the weight copy and the weights once each (instead of a norm, a subtraction
in place and a second norm). On an H200 with a 1.3B GPT it reads gradients and weights at the
device's bandwidth, 2.6x faster than two foreach norms (``benchmarks/agent_overhead.py --device
cuda``, results in docs/benchmarks.md).

The tensors are cut into chunks of :data:`CHUNK` elements; a table of (address, length, layer)
per chunk is built on the host, copied to the device once and reused while the tensors keep
their addresses (gradients freed by ``zero_grad(set_to_none=True)`` are usually handed the same
blocks again by PyTorch's caching allocator). Each program reduces one chunk; the per-chunk
results are combined per layer with ``index_add_`` / ``scatter_reduce_``.

Anything this module cannot do (no Triton, a dtype or layout it does not take, a failure to
compile) makes :func:`per_layer_stats` return None, and the caller falls back to the
``torch._foreach_norm`` path; a failure switches the kernel off for the process and is logged
once, so a training job never sees it. ``GRADWATCH_FUSED=0`` switches it off from the start.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import torch

log = logging.getLogger("gradwatch")

#: Elements one program reduces: BLOCK per iteration, ITERS iterations (65,536: 256 KB of float32).
BLOCK = 2048
ITERS = 32
CHUNK = BLOCK * ITERS
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Chunk tables kept (gradients and weights of a few device groups).
_CACHE_SIZE = 8
_cache: OrderedDict[tuple, tuple[torch.Tensor, bool]] = OrderedDict()
_state: dict[str, Any] = {"kernel": None, "disabled": os.environ.get("GRADWATCH_FUSED", "1") == "0"}


def _build_kernel() -> Any:
    import triton  # type: ignore[import-untyped]
    import triton.language as tl  # type: ignore[import-untyped]

    @triton.jit(do_not_specialize=["n_chunks"])
    def one_pass(
        table_a,
        table_b,
        n_chunks,
        like,
        first_out,
        second_out,
        BLOCK: tl.constexpr,
        ITERS: tl.constexpr,
        ALIGNED: tl.constexpr,
        DELTA: tl.constexpr,
    ):
        # Per chunk: sum(a^2) and max|a|, or with DELTA sum(a^2) and sum((a - b)^2).
        pid = tl.program_id(0)
        a_base = tl.load(table_a + pid).to(like.dtype)
        b_base = tl.load(table_b + pid).to(like.dtype)
        if ALIGNED:  # every chunk starts on 16 bytes: lets the compiler use vector loads
            a_base = tl.multiple_of(a_base, 16)
            b_base = tl.multiple_of(b_base, 16)
        length = tl.load(table_a + n_chunks + pid)
        first = tl.zeros([BLOCK], dtype=tl.float32)
        second = tl.zeros([BLOCK], dtype=tl.float32)
        for i in range(ITERS):
            offsets = i * BLOCK + tl.arange(0, BLOCK)
            mask = offsets < length
            a = tl.load(a_base + offsets, mask=mask, other=0.0).to(tl.float32)
            first += a * a
            if DELTA:
                d = a - tl.load(b_base + offsets, mask=mask, other=0.0).to(tl.float32)
                second += d * d
            else:
                second = tl.maximum(second, tl.abs(a))
        tl.store(first_out + pid, tl.sum(first, axis=0))
        if DELTA:
            tl.store(second_out + pid, tl.sum(second, axis=0))
        else:
            tl.store(second_out + pid, tl.max(second, axis=0))

    return one_pass


def available(device: torch.device) -> bool:
    """Whether the kernel may run on ``device`` (CUDA with Triton, or Triton's CPU interpreter)."""
    if _state["disabled"]:
        return False
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    if _state["kernel"] is None:
        try:
            _state["kernel"] = _build_kernel()
        except Exception as exc:  # noqa: BLE001 - no Triton, or one that does not work here
            _disable(f"Triton is not usable ({type(exc).__name__}: {exc})")
            return False
    return True


def describe() -> str:
    """Which path statistics take, for benchmarks and logs."""
    if _state["disabled"]:
        return "two torch._foreach_norm passes (one-pass kernel off" + (
            f": {_state['why']})" if "why" in _state else ")"
        )
    return "one pass (Triton)" if _state["kernel"] is not None else "one pass (Triton) when first used on a GPU"


def _disable(why: str) -> None:
    _state["disabled"] = True
    _state["why"] = why
    log.info("gradwatch: one-pass statistics kernel off, using two torch._foreach_norm passes: %s", why)


def _chunk_table(tensors: list[torch.Tensor], layers: list[int], device: torch.device) -> tuple[torch.Tensor, bool]:
    """(3, chunks) int64 on ``device``: each chunk's address, element count and layer (built without a
    Python loop per chunk); and whether every tensor starts on 16 bytes (so every chunk does)."""
    key = (
        device,
        tensors[0].dtype,
        tuple(t.data_ptr() for t in tensors),
        tuple(t.numel() for t in tensors),
        tuple(layers),
    )
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached
    address = torch.tensor(key[2], dtype=torch.int64)
    numel = torch.tensor(key[3], dtype=torch.int64)
    chunks = (numel + CHUNK - 1) // CHUNK
    owner = torch.repeat_interleave(torch.arange(len(tensors)), chunks)
    first_chunk = torch.cumsum(chunks, 0) - chunks
    offset = (torch.arange(len(owner)) - first_chunk[owner]) * CHUNK
    table = torch.stack(
        [
            address[owner] + offset * tensors[0].element_size(),
            torch.clamp(numel[owner] - offset, max=CHUNK),
            torch.tensor(layers, dtype=torch.int64)[owner],
        ]
    )
    if device.type == "cuda":
        # From page-locked memory, so the copy is asynchronous (a pageable source may make the driver wait).
        table = table.pin_memory().to(device, non_blocking=True)
    _cache[key] = table, all(address % 16 == 0 for address in key[2])
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return _cache[key]


def _launch(
    tables: tuple[torch.Tensor, torch.Tensor],
    like: torch.Tensor,
    outputs: tuple[torch.Tensor, torch.Tensor],
    aligned: bool,
    delta: bool,
) -> None:
    n_chunks = tables[0].shape[1]
    kernel = _state["kernel"][(n_chunks,)]
    if like.device.type != "cuda":  # Triton's CPU interpreter
        kernel(*tables, n_chunks, like, *outputs, BLOCK=BLOCK, ITERS=ITERS, ALIGNED=aligned, DELTA=delta)
        return
    # Triton launches on the current device: a model spread over several GPUs has a group on each.
    with torch.cuda.device(like.device):
        kernel(*tables, n_chunks, like, *outputs, BLOCK=BLOCK, ITERS=ITERS, ALIGNED=aligned, DELTA=delta, num_warps=8)


def _run(
    inputs: list[list[torch.Tensor]], layers: list[int], delta: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Per chunk (first, second) and the chunks' layers; None (and the kernel off for good) on failure."""
    device = inputs[0][0].device
    try:
        tables, aligned_inputs = zip(*(_chunk_table(tensors, layers, device) for tensors in inputs), strict=True)
        n_chunks = tables[0].shape[1]
        outputs = (
            torch.empty(n_chunks, dtype=torch.float32, device=device),
            torch.empty(n_chunks, dtype=torch.float32, device=device),
        )
        if n_chunks == 0:  # only empty tensors
            return outputs[0], outputs[1], tables[0][2]
        pair = (tables[0], tables[-1])
        aligned = _state.get("aligned", True) and all(aligned_inputs)
        try:
            _launch(pair, inputs[0][0], outputs, aligned, delta)
        except Exception as exc:  # noqa: BLE001 - the alignment hint is the riskier part: once more without it
            if not aligned:
                raise
            _state["aligned"] = False
            log.info("gradwatch: one-pass statistics kernel without alignment hint (%s: %s)", type(exc).__name__, exc)
            _launch(pair, inputs[0][0], outputs, False, delta)
    except Exception as exc:  # noqa: BLE001 - never into the training loop: fall back for good
        _disable(f"{type(exc).__name__}: {exc}")
        return None
    return outputs[0], outputs[1], tables[0][2]


def _usable(tensors: list[torch.Tensor]) -> bool:
    return (
        bool(tensors)
        and available(tensors[0].device)
        and all(t.dtype in _DTYPES and t.is_contiguous() for t in tensors)
    )


def per_layer_stats(tensors: list[torch.Tensor], layers: list[int], num_layers: int) -> torch.Tensor | None:
    """Shape (2, L): per-layer sum of squares and max-abs (NaN where a NaN is), or None when not applicable.

    ``tensors`` share one device; each is read once (one kernel per dtype). Layers with no tensor
    get 0 and 0.
    """
    if not _usable(tensors):
        return None
    out: torch.Tensor | None = None
    for same, their_layers in _by_dtype([tensors], layers):
        part = _run(same, their_layers, delta=False)
        if part is None:
            return None
        sumsq, absmax, chunk_layer = part
        # max() in the kernel may drop a NaN; the sum of squares keeps it (NaN squared and summed stays NaN).
        absmax = torch.where(sumsq.isnan(), sumsq, absmax)
        layer_stats = torch.zeros(2, num_layers, device=sumsq.device, dtype=sumsq.dtype)
        layer_stats[0].index_add_(0, chunk_layer, sumsq)
        layer_stats[1].scatter_reduce_(0, chunk_layer, absmax, "amax", include_self=True)
        if out is None:
            out = layer_stats
        else:  # sums of squares add up; max-abs is the larger (torch.maximum keeps a NaN)
            out[0] += layer_stats[0]
            out[1] = torch.maximum(out[1], layer_stats[1])
    return out


def update_sumsq(
    before: list[torch.Tensor], after: list[torch.Tensor], layers: list[int], num_layers: int
) -> torch.Tensor | None:
    """Shape (2, L): per-layer sum of squares of (before - after), and of before, reading each once; or None."""
    if (
        not _usable(before)
        or not _usable(after)
        or any(b.dtype != a.dtype or b.numel() != a.numel() for b, a in zip(before, after, strict=True))
    ):
        return None
    out = torch.zeros(2, num_layers, device=before[0].device, dtype=torch.float32)
    for (same_before, same_after), their_layers in _by_dtype([before, after], layers):
        part = _run([same_before, same_after], their_layers, delta=True)
        if part is None:
            return None
        before_sumsq, delta_sumsq, chunk_layer = part
        out[0].index_add_(0, chunk_layer, delta_sumsq)
        out[1].index_add_(0, chunk_layer, before_sumsq)
    return out


def _by_dtype(inputs: list[list[torch.Tensor]], layers: list[int]) -> list[tuple[list[list[torch.Tensor]], list[int]]]:
    """``inputs`` (parallel lists of tensors) split by the first list's dtype: one kernel launch each."""
    groups: dict[torch.dtype, tuple[list[list[torch.Tensor]], list[int]]] = {}
    for i, layer in enumerate(layers):
        lists, their_layers = groups.setdefault(inputs[0][i].dtype, ([[] for _ in inputs], []))
        for target, source in zip(lists, inputs, strict=True):
            target.append(source[i])
        their_layers.append(layer)
    return list(groups.values())
