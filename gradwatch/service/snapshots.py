"""Snapshots of the aggregator's state, so that a restarted actor carries on.

Ray restarts a dead aggregator actor (``max_restarts=-1``) by running its
constructor again, which would start from nothing: every window, active
diagnosis and onset step gone, and every alert re-fired as a new incident.
:class:`SnapshottingAggregator` writes its whole state to a file every
``snapshots.interval`` seconds (the service front asks it to) and reads it
back in its constructor, so a restart loses at most that much history.

Format: a line naming the format, a JSON header of the given length, then the
raw bytes of every numpy array the header refers to; written atomically (a
temporary file, then ``os.replace``). Arrays are most of the state (windows of
1,000-layer rows); as raw bytes rather than base64 inside JSON (format 1, still
read) a 64-run state is 25% smaller, written in half the time and read in a
sixth (``python benchmarks/snapshot_cost.py --runs 64``). Objects are encoded generically
from their attributes, so new fields added to the aggregator's classes are
saved without changes here. Decoding is not a code path an attacker can steer:
it only rebuilds classes defined in ``gradwatch.service`` (without calling
their constructors), pydantic models (through validation), numpy arrays of
plain dtypes and JSON values. The file is never read from the network; no
pickle is involved.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import importlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from gradwatch.service.aggregator import Aggregator

logger = logging.getLogger("gradwatch.service")

FORMAT_VERSION = 2
SNAPSHOT_FILE = "aggregator.snapshot"
#: Where format 1 (all JSON) was written; read when no newer snapshot exists.
LEGACY_SNAPSHOT_FILE = "aggregator.json"
_MAGIC = b"gradwatch-snapshot 2\n"
_PACKAGE = "gradwatch.service"
#: Attributes never saved: the config comes from the constructor (it may have changed), and each run's
#: rule settings from the config; the rest is this actor's own bookkeeping of its snapshots.
_SKIP = frozenset({"config", "_rules_of_run", "restored_from", "_path", "_background", "_child"})
#: After a snapshot that blocked the actor for t seconds, the next one waits at least this many times t.
_BUSY_FACTOR = 9.0
#: Background writers are kept to at most this share of one core (their CPU time, from wait4).
_CHILD_CPU_SHARE = 0.2
#: A child still running after this many seconds is presumed stuck (say, on a lock that another
#: thread held at the fork) and killed, so that snapshots do not stop for good.
_CHILD_TIMEOUT = 120.0
#: How much less CPU priority the writer has than the actor.
_CHILD_NICE = 10


class SnapshotError(ValueError):
    """A snapshot file that cannot be decoded (written by another version, or damaged)."""


def encode(value: Any, buffers: list[np.ndarray] | None = None) -> Any:
    """A JSON-able form of the aggregator's state objects.

    With ``buffers``, arrays are appended to it and referred to by index (the
    binary format); without, they are inlined as base64.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"cannot snapshot an array of dtype {value.dtype}")
        # Raw bytes, not lists of numbers: 20x faster for a few hundred runs, and the
        # actor is busy (not ingesting) while it writes.
        if buffers is not None:
            buffers.append(np.ascontiguousarray(value))
            return {"__nd__": value.dtype.str, "shape": list(value.shape), "buf": len(buffers) - 1}
        data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")
        return {"__nd__": value.dtype.str, "shape": list(value.shape), "b64": data}
    if isinstance(value, list):
        return [encode(v, buffers) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, buffers) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": [encode(v, buffers) for v in value]}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k, buffers), encode(v, buffers)] for k, v in value.items()]}
    if isinstance(value, BaseModel):
        return {"__model__": _name(type(value)), "data": value.model_dump(mode="json")}
    cls = type(value)
    if cls.__module__.startswith(_PACKAGE) and hasattr(value, "__dict__"):
        # A class may say what its state is (Window: only its live rows, not the spare half of its buffer).
        state = value.__getstate__() if cls.__getstate__ is not object.__getstate__ else vars(value)
        return {"__obj__": _name(cls), "attrs": {k: encode(v, buffers) for k, v in state.items()}}
    raise TypeError(f"cannot snapshot a {cls.__module__}.{cls.__qualname__}")


