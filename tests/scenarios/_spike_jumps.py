"""How far each labelled loss spike of the suite takes its loss: the figure behind loss_spike's min_rel_jump.

docs/rules.md says every labelled spike of the suite more than doubles its loss; this prints, for each run of a
scenario labelled ``loss_spike``, the ``jump_ratio`` of its loss_spike diagnosis (the jump over its baseline:
1.0 = the loss doubled) under the current rules, and the smallest of them.

usage: python tests/scenarios/_spike_jumps.py DIR [--seeds N]

DIR holds the recordings of ``gradwatch eval --seeds N --record DIR`` (about 40 minutes for the whole suite with
three seeds); a run without a recording, or whose spike was missed, is listed as such.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gradwatch.evaluation.replay import replay_run
from gradwatch.evaluation.scenario import load_suite
from gradwatch.service.config import ServiceConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="recordings of `gradwatch eval --record DIR`")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    args = parser.parse_args()
    config = ServiceConfig()
    ratios: list[tuple[float, str]] = []
    for scenario in load_suite(Path(__file__).resolve().parent):
        if "loss_spike" not in scenario.expect:
            continue
        for seed in range(args.seeds):
            outcome = replay_run(scenario, seed, args.directory, config)
            run = f"{scenario.name} (seed {seed})"
            found = outcome.fired.get("loss_spike")
            if outcome.error and not outcome.steps:
                print(f"{run}: {outcome.error.strip().splitlines()[-1]}")
            elif found is None:
                print(f"{run}: no loss_spike diagnosis")
            else:
                ratio = float(found["evidence"]["jump_ratio"])
                ratios.append((ratio, run))
                print(f"{run}: jump_ratio {ratio:.2f} (loss x{1 + ratio:.2f} its baseline)")
    if ratios:
        ratio, run = min(ratios)
        print(f"\nsmallest of {len(ratios)}: {run}, jump_ratio {ratio:.2f} (loss x{1 + ratio:.2f} its baseline)")


if __name__ == "__main__":
    main()
