"""One device→host copy per report.

Values produced on the training step stay on their device until a report is
closed. Then, per device, they are concatenated into one flat tensor and
copied to host memory asynchronously: on CUDA into a page-locked buffer taken
from a small pool (reused report after report, so no allocation or pinning on
the training thread in steady state), with completion marked by an event. The
sender thread waits on the event, never the training thread; once it has read
the values it gives the buffer back to the pool.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

#: Where a value lives in the gathered copy: (device key, offset, length).
Slot = tuple[str, int, int]


class PinnedPool:
    """Page-locked host buffers, reused by size (reports of one model mostly have one or two sizes).

    ``take`` runs on the training thread and ``give`` on the sender thread;
    ``dict.setdefault`` and ``deque`` appends and pops are atomic, so no lock
    is needed. At most ``keep`` buffers per size are kept.
    """

    def __init__(self, keep: int = 4, allocate: Callable[[int], torch.Tensor] | None = None) -> None:
        self._free: dict[int, deque[torch.Tensor]] = {}
        self._keep = keep
        self._allocate = allocate or _pinned
        #: Buffers pinned so far (a steady state stops allocating).
        self.allocated = 0

    def take(self, numel: int) -> torch.Tensor:
        try:
            return self._free.setdefault(numel, deque()).pop()
        except IndexError:
            self.allocated += 1
            return self._allocate(numel)

    def give(self, buffer: torch.Tensor) -> None:
        free = self._free.setdefault(buffer.numel(), deque())
        if len(free) < self._keep:
            free.append(buffer)


def _pinned(numel: int) -> torch.Tensor:
    return torch.empty(numel, dtype=torch.float64, pin_memory=True)


@dataclass
class DeviceGather:
    """Collects device tensors of one report and copies them in one go."""

    pool: PinnedPool = field(default_factory=PinnedPool)
    _parts: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _sizes: dict[str, int] = field(default_factory=dict)

    def add(self, tensor: torch.Tensor) -> Slot:
        """Queue ``tensor`` (any shape) for the copy; returns where it will be."""
        flat = tensor.detach().reshape(-1)
        key = str(flat.device)
        offset = self._sizes.get(key, 0)
        self._parts.setdefault(key, []).append(flat)
        self._sizes[key] = offset + flat.numel()
        return key, offset, flat.numel()

    def start_copy(self) -> HostValues:
        """Enqueue the copies; returns at once without waiting for the device."""
        copies: dict[str, tuple[torch.Tensor, torch.cuda.Event | None, torch.Tensor]] = {}
        for key, parts in self._parts.items():
            # float64 so that no finite loss becomes inf on the way (fp32 stops at 3.4e38).
            flat = torch.cat([p.to(torch.float64) for p in parts])
            if flat.device.type == "cuda":
                host = self.pool.take(flat.numel())
                host.copy_(flat, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                copies[key] = (host, event, flat)
            else:
                copies[key] = (flat.to("cpu"), None, flat)
        return HostValues(copies, self.pool)


class HostValues:
    """The host side of a gathered copy; ``read`` may block until it lands."""

    def __init__(
        self,
        copies: dict[str, tuple[torch.Tensor, torch.cuda.Event | None, torch.Tensor]],
        pool: PinnedPool | None = None,
    ) -> None:
        self._copies = copies
        self._pool = pool
        self._lists: dict[str, list[float]] | None = None

    def read(self) -> dict[str, list[float]]:
        if self._lists is None:
            lists = {}
            for key, (host, event, _) in self._copies.items():
                if event is not None:
                    _wait(event)
                lists[key] = host.tolist()
                if event is not None and self._pool is not None:
                    self._pool.give(host)
            self._lists = lists
            self._copies = {}  # release device memory
        return self._lists


#: Polling interval while the copy is in flight: first and longest sleep between checks.
POLL_FIRST_S = 0.0002
POLL_MAX_S = 0.005


def _wait(event: torch.cuda.Event, sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait for ``event`` by polling with growing sleeps rather than ``event.synchronize()``.

    The copy is queued behind the rest of the training step, so it can be a whole step away.
    ``synchronize`` spin-waits by default (CUDA's automatic scheduling spins when there are more
    cores than GPUs): on a 1.3B GPT that kept a core busy for most of every reporting step.
    Polling costs microseconds per check and adds at most ``POLL_MAX_S`` to a report's latency.
    """
    pause = POLL_FIRST_S
    while not event.query():
        sleep(pause)
        pause = min(2 * pause, POLL_MAX_S)