def decode(data: Any, buffers: list[memoryview] | None = None) -> Any:
    """The inverse of :func:`encode` (``buffers``: the arrays' bytes, in order)."""
    if isinstance(data, list):
        return [decode(v, buffers) for v in data]
    if not isinstance(data, dict):
        return data
    if "__nd__" in data:
        dtype = np.dtype(data["__nd__"])
        if dtype.kind not in "biuf":
            raise SnapshotError(f"array dtype {dtype} is not allowed")
        if "buf" in data:
            if buffers is None or not 0 <= data["buf"] < len(buffers):
                raise SnapshotError(f"array buffer {data['buf']!r} is not in the file")
            raw: bytes | memoryview = buffers[data["buf"]]
        else:
            raw = base64.b64decode(data["b64"], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape(data["shape"]).copy()
    if "__tuple__" in data:
        return tuple(decode(v, buffers) for v in data["__tuple__"])
    if "__set__" in data:
        return {decode(v, buffers) for v in data["__set__"]}
    if "__dict__" in data:
        return {_hashable(decode(k, buffers)): decode(v, buffers) for k, v in data["__dict__"]}
    if "__model__" in data:
        return _class(data["__model__"]).model_validate(data["data"])
    if "__obj__" in data:
        cls = _class(data["__obj__"])
        obj = cls.__new__(cls)  # no constructor: the attributes are the state
        attrs = {key: decode(value, buffers) for key, value in data["attrs"].items()}
        if hasattr(cls, "__setstate__"):
            obj.__setstate__(attrs)
        else:
            for key, value in attrs.items():
                object.__setattr__(obj, key, value)
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
    buffers: list[np.ndarray] = []
    encoded = {k: encode(v, buffers) for k, v in state.items()}
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            "written_at": time.time(),
            "state": encoded,
            "buffers": [b.nbytes for b in buffers],
        },
        separators=(",", ":"),
    ).encode()
    # Named by the writer's pid: a forked child and its parent never share a temporary file.
    tmp = _temporary(path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(_MAGIC + b"%d\n" % len(header) + header)
        for buffer in buffers:
            f.write(buffer.data if buffer.ndim else buffer.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # Format 1's file, left by an upgrade: stale from now on, and it must not come back if this one is removed.
    path.with_name(LEGACY_SNAPSHOT_FILE).unlink(missing_ok=True)


def _temporary(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def _fork_writer(path: Path, state: dict[str, Any]) -> int:
    """Fork a child that writes ``state`` to ``path`` and exits; in the parent, the child's pid.

    The child holds a copy-on-write image of the whole process, so ``state`` is
    consistent by construction while the parent goes on changing its own copy.
    Raises OSError when the fork fails.
    """
    pid = os.fork()
    if pid:
        return pid
    # The child, with only this thread of the actor's. It must never return into Ray's code,
    # run atexit handlers, flush stdio the parent also holds, or take a lock that another
    # thread held at the fork (logging's included): it does not log, and its exit code is
    # its only report. os._exit in finally holds whatever is raised, SystemExit too.
    code = 1
    try:
        gc.disable()  # no finalizers of the parent's objects (Ray's among them) run here
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the worker's Python handler
        # Ingest comes first: on a busy machine the writer gets the CPU the actor leaves, and under
        # memory pressure the kernel kills the writer (retried later) before the actor (Redis does too).
        with contextlib.suppress(OSError):
            os.nice(_CHILD_NICE)
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("800")
        write_snapshot(path, state)
        code = 0
    finally:
        os._exit(code)


def read_snapshot(path: Path) -> tuple[dict[str, Any], float] | None:
    """(state, written_at) from ``path`` (or, when it is missing, format 1's file beside it); None when neither exists."""
    for candidate in (path, path.with_name(LEGACY_SNAPSHOT_FILE)):
        try:
            data = candidate.read_bytes()
        except FileNotFoundError:
            continue
        try:
            return _parse(data)
        except (ValueError, KeyError, TypeError, AttributeError, ImportError, IndexError) as exc:
            raise SnapshotError(f"cannot read snapshot {candidate}: {exc}") from exc
    return None


def _parse(data: bytes) -> tuple[dict[str, Any], float]:
    buffers: list[memoryview] | None = None
    if data.startswith(_MAGIC):
        length_end = data.index(b"\n", len(_MAGIC))
        start = length_end + 1
        end = start + int(data[len(_MAGIC) : length_end])
        body = json.loads(data[start:end])
        buffers, offset, view = [], end, memoryview(data)
        for size in body["buffers"]:
            if offset + size > len(data):
                raise SnapshotError("the file ends inside an array (truncated?)")
            buffers.append(view[offset : offset + size])
            offset += size
    else:
        body = json.loads(data)  # format 1: all JSON, arrays as base64
        if body.get("format") != 1:
            raise SnapshotError(f"format {body.get('format')!r}, this version reads 1 and {FORMAT_VERSION}")
    return {k: decode(v, buffers) for k, v in body["state"].items()}, float(body["written_at"])


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporary files of writers that died (Ray kills a dead actor's children): older than any live one."""
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > _CHILD_TIMEOUT:
                    tmp.unlink()


def _saved(key: str) -> bool:
    # "_saved*" and "_next_save*" are kept by prefix: snapshots written before _SKIP named them lack them anyway.
    return key not in _SKIP and not key.startswith(("_saved", "_next_save"))


@dataclasses.dataclass
class _Child:
    """A forked process writing a snapshot."""

    pid: int
    reports: int  # the report count of the image it writes
    started: float  # time.monotonic() before the fork


@dataclasses.dataclass
class SnapshottingAggregator(Aggregator):
    """An :class:`Aggregator` that restores its state from, and saves it to, ``config.snapshots``.

    Snapshots are written by a forked child (see :func:`_fork_writer`) unless
    ``config.snapshots.background`` is off or the system has no ``os.fork``;
    then, and when a fork fails, the actor writes them itself.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._saved_reports = -1
        self._next_save_allowed = 0.0
        self.restored_from: float | None = None
        settings = self.config.snapshots
        self._background = settings.background and hasattr(os, "fork")
        self._child: _Child | None = None
        self._path = Path(settings.dir) / SNAPSHOT_FILE if settings.enabled and settings.dir else None
        if self._path is None:
            return
        _remove_stale_temporaries(self._path)
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
            if _saved(key):
                setattr(self, key, value)
        self._saved_reports = self._reports
        self.restored_from = written_at
        logger.warning(
            "gradwatch: aggregator restored %d runs from a snapshot written %.1f s ago",
            len(self._runs),
            time.time() - written_at,
        )

    def save_snapshot(self, force: bool = False) -> bool:
        """Start writing the state if it changed since the last snapshot; True when started (or written).

        In the background, the write counts as done once the child has exited
        successfully (seen at a later call); a failed one is logged and retried.
        ``force`` (the front's last snapshot at shutdown) skips the throttle,
        waits for a child in flight and writes in-line: when it returns, the
        file holds the current state.
        """
        if self._path is None:
            return False
        self._reap(block=force)
        if self._reports == self._saved_reports:
            return False
        # One child at a time, so they never pile up, and the throttle: the actor ingests nothing
        # while it forks (~10 ms for 300 MB) or, without a fork, writes (a 256-run state takes ~0.4 s).
        if not force and (self._child is not None or time.monotonic() < self._next_save_allowed):
            return False
        started = time.monotonic()
        state = self.saved_state()
        if not force and self._background and self._fork(state, started):
            return True
        write_snapshot(self._path, state)
        self._saved_reports = self._reports
        finished = time.monotonic()
        self._next_save_allowed = finished + _BUSY_FACTOR * (finished - started)
        return True

    def _fork(self, state: dict[str, Any], started: float) -> bool:
        """Hand ``state`` to a forked writer; False when the fork failed (the caller writes in-line)."""
        assert self._path is not None
        try:
            pid = _fork_writer(self._path, state)
        except OSError:
            logger.warning("gradwatch: cannot fork to write the aggregator snapshot; writing it in-line", exc_info=True)
            return False
        self._child = _Child(pid, self._reports, started)
        forked = time.monotonic()
        self._next_save_allowed = forked + _BUSY_FACTOR * (forked - started)
        return True

    def _reap(self, block: bool) -> None:
        """Collect the child if it has exited (wait for it when ``block``); kill one that is stuck."""
        child = self._child
        if child is None:
            return
        stuck = False
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - child.started > _CHILD_TIMEOUT:
                    stuck = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(child.pid, 0)
                    break
                if not block:
                    return
                time.sleep(0.005)
        except ChildProcessError:
            # Reaped by someone else (SIGCHLD ignored in this process): its outcome cannot be
            # known, so neither can a later child's. Write in-line from now on, starting next call.
            self._child = None
            self._background = False
            logger.warning("gradwatch: cannot wait for snapshot writers here; writing snapshots in-line from now on")
            return
        self._child = None
        code = os.waitstatus_to_exitcode(status)
        if code == 0 and not stuck:
            self._saved_reports = child.reports
            cpu = usage.ru_utime + usage.ru_stime
            self._next_save_allowed = max(self._next_save_allowed, child.started + cpu / _CHILD_CPU_SHARE)
            return
        assert self._path is not None
        with contextlib.suppress(OSError):  # a killed child may leave its temporary file; a broken dir, none
            _temporary(self._path, child.pid).unlink(missing_ok=True)
        if stuck:
            outcome = f"was still running after {_CHILD_TIMEOUT:.0f} s and was killed"
        else:
            outcome = f"exited with code {code}" if code > 0 else f"was killed by signal {-code}"
        logger.warning(
            "gradwatch: the aggregator snapshot writer (pid %d) %s; the next snapshot tries again", child.pid, outcome
        )

    def saved_state(self) -> dict[str, Any]:
        """The attributes a snapshot holds (everything but the config and the snapshotting machinery)."""
        return {k: v for k, v in vars(self).items() if _saved(k)}

    def snapshot_info(self) -> dict[str, Any]:
        """Where snapshots go and when this actor was restored (for tests and operators)."""
        return {
            "path": None if self._path is None else str(self._path),
            "restored_from": self.restored_from,
            "background": self._background,
        }
