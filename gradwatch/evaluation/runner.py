"""Train scenarios through the real path (agent → HTTP → aggregator) and collect the diagnoses."""

from __future__ import annotations

import json
import math
import time
import traceback
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import gradwatch
from gradwatch.evaluation.scenario import Scenario


@dataclass
class Outcome:
    """What the service said about one scenario trained with one seed."""

    scenario: str
    seed: int
    run: str
    wall_seconds: float
    steps: int
    #: Symptom -> the diagnosis item of GET /v1/runs/{run}/diagnoses.
    fired: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    #: (step, held-out loss) as the scenario passed them to mon.step().
    val_losses: list[tuple[int, float]] = field(default_factory=list)

    def onset(self, label: int | str) -> int | None:
        """The labelled onset as a step; AT_VAL_MINIMUM resolves to this run's lowest held-out loss."""
        if isinstance(label, int):
            return label
        finite = [(v, s) for s, v in self.val_losses if math.isfinite(v)]
        return min(finite)[1] if finite else None


class Recorder:
    """Passes every call to the monitor, noting the held-out losses on the way.

    With ``deliver_every`` > 0, every that many steps it also waits until what was recorded has been
    delivered (and so evaluated): the pace of a job whose steps are slower than the agent's flush
    interval. Without it a tiny CPU model's 300 steps arrive in a few reports, and a diagnosis is
    dated at the newest step of the report it came with, tens of steps after the rule could tell.
    """

    def __init__(self, monitor: Any, val_losses: list[tuple[int, float]], deliver_every: int = 0) -> None:
        self._monitor = monitor
        self._val_losses = val_losses
        self._deliver_every = deliver_every
        self._step = 0

    def step(self, loss: Any = None, *, val_loss: Any = None, **scalars: Any) -> None:
        if val_loss is not None:
            self._val_losses.append((self._step, float(val_loss)))
        self._step += 1
        self._monitor.step(loss, val_loss=val_loss, **scalars)
        if self._deliver_every and self._step % self._deliver_every == 0:
            self._monitor.flush(30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._monitor, name)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@dataclass
class Trained:
    """One scenario trained with one seed: its monitors (flushed and closed), what went wrong, how long."""

    monitors: list[Any]
    val_losses: list[tuple[int, float]]
    error: str | None
    wall_seconds: float


def train_watched(scenario: Scenario, seed: int, make_monitor: Callable[..., Any], deliver_every: int = 0) -> Trained:
    """Train ``scenario`` with ``seed``, each ``watch()`` call served by ``make_monitor(model, optimizer, options)``.

    A scenario that raises is an error of its outcome, not of the evaluation; every monitor is then
    flushed (up to 60 s) and closed, and a report left undelivered is an error too.
    """
    monitors: list[Any] = []
    val_losses: list[tuple[int, float]] = []

    def watch(model: Any, optimizer: Any = None, **options: Any) -> Any:
        options.setdefault("flush_interval", 0.05)
        mon = make_monitor(model, optimizer, options)
        monitors.append(mon)
        return Recorder(mon, val_losses, deliver_every)

    torch.manual_seed(seed)
    started = time.perf_counter()
    error = None
    try:
        scenario.train(watch, seed)
    except Exception:  # noqa: BLE001 - one broken scenario must not end the evaluation
        error = traceback.format_exc(limit=5)
    for mon in monitors:
        if not mon.flush(60):
            error = (error or "") + "\nreports were not all delivered within 60 s"
        mon.close()
    if not monitors:
        error = (error or "") + "\nthe scenario never called watch()"
    return Trained(monitors, val_losses, error, time.perf_counter() - started)


def run_scenario(scenario: Scenario, seed: int, endpoint: str, *, tag: str = "", deliver_every: int = 0) -> Outcome:
    """Train one scenario with one seed against the service at ``endpoint`` (``deliver_every``: see Recorder)."""
    run = f"eval-{tag or uuid.uuid4().hex[:6]}-{scenario.name}-s{seed}"[:128]
    trained = train_watched(
        scenario,
        seed,
        lambda model, optimizer, options: gradwatch.watch(model, optimizer, run=run, endpoint=endpoint, **options),
        deliver_every,
    )
    error, val_losses = trained.error, trained.val_losses
    steps = sum(getattr(m, "delivered", 0) for m in trained.monitors)
    try:
        items = _get_json(f"{endpoint}/v1/runs/{urllib.parse.quote(run, safe='')}/diagnoses") if steps else []
    except OSError as exc:
        items, error = [], (error or "") + f"\ncannot read diagnoses: {exc}"
    return Outcome(
        scenario=scenario.name,
        seed=seed,
        run=run,
        wall_seconds=trained.wall_seconds,
        steps=steps,
        fired={item["symptom"]: item for item in items},
        error=error,
        val_losses=val_losses,
    )


def run_suite(
    scenarios: list[Scenario],
    seeds: list[int],
    endpoint: str,
    progress: Callable[[int, int, Scenario, int, Outcome | None], None] | None = None,
    deliver_every: int = 0,
) -> list[Outcome]:
    """Every scenario with every seed, in order; ``progress`` is told before and after each."""
    tag = uuid.uuid4().hex[:6]
    total = len(scenarios) * len(seeds)
    outcomes = []
    index = 0
    for scenario in scenarios:
        for seed in seeds:
            index += 1
            if progress is not None:
                progress(index, total, scenario, seed, None)
            outcome = run_scenario(scenario, seed, endpoint, tag=tag, deliver_every=deliver_every)
            outcomes.append(outcome)
            if progress is not None:
                progress(index, total, scenario, seed, outcome)
    return outcomes
