"""Background delivery of step records to the aggregator.

The training thread only appends to an in-memory queue. A named daemon thread
turns finished device→host copies into step records, keeps them in a bounded
buffer (the oldest are dropped, and counted, when it is full), and posts them
in batches. Every exception on that thread is logged once and swallowed: the
training process never sees it, and a dead endpoint costs one warning.
"""

from __future__ import annotations

import atexit
import http.client
import ipaddress
import logging
import math
import os
import ssl
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

from pydantic import ValidationError

from gradwatch.agents import packed
from gradwatch.agents.options import AgentOptions
from gradwatch.wire import PACKED_CONTENT_TYPE, PACKED_MAGIC, Report

logger = logging.getLogger("gradwatch.agent")

REPORTS_PATH = "/v1/reports"
T = TypeVar("T")


class PendingRecords(Protocol):
    """Step records whose values may still be on their way to the host."""

    num_steps: int

    def records(self) -> list[dict]:
        """Wait for the values (off the training thread) and return step records."""


#: (body, timeout) -> (HTTP status, response text). Raises OSError when the
#: service cannot be reached. The seam lets unit tests run without a server.
#: The body is JSON unless the transport has a true ``accepts_packed``
#: attribute; then it may also be packed (it starts with PACKED_MAGIC).
Transport = Callable[[bytes, float], tuple[int, str]]


