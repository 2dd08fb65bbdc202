"""``/metrics`` text rendered in a child process, so that a scrape does not hold up ingest.

A big service's exposition is large: 64 runs of 1,000 layers are 450,000 series,
40 MB of text, about a quarter of a second of CPU to write. In the front's own
process that quarter second holds the interpreter, and every report arriving
meanwhile waits for it; with Prometheus scraping every 5 s (``deploy/``), a 60 ms
ingest p99 became 400 ms (``benchmarks/aggregator_ingest.py`` scrapes as it does).
A child process renders instead, at a lower CPU priority than ingest: the
front pickles the snapshot to it (a few MB) and reads back the bytes,
gzip-compressed when the scraper accepts it, as Prometheus does (5.6 MB
instead of 40 for the front to copy and the network to carry).

The child is a plain ``python -m gradwatch.service.render_worker`` speaking
length-prefixed frames over its stdin and stdout, not a multiprocessing
worker: ``spawn`` would re-run the main script of a process that embeds the
service next to its training code, and ``fork`` would copy Ray's threads. It
is started at the first scrape and kept (the collector's per-run templates
live there), in a session of its own so that a Ctrl-C meant for the front does
not reach it, and it exits when its stdin closes, so it never outlives the front,
however that stops. A render that fails or takes longer than
``RENDER_TIMEOUT_SECONDS`` kills the child; that scrape is rendered in a
thread of the front's, and the next one starts a new child (after
``MAX_CHILD_FAILURES`` failures in a row, not before ``CHILD_RETRY_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import IO

from gradwatch.service.exposition import SnapshotCollector
from gradwatch.service.metrics_state import AggregatorSnapshot

logger = logging.getLogger("gradwatch.service")

#: How much less CPU priority the renderer has than the front and the aggregator (ingest comes first).
RENDER_NICE = 5
#: A render (child start included) taking longer than this is presumed stuck and its child killed.
#: Prometheus' default scrape_timeout is 10 s; a 64-run, 1,000-layer render takes about one.
RENDER_TIMEOUT_SECONDS = 30.0
#: Failures in a row after which scrapes are rendered in the front for CHILD_RETRY_SECONDS.
MAX_CHILD_FAILURES = 3
CHILD_RETRY_SECONDS = 300.0

_LENGTH_BYTES = 8
_OK, _ERROR = b"\x00", b"\x01"


class RenderError(RuntimeError):
    """The child could not render (its message says why) or stopped answering."""


class _ChildExited(Exception):
    """The child closed its end of the pipe."""


def _body(collector: SnapshotCollector, snapshots: list[AggregatorSnapshot], tail: bytes, gzipped: bool) -> bytes:
    """The exposition: ``snapshots``' series, then ``tail`` (the front's own registry); gzipped if asked."""
    collector.update(snapshots)
    body = collector.render() + tail
    # Level 1, the cheapest: it already takes the text to a seventh (40 -> 5.6 MB, 132 ms;
    # benchmarks/metrics_scrape.py), and the child's CPU is the machine's too.
    return gzip.compress(body, compresslevel=1, mtime=0) if gzipped else body


def _write_frame(stream: IO[bytes], *parts: bytes) -> None:
    stream.write(sum(len(p) for p in parts).to_bytes(_LENGTH_BYTES, "big"))
    for part in parts:
        stream.write(part)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame; None at a clean end of the stream, EOFError at an end inside a frame."""
    head = stream.read(_LENGTH_BYTES)
    if not head:
        return None
    if len(head) < _LENGTH_BYTES:
        raise EOFError("the stream ended inside a frame's length")
    length = int.from_bytes(head, "big")
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("the stream ended inside a frame")
    return data


def main() -> None:
    """The child: render each request from stdin to stdout until stdin closes."""
    with contextlib.suppress(OSError):
        os.nice(RENDER_NICE)
    # The protocol gets its own copy of stdout; anything else printed lands on stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    collector = SnapshotCollector()
    while (request := _read_frame(requests)) is not None:
        try:
            snapshots, tail, gzipped = pickle.loads(request)  # from the front that started this process
            _write_frame(replies, _OK, _body(collector, snapshots, tail, gzipped))
        except Exception as exc:  # noqa: BLE001 - said to the front, which renders this scrape itself
            _write_frame(replies, _ERROR, f"{type(exc).__name__}: {exc}".encode())


