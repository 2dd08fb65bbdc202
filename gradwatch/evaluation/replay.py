"""Record a suite's reports once, then score rule changes on them in minutes (``gradwatch eval --record/--replay``).

Training every scenario with three seeds through the real path takes about half an hour, and a
change to a rule changes nothing the agents send. ``--record DIR`` trains each run once with a
transport that keeps every report body, as the agent would post it, paced as the evaluation paces
delivery; ``--replay DIR`` feeds the kept bodies to an aggregator in this process and scores what
it says. The rules and the aggregator are the real ones; HTTP, Ray and the timing of delivery are
not, so a replayed verdict can differ from the real path's by a report. The numbers in the docs
come from the real path (``gradwatch eval --output``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions
from gradwatch.evaluation.runner import Outcome, train_watched
from gradwatch.evaluation.scenario import Scenario
from gradwatch.service.aggregator import Aggregator, IngestRefused
from gradwatch.service.config import ServiceConfig
from gradwatch.wire import Report

#: The run name every recorded report carries (each recording is replayed into an aggregator of its own).
RUN = "replay"


class _Keeper:
    """A transport that keeps every body it is handed and answers as the service would."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, body: bytes, timeout: float) -> tuple[int, str]:
        with self._lock:
            self.bodies.append(body.decode())
        return 202, "{}"


def recording_path(directory: Path, scenario: str, seed: int) -> Path:
    return directory / f"{scenario}_s{seed}.json"


def record_run(scenario: Scenario, seed: int, directory: Path, deliver_every: int) -> Outcome:
    """Train one run, keep its report bodies in ``directory``; the outcome has nothing fired yet."""
    keeper = _Keeper()
    trained = train_watched(
        scenario,
        seed,
        lambda model, optimizer, options: Monitor(
            model, optimizer, run=RUN, endpoint="http://127.0.0.1:1", options=AgentOptions(**options), transport=keeper
        ),
        deliver_every,
    )
    error, val_losses, wall = trained.error, trained.val_losses, trained.wall_seconds
    kept = {"bodies": keeper.bodies, "val_losses": val_losses, "error": error, "wall_seconds": wall}
    recording_path(directory, scenario.name, seed).write_text(json.dumps(kept))
    return Outcome(scenario.name, seed, RUN, wall, 0, {}, error, val_losses)


def replay_run(scenario: Scenario, seed: int, directory: Path, config: ServiceConfig) -> Outcome:
    """Feed one recording to a fresh aggregator that evaluates every report; the outcome it gives."""
    path = recording_path(directory, scenario.name, seed)
    if not path.exists():
        return Outcome(scenario.name, seed, RUN, 0.0, 0, {}, f"no recording at {path} (record it with --record)")
    kept = json.loads(path.read_text())
    aggregator = Aggregator(config.model_copy(update={"paced_above_load": float("inf")}))
    # Named as the real path names its runs, so that a config's [[run_rules]] select the same ones.
    run = f"eval-replay-{scenario.name}-s{seed}"[:128]
    error, steps, now = kept["error"], 0, 1e9
    for body in kept["bodies"]:
        # Each report a little later than the last, past evaluate_min_interval: evaluated as it arrives.
        now += 10.0
        try:
            report = Report.model_validate_json(body).model_copy(update={"run": run})
            aggregator.ingest(report, now=now)
            steps += len(report.steps)
        except (ValueError, IngestRefused) as exc:
            error = (error or "") + f"\na recorded report was refused: {exc}"
    aggregator.evaluate_due(now=now + 1e3)
    fired = {item["symptom"]: item for item in aggregator.diagnoses(run) or []}
    val_losses = [(int(step), float(value)) for step, value in kept["val_losses"]]
    return Outcome(scenario.name, seed, run, float(kept["wall_seconds"]), steps, fired, error, val_losses)


def replay_suite(
    scenarios: list[Scenario],
    seeds: list[int],
    directory: Path,
    config: ServiceConfig,
    progress: Callable[[int, int, Scenario, int, Outcome | None], None] | None = None,
    record: bool = False,
    deliver_every: int = 5,
) -> list[Outcome]:
    """Every scenario with every seed, in order (recorded first when ``record``); ``progress`` as in run_suite."""
    directory.mkdir(parents=True, exist_ok=True)
    total, outcomes = len(scenarios) * len(seeds), []
    for index, (scenario, seed) in enumerate(((s, seed) for s in scenarios for seed in seeds), start=1):
        if progress is not None:
            progress(index, total, scenario, seed, None)
        if record:
            record_run(scenario, seed, directory, deliver_every)
        outcome = replay_run(scenario, seed, directory, config)
        outcomes.append(outcome)
        if progress is not None:
            progress(index, total, scenario, seed, outcome)
    return outcomes
