"""What the aggregator remembers about one run: bounded windows and latest values."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from gradwatch.service.columns import ColumnarReport, LayerColumns
from gradwatch.service.config import WindowConfig
from gradwatch.service.rank_state import RankTable
from gradwatch.service.rules.series import SUMMARY_COLUMNS, row_summaries
from gradwatch.service.rules.view import INITIAL_LOSSES, RunView
from gradwatch.service.shards import ShardCombiner
from gradwatch.service.windows import Window
from gradwatch.wire import Report, ShardInfo, StepRecord

SUMMARY_WIDTH = len(SUMMARY_COLUMNS)

_NAN = math.nan


def _f(value: float | None) -> float:
    return _NAN if value is None else value


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``: a rule that writes into its input fails instead of corrupting the window."""
    view = array.view()
    view.flags.writeable = False
    return view


def _norm_only_nonfinite(record: StepRecord, has_layers: bool) -> bool:
    """The step's total gradient norm is NaN/Inf and no layer statistics came with it.

    With layer statistics the per-layer flags (from max-abs) decide: a norm can
    overflow on finite gradients, a max-abs cannot.
    """
    return not has_layers and record.grad_norm is not None and not math.isfinite(record.grad_norm)


@dataclass
class Latest:
    """Newest values per run, for /metrics and the run list."""

    step: int = -1
    #: None until the run reports the value at least once; NaN is data.
    loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    step_time: float | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    #: Per layer, from the newest statistics row: shape (L,).
    layer_grad_norm: np.ndarray | None = None
    layer_weight_norm: np.ndarray | None = None
    layer_grad_max_abs: np.ndarray | None = None
    layer_weight_max_abs: np.ndarray | None = None
    #: The layer's gradients or weights held NaN/Inf at the newest row.
    layer_nonfinite: np.ndarray | None = None
    #: From the newest row that sampled it.
    layer_update_ratio: np.ndarray | None = None
    #: The module of the newest through-time gradient ratio (StepRecord.recurrent_module).
    recurrent_module: str | None = None
    #: Whether that module is gated (StepRecord.recurrent_gated; None: not said).
    recurrent_gated: bool | None = None


