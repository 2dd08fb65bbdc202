"""Snapshots written by a forked child: the actor goes on at once, failures are retried, force is the newest.

These fork the test process for real; only the child's encoding is held (by a
gate file) so that the test can look at the parent while the child is busy.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from gradwatch.service import snapshots
from gradwatch.service.snapshots import SNAPSHOT_FILE, SnapshottingAggregator, read_snapshot
from gradwatch.wire import Report
from tests.unit.test_restart_snapshots import _config, _feed

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="background snapshots need os.fork")


class _Gate:
    """Holds a forked writer at its first encode until the test opens the gate; never holds the parent."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = directory / "gate"
        self.child_pid_file = directory / "child-pid"
        parent = os.getpid()
        real = snapshots.encode
        held = [True]

        def encode(value, buffers=None):
            if held[0] and os.getpid() != parent:
                held[0] = False
                self.child_pid_file.write_text(f"{os.getpid()} {os.nice(0)}")
                deadline = time.monotonic() + 30  # a test that never opens it must not leave a child behind
                while not self.path.exists():
                    if time.monotonic() > deadline:
                        raise TimeoutError("gate never opened")
                    time.sleep(0.005)
            return real(value, buffers)

        monkeypatch.setattr(snapshots, "encode", encode)

    def open(self) -> None:
        self.path.touch()


@pytest.fixture
def gate(tmp_path, monkeypatch) -> _Gate:
    return _Gate(tmp_path, monkeypatch)


def _running(pid: int) -> bool:
    """True while our child ``pid`` runs; False once it exited; raises ChildProcessError once reaped."""
    return os.waitpid(pid, os.WNOHANG) == (0, 0)


def _more(agg: SnapshottingAggregator, step: int) -> None:
    agg.ingest(Report.model_validate({"run": "b", "steps": [{"step": step, "loss": 2.0}]}))


def test_the_actor_returns_while_the_child_writes_and_the_result_restores(tmp_path, gate):
    path = tmp_path / SNAPSHOT_FILE
    agg = SnapshottingAggregator(_config(tmp_path))
    _feed(agg)
    assert agg.save_snapshot()
    child = agg._child
    assert child is not None and child.reports == agg._reports
    assert _running(child.pid) and not path.exists()  # returned before the child could write anything
    assert agg._saved_reports != agg._reports  # not counted until it succeeded
    _more(agg, 1)  # the parent goes on changing its own copy
    gate.open()
    agg._reap(block=True)
    assert agg._child is None and agg._saved_reports == child.reports
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # reaped: no zombie left
    # The child wrote under its own pid, not the parent's, at a lower priority, and left no temporary file.
    pid, nice = map(int, gate.child_pid_file.read_text().split())
    assert pid == child.pid != os.getpid()
    assert nice == min(os.nice(0) + snapshots._CHILD_NICE, 19)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SNAPSHOT_FILE, "gate", "child-pid"])
    state, _ = read_snapshot(path)
    assert state["_reports"] == child.reports  # the image at the fork, not the parent's later ingest
    restored = SnapshottingAggregator(_config(tmp_path))
    assert restored.runs() != agg.runs()  # run b moved on in the parent after the fork
    assert [r for r in restored.runs() if r["run"] == "a"] == [r for r in agg.runs() if r["run"] == "a"]


def test_one_writer_at_a_time(tmp_path, gate):
    agg = SnapshottingAggregator(_config(tmp_path))
    _feed(agg)
    assert agg.save_snapshot()
    first = agg._child
    _more(agg, 1)
    agg._next_save_allowed = 0.0
    assert not agg.save_snapshot()  # the first is still writing: no second child
    assert agg._child is first
    gate.open()
    agg._reap(block=True)
    agg._next_save_allowed = 0.0
    assert agg.save_snapshot()  # the ingest after the first fork is still unsaved
    agg._reap(block=True)
    assert agg._saved_reports == agg._reports


def test_a_failed_writer_is_logged_and_retried(tmp_path, caplog):
    directory = tmp_path / "snapshots"
    agg = SnapshottingAggregator(_config(directory))
    _feed(agg)
    directory.write_text("not a directory")  # the child cannot create the file
    assert agg.save_snapshot()
    pid = agg._child.pid
    agg._reap(block=True)
    assert f"snapshot writer (pid {pid}) exited with code 1" in caplog.text
    assert agg._saved_reports != agg._reports
    directory.unlink()
    agg._next_save_allowed = 0.0
    assert agg.save_snapshot()  # the same state again, without any new ingest
    agg._reap(block=True)
    assert agg._saved_reports == agg._reports
    assert SnapshottingAggregator(_config(directory)).runs() == agg.runs()