class RenderWorker:
    """Renders the exposition in a kept child process; in a thread when the child fails."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._generation = 0  # counts close() calls, so a render's thread knows when it was stopped
        self._failures = 0
        self._retry_at = 0.0
        self._fallback = SnapshotCollector()  # the front's own, with its templates, for renders here
        self._lock = asyncio.Lock()  # one render at a time: one child, one set of templates

    async def render(
        self,
        snapshots_of: Callable[[], Awaitable[list[AggregatorSnapshot]]],
        tail_of: Callable[[], bytes],
        gzipped: bool = False,
    ) -> bytes:
        """The exposition of ``snapshots_of()``, then ``tail_of()``, gzip-compressed when ``gzipped``.

        Both are taken once this render's turn comes, so scrapes queued behind a slow one
        hold no stale copies meanwhile.
        """
        async with self._lock:
            snapshots, tail = await snapshots_of(), tail_of()
            if self._failures < MAX_CHILD_FAILURES or time.monotonic() >= self._retry_at:
                try:
                    body = await asyncio.wait_for(
                        asyncio.to_thread(self._exchange, snapshots, tail, gzipped), RENDER_TIMEOUT_SECONDS
                    )
                    self._failures = 0
                    return body
                except (RenderError, OSError, EOFError, pickle.PicklingError, TimeoutError) as exc:
                    self._failed(exc)
                except asyncio.CancelledError:
                    # Its thread may still be talking to the child; the next render must not join in.
                    self.close()
                    raise
            return await asyncio.to_thread(_body, self._fallback, snapshots, tail, gzipped)

    @property
    def child_pid(self) -> int | None:
        """The child's process id while one runs (for operators and tests)."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def _exchange(self, snapshots: list[AggregatorSnapshot], tail: bytes, gzipped: bool) -> bytes:
        """One request and its reply (in a thread: the pipes block).

        A kept child found dead when asked (killed while idle, say) is replaced at once, so it
        costs this scrape nothing; a new child that fails is the caller's failure.
        """
        request = pickle.dumps((snapshots, tail, gzipped), protocol=5)
        child, generation = self._child, self._generation
        if child is not None and child.poll() is None:
            try:
                return self._ask(child, request)
            except (OSError, EOFError, _ChildExited):
                if generation != self._generation:
                    # close() killed it: a render that timed out, whose caller has gone on without
                    # it. Starting a child from here would race the next scrape for it.
                    raise RenderError("the renderer process was stopped") from None
                self.close()
        child = self._child = subprocess.Popen(
            [sys.executable, "-m", "gradwatch.service.render_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # no Ctrl-C from the front's terminal
        )
        try:
            return self._ask(child, request)
        except _ChildExited as exc:
            raise RenderError(f"the renderer process exited (code {child.wait()})") from exc

    @staticmethod
    def _ask(child: subprocess.Popen[bytes], request: bytes) -> bytes:
        assert child.stdin is not None and child.stdout is not None
        _write_frame(child.stdin, request)
        reply = _read_frame(child.stdout)
        if reply is None:
            raise _ChildExited
        if reply[:1] != _OK:
            raise RenderError(reply[1:].decode(errors="replace"))
        return reply[1:]

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures >= MAX_CHILD_FAILURES:
            self._retry_at = time.monotonic() + CHILD_RETRY_SECONDS
        logger.warning(
            "gradwatch: the /metrics renderer process failed (%s); this scrape is rendered in-process%s",
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            f", and so are all for {CHILD_RETRY_SECONDS:.0f} s" if self._failures >= MAX_CHILD_FAILURES else "",
        )
        self.close()

    def close(self) -> None:
        """Stop the child, if any (the service is stopping, or the child failed)."""
        self._generation += 1
        child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(OSError):
            child.kill()  # a render in flight ends with it: its thread reads the end of the pipe
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)
        for stream in (child.stdin, child.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # belt and braces: the front's Ctrl-C is the front's
    main()