class RunState:
    """History of one run, bounded in memory whatever the run's length or width."""

    def __init__(self, run: str, windows: WindowConfig) -> None:
        self.run = run
        self._windows = windows
        self.latest = Latest()
        self.reports = 0
        #: Step records received, each once: a record re-sent by the same agent
        #: session (a retry whose first answer was lost) is counted in steps_resent.
        self.steps_received = 0
        self.steps_resent = 0
        self.agent_dropped = 0
        self.ranks: set[int] = set()
        self.world_size = 1
        self.hosts: set[str] = set()
        self.first_report_time = time.time()
        self.last_report_time = self.first_report_time
        self.primary_rank: int | None = None
        #: Times the step counter went back (training restarted under this name).
        self.restarts = 0
        #: The primary rank closed its monitor: silence from now on is expected.
        self.finished = False
        #: Per rank: (agent session, newest step) for recognising re-sent records.
        self._last_seen: dict[int, tuple[str, int]] = {}
        #: Every rank's own loss, step time and non-finite sightings.
        self.rank_table = RankTable()
        #: RunView.memo: rules' reusable results between evaluations.
        self.rule_memo: dict[str, object] = {}
        self._reset_series()

    def _reset_series(self, keep_shards: bool = False) -> None:
        self.steps = Window(
            self._windows.steps,
            {
                "step": (np.int64, ()),
                "loss": (np.float64, ()),
                "lr": (np.float64, ()),
                "grad_nonfinite": (np.bool_, ()),
                "skipped": (np.bool_, ()),
                "rank": (np.int64, ()),
            },
        )
        self.val = Window(self._windows.val_points, {"step": (np.int64, ()), "val_loss": (np.float64, ())})
        self.layer_names: tuple[str, ...] = ()
        self.layer_numel = np.zeros(0, dtype=np.int64)
        self.stats: Window | None = None
        # Per-layer latest values belong to the old layer list: kept, they would
        # no longer line up with layer_names (and /metrics would fail on them).
        latest = self.latest
        latest.layer_grad_norm = latest.layer_weight_norm = latest.layer_update_ratio = None
        latest.layer_grad_max_abs = latest.layer_weight_max_abs = latest.layer_nonfinite = None
        self.last_primary_step = -1
        self._first_losses: list[float] = []
        if not keep_shards:
            self._shards = ShardCombiner()

    def ingest(self, report: Report | ColumnarReport, now: float | None = None) -> int:
        """Add a whole report; returns how many steps were kept."""
        columnar = ColumnarReport.of(report)
        report = columnar.report
        self.note_report(report, now)
        return sum(
            self.add_step(record, report.rank, report.session, report.shard, row)
            for record, row in zip(report.steps, columnar.rows, strict=True)
        )

    def note_report(self, report: Report, now: float | None = None) -> None:
        """Account for a report (sender, counts, time) before its steps are added."""
        self.reports += 1
        self.last_report_time = time.time() if now is None else now
        self.agent_dropped += report.dropped
        self.ranks.add(report.rank)
        self.rank_table.note_report(report.rank, report.host, self.last_report_time)
        self.world_size = max(self.world_size, report.world_size)
        if report.host and len(self.hosts) < 64:
            self.hosts.add(report.host)
        if self.primary_rank is None or report.rank < self.primary_rank:
            if self.primary_rank is not None:
                # A lower rank's first report came after another's (reports race):
                # its series are the run's from now on, not a restarted training.
                self._reset_series(keep_shards=True)
            self.primary_rank = report.rank
        if report.rank == self.primary_rank:
            # Steps after a final report mean training went on (or restarted).
            self.finished = report.final

    def add_step(
        self,
        record: StepRecord,
        rank: int,
        session: str = "",
        shard: ShardInfo | None = None,
        row: LayerColumns | None = None,
    ) -> int:
        """Add one step record from ``rank``'s agent ``session``; returns 1 when it was kept.

        ``row`` is the step's statistics row (see :class:`ColumnarReport`); a
        record that still carries its wire ``layers`` is converted here. With
        ``shard`` the row is one shard's; the layer row is added once every
        shard of the step has arrived, whichever rank's record completes it.
        """
        if row is None and record.layers is not None:
            row = LayerColumns.of(record.layers)
        last = self._last_seen.get(rank)
        if session and last is not None and last[0] == session and record.step <= last[1]:
            # Re-sent by the same agent: it retried a request whose answer it
            # never got. Ingest is idempotent per session.
            self.steps_resent += 1
            return 0
        self.steps_received += 1
        if len(self._last_seen) < 4096 or rank in self._last_seen:
            self._last_seen[rank] = (session, record.step)
        self.rank_table.add(rank, record, row is not None)
        layers = row
        if layers is not None and shard is not None and shard.count > 1:
            layers = self._shards.add(record.step, shard.index, shard.count, layers)
            if layers is not None and rank != self.primary_rank:
                self._ingest_layers(record.step, layers, record.skipped)
                return 1
        if rank != self.primary_rank:
            # Other ranks only matter when they see a non-finite value: that is
            # how a NaN's origin rank is found. Their healthy values duplicate
            # the primary rank's and would confuse the loss rules.
            if record.loss is not None and not math.isfinite(record.loss):
                self._append_step(record, rank, row is not None)
                return 1
            return 0
        if record.step <= self.last_primary_step:
            # The step counter went back: training restarted (from a checkpoint
            # or from scratch) under the same run name. Old windows would mix two
            # trajectories, so they start again; diagnoses are kept.
            self._reset_series()
            self.restarts += 1
        self.last_primary_step = record.step
        latest = self.latest
        latest.step = record.step
        if record.loss is not None:
            latest.loss = record.loss
            if len(self._first_losses) < INITIAL_LOSSES and math.isfinite(record.loss):
                self._first_losses.append(record.loss)
            self._append_step(record, rank, row is not None)
        if record.val_loss is not None:
            latest.val_loss = record.val_loss
            self.val.append(step=record.step, val_loss=record.val_loss)
        if record.lr is not None:
            latest.lr = record.lr
        if record.step_time is not None:
            latest.step_time = record.step_time
        if record.grad_norm is not None:
            latest.grad_norm = record.grad_norm
        for name, value in record.scalars.items():
            if name in latest.scalars or len(latest.scalars) < 32:
                latest.scalars[name] = _f(value)
        if record.recurrent_module is not None:
            latest.recurrent_module = record.recurrent_module
            latest.recurrent_gated = record.recurrent_gated
        if layers is not None:
            self._ingest_layers(record.step, layers, record.skipped, record.recurrent_grad_ratio)
        return 1

    def _append_step(self, record: StepRecord, rank: int, has_layers: bool) -> None:
        self.steps.append(
            step=record.step,
            loss=record.loss,
            lr=_f(record.lr),
            grad_nonfinite=_norm_only_nonfinite(record, has_layers),
            skipped=record.skipped,
            rank=rank,
        )

    def _ingest_layers(
        self, step: int, layers: LayerColumns, skipped: bool, recurrent_ratio: float | None = None
    ) -> None:
        names = layers.names
        if names != self.layer_names or self.stats is None or not self._stats_current(self.stats):
            # (Not current: restored from an older version's snapshot.)
            self.layer_names = names
            self.layer_numel = layers.numel
            width = (len(names),)
            self.stats = Window(
                self._windows.stat_rows,
                {
                    "step": (np.int64, ()),
                    "grad_norm": (np.float64, width),
                    "weight_norm": (np.float64, width),
                    "update_ratio": (np.float64, width),
                    "grad_nonfinite": (np.bool_, width),
                    "weight_nonfinite": (np.bool_, width),
                    "grad_missing": (np.bool_, width),
                    "summary": (np.float64, (SUMMARY_WIDTH,)),
                    "recurrent_ratio": (np.float64, ()),
                },
            )
            self.latest.layer_update_ratio = None
        grad_norm = layers.grad_norm.values
        weight_norm = layers.weight_norm.values
        grad_max = layers.grad_max_abs.values
        weight_max = layers.weight_max_abs.values
        update = layers.update_ratio.values if layers.update_ratio is not None else np.full(len(names), _NAN)
        # A layer holds NaN/Inf exactly when its max-abs is non-finite; absent
        # (NaN from null) gradients are not data and must not count.
        grad_nonfinite = layers.grad_max_abs.present & ~np.isfinite(grad_max)
        weight_nonfinite = layers.weight_max_abs.present & ~np.isfinite(weight_max)
        grad_missing = np.zeros(len(names), dtype=bool)
        grad_missing[list(layers.grad_missing)] = True
        self.stats.append(
            step=step,
            grad_norm=grad_norm,
            weight_norm=weight_norm,
            update_ratio=update,
            grad_nonfinite=grad_nonfinite,
            weight_nonfinite=weight_nonfinite,
            grad_missing=grad_missing,
            summary=row_summaries(
                grad_norm, weight_norm, self.layer_numel, None if layers.update_ratio is None else update
            )[0],
            recurrent_ratio=_f(recurrent_ratio),
        )
        latest = self.latest
        latest.layer_grad_norm = grad_norm
        latest.layer_weight_norm = self.stats.column("weight_norm")[-1]
        latest.layer_grad_max_abs = grad_max
        latest.layer_weight_max_abs = weight_max
        latest.layer_nonfinite = grad_nonfinite | weight_nonfinite
        if layers.update_ratio is not None:
            latest.layer_update_ratio = update

    @staticmethod
    def _stats_current(stats: Window) -> bool:
        """The statistics window has this version's columns (an older snapshot's may not)."""
        return stats.has_column("grad_missing") and stats.column("summary").shape[1] == SUMMARY_WIDTH

    def view(self) -> RunView:
        """A snapshot for the rules: read-only views of the windows, valid until the next append.

        The aggregator evaluates a view before it takes the next step, so the
        windows are not copied (a 64 x 1,000 window is 0.5 MB per column).
        """
        steps, val, stats = self.steps, self.val, self.stats
        if stats is not None and not self._stats_current(stats):
            stats = None  # an older snapshot's rows: the next statistics row starts a current window
        width = len(self.layer_names)
        empty2d = np.zeros((0, width))
        return RunView(
            layers=self.layer_names,
            layer_numel=_frozen(self.layer_numel),
            loss_steps=_frozen(steps.column("step")),
            loss=_frozen(steps.column("loss")),
            lr=_frozen(steps.column("lr")),
            step_grad_nonfinite=_frozen(steps.column("grad_nonfinite")),
            skipped=_frozen(steps.column("skipped")),
            loss_rank=_frozen(steps.column("rank")),
            val_steps=_frozen(val.column("step")),
            val_loss=_frozen(val.column("val_loss")),
            stat_steps=_frozen(stats.column("step")) if stats else np.zeros(0, dtype=np.int64),
            grad_norm=_frozen(stats.column("grad_norm")) if stats else empty2d,
            weight_norm=_frozen(stats.column("weight_norm")) if stats else empty2d,
            update_ratio=_frozen(stats.column("update_ratio")) if stats else empty2d,
            grad_nonfinite=_frozen(stats.column("grad_nonfinite")) if stats else empty2d.astype(bool),
            weight_nonfinite=_frozen(stats.column("weight_nonfinite")) if stats else empty2d.astype(bool),
            grad_missing=_frozen(stats.column("grad_missing")) if stats else empty2d.astype(bool),
            row_summaries=_frozen(stats.column("summary")) if stats else None,
            recurrent_ratio=_frozen(stats.column("recurrent_ratio")) if stats else np.zeros(0),
            recurrent_module=self.latest.recurrent_module,
            recurrent_gated=self.latest.recurrent_gated,
            new_loss_from=steps.new_from(),
            new_stat_from=stats.new_from() if stats else 0,
            new_val_from=val.new_from(),
            incident_steps=self.rank_table.incidents.column("step").copy(),
            incident_ranks=self.rank_table.incidents.column("rank").copy(),
            new_incident_from=self.rank_table.incidents.new_from(),
            rank_hosts=self.rank_table.hosts(),
            initial_loss=float(np.median(self._first_losses)) if self._first_losses else math.nan,
            memo=self.rule_memo,
        )

    def ranks_behind(self, step: int) -> bool:
        """Some rank of a multi-rank run has not reported up to ``step`` yet."""
        if self.world_size <= 1:
            return False
        latest = self.rank_table.latest
        ranks = range(min(self.world_size, self.rank_table.max_ranks))
        return any(rank not in latest or latest[rank].step < step for rank in ranks)

    def mark_seen(self) -> None:
        """Everything in the windows now was evaluated."""
        self.steps.mark_seen()
        self.val.mark_seen()
        self.rank_table.incidents.mark_seen()
        if self.stats is not None:
            self.stats.mark_seen()

    @property
    def unseen_fills_half_a_window(self) -> bool:
        """Half of a window is data no evaluation has seen: evaluate before any of it is pushed out unseen."""
        windows = (self.steps, self.val, self.stats) if self.stats is not None else (self.steps, self.val)
        return any(2 * window.unseen >= window.capacity for window in windows)

    @property
    def has_unseen(self) -> bool:
        return bool(
            self.steps.unseen
            or self.val.unseen
            or self.rank_table.incidents.unseen
            or (self.stats is not None and self.stats.unseen)
        )
