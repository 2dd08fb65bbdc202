"""What pacing under load does to diagnoses: the evaluation suite replayed through a busy aggregator.

A busy aggregator shard (``paced_above_load``, docs/operations.md) stops
evaluating every report and runs each run's rules at most once per
``evaluate_min_interval``. This benchmark measures what that changes in the
verdicts, with nothing but the rules in the way:

1. every scenario of the suite is trained once with a real agent whose
   transport keeps the report bodies and their arrival times (no service);
2. the reports are fed to two in-process aggregators: one evaluating every
   report as it comes (an idle shard, what ``gradwatch eval`` measures), and
   one paced from the start, taking the reports in batches of what arrived
   within one actor call (``--call-seconds``) at their recorded times, with
   ``evaluate_due`` run after each batch as the front does;
3. the diagnoses of the two are compared: same symptom, onset and step
   detected; onset moved; detected later; missed; or raised only when paced.

    python benchmarks/evaluation_pacing.py --write-docs
    python benchmarks/evaluation_pacing.py --only quick        # the CI subset
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradwatch.agents.monitor import Monitor  # noqa: E402
from gradwatch.agents.options import AgentOptions  # noqa: E402
from gradwatch.evaluation.scenario import Scenario, load_suite  # noqa: E402
from gradwatch.service.aggregator import Aggregator  # noqa: E402
from gradwatch.service.config import ServiceConfig  # noqa: E402
from gradwatch.wire import Report  # noqa: E402

#: The evaluation command's agent setting: reports every 50 ms.
FLUSH_INTERVAL = 0.05
#: Arrival times are replayed as wall-clock times from here (a run never evaluated counts as due).
EPOCH = 1.8e9


@dataclass
class Arrival:
    seconds: float  # since the scenario started
    report: Report


def record(scenario: Scenario, seed: int) -> list[Arrival]:
    """Train ``scenario`` with an agent whose transport keeps each report and when it was sent."""
    arrivals: list[Arrival] = []
    started = time.monotonic()

    def transport(body: bytes, timeout: float) -> tuple[int, str]:
        arrivals.append(Arrival(time.monotonic() - started, Report.model_validate_json(body)))
        return 202, ""

    transport.accepts_packed = False  # type: ignore[attr-defined]
    monitors: list[Monitor] = []

    def watch(model: Any, optimizer: Any = None, **options: Any) -> Monitor:
        options.setdefault("flush_interval", FLUSH_INTERVAL)
        monitor = Monitor(
            model,
            optimizer,
            run=f"pacing-{scenario.name}"[:128],
            endpoint="http://127.0.0.1:1",
            options=AgentOptions.model_validate(options),
            transport=transport,
        )
        monitors.append(monitor)
        return monitor

    torch.manual_seed(seed)
    scenario.train(watch, seed)
    for monitor in monitors:
        monitor.flush(60)
        monitor.close()
    return arrivals


def diagnoses_alone(arrivals: list[Arrival]) -> dict[str, tuple[int, int]]:
    """An idle shard: each report evaluated as it arrives."""
    aggregator = Aggregator(ServiceConfig(paced_above_load=float("inf")))
    for arrival in arrivals:
        aggregator.ingest_many([arrival.report], now=EPOCH + arrival.seconds)
    return _onsets(aggregator, arrivals)


def diagnoses_paced(arrivals: list[Arrival], call_seconds: float) -> dict[str, tuple[int, int]]:
    """A busy shard: batches of what arrived within one call, paced per evaluate_min_interval."""
    aggregator = Aggregator(ServiceConfig(paced_above_load=0))
    batch: list[Arrival] = []
    for arrival in arrivals:
        if batch and arrival.seconds - batch[0].seconds > call_seconds:
            _take(aggregator, batch)
            batch = []
        batch.append(arrival)
    if batch:
        _take(aggregator, batch)
    aggregator.evaluate_due(now=EPOCH + arrivals[-1].seconds + 60.0)  # the front's last round
    return _onsets(aggregator, arrivals)


def _take(aggregator: Aggregator, batch: list[Arrival]) -> None:
    now = EPOCH + batch[-1].seconds
    reports = [a.report for a in batch]
    # A batch of one is evaluated at once even when paced; two copies of nothing keep it a batch.
    aggregator.ingest_many(reports if len(reports) > 1 else reports + [_empty(reports[0])], now=now)
    aggregator.evaluate_due(now=now)


def _empty(report: Report) -> Report:
    return report.model_copy(update={"run": report.run + "-filler", "steps": []})


def _onsets(aggregator: Aggregator, arrivals: list[Arrival]) -> dict[str, tuple[int, int]]:
    items = aggregator.diagnoses(arrivals[0].report.run) or []
    return {d["symptom"]: (d["onset_step"], d["first_detected_step"]) for d in items}


def compare(alone: dict[str, tuple[int, int]], paced: dict[str, tuple[int, int]]) -> list[tuple[str, str, str]]:
    """Per symptom of either: (symptom, outcome, detail)."""
    rows = []
    for symptom in sorted(set(alone) | set(paced)):
        a, p = alone.get(symptom), paced.get(symptom)
        if a is None:
            rows.append((symptom, "only paced", f"onset {p[0]}, detected {p[1]}"))
        elif p is None:
            rows.append((symptom, "missed when paced", f"onset {a[0]}, detected {a[1]}"))
        elif a[0] != p[0]:
            rows.append((symptom, "onset moved", f"onset {a[0]} → {p[0]}, detected {a[1]} → {p[1]}"))
        elif a[1] != p[1]:
            rows.append((symptom, "detected later", f"onset {a[0]}, detected {a[1]} → {p[1]}"))
        else:
            rows.append((symptom, "same", f"onset {a[0]}, detected {a[1]}"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="tests/scenarios", help="scenario folder (default: %(default)s)")
    parser.add_argument("--only", default="", help="a tag (e.g. quick) or comma-separated scenario names")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    parser.add_argument(
        "--call-seconds",
        type=float,
        default=0.1,
        help="reports arriving within this long of a batch's first share its actor call (default: %(default)s)",
    )
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()

    scenarios = load_suite(args.suite)
    if args.only:
        wanted = set(args.only.split(","))
        scenarios = [s for s in scenarios if s.name in wanted or wanted & s.tags]
    if not scenarios:
        parser.error(f"no scenario in {args.suite} matches --only {args.only!r}")
    counts: dict[str, int] = {}
    changed = []
    for i, scenario in enumerate(scenarios, 1):
        print(f"[{i}/{len(scenarios)}] {scenario.name}", file=sys.stderr, flush=True)
        arrivals = record(scenario, args.seed)
        if not arrivals:
            raise SystemExit(f"{scenario.name}: the agent sent nothing")
        for symptom, outcome, detail in compare(
            diagnoses_alone(arrivals), diagnoses_paced(arrivals, args.call_seconds)
        ):
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome != "same":
                changed.append(f"| {scenario.name} | {symptom} | {outcome} | {detail} |")
    outcomes = ("same", "detected later", "onset moved", "missed when paced", "only paced")
    body = "\n".join(
        [
            f"{len(scenarios)} scenarios of `{args.suite}` (seed {args.seed}), each trained once with a real agent "
            f"sending every {FLUSH_INTERVAL * 1000:.0f} ms; its reports fed at their recorded times to an aggregator "
            "evaluating every report (an idle shard) and to one paced from the start (a busy shard: batches of what "
            f"arrived within {args.call_seconds * 1000:.0f} ms, each run evaluated at most every "
            f"{ServiceConfig().evaluate_min_interval} s). Diagnoses compared by symptom, onset step and step detected.",
            "",
            "| outcome | diagnoses |",
            "|---|---|",
            *(f"| {o} | {counts.get(o, 0)} |" for o in outcomes),
            "",
            *(
                ["| scenario | symptom | paced | idle → paced |", "|---|---|---|---|", *changed]
                if changed
                else ["Pacing changed no diagnosis."]
            ),
        ]
    )
    print("\n" + body)
    if args.write_docs:
        from benchmarks._docs import update_section

        command = "python benchmarks/evaluation_pacing.py " + " ".join(sys.argv[1:])
        print("written to", update_section("evaluation-pacing", "Diagnoses on a paced (busy) shard", body, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
