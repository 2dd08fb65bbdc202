"""Helpers the benchmarks share: percentiles, a real ``gradwatch serve`` process, process memory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentiles(values: list[float]) -> dict[str, float]:
    """n, min, p50, p90, p99 and max (nearest rank), NaN for an empty list."""
    ordered = sorted(values)
    if not ordered:
        return dict.fromkeys(("n", "min", "p50", "p90", "p99", "max"), float("nan")) | {"n": 0}

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))]

    return {"n": len(ordered), "min": ordered[0], "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": ordered[-1]}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of process ``pid`` in MB (NaN when it is gone).

    ``field`` is a line of /proc/PID/status: VmRSS (all), RssAnon (private), RssShmem (shared memory).
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` so far (NaN when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, TypeError):
        return float("nan")


def parent(pid: int) -> int | None:
    """The parent of process ``pid`` (None when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc; Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        ppid = parent(int(entry.name))
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``gradwatch serve`` in a child process, on a private Ray instance, like a user would start it."""

    def __init__(self, name: str = "bench", config: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
        # Ray's socket paths must stay short, and must not collide with other Ray users on the machine.
        env.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="r", dir="/tmp"))
        command = [sys.executable, "-m", "gradwatch.cli", "serve", "--port", str(self.port), "--name", name]
        command += ["--log-level", "WARNING"] + (["--config", config] if config else [])
        self.log = tempfile.NamedTemporaryFile(prefix="gradwatch-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.actor_pid: int | None = None

    def wait_ready(self, timeout: float = 180.0) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gradwatch serve exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"gradwatch serve not ready in {timeout} s")
        return self

    def find_actor(self) -> int | None:
        """PID of the aggregator actor's worker process (Ray titles it ``ray::<class name>``).

        The actor's forked snapshot writers carry the same title; they are its children, and
        short-lived, so the actor is the titled process whose parent is not titled so.
        """
        titled = {
            pid
            for pid in descendants(self.proc.pid)
            if cmdline(pid).startswith("ray::") and "Aggregator" in cmdline(pid).split()[0]
        }
        actors = [pid for pid in titled if parent(pid) not in titled]
        self.actor_pid = min(actors) if actors else None
        return self.actor_pid

    def renderer_memory(self) -> float:
        """Private resident memory (MB) of the front's /metrics renderer child; NaN before the first scrape."""
        for pid in descendants(self.proc.pid):
            if "gradwatch.service.render_worker" in cmdline(pid):
                return rss_mb(pid, "RssAnon")
        return float("nan")

    def memory(self) -> dict[str, float]:
        """Private resident memory (MB) of the HTTP process and of the aggregator actor, and the shared.

        Both processes also map Ray's object store, which carries the batches between them: its
        pages count in each one's RSS as they are first touched, so RSS grows in both at once
        while neither leaks. ``shared`` is those pages as the actor sees them.
        """
        alive = self.actor_pid is not None and Path(f"/proc/{self.actor_pid}").exists()
        actor = self.actor_pid if alive else self.find_actor()
        nan = float("nan")
        return {
            "http": rss_mb(self.proc.pid, "RssAnon"),
            "actor": rss_mb(actor, "RssAnon") if actor else nan,
            "shared": rss_mb(actor, "RssShmem") if actor else nan,
        }

    def get(self, path: str, timeout: float = 60) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read()

    def get_json(self, path: str) -> object:
        return json.loads(self.get(path))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)

    def __enter__(self) -> ServeProcess:
        return self.wait_ready()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
