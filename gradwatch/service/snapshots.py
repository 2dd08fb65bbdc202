"""Snapshots of the aggregator's state, so that a restarted actor carries on.

Ray restarts a dead aggregator actor (``max_restarts=-1``) by running its
constructor again, which would start from nothing: every window, active
diagnosis and onset step gone, and every alert re-fired as a new incident.
:class:`SnapshottingAggregator` writes its whole state to a file every
``snapshots.interval`` seconds (the service front asks it to) and reads it
back in its constructor, so a restart loses at most that much history.

Format: JSON, written atomically (a temporary file, then ``os.replace``).
Objects are encoded generically from their attributes, so new fields added to
the aggregator's classes are saved without changes here. Decoding is not a
code path an attacker can steer: it only rebuilds classes defined in
``gradwatch.service`` (without calling their constructors), pydantic models
(through validation), numpy arrays of plain dtypes and JSON values. The file
is never read from the network; no pickle is involved.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from gradwatch.service.aggregator import Aggregator

logger = logging.getLogger("gradwatch.service")

FORMAT_VERSION = 1
SNAPSHOT_FILE = "aggregator.json"
_PACKAGE = "gradwatch.service"
#: Attributes never saved: the config comes from the constructor (it may have changed).
_SKIP = frozenset({"config"})
#: After a snapshot that took t seconds, the next one waits at least this many times t.
_BUSY_FACTOR = 9.0


class SnapshotError(ValueError):
    """A snapshot file that cannot be decoded (written by another version, or damaged)."""


def encode(value: Any) -> Any:
    """A JSON-able form of the aggregator's state objects."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"cannot snapshot an array of dtype {value.dtype}")
        # Raw bytes, not lists of numbers: 20x faster for a few hundred runs, and the
        # actor is busy (not ingesting) while it writes.
        data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")
        return {"__nd__": value.dtype.str, "shape": list(value.shape), "b64": data}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, BaseModel):
        return {"__model__": _name(type(value)), "data": value.model_dump(mode="json")}
    cls = type(value)
    if cls.__module__.startswith(_PACKAGE) and hasattr(value, "__dict__"):
        return {"__obj__": _name(cls), "attrs": {k: encode(v) for k, v in vars(value).items()}}
    raise TypeError(f"cannot snapshot a {cls.__module__}.{cls.__qualname__}")


def decode(data: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__nd__" in data:
        dtype = np.dtype(data["__nd__"])
        if dtype.kind not in "biuf":
            raise SnapshotError(f"array dtype {dtype} is not allowed")
        raw = base64.b64decode(data["b64"], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape(data["shape"]).copy()
    if "__tuple__" in data:
        return tuple(decode(v) for v in data["__tuple__"])
    if "__set__" in data:
        return {decode(v) for v in data["__set__"]}
    if "__dict__" in data:
        return {_hashable(decode(k)): decode(v) for k, v in data["__dict__"]}
    if "__model__" in data:
        return _class(data["__model__"]).model_validate(data["data"])
    if "__obj__" in data:
        cls = _class(data["__obj__"])
        obj = cls.__new__(cls)  # no constructor: the attributes are the state
        for key, value in data["attrs"].items():
            object.__setattr__(obj, key, decode(value))
        return obj
    raise SnapshotError(f"unknown object in snapshot: keys {sorted(data)[:5]}")


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _class(name: str) -> Any:
    module_name, _, qualname = name.partition(":")
    if module_name != _PACKAGE and not module_name.startswith(_PACKAGE + "."):
        raise SnapshotError(f"class {name!r} is outside {_PACKAGE}")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise SnapshotError(f"{name!r} is not a class")
    return obj


def write_snapshot(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (attribute name -> value) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT_VERSION, "written_at": time.time(), "state": {k: encode(v) for k, v in state.items()}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(body, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_snapshot(path: Path) -> tuple[dict[str, Any], float] | None:
    """(state, written_at) from ``path``; None when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        body = json.loads(text)
        if body.get("format") != FORMAT_VERSION:
            raise SnapshotError(f"format {body.get('format')!r}, this version reads {FORMAT_VERSION}")
        return {k: decode(v) for k, v in body["state"].items()}, float(body["written_at"])
    except (ValueError, KeyError, TypeError, AttributeError, ImportError) as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc}") from exc


@dataclasses.dataclass
class SnapshottingAggregator(Aggregator):
    """An :class:`Aggregator` that restores its state from, and saves it to, ``config.snapshots``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._saved_reports = -1
        self._next_save_allowed = 0.0
        self.restored_from: float | None = None
        settings = self.config.snapshots
        self._path = Path(settings.dir) / SNAPSHOT_FILE if settings.enabled and settings.dir else None
        if self._path is None:
            return
        try:
            found = read_snapshot(self._path)
        except SnapshotError:
            # A damaged snapshot must not keep the actor from starting (Ray
            # would restart it forever): start empty and say so.
            logger.exception("gradwatch: ignoring the aggregator snapshot")
            return
        if found is None:
            return
        state, written_at = found
        for key, value in state.items():
            if (
                key not in _SKIP
                and not key.startswith(("_saved", "_next_save"))
                and key not in ("restored_from", "_path")
            ):
                setattr(self, key, value)
        self._saved_reports = self._reports
        self.restored_from = written_at
        logger.warning(
            "gradwatch: aggregator restored %d runs from a snapshot written %.1f s ago",
            len(self._runs),
            time.time() - written_at,
        )

    def save_snapshot(self, force: bool = False) -> bool:
        """Write the state if it changed since the last snapshot; True when written.

        ``force`` skips the throttle (the front's last snapshot at shutdown).
        """
        if self._path is None or self._reports == self._saved_reports:
            return False
        # The actor ingests nothing while it writes: keep snapshots under ~10% of
        # its time, however many runs it holds (a 256-run state takes ~0.4 s).
        if not force and time.monotonic() < self._next_save_allowed:
            return False
        started = time.monotonic()
        state = {
            k: v
            for k, v in vars(self).items()
            if k not in _SKIP and not k.startswith(("_saved", "_next_save")) and k not in ("restored_from", "_path")
        }
        write_snapshot(self._path, state)
        self._saved_reports = self._reports
        finished = time.monotonic()
        self._next_save_allowed = finished + _BUSY_FACTOR * (finished - started)
        return True

    def snapshot_info(self) -> dict[str, Any]:
        """Where snapshots go and when this actor was restored (for tests and operators)."""
        return {"path": None if self._path is None else str(self._path), "restored_from": self.restored_from}
