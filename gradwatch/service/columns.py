"""Reports as the aggregator takes them: each statistics row as numpy arrays.

On the wire a row of per-layer statistics is JSON lists
(:class:`gradwatch.wire.LayerStats`), which become lists of Python floats once
validated. Between the HTTP front and the aggregator actor those lists were the
dearest thing to move: Ray pickles a 1,000-layer row's ~6,000 numbers one by
one (0.3 ms to pickle, 0.5 ms to unpickle, as much as all of ingest). As arrays
they pickle as raw buffers, and the aggregator needs arrays anyway. So the
front converts each row right after validation, and the actor receives
:class:`ColumnarReport`.

A ``null`` on the wire means "not measured" (a frozen layer has no gradient)
and differs from NaN, which is data; each column keeps that difference in a
mask. Layer names repeat report after report: :class:`LayoutCache` hands back
one tuple per layout, so a batch of reports from one model pickles them once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradwatch.wire import LAYER_STATISTICS, LayerStats, Report

#: Distinct layouts a cache keeps; a service sees a few models, not thousands.
_MAX_LAYOUTS = 256
#: Bytes of packed layout blocks a cache keeps (a 1,000-layer model's is ~40 kB).
_MAX_PACKED_BYTES = 64 << 20


#: The statistics of a row, in the order of LayerColumns.values' rows.
STATISTICS = LAYER_STATISTICS
_UPDATE_RATIO = STATISTICS.index("update_ratio")

# The dataclasses below compare by identity (eq=False): == on their arrays would be ambiguous.


@dataclass(frozen=True, eq=False)
class Column:
    """One statistic for every layer of a row."""

    #: float64; NaN where the agent sent ``null``.
    values: np.ndarray
    #: True where a value was sent (NaN sent as data counts as sent).
    present: np.ndarray


@dataclass(frozen=True, eq=False)
class LayerColumns:
    """A statistics row (:class:`~gradwatch.wire.LayerStats`) as arrays aligned with ``names``.

    All statistics share one (5, layers) float64 array and one mask of the same
    shape: a row pickles as three buffers, not one per statistic (each costs
    ~13 us to pickle and unpickle, as much as 1,000 numbers in it).
    """

    names: tuple[str, ...]
    numel: np.ndarray
    #: Rows in the order of :data:`STATISTICS`; NaN where not sent.
    values: np.ndarray
    #: True where a value was sent.
    present: np.ndarray
    has_update_ratio: bool
    #: Layers the optimizer trains that got no gradient (:attr:`~gradwatch.wire.LayerStats.grad_missing`).
    grad_missing: tuple[int, ...] = ()

    @classmethod
    def of(cls, stats: LayerStats, layouts: LayoutCache | None = None) -> LayerColumns:
        names = tuple(stats.names)
        # An unsampled update ratio is an empty list here: no value sent for any layer.
        lists = [getattr(stats, name) or [] for name in STATISTICS]
        values = np.full((len(STATISTICS), len(names)), np.nan)
        # numpy turns None into NaN itself for a float dtype: one C loop per statistic.
        values[:_UPDATE_RATIO] = lists[:_UPDATE_RATIO]
        if lists[_UPDATE_RATIO]:
            values[_UPDATE_RATIO] = lists[_UPDATE_RATIO]
        present = np.ones(values.shape, dtype=bool)
        # A NaN is either a null or NaN sent as data: only then look at the values one by one.
        for index in np.flatnonzero(np.isnan(values).any(axis=1)):
            present[index] = [v is not None for v in lists[index]] if lists[index] else False
        return cls(
            names=layouts.intern(names) if layouts is not None else names,
            numel=np.array(stats.numel, dtype=np.int64),
            values=values,
            present=present,
            has_update_ratio=stats.update_ratio is not None,
            grad_missing=tuple(stats.grad_missing or ()),
        )

    @classmethod
    def from_columns(
        cls,
        names: tuple[str, ...],
        numel: np.ndarray,
        columns: dict[str, Column | None],
        grad_missing: tuple[int, ...] = (),
    ) -> LayerColumns:
        """A row from one :class:`Column` per statistic (None: update ratio not sampled)."""
        values = np.full((len(STATISTICS), len(names)), np.nan)
        present = np.zeros(values.shape, dtype=bool)
        for index, name in enumerate(STATISTICS):
            column = columns.get(name)
            if column is not None:
                values[index], present[index] = column.values, column.present
        return cls(names, numel, values, present, columns.get("update_ratio") is not None, grad_missing)

    def column(self, name: str) -> Column:
        """One statistic (a name in :data:`STATISTICS`) for every layer: views, not copies."""
        index = STATISTICS.index(name)
        return Column(self.values[index], self.present[index])

    grad_norm = property(lambda self: self.column("grad_norm"))
    grad_max_abs = property(lambda self: self.column("grad_max_abs"))
    weight_norm = property(lambda self: self.column("weight_norm"))
    weight_max_abs = property(lambda self: self.column("weight_max_abs"))

    @property
    def update_ratio(self) -> Column | None:
        """None on a row where the agent did not sample it."""
        return self.column("update_ratio") if self.has_update_ratio else None

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True, eq=False)
class ColumnarReport:
    """A validated report whose statistics rows are arrays.

    ``report`` holds the envelope and the step records, their ``layers``
    taken out; ``rows[i]`` is step ``i``'s statistics row, or None.
    """

    report: Report
    rows: tuple[LayerColumns | None, ...]

    @classmethod
    def of(cls, report: Report | ColumnarReport, layouts: LayoutCache | None = None) -> ColumnarReport:
        if isinstance(report, ColumnarReport):
            return report
        if all(step.layers is None for step in report.steps):
            return cls(report, (None,) * len(report.steps))
        rows = tuple(None if s.layers is None else LayerColumns.of(s.layers, layouts) for s in report.steps)
        steps = [s if s.layers is None else s.model_copy(update={"layers": None}) for s in report.steps]
        return cls(report.model_copy(update={"steps": steps}), rows)


class LayoutCache:
    """One shared tuple per distinct list of layer names, and the decoded layouts of packed bodies."""

    def __init__(self, capacity: int = _MAX_LAYOUTS) -> None:
        self._capacity = capacity
        self._layouts: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._packed: dict[bytes, tuple[tuple[str, ...], np.ndarray]] = {}
        self._packed_bytes = 0

    def intern(self, names: tuple[str, ...]) -> tuple[str, ...]:
        found = self._layouts.get(names)
        if found is not None:
            return found
        if len(self._layouts) >= self._capacity:
            self._layouts.clear()  # many layouts at once: a rare case, and any answer is still correct
        self._layouts[names] = names
        return names

    def packed(self, block: bytes) -> tuple[tuple[str, ...], np.ndarray] | None:
        """The names and element counts a packed layout block (names, then counts) was checked to hold."""
        return self._packed.get(block)

    def remember_packed(
        self, block: bytes, names: tuple[str, ...], numel: np.ndarray
    ) -> tuple[tuple[str, ...], np.ndarray]:
        if len(self._packed) >= self._capacity or self._packed_bytes + len(block) > _MAX_PACKED_BYTES:
            self._packed.clear()
            self._packed_bytes = 0
        self._packed[block] = (names, numel)
        self._packed_bytes += len(block)
        return names, numel
