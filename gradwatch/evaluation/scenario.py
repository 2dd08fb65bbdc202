"""A labelled training scenario: plain PyTorch that should (or should not) raise symptoms.

A suite is a directory of Python files, each defining ``SCENARIOS``, a list of
:class:`Scenario`. ``gradwatch eval`` trains every scenario through the real
path (agent → HTTP → aggregator on Ray) and scores the diagnoses against the
labels.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gradwatch.service.rules.view import SYMPTOMS


class WatchFn(Protocol):
    """``gradwatch.watch`` with the run name and endpoint already bound."""

    def __call__(self, model: Any, optimizer: Any = None, **options: Any) -> Any: ...


#: An onset label meaning "the step of this run's lowest held-out loss": where
#: overfitting begins is a property of the run (it moves by a dozen steps from
#: seed to seed), so it is measured on the run rather than guessed.
AT_VAL_MINIMUM = "val_min"

#: train(watch, seed): build the model and optimizer, call ``watch(model,
#: optimizer)`` once, train, calling ``mon.step(loss, val_loss=...)`` after
#: every optimizer step. The harness closes the monitor afterwards.
TrainFn = Callable[[WatchFn, int], None]


@dataclass(frozen=True)
class Scenario:
    """One labelled training run."""

    name: str
    description: str
    train: TrainFn
    #: Symptom -> optimizer step at which the pathology begins (ground truth,
    #: known from how the scenario is built). Empty for a healthy control.
    expect: dict[str, int | str] = field(default_factory=dict)
    #: Symptoms that may fire or not without counting as false alarms (an
    #: explosion that ends in NaN may also spike the loss, say).
    allow: frozenset[str] = frozenset()
    #: Free-form labels: architecture, optimizer, "quick" for the CI subset.
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = (set(self.expect) | set(self.allow)) - set(SYMPTOMS)
        if unknown:
            raise ValueError(f"scenario {self.name!r}: unknown symptom(s) {sorted(unknown)}; use {list(SYMPTOMS)}")
        for symptom, onset in self.expect.items():
            if not (isinstance(onset, int) and onset >= 0) and onset != AT_VAL_MINIMUM:
                raise ValueError(
                    f"scenario {self.name!r}: onset of {symptom} must be a step (int >= 0) or {AT_VAL_MINIMUM!r}"
                )
        if set(self.expect) & set(self.allow):
            raise ValueError(f"scenario {self.name!r}: a symptom cannot be both expected and allowed")

    @property
    def healthy(self) -> bool:
        return not self.expect


def load_suite(path: str | Path) -> list[Scenario]:
    """Every ``SCENARIOS`` entry of the ``*.py`` files in ``path``, in file then list order.

    Files whose names start with "_" are helpers, not scenario files; the
    suite's folder is put on ``sys.path`` so that scenario files can import them.
    """
    root = Path(path)
    files: Iterable[Path] = [root] if root.is_file() else sorted(root.glob("*.py"))
    # Scenario files share helpers with `from _common import ...`.
    folder = str((root.parent if root.is_file() else root).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    scenarios: list[Scenario] = []
    for file in files:
        if file.name.startswith("_"):
            continue
        module_name = f"gradwatch_suite_{file.stem}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import scenario file {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        scenarios.extend(getattr(module, "SCENARIOS", []))
    names = [s.name for s in scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate scenario names in {path}: {duplicates}")
    if not scenarios:
        raise ValueError(f"no scenarios found in {path} (each file defines SCENARIOS = [Scenario(...), ...])")
    return scenarios
