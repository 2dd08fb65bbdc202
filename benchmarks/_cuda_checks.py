"""CUDA-only measurements of the agent-overhead benchmark: the read-bandwidth floor, one statistics
pass alone (one-pass kernel vs two foreach norms), and host synchronisations counted per step."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from benchmarks._models import Workload
from benchmarks._variants import Variant, make_every_step, train_step
from gradwatch.agents import stats as agent_stats


def read_floor(w: Workload, reps: int = 10) -> tuple[float, float]:
    """(seconds, bytes/s): the time to read every gradient and weight once at this GPU's read bandwidth.

    The bandwidth is that of one reduction (``sum``) over a contiguous 2 GiB buffer, the best case
    for reading memory; ``torch._foreach_norm`` over hundreds of tensors runs well below it.
    """
    params = list(w.model.parameters())
    total = 2 * sum(p.numel() * p.element_size() for p in params)  # weights + gradients of the same dtype
    buffer = torch.ones(2**29, dtype=torch.float32, device="cuda")
    times = []
    for _ in range(reps + 2):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        buffer.sum()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    bandwidth = buffer.numel() * buffer.element_size() / statistics.median(times[2:])
    del buffer
    return total / bandwidth, bandwidth


def sync_check(w: Workload, steps: int = 6) -> str:
    """Count host synchronisations in bare and in monitored (every step) CUDA steps.

    Under ``set_sync_debug_mode("warn")`` every synchronising call warns; the model itself may
    synchronise (an embedding's backward, say), so what the agent adds is the difference.
    """
    import warnings

    counts: dict[str, int] = {}
    where: list[str] = []
    torch.cuda.synchronize()
    for name, variant in (("bare", Variant("bare", w)), ("gradwatch every step", make_every_step(w))):
        variant.begin()
        train_step(w, variant)  # a fresh monitor's first step builds its layout and buffers
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    train_step(w, variant)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [c for c in caught if "called a synchronizing CUDA operation" in str(c.message)]
        counts[name] = len(syncs)
        if name != "bare":
            where += sorted({f"{Path(c.filename).name}:{c.lineno}" for c in syncs})
        variant.end()
        variant.close()
    added = counts["gradwatch every step"] - counts["bare"]
    summary = (
        f"{added} per {steps} steps (synchronising calls under set_sync_debug_mode('warn'): "
        f"bare {counts['bare']}, every-step monitored {counts['gradwatch every step']})"
    )
    return summary + (f"; monitored steps synchronised at {', '.join(where[:6])}" if added else "")


def stats_pass_time(w: Workload, reps: int = 20) -> dict[str, float]:
    """CUDA seconds of one statistics step's reductions (gradients and weights), one-pass kernel vs two norms.

    Timed with CUDA events around the two calls the monitor makes on a statistics step, after a
    forward and backward each (untimed), so each reading starts from the state training leaves.
    """
    from gradwatch.agents import fused
    from gradwatch.agents.layout import LayerLayout

    layout = LayerLayout.from_model(w.model)
    group = layout.groups[0]
    results: dict[str, float] = {}
    was_disabled = fused._state["disabled"]
    paths = [("two foreach norms", True)] if was_disabled else [("one pass", False), ("two foreach norms", True)]
    for label, disabled in paths:
        fused._state["disabled"] = disabled
        times = []
        for _ in range(reps):
            w.forward_backward()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            agent_stats.gradient_stats(group, layout.num_layers)
            agent_stats.weight_stats(group, layout.num_layers)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
            w.optimizer.zero_grad(set_to_none=True)
        results[label] = statistics.median(times)
    fused._state["disabled"] = was_disabled
    return results


def fused_status() -> str:
    from gradwatch.agents import fused

    return fused.describe()
