"""What one update-ratio sample costs: the stride-sampled copy (the agent's) against a full copy of the weights.

    python benchmarks/update_ratio_cost.py                 # CUDA: gpt-124m and gpt-1.3b
    python benchmarks/update_ratio_cost.py --device cpu --models gpt-tiny

For each model: the snapshot before ``optimizer.step()`` and the two sums after it, timed on the
host (time to enqueue) and on the device (CUDA events), medians of 20. "full copy" copies every
weight and reads the copy and the weights once more (the agent before 2026-11-27: the same code
with every stride 1); "stride sample" is :func:`gradwatch.agents.stats.snapshot_weights` and :func:`~gradwatch.agents.stats.update_sumsq`.
Prints a table; the numbers are quoted in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from benchmarks._models import GPT, GPT_SIZES
from gradwatch.agents import stats
from gradwatch.agents.layout import DeviceGroup, LayerLayout


def whole(group: DeviceGroup) -> DeviceGroup:
    """``group`` with every tensor read whole (stride 1): the full copy, through the same code."""
    ones = (1,) * len(group.params)
    return dataclasses.replace(group, update_stride=ones, update_weight=torch.ones_like(group.update_weight))


def sample(group: DeviceGroup, num_layers: int) -> torch.Tensor:
    return stats.update_sumsq(group, stats.snapshot_weights(group), num_layers)


def measure(fn, group: DeviceGroup, num_layers: int, reps: int) -> tuple[float, float]:
    """Median host ms (enqueueing) and device ms (events; host ms on a CPU)."""
    cuda = group.device.type == "cuda"
    for _ in range(3):
        fn(group, num_layers)
    hosts, devices = [], []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        fn(group, num_layers)
        hosts.append((time.perf_counter() - t0) * 1e3)
        if cuda:
            end.record()
            torch.cuda.synchronize()
            devices.append(start.elapsed_time(end))
    return statistics.median(hosts), statistics.median(devices or hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["gpt-124m", "gpt-1.3b"], choices=sorted(GPT_SIZES))
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    print("| model | tensors | way | host ms | device ms |\n|---|---|---|---|---|")
    for name in args.models:
        model = GPT(GPT_SIZES[name][0]).to(args.device)
        layout = LayerLayout.from_model(model)
        for group in layout.groups:
            for way, read in (("full copy", whole(group)), ("stride sample", group)):
                host, device = measure(sample, read, layout.num_layers, args.reps)
                print(f"| {name} | {len(group.params)} | {way} | {host:.2f} | {device:.2f} |", flush=True)
        del model


if __name__ == "__main__":
    main()
