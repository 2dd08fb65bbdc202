"""``gradwatch eval``: run a labelled suite through the real service and print the scores."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command's work needs torch and Ray; --help must not wait for them
    from gradwatch.evaluation.runner import Outcome
    from gradwatch.evaluation.scenario import Scenario


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="tests/scenarios", help="directory of scenario files (default: %(default)s)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="run only scenarios with this tag (repeatable)"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="train every scenario with seeds 0..N-1 (default: %(default)s)"
    )
    parser.add_argument(
        "--config", default=None, metavar="FILE", help="service TOML config (rule thresholds) to evaluate"
    )
    parser.add_argument(
        "--output", default=None, metavar="FILE", help="write the Markdown report here (e.g. docs/evaluation.md)"
    )
    parser.add_argument(
        "--deliver-every",
        type=int,
        default=5,
        metavar="STEPS",
        help=(
            "wait for the agent to deliver its reports every STEPS steps, as in a job whose steps are slower "
            "than its flush interval: every rule sees the run grow STEPS steps at a time, and a diagnosis is "
            "dated to within STEPS steps (default: %(default)s, the agent's statistics interval; 0: reports "
            "leave every 50 ms, so a fast CPU run's steps arrive tens at a time)"
        ),
    )
    parser.add_argument(
        "--record",
        default=None,
        metavar="DIR",
        help=(
            "train every run once without a service, keep its reports in DIR, and score them replayed into an "
            "aggregator in this process (for trying rule changes with --replay)"
        ),
    )
    parser.add_argument(
        "--replay",
        default=None,
        metavar="DIR",
        help=(
            "score the reports kept by --record DIR under the current rules and --config, without training: "
            "minutes instead of half an hour; close to the real path, not the same (no HTTP, no Ray), so the "
            "docs' numbers come from a run without it"
        ),
    )
    parser.add_argument("--check", action="store_true", help="exit 1 unless every target is met")


def _select(scenarios: list[Scenario], only: list[str], tags: list[str]) -> list[Scenario]:
    if only:
        unknown = sorted(set(only) - {s.name for s in scenarios})
        if unknown:
            raise SystemExit(f"gradwatch eval: no scenario named {', '.join(unknown)}")
        scenarios = [s for s in scenarios if s.name in only]
    if tags:
        scenarios = [s for s in scenarios if set(tags) & s.tags]
    if not scenarios:
        raise SystemExit("gradwatch eval: the selection is empty")
    return scenarios


def _progress(index: int, total: int, scenario: Scenario, seed: int, outcome: Outcome | None) -> None:
    if outcome is None:
        print(f"[{index:3d}/{total}] {scenario.name} (seed {seed}) ...", end="", flush=True)
        return
    fired = ", ".join(f"{k}@{v['first_detected_step']}" for k, v in sorted(outcome.fired.items())) or "nothing"
    expected = ", ".join(f"{k}@{v}" for k, v in scenario.expect.items()) or "nothing"
    from gradwatch.evaluation.scoring import verdict

    mark = verdict(scenario, outcome)
    print(f" {outcome.wall_seconds:.1f}s  expected {expected}; fired {fired}  [{mark}]", flush=True)
    if outcome.error:
        print(outcome.error, file=sys.stderr)


def run_eval(args: argparse.Namespace, command: str) -> int:
    from gradwatch.evaluation.report import document, plain, scenario_table, symptom_table
    from gradwatch.evaluation.runner import run_suite
    from gradwatch.evaluation.scenario import load_suite
    from gradwatch.evaluation.scoring import score
    from gradwatch.service.config import ConfigError, load_config
    from gradwatch.service.server import BackgroundService, Service

    if not Path(args.suite).exists():
        print(
            f"gradwatch eval: no suite at {args.suite} (run from the repository root, or pass --suite DIR)",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(args.config)
        scenarios = _select(load_suite(args.suite), args.only, args.tag)
    except (ConfigError, ValueError) as exc:
        print(f"gradwatch eval: {exc}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("gradwatch eval: --seeds must be at least 1", file=sys.stderr)
        return 2
    if args.deliver_every < 0:
        print("gradwatch eval: --deliver-every must be 0 (off) or a number of steps", file=sys.stderr)
        return 2
    if args.record and args.replay:
        print("gradwatch eval: --record and --replay exclude each other (--record also scores)", file=sys.stderr)
        return 2
    offline = args.record or args.replay
    if offline and args.output:
        print("gradwatch eval: --output writes the docs' report, which comes from the real path only", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds))
    import torch

    # Tiny models on a shared 2-core machine: one thread each keeps wall times
    # stable (two threads fight the service for the cores and run 30x slower).
    torch.set_num_threads(1)
    logging.getLogger("gradwatch.service").setLevel(logging.ERROR)
    started = time.monotonic()
    if offline:
        from gradwatch.evaluation.replay import replay_suite

        verb = "recording" if args.record else "replaying"
        print(f"gradwatch eval: {len(scenarios)} scenarios x {len(seeds)} seed(s); {verb} {offline} ...", flush=True)
        outcomes = replay_suite(
            scenarios,
            seeds,
            Path(offline),
            config,
            progress=_progress,
            record=bool(args.record),
            deliver_every=args.deliver_every,
        )
    else:
        print(
            f"gradwatch eval: {len(scenarios)} scenarios x {len(seeds)} seed(s); starting the aggregator ...",
            flush=True,
        )
        service = BackgroundService(Service(config, port=0, name="eval")).start()
        try:
            outcomes = run_suite(scenarios, seeds, service.url, progress=_progress, deliver_every=args.deliver_every)
        finally:
            service.stop()
    seconds = time.monotonic() - started
    scores = score(scenarios, outcomes)
    print("\n" + plain(symptom_table(scores)))
    wrong = [row for row in scenario_table(scenarios, scores)[1:] if row[5] != "ok"]
    if wrong:
        print("\nScenarios with a wrong verdict:")
        print(plain([["scenario", "seed", "tags", "labelled", "fired", "verdict", "seconds"], *wrong]))
    print(f"\n{len(outcomes)} runs in {seconds:.0f} s; targets {'met' if scores.meets_targets else 'MISSED'}")
    if args.output:
        Path(args.output).write_text(
            document(scenarios, scores, command=command, seeds=seeds, seconds=seconds, deliver_every=args.deliver_every)
        )
        print(f"report written to {args.output}")
    return 1 if args.check and not scores.meets_targets else 0