def test_a_stuck_writer_is_killed(tmp_path, gate, monkeypatch, caplog):
    monkeypatch.setattr(snapshots, "_CHILD_TIMEOUT", 0.2)
    agg = SnapshottingAggregator(_config(tmp_path))
    _feed(agg)
    assert agg.save_snapshot()
    pid = agg._child.pid
    agg._reap(block=True)  # the gate never opens
    assert "was still running after" in caplog.text and f"(pid {pid})" in caplog.text
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not list(tmp_path.glob("*.tmp")) and agg._saved_reports != agg._reports


def test_force_waits_for_the_child_then_writes_the_newest_state_in_line(tmp_path, gate):
    path = tmp_path / SNAPSHOT_FILE
    agg = SnapshottingAggregator(_config(tmp_path))
    _feed(agg)
    assert agg.save_snapshot()
    pid = agg._child.pid
    _more(agg, 1)
    assert _running(pid)
    opener = threading.Timer(0.3, gate.open)
    opener.start()
    try:
        assert agg.save_snapshot(force=True)
    finally:
        opener.join()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # the child is done: it cannot overwrite the newer file later
    assert agg._child is None and agg._saved_reports == agg._reports
    state, _ = read_snapshot(path)
    assert state["_reports"] == agg._reports


def test_in_line_when_background_is_off(tmp_path, monkeypatch):
    def no_fork():
        raise AssertionError("forked although background snapshots are off")

    monkeypatch.setattr(os, "fork", no_fork)
    agg = SnapshottingAggregator(_config(tmp_path, background=False))
    _feed(agg)
    assert agg.save_snapshot()
    assert agg._child is None and agg._saved_reports == agg._reports
    assert (tmp_path / SNAPSHOT_FILE).exists()


def test_in_line_when_the_fork_fails(tmp_path, monkeypatch, caplog):
    def no_memory():
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_memory)
    agg = SnapshottingAggregator(_config(tmp_path))
    _feed(agg)
    assert agg.save_snapshot()
    assert "cannot fork" in caplog.text
    assert agg._child is None and agg._saved_reports == agg._reports
    assert SnapshottingAggregator(_config(tmp_path)).runs() == agg.runs()


def test_in_line_without_os_fork(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "fork")
    agg = SnapshottingAggregator(_config(tmp_path))
    assert agg.snapshot_info()["background"] is False
    _feed(agg)
    assert agg.save_snapshot()
    assert agg._child is None and (tmp_path / SNAPSHOT_FILE).exists()


def test_a_dead_writers_temporary_file_is_removed_at_start(tmp_path):
    stale, fresh = tmp_path / f".{SNAPSHOT_FILE}.123.tmp", tmp_path / f".{SNAPSHOT_FILE}.456.tmp"
    stale.write_text("{")
    fresh.write_text("{")  # perhaps a writer still running
    old = time.time() - snapshots._CHILD_TIMEOUT - 10
    os.utime(stale, (old, old))
    SnapshottingAggregator(_config(tmp_path))
    assert not stale.exists() and fresh.exists()


def test_in_line_from_then_on_when_children_cannot_be_waited_for(tmp_path, monkeypatch, caplog):
    agg = SnapshottingAggregator(_config(tmp_path))
    _feed(agg)
    assert agg.save_snapshot()
    pid = agg._child.pid

    def reaped_elsewhere(*args):
        raise ChildProcessError(errno.ECHILD, "No child processes")  # as with SIGCHLD ignored

    with monkeypatch.context() as patch:
        patch.setattr(os, "wait4", reaped_elsewhere)
        agg._reap(block=True)
    os.waitpid(pid, 0)  # the test's own cleanup of the real child
    assert "writing snapshots in-line from now on" in caplog.text
    assert agg._child is None and agg._saved_reports != agg._reports  # outcome unknown: not counted
    agg._next_save_allowed = 0.0
    assert agg.save_snapshot()
    assert agg._child is None and agg._saved_reports == agg._reports
