"""``/metrics`` text rendered in a child process, so that a scrape does not hold up ingest.

A big service's exposition is large: 64 runs of 1,000 layers are 455,000 series,
39 MB of text, about a quarter of a second of CPU to write. In the front's own
process that quarter second holds the interpreter, and every report arriving
meanwhile waits for it; with Prometheus scraping every 5 s (``deploy/``), a 50 ms
ingest p99 became 400 ms (``benchmarks/aggregator_ingest.py`` scrapes as it does).
A child process renders instead, at a lower CPU priority than ingest: the
front only pickles the snapshot to it (a few MB) and sends back the bytes,
gzip-compressed when the scraper accepts it, as Prometheus does (5.6 MB
instead of 39 for the front to copy and the network to carry).

The child is started with ``spawn`` (the front holds Ray's threads, which a fork
would copy in whatever state they are), once, and kept: the collector's per-run
templates live there from scrape to scrape. If it dies, the next scrape starts
another; if no child can be started at all, the front renders in a thread as
before.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from gradwatch.service.aggregator import AggregatorSnapshot
from gradwatch.service.exposition import SnapshotCollector

logger = logging.getLogger("gradwatch.service")

#: Consecutive failed renders in children after which the front renders in a thread for good.
MAX_CHILD_FAILURES = 3
#: How much less CPU priority the renderer has than the front and the aggregator (ingest comes first).
RENDER_NICE = 5

_collector: SnapshotCollector | None = None  # the child's own, with its templates


def _start_child() -> None:
    global _collector
    with contextlib.suppress(OSError):
        os.nice(RENDER_NICE)
    _collector = SnapshotCollector()


def _render_in_child(snapshots: list[AggregatorSnapshot], tail: bytes, gzipped: bool) -> bytes:
    assert _collector is not None
    return _body(_collector, snapshots, tail, gzipped)


def _body(collector: SnapshotCollector, snapshots: list[AggregatorSnapshot], tail: bytes, gzipped: bool) -> bytes:
    """The exposition: ``snapshots``' series, then ``tail`` (the front's own registry); gzipped if asked."""
    collector.update(snapshots)
    body = collector.render() + tail
    # Level 1: a seventh of the size (39 -> 5.6 MB) for half the render's time again; higher levels
    # take three times as long for 10% less.
    return gzip.compress(body, compresslevel=1, mtime=0) if gzipped else body


class RenderWorker:
    """Renders :class:`SnapshotCollector` text in a kept child process; in a thread when no child can run."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._failures = 0
        self._lock = asyncio.Lock()  # one render at a time: the child's templates are not shared

    async def render(self, snapshots: list[AggregatorSnapshot], tail: bytes = b"", gzipped: bool = False) -> bytes:
        """The exposition of ``snapshots`` followed by ``tail``, gzip-compressed when ``gzipped``."""
        async with self._lock:
            if self._failures < MAX_CHILD_FAILURES:
                try:
                    body = await asyncio.get_running_loop().run_in_executor(
                        self._child(), _render_in_child, snapshots, tail, gzipped
                    )
                    self._failures = 0
                    return body
                except (BrokenProcessPool, OSError):
                    # A child killed (the OOM killer, say) or one that cannot start: this scrape
                    # is rendered here, and the next one tries a new child.
                    self._failures += 1
                    logger.warning(
                        "gradwatch: the /metrics renderer process failed; rendering in-process", exc_info=True
                    )
                    self.close()
            return await asyncio.to_thread(_body, SnapshotCollector(), snapshots, tail, gzipped)

    def _child(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_child
            )
        return self._pool

    def close(self) -> None:
        """Stop the child, if any (the service is stopping, or the child failed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
