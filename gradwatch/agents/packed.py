"""The packed encoding of a report (:data:`gradwatch.wire.PACKED_CONTENT_TYPE`), agent side.

JSON writes every statistic as decimal text that the service must parse back,
number by number: for a 1,000-layer row that parse was most of what ingest
cost. Packed, the same row is raw float64 bytes. The envelope and the step
records stay JSON and are validated by :class:`~gradwatch.wire.Report` here
exactly as they would be for a JSON body, so both encodings carry the same
report. Standard library only: the agent does not need numpy for this.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array

from gradwatch.wire import (
    LAYER_STATISTICS,
    PACKED_MAGIC,
    PACKED_NAME_SEPARATOR,
    MaybeFloat,
    Report,
)

_NAN = float("nan")


class NotPackable(ValueError):
    """A report the packed encoding cannot carry (a layer name holding the separator): send it as JSON."""


class _Layouts:
    """Each distinct (names, numel) once per body; consecutive rows of one model share it."""

    def __init__(self) -> None:
        self.meta: list[dict[str, int]] = []
        self.blocks: list[bytes] = []
        self._index: dict[tuple[tuple[str, ...], tuple[int, ...]], int] = {}

    def index_of(self, names: list[str], numel: list[int]) -> int:
        key = (tuple(names), tuple(numel))
        found = self._index.get(key)
        if found is not None:
            return found
        if len(numel) != len(names):
            raise ValueError(f"layers.numel has {len(numel)} entries, layers.names has {len(names)}")
        if any(PACKED_NAME_SEPARATOR in name for name in names):
            raise NotPackable("a layer name holds a NUL character")
        encoded = PACKED_NAME_SEPARATOR.join(names).encode("utf-8")
        self._index[key] = len(self.meta)
        self.meta.append({"layers": len(names), "names_bytes": len(encoded)})
        self.blocks += [encoded, _little_endian(array("q", numel))]
        return self._index[key]


def encode(envelope: dict, steps: list[dict]) -> bytes:
    """One packed body: ``envelope`` (the report's fields but ``steps``) and step records as in JSON.

    A record's ``layers`` is a :class:`~gradwatch.wire.LayerStats`-shaped dict
    whose lists may hold None (not measured). Raises pydantic's
    ValidationError for a report JSON would refuse too, :class:`NotPackable`
    for one only JSON can carry.
    """
    layouts = _Layouts()
    rows: list[dict] = []
    values: list[bytes] = []
    records = []
    for index, record in enumerate(steps):
        layers = record.get("layers")
        if layers is None:
            records.append(record)
            continue
        records.append({k: v for k, v in record.items() if k != "layers"})
        count = len(layers["names"])
        row: dict = {"step": index, "layout": layouts.index_of(layers["names"], layers["numel"])}
        absent = {}
        for statistic in LAYER_STATISTICS:
            column = layers.get(statistic)
            if column is None:
                if statistic != "update_ratio":
                    raise ValueError(f"layers.{statistic} is missing")
                continue
            if len(column) != count:
                raise ValueError(f"layers.{statistic} has {len(column)} entries, layers.names has {count}")
            column, missing = _without_nones(column)
            if missing:
                absent[statistic] = missing
            values.append(_little_endian(array("d", column)))
        row["update_ratio"] = layers.get("update_ratio") is not None
        missing = layers.get("grad_missing")
        if missing:
            if not all(isinstance(i, int) and 0 <= i < count for i in missing):
                raise ValueError(f"layers.grad_missing holds an index outside the {count} layers")
            row["grad_missing"] = missing
        if absent:
            row["absent"] = absent
        rows.append(row)
    # The same model and the same JSON (NaN/Infinity constants) as a JSON body's envelope and records.
    report = Report.model_validate({**envelope, "steps": records}).model_dump_json(exclude_none=True)
    header = f'{{"report":{report},"layouts":{json.dumps(layouts.meta)},"rows":{json.dumps(rows)}}}'
    head = header.encode("utf-8")
    return b"".join([PACKED_MAGIC, struct.pack("<I", len(head)), head, *layouts.blocks, *values])


def _without_nones(column: list[MaybeFloat]) -> tuple[list[MaybeFloat], list[int]]:
    if None not in column:
        return column, []
    missing = [i for i, v in enumerate(column) if v is None]
    return [_NAN if v is None else v for v in column], missing


def _little_endian(values: array) -> bytes:
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()