class HttpTransport:
    """POSTs report bodies over one kept-alive HTTP/1.1 connection."""

    #: Packed bodies go out with their own Content-Type (the service reads both).
    accepts_packed = True

    def __init__(
        self, endpoint: str, headers: dict[str, str] | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"endpoint {endpoint!r} must look like http://host:port")
        self._https = parsed.scheme == "https"
        self._ssl_context = ssl_context
        self._host = parsed.hostname
        self._port = parsed.port
        self._path = parsed.path.rstrip("/") + REPORTS_PATH
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._packed_headers = {**self._headers, "Content-Type": PACKED_CONTENT_TYPE}
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def from_options(cls, endpoint: str, options: AgentOptions) -> HttpTransport:
        """The transport for ``endpoint`` with the token and CA of ``options``."""
        headers = {}
        if options.token is not None:
            headers["Authorization"] = f"Bearer {options.token.get_secret_value()}"
        context = ssl.create_default_context(cafile=options.ca_file) if options.ca_file else None
        transport = cls(endpoint, headers, context)
        if options.token is not None and not transport._https and not _is_loopback(transport._host):
            logger.warning(
                "gradwatch: the token is sent to %s over plain HTTP; use an https:// endpoint (docs/operations.md)",
                endpoint,
            )
        return transport

    def __call__(self, body: bytes, timeout: float) -> tuple[int, str]:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._ssl_context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)  # a kept-alive connection: this call's timeout applies
        try:
            headers = self._packed_headers if body.startswith(PACKED_MAGIC) else self._headers
            self._conn.request("POST", self._path, body=body, headers=headers)
            response = self._conn.getresponse()
            text = response.read(4096).decode("utf-8", "replace")
            if response.will_close:
                self.close()
            return response.status, text
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise OSError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Sender:
    """Owns the delivery thread of one monitor."""

    def __init__(self, envelope: dict, transport: Transport, options: AgentOptions, describe: str) -> None:
        self._envelope = envelope
        self._transport = transport
        self._options = options
        self._describe = describe
        self.delivered = 0
        self.dropped = 0
        self._dropped_unreported = 0
        self._closed = False
        #: This process was forked from the one that built the sender: the run's end is the parent's to tell.
        self._in_forked_child = False
        # Packed bodies until a service answers that it reads only JSON (415: an older one).
        self._packed = bool(getattr(transport, "accepts_packed", False))
        self._reset_thread_state()
        os.register_at_fork(after_in_child=weak_call(self, Sender._after_fork_in_child))
        atexit.register(weak_call(self, Sender._at_exit))

    def _after_fork_in_child(self) -> None:
        self._reset_thread_state()
        self._in_forked_child = True
        # The parent's kept-alive connection is shared with the child: two
        # processes on one socket read each other's answers. The child closes
        # its copy of the descriptor (the parent's stays open) and dials anew.
        if hasattr(self._transport, "close"):
            self._transport.close()

    def _reset_thread_state(self) -> None:
        # Called at construction and in a forked child, where the parent's
        # thread does not exist and its locks may be held by nobody.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._inbox: deque[PendingRecords] = deque()
        self._buffer: deque[dict] = deque()
        self._thread: threading.Thread | None = None
        self._warned_unreachable = False
        self._warned_rejected = False
        self._failing_since: float | None = None
        self._flush_requested = False
        self._abandoned = False
        #: The last attempt was answered "busy, retry" (429/503), not left unanswered.
        self._busy = False

    # --- training thread -------------------------------------------------
    def submit(self, pending: PendingRecords) -> None:
        """Queue records for delivery; never blocks, never raises."""
        if self._closed:
            return
        with self._lock:
            self._idle.clear()
            self._inbox.append(pending)
        self._wake.set()
        # The inbox is bounded like the buffer: if the thread is stuck in a
        # hanging request, the oldest pending copies are dropped.
        while len(self._inbox) > self._options.buffer_steps:
            self._count_dropped(self._inbox.popleft().num_steps)
        if self._thread is None or not self._thread.is_alive():
            self._start_thread()

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far was delivered (or given up on)."""
        if self._thread is None:
            return not self._inbox and not self._buffer
        self._flush_requested = True
        self._wake.set()
        return self._idle.wait(timeout)

    def close(self, timeout: float) -> None:
        """Deliver what is buffered within ``timeout``, then stop the thread. Idempotent."""
        if self._closed:
            return
        # One deadline for everything: close(timeout) must return within timeout.
        deadline = time.monotonic() + timeout
        delivered_all = self.flush(timeout) and not self._buffer and not self._inbox
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(min(deadline - time.monotonic(), self._options.request_timeout), 0))
            finished = delivered_all and not self._thread.is_alive() and not self._failing_since and self.delivered
            # A forked child (a checkpoint writer, a worker) ending is not the run ending.
            if finished and not self._in_forked_child:
                self._send_final(min(deadline - time.monotonic(), self._options.request_timeout))
        self._abandon_leftovers()
        if hasattr(self._transport, "close"):
            self._transport.close()

    def _abandon_leftovers(self) -> None:
        """Count what close() could not deliver as dropped, so every record is delivered or dropped.

        A request still in flight (a hanging service) is counted here too; its
        late answer is then ignored, so no record is counted twice.
        """
        with self._lock:
            self._abandoned = True
            leftover = len(self._buffer) + sum(p.num_steps for p in self._inbox)
            self._buffer.clear()
            self._inbox.clear()
            self.dropped += leftover
            self._dropped_unreported += leftover

    def _send_final(self, timeout: float) -> None:
        """Tell the service this rank is done, so that its silence is not an alarm."""
        if timeout <= 0:
            return
        body = Report.model_validate({**self._envelope, "steps": [], "final": True}).model_dump_json()
        try:
            self._transport(body.encode(), timeout)
        except OSError:
            logger.debug("gradwatch: could not send the final report", exc_info=True)

    def _at_exit(self) -> None:
        self.close(exit_budget(self._options.close_timeout))

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"gradwatch-sender[{self._describe}]", daemon=True)
        self._thread.start()

    # --- sender thread ---------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        next_send = time.monotonic()
        while not self._closed:
            self._wake.wait(max(next_send - time.monotonic(), 0.0) if self._buffer else self._options.flush_interval)
            self._wake.clear()
            failed = False
            try:
                urgent = self._drain_inbox()
                now = time.monotonic()
                # A NaN is sent at once (unless the service is known to be down):
                # that is the alert people are waiting for. Everything else is
                # batched for flush_interval.
                due = now >= next_send or self._flush_requested or (urgent and not backoff)
                if self._buffer and due:
                    self._flush_requested = False
                    failed = not self._send_buffer()
                    backoff = min(max(2 * backoff, 0.1), self._options.max_backoff) if failed else 0.0
                    next_send = now + (backoff or self._options.flush_interval)
            except Exception:  # noqa: BLE001 - nothing may reach the training process
                logger.exception("gradwatch: unexpected error in the sender thread; continuing")
                failed = True
            with self._lock:
                # After a failed attempt a flush stops waiting: close() must not
                # hang on a dead service. A busy one (429/503: it answered) is
                # retried until the flush's own timeout instead.
                if not self._inbox and (not self._buffer or (failed and not self._busy)):
                    self._idle.set()

    def _drain_inbox(self) -> bool:
        """Move finished copies into the buffer; True when one holds a non-finite loss."""
        urgent = False
        while True:
            try:
                # The training thread may pop the oldest entry concurrently (inbox full).
                pending = self._inbox.popleft()
            except IndexError:
                return urgent
            try:
                records = pending.records()
            except Exception:  # noqa: BLE001
                logger.exception("gradwatch: could not read statistics for %d steps; dropped", pending.num_steps)
                self._count_dropped(pending.num_steps)
                continue
            with self._lock:
                if self._abandoned:  # close() gave up while these were read
                    self.dropped += len(records)
                    return urgent
                self._buffer.extend(records)
                excess = max(len(self._buffer) - self._options.buffer_steps, 0)
                for _ in range(excess):
                    self._buffer.popleft()
            urgent = urgent or any(_non_finite_loss(record) for record in records)
            if excess > 0:
                self._count_dropped(excess)

    def _send_buffer(self) -> bool:
        """Post everything buffered; False when the service could not take it."""
        while self._buffer:
            batch = [self._buffer[i] for i in range(min(len(self._buffer), self._options.max_steps_per_post))]
            with self._lock:
                dropped = self._dropped_unreported
            try:
                body = self._encode(dropped, batch)
            except ValidationError as exc:
                # Cannot happen with records built by the monitor; if it does,
                # retrying would loop forever, so the batch is dropped.
                logger.warning("gradwatch: dropped %d steps that do not fit the wire schema: %s", len(batch), exc)
                for _ in batch:
                    self._buffer.popleft()
                self._count_dropped(len(batch))
                continue
            try:
                status, text = self._transport(body, self._options.request_timeout)
            except OSError as exc:
                self._busy = False
                self._note_unreachable(str(exc))
                return False
            if status == 415 and body.startswith(PACKED_MAGIC):
                logger.info("gradwatch: the service does not read packed reports (an older one); sending JSON")
                self._packed = False
                continue
            self._busy = status in (429, 503)
            if status >= 500 or status in (408, 429):
                self._note_unreachable(f"HTTP {status}: {text[:200]}")
                return False
            with self._lock:
                if self._abandoned:
                    return False  # close() already counted this batch as dropped
                for _ in batch:
                    self._buffer.popleft()
                self._dropped_unreported -= dropped
            if 200 <= status < 300:
                self.delivered += len(batch)
                self._note_reachable()
            elif status in (401, 403):
                # Retrying cannot help until someone fixes the token: drop and count.
                self._count_dropped(len(batch))
                if not self._warned_rejected:
                    self._warned_rejected = True
                    logger.warning(
                        "gradwatch: the service refused this agent's token (HTTP %d) for %s. Training continues; "
                        "reports are dropped and counted. Pass watch(..., token=...) or set $GRADWATCH_TOKEN.",
                        status,
                        self._describe,
                    )
            else:
                self._count_dropped(len(batch))
                if not self._warned_rejected:
                    self._warned_rejected = True
                    logger.warning("gradwatch: the service rejected a report (HTTP %d): %s", status, text[:500])
        return True

    def _encode(self, dropped: int, batch: list[dict]) -> bytes:
        envelope = {**self._envelope, "dropped": dropped}
        if self._packed:
            try:
                return packed.encode(envelope, batch)
            except ValidationError:
                raise
            except (ValueError, TypeError):
                pass  # only JSON can carry this batch (a name holding NUL, say): JSON says what is wrong, if anything
        return Report.model_validate({**envelope, "steps": batch}).model_dump_json(exclude_none=True).encode()

    def _count_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped += n
            self._dropped_unreported += n

    def _note_unreachable(self, reason: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        if not self._warned_unreachable:
            self._warned_unreachable = True
            logger.warning(
                "gradwatch: cannot deliver reports for %s (%s). Training continues; up to %d steps are "
                "buffered and retried, older ones are dropped and counted.",
                self._describe,
                reason,
                self._options.buffer_steps,
            )

    def _note_reachable(self) -> None:
        if self._failing_since is not None:
            logger.warning(
                "gradwatch: reports for %s are delivered again after %.1f s (%d steps dropped so far)",
                self._describe,
                time.monotonic() - self._failing_since,
                self.dropped,
            )
            self._failing_since = None
            self._warned_unreachable = False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _non_finite_loss(record: dict) -> bool:
    """The record carries a NaN/Inf loss, or gradient norm on an applied step: worth sending at once."""
    # An Inf norm on a step GradScaler skipped is routine loss scaling.
    keys = ("loss", "val_loss") if record.get("skipped") else ("loss", "val_loss", "grad_norm")
    for key in keys:
        value = record.get(key)
        if value is not None and not math.isfinite(value):
            return True
    return False


#: When the interpreter's exit began closing monitors: one deadline for all of them.
_exit_started: list[float] = []


def exit_budget(close_timeout: float) -> float:
    """Seconds a monitor closed at exit may still take: ``close_timeout`` from the first one's start, shared.

    A process holding several monitors it never closed (a notebook cell run again) would otherwise
    wait close_timeout for each against a service that does not answer.
    """
    if not _exit_started:
        _exit_started.append(time.monotonic())
    return max(_exit_started[0] + close_timeout - time.monotonic(), 0.0)


def weak_call(obj: T, method: Callable[[T], None]) -> Callable[[], None]:
    """A callback that calls ``method(obj)`` while obj is alive, without keeping it alive."""
    ref = weakref.ref(obj)

    def call() -> None:
        target = ref()
        if target is not None:
            try:
                method(target)
            except Exception:  # noqa: BLE001 - runs at exit or after fork
                logger.debug("gradwatch: cleanup callback failed", exc_info=True)

    return call
