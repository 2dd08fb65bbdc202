"""What each piece of the agent's hook work costs where it runs: right after a training step.

The benchmark MLP trains on a CPU; between steps one piece of work is timed by thread clock, either
in place (right after a forward, backward and optimizer step, where the hooks run, with the caches
the step left) or warm (the same call repeated back to back). Prints the median of each, so the
difference between a small operation's cost in place and on warm caches can be read off directly.

    python benchmarks/hook_costs.py              # 60 steps per piece
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._models import make_workload  # noqa: E402
from gradwatch.agents import stats  # noqa: E402
from gradwatch.agents.layout import LayerLayout  # noqa: E402
from gradwatch.agents.witness import UpdateWitness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per piece (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    w = make_workload("mlp", "cpu")
    group = LayerLayout.from_model(w.model).groups[0]
    layers = max(group.layer_of_param) + 1
    sentinels = stats.sentinel_params(group)
    witness = UpdateWitness(sentinels)
    witness.remember()
    # Each piece reads the gradients (timed before optimizer.step, as the pre-step hook) or not.
    pieces: dict[str, tuple[bool, Callable[[], object]]] = {
        "an empty call": (False, lambda: None),
        "one gradient's sum().item()": (True, lambda: group.params[-1].grad.sum().item()),  # type: ignore[union-attr]
        "every-step gradient check": (True, lambda: stats.nonfinite_sentinel(sentinels)),
        "gradient statistics": (True, lambda: stats.gradient_stats(group, layers)),
        "weight statistics": (False, lambda: stats.weight_stats(group, layers)),
        "weight statistics without max-abs": (False, lambda: stats.weight_stats(group, layers, max_abs=False)),
        "update witness, remember": (False, witness.remember),
        "update witness, compare": (False, witness.moved),
    }
    in_place: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(args.steps):
        for name, (needs_grads, piece) in pieces.items():
            w.forward_backward()
            if not needs_grads:
                w.optimizer.step()
            started = time.thread_time()
            piece()
            in_place[name].append(time.thread_time() - started)
            if needs_grads:
                w.optimizer.step()
            w.optimizer.zero_grad(set_to_none=True)
    w.forward_backward()
    print(f"{w.tensors} parameter tensors, {w.parameters / 1e6:.1f} M parameters; {len(sentinels)} checked every step")
    print("| piece | in place (ms) | warm (ms) |\n|---|---|---|")
    for name, (_, piece) in pieces.items():
        warm = []
        for _ in range(args.steps):
            started = time.thread_time()
            piece()
            warm.append(time.thread_time() - started)
        print(f"| {name} | {statistics.median(in_place[name]) * 1e3:.3f} | {statistics.median(warm) * 1e3:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
