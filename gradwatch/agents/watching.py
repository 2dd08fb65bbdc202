"""``gradwatch.watch()``: argument checks, then a :class:`Monitor` (or a do-nothing one when disabled)."""

from __future__ import annotations

from typing import Any

import torch

from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions, default_endpoint
from gradwatch.wire import is_valid_run_name


class NullMonitor:
    """The same interface as :class:`Monitor`, doing nothing (``enabled=False``)."""

    run = ""
    delivered = 0
    dropped = 0

    def step(self, loss: Any = None, *, val_loss: Any = None, grad_norm: Any = None, **scalars: Any) -> None:
        """Do nothing."""

    def flush(self, timeout: float = 5.0) -> bool:
        """Nothing to send."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Do nothing."""

    def __enter__(self) -> NullMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def watch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    run: str,
    endpoint: str | None = None,
    **options: Any,
) -> Monitor | NullMonitor:
    """Start watching ``model`` (and ``optimizer``'s steps) as run ``run``.

    ``endpoint`` defaults to ``$GRADWATCH_ENDPOINT`` or the service on this
    host; ``actor://NAME`` hands reports straight to the aggregator actor of
    ``gradwatch serve --name NAME`` from inside the same Ray cluster (Ray
    Train workers). ``options`` are the fields of :class:`AgentOptions`. Mistakes in the
    arguments raise ``ValueError`` here, before training starts; after this,
    nothing the monitor does raises.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if not isinstance(run, str) or not is_valid_run_name(run):
        raise ValueError(
            f"run name {run!r} is not valid: use 1-128 characters from letters, digits and ._:@+=/- "
            "starting with a letter or digit"
        )
    parsed = AgentOptions(**options)
    if not parsed.enabled:
        return NullMonitor()
    return Monitor(model, optimizer, run=run, endpoint=endpoint or default_endpoint(), options=parsed)
