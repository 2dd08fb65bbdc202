"""Configuration of the aggregator, validated at start-up.

``gradwatch serve --config FILE`` reads a TOML file whose tables map onto
:class:`ServiceConfig`; a misspelt key is an error that names it::

    [rules.loss_spike]
    z_threshold = 12

    [windows]
    steps = 1024

    [[run_rules]]            # settings for some runs only, on top of [rules]
    match = "ppo-*"
    loss_spike = { enabled = false }
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gradwatch.service.rules.config import RulesConfig

logger = logging.getLogger("gradwatch.service")


class WindowConfig(BaseModel):
    """How much history the aggregator keeps per run (memory is bounded by these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(default=512, ge=32, le=100_000, description="Every-step entries (loss, lr) kept per run.")
    stat_rows: int = Field(default=64, ge=8, le=10_000, description="Rows of per-layer statistics kept per run.")
    val_points: int = Field(default=128, ge=8, le=10_000, description="Held-out loss values kept per run.")


class LimitsConfig(BaseModel):
    """Guards against bad or runaway input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Largest POST /v1/reports body.")
    max_runs: int = Field(
        default=2_000,
        ge=1,
        description=(
            "Runs held at once. A new run beyond this evicts runs idle longer than run_idle_seconds; "
            "if none is, its reports are refused (HTTP 429)."
        ),
    )
    run_idle_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="A run without reports for this long may be evicted to make room."
    )
    max_layers: int = Field(
        default=20_000, ge=1, description="Layers per run; reports with more are refused (HTTP 413)."
    )
    max_layer_series: int = Field(
        default=200_000,
        ge=1,
        description=(
            "Layers summed over all runs of one aggregator (each is a set of /metrics series); "
            "a report that would pass this is refused (HTTP 429)."
        ),
    )
    ingest_timeout: float = Field(default=10.0, gt=0, description="Seconds an ingest may wait on the aggregator actor.")
    max_pending_ingests: int = Field(
        default=64,
        ge=1,
        description=(
            "Ingests waiting on the aggregator at once; beyond this a report is refused at once with HTTP 429 "
            "(the agent keeps it and retries). Bounds the actor's queue, so no accepted ingest times out."
        ),
    )


class SnapshotConfig(BaseModel):
    """Periodic snapshots of the aggregator's state, restored when Ray restarts the actor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Write snapshots and restore from them.")
    dir: str | None = Field(
        default=None,
        description=(
            "Directory of the snapshot file (<dir>/<service name>/aggregator.snapshot); it must be on the node that "
            "runs the actor, or shared. Default: a private temporary directory per service process, which "
            "survives actor restarts but not the service process."
        ),
    )
    interval: float = Field(
        default=2.0, gt=0, le=3600, description="Seconds between snapshots: the most history a restart can lose."
    )
    background: bool = Field(
        default=True,
        description=(
            "Write each snapshot from a forked child process (a copy-on-write image of the state, like Redis's "
            "BGSAVE), so the actor keeps ingesting while it is written. False, on a system without os.fork, or "
            "when the fork fails: the actor writes it itself and ingests nothing meanwhile."
        ),
    )


class AlertingConfig(BaseModel):
    """Direct push of diagnoses to Alertmanager (``gradwatch serve --alertmanager URL``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alertmanagers: list[str] = Field(
        default_factory=list, description="Alertmanager base URLs (two for an HA pair); --alertmanager adds to these."
    )
    resend_interval: float = Field(
        default=30.0, ge=1.0, description="Seconds between re-sends of active alerts (Alertmanager's API needs them)."
    )
    timeout: float = Field(default=2.0, gt=0, le=30, description="Seconds one POST to Alertmanager may take.")
    runbook_url: str = Field(
        default="docs/runbook.md", description="Base of the runbook link in alerts; '#<symptom>' is appended."
    )

    @field_validator("alertmanagers")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"alertmanager URL {url!r} must start with http:// or https://")
        return value


_SECTION = "settings of this symptom's rule to change for the matching runs (the keys of [rules.<symptom>])"


class RunRules(BaseModel):
    """Rule settings for the runs whose names match a pattern (a ``[[run_rules]]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(
        min_length=1,
        description=(
            "Shell-style pattern on the run name ('ppo-*', 'sweep-?-lr*'); case-sensitive. Every matching "
            "table applies, in file order, later ones over earlier ones, on top of [rules]."
        ),
    )
    exploding_gradient: dict[str, Any] = Field(default_factory=dict, description=_SECTION)
    vanishing_gradient: dict[str, Any] = Field(default_factory=dict, description=_SECTION)
    nonfinite: dict[str, Any] = Field(default_factory=dict, description=_SECTION)
    loss_spike: dict[str, Any] = Field(default_factory=dict, description=_SECTION)
    overfitting: dict[str, Any] = Field(default_factory=dict, description=_SECTION)
    stagnation: dict[str, Any] = Field(default_factory=dict, description=_SECTION)

    def apply(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (a dumped RulesConfig) with this table's settings over it."""
        merged = {symptom: dict(section) for symptom, section in base.items()}
        for symptom in merged:
            merged[symptom].update(getattr(self, symptom))
        return merged


class ServiceConfig(BaseModel):
    """Everything the aggregator can be told by a config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: RulesConfig = Field(default_factory=RulesConfig)
    run_rules: list[RunRules] = Field(
        default_factory=list,
        description=(
            "Rule settings for some runs only, by run name: a PPO or DQN run whose loss jumps by design, a "
            "fine-tune at a deliberately tiny learning rate. Checked at start-up like [rules]."
        ),
    )
    windows: WindowConfig = Field(default_factory=WindowConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    evaluate_every_steps: int = Field(
        default=10,
        ge=1,
        description=(
            "Rules run at every statistics row, held-out loss and non-finite loss, and at least this often "
            "(in optimizer steps) in between."
        ),
    )
    evaluate_min_interval: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description=(
            "Under load (see paced_above_load), a run's rules run at most once per this many seconds; "
            "the rest of its data waits for the next evaluation, at most about twice this later. Non-finite "
            "values are evaluated at once regardless. 0 evaluates every batch."
        ),
    )
    paced_above_load: float = Field(
        default=0.5,
        ge=0,
        description=(
            "Pace evaluations (evaluate_min_interval) once evaluating every report as it comes would take at least "
            "this share of the aggregator's time: ingest time plus one evaluation per statistics row, held-out "
            "loss, non-finite loss and evaluate_every_steps, at the measured cost of one, over 2 s windows. Below "
            "it every report is evaluated at all those points, as on an idle service, so diagnoses do not depend "
            "on how many agents post at once. 0 paces every batch."
        ),
    )
    clear_after_steps: int = Field(
        default=25,
        ge=1,
        description="A symptom clears once its rule has not fired for this many optimizer steps.",
    )

    @model_validator(mode="after")
    def _run_rules_are_valid(self) -> ServiceConfig:
        # Each table on its own over [rules], so that a bad value fails at start-up and names its table.
        base = self.rules.model_dump()
        problems = []
        for index, table in enumerate(self.run_rules):
            try:
                RulesConfig.model_validate(table.apply(base))
            except ValidationError as exc:
                problems.append(f"run_rules[{index}] (match {table.match!r}): {describe(exc)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rules_for(self, run: str) -> RulesConfig:
        """The rule settings for run ``run``: [rules], with every matching [[run_rules]] table over it, in order.

        Never raises. Tables valid alone can clash once several match one run (one sets
        ``loss_spike.min_history`` above the ``baseline_steps`` another sets): such a table is
        skipped for that run, with a warning, and the others still apply. Callers keep the result
        per run (the aggregator does): resolving one takes about a tenth of a millisecond per table.
        """
        merged = self.rules.model_dump()
        resolved = self.rules
        for index, table in enumerate(self.run_rules):
            if not fnmatchcase(run, table.match):
                continue
            try:
                resolved = RulesConfig.model_validate(table.apply(merged))
            except ValidationError as exc:
                logger.warning(
                    "gradwatch: run_rules[%d] (match %r) is skipped for run %r, where it clashes with the tables "
                    "before it: %s",
                    index,
                    table.match,
                    run,
                    describe(exc),
                )
                continue
            merged = resolved.model_dump()
        return resolved


class ConfigError(ValueError):
    """The config file cannot be read or does not validate; the message says where."""


def load_config(path: str | Path | None) -> ServiceConfig:
    """Read and validate a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return ServiceConfig()
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """Each problem as ``where: what`` (``what`` alone for a check of several fields), joined by ``; ``."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        what = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {what}" if where else what)
    return "; ".join(problems)
