"""What the training loop passes to ``mon.step()``, made into values of a step record.

Nothing here raises: a value that cannot be recorded costs itself (with one warning), never the
report it would have travelled in.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from gradwatch.agents.gather import DeviceGather
from gradwatch.agents.pending import Pending
from gradwatch.wire import MAX_SCALAR_NAME, MAX_SCALARS_PER_STEP, is_valid_scalar_name

#: warn(key, message): log ``message`` the first time ``key`` is seen.
Warn = Callable[[str, str], None]


def pending_value(value: Any, name: str, gather: DeviceGather, warn: Warn) -> Pending:
    """A number now, or a slot in the report's device copy for a tensor."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            warn(name, f"gradwatch: {name} has {value.numel()} elements; recording its mean")
            value = value.detach().float().mean()
        elif value.grad_fn is None:
            # Read when the report is copied, steps later: a tensor the loop updates in place (a tensor
            # lr, a running count) would be recorded with its later value. The copy is the float64 cast
            # the report's copy makes anyway, made now. A loss with a graph is the step's own.
            value = value.detach().to(torch.float64, copy=True)
        return gather.add(value)
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an integer past float's range
            with contextlib.suppress(Exception):
                return math.inf if value > 0 else -math.inf  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - a Real that will not convert costs only itself
            pass
    warn(name, f"gradwatch: ignoring {name} of type {type(value).__name__}; pass a number or a tensor")
    return None


def pending_scalars(scalars: dict[str, Any], value_of: Callable[[Any, str], Pending], warn: Warn) -> dict[str, Pending]:
    """The named scalars the service takes (valid names, at most MAX_SCALARS_PER_STEP); the rest warned of once.

    One the service would refuse would take the whole report, and the steps in it, with it.
    """
    kept: dict[str, Pending] = {}
    for name, value in scalars.items():
        if not is_valid_scalar_name(name):
            warn(
                "scalar name",
                f"gradwatch: ignoring scalar {name[:80]!r}: names must match [A-Za-z_][A-Za-z0-9_]* "
                f"(at most {MAX_SCALAR_NAME} characters)",
            )
        elif len(kept) >= MAX_SCALARS_PER_STEP:
            warn("scalar count", f"gradwatch: recording the first {MAX_SCALARS_PER_STEP} scalars of a step only")
        else:
            kept[name] = value_of(value, name)
    return kept
