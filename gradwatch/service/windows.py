"""Bounded, append-only numpy windows.

Each window keeps the newest ``capacity`` rows in a buffer of twice that size:
appends write past the end, and when the buffer is full the newest half is
moved to the front once. Appends are amortised O(1) and reading the window is
a slice, not a copy.
"""

from __future__ import annotations

import numpy as np


class Window:
    """Named, aligned columns holding the newest ``capacity`` rows."""

    def __init__(self, capacity: int, columns: dict[str, tuple[np.dtype | type, tuple[int, ...]]]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._columns = {
            name: np.zeros((2 * capacity, *shape), dtype=dtype) for name, (dtype, shape) in columns.items()
        }
        self._end = 0
        #: Rows appended since the last call to :meth:`mark_seen`.
        self.unseen = 0

    def __len__(self) -> int:
        return min(self._end, self.capacity)

    def append(self, **row: object) -> None:
        """Append one row; every column must be given."""
        if self._end == 2 * self.capacity:
            for column in self._columns.values():
                column[: self.capacity] = column[self.capacity :]
            self._end = self.capacity
        for name, column in self._columns.items():
            column[self._end] = row[name]
        self._end += 1
        self.unseen += 1

    def has_column(self, name: str) -> bool:
        """Whether this window keeps ``name`` (one restored from an older snapshot may not)."""
        return name in self._columns

    def column(self, name: str) -> np.ndarray:
        """The newest rows of one column, oldest first (a view; do not modify)."""
        return self._columns[name][max(self._end - self.capacity, 0) : self._end]

    def new_from(self) -> int:
        """Index (into :meth:`column`) of the first row not yet marked seen."""
        return max(len(self) - self.unseen, 0)

    def mark_seen(self) -> None:
        self.unseen = 0

    def __getstate__(self) -> dict[str, object]:
        # The live rows only: the buffer's other half is spare room, and saving
        # it would double every snapshot.
        return {
            "capacity": self.capacity,
            "unseen": self.unseen,
            "rows": {name: self.column(name).copy() for name in self._columns},
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        if "rows" not in state:  # saved whole, by an earlier version
            self.__dict__.update(state)
            return
        rows: dict[str, np.ndarray] = state["rows"]  # type: ignore[assignment]
        self.capacity = int(state["capacity"])  # type: ignore[call-overload]
        self.unseen = int(state["unseen"])  # type: ignore[call-overload]
        self._columns = {}
        self._end = 0
        for name, values in rows.items():
            column = np.zeros((2 * self.capacity, *values.shape[1:]), dtype=values.dtype)
            column[: len(values)] = values
            self._columns[name] = column
            self._end = len(values)
