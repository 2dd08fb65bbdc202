"""Reading a packed report (:data:`gradwatch.wire.PACKED_CONTENT_TYPE`) straight into arrays.

The header is JSON validated by :class:`~gradwatch.wire.PackedHeader` (the
envelope and step records by the same :class:`~gradwatch.wire.Report` as a
JSON body); the statistics are copied out of the body as float64 without a
number being parsed. A layout (names and sizes) repeats report after report:
its bytes key a cache, so a known model's names are neither decoded nor
checked again. Every length is checked against the body before anything is
read, and the body must end exactly where the header says.
"""

from __future__ import annotations

import struct

import numpy as np

from gradwatch.service.columns import STATISTICS, ColumnarReport, LayerColumns, LayoutCache
from gradwatch.wire import (
    MAX_INT,
    MAX_LAYER_NAME,
    PACKED_MAGIC,
    PACKED_NAME_SEPARATOR,
    PackedHeader,
)

_PREFIX = len(PACKED_MAGIC) + 4
_UPDATE_RATIO = STATISTICS.index("update_ratio")


class PackedError(ValueError):
    """A packed body that cannot be read; ``status`` is 400 (not a packed body) or 422 (one that breaks the rules)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode(body: bytes, layouts: LayoutCache) -> ColumnarReport:
    """The report in ``body``; raises :class:`PackedError`, or pydantic's ValidationError for a bad header."""
    if len(body) < _PREFIX or not body.startswith(PACKED_MAGIC):
        raise PackedError(400, f"not a packed report: it must start with {PACKED_MAGIC!r} and a header length")
    (header_length,) = struct.unpack_from("<I", body, len(PACKED_MAGIC))
    offset = _PREFIX + header_length
    if offset > len(body):
        raise PackedError(400, f"the header length ({header_length} bytes) runs past the body ({len(body)} bytes)")
    header = PackedHeader.model_validate_json(body[_PREFIX:offset])

    names_and_sizes = []
    for index, layout in enumerate(header.layouts):
        end = offset + layout.names_bytes + 8 * layout.layers
        if end > len(body):
            raise PackedError(422, f"layouts[{index}] runs past the end of the body")
        names_and_sizes.append(_layout(body, offset, layout.names_bytes, layout.layers, layouts, index))
        offset = end

    rows: list[LayerColumns | None] = [None] * len(header.report.steps)
    for index, row in enumerate(header.rows):
        names, numel = names_and_sizes[row.layout]
        count = len(STATISTICS) if row.update_ratio else _UPDATE_RATIO
        end = offset + 8 * count * len(names)
        if end > len(body):
            raise PackedError(422, f"rows[{index}] runs past the end of the body")
        values = np.full((len(STATISTICS), len(names)), np.nan)
        values[:count] = np.frombuffer(body, dtype="<f8", count=count * len(names), offset=offset).reshape(count, -1)
        present = np.ones(values.shape, dtype=bool)
        if not row.update_ratio:
            present[_UPDATE_RATIO] = False
        for statistic, missing in row.absent.items():
            present[STATISTICS.index(statistic), missing] = False
        # An absent value is NaN whatever its slot held, and every NaN is the one quiet NaN (a
        # signalling one from the wire would warn in every operation): the two encodings give
        # the same arrays.
        values[~present | np.isnan(values)] = np.nan
        rows[row.step] = LayerColumns(names, numel, values, present, row.update_ratio, tuple(row.grad_missing or ()))
        offset = end
    if offset != len(body):
        raise PackedError(422, f"{len(body) - offset} bytes after the last row; the header describes {offset}")
    return ColumnarReport(header.report, tuple(rows))


def _layout(
    body: bytes, offset: int, names_bytes: int, count: int, layouts: LayoutCache, index: int
) -> tuple[tuple[str, ...], np.ndarray]:
    """The names and element counts of one layout block, checked once per distinct block."""
    block = body[offset : offset + names_bytes + 8 * count]
    known = layouts.packed(block)
    if known is not None:
        return known
    if count == 0 and names_bytes:
        raise PackedError(422, f"layouts[{index}] has names for 0 layers")
    try:
        names = tuple(block[:names_bytes].decode("utf-8").split(PACKED_NAME_SEPARATOR)) if count else ()
    except UnicodeDecodeError as exc:
        raise PackedError(422, f"layouts[{index}]: names are not UTF-8 ({exc.reason})") from None
    if len(names) != count:
        raise PackedError(422, f"layouts[{index}] has {len(names)} names for {count} layers")
    for name in names:
        if not 0 < len(name) <= MAX_LAYER_NAME:
            raise PackedError(422, f"layouts[{index}]: a layer name must have 1 to {MAX_LAYER_NAME} characters")
    if len(set(names)) != count:
        raise PackedError(422, f"layouts[{index}]: layer names must be unique")
    numel = np.frombuffer(block, dtype="<i8", count=count, offset=names_bytes).astype(np.int64)
    numel.flags.writeable = False  # shared by every report of this layout
    if count and (numel.min() < 0 or numel.max() > MAX_INT):
        raise PackedError(422, f"layouts[{index}]: element counts must lie in [0, {MAX_INT}]")
    return layouts.remember_packed(block, layouts.intern(names), numel)
