"""One device→host copy per report.

Values produced on the training step stay on their device until a report is
closed. Then, per device, they are concatenated into one flat tensor and
copied to host memory asynchronously (pinned memory on CUDA, completion marked
by an event). The sender thread waits on the event, never the training thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Where a value lives in the gathered copy: (device key, offset, length).
Slot = tuple[str, int, int]


@dataclass
class DeviceGather:
    """Collects device tensors of one report and copies them in one go."""

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
                host = torch.empty(flat.numel(), dtype=torch.float64, pin_memory=True)
                host.copy_(flat, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                copies[key] = (host, event, flat)
            else:
                copies[key] = (flat.to("cpu"), None, flat)
        return HostValues(copies)


class HostValues:
    """The host side of a gathered copy; ``read`` may block until it lands."""

    def __init__(self, copies: dict[str, tuple[torch.Tensor, torch.cuda.Event | None, torch.Tensor]]) -> None:
        self._copies = copies
        self._lists: dict[str, list[float]] | None = None

    def read(self) -> dict[str, list[float]]:
        if self._lists is None:
            lists = {}
            for key, (host, event, _) in self._copies.items():
                if event is not None:
                    event.synchronize()
                lists[key] = host.tolist()
            self._lists = lists
            self._copies = {}  # release device and pinned memory
        return self._lists
