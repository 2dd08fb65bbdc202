"""Step records of one report as the training thread leaves them, decoded on the sender thread.

The training thread queues device values into a :class:`DeviceGather` and
keeps only where each one will be (a :data:`Slot`); the sender thread waits for
the copy and turns slots into the numbers of the wire's step records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradwatch.agents.gather import HostValues, Slot
from gradwatch.agents.layout import LayerLayout

#: Value of one field of a step record before the report is read on the host.
Pending = float | Slot | None


@dataclass
class LayerPending:
    """Device results of one statistics step (one entry per device group)."""

    grads: list[Slot] = field(default_factory=list)
    weights: list[Slot] = field(default_factory=list)
    updates: list[Slot] = field(default_factory=list)
    grad_layers: set[int] = field(default_factory=set)
    #: Layers with a parameter the optimizer trains that got no gradient; None: not checked.
    grad_missing: set[int] | None = None


@dataclass
class StepPending:
    step: int
    values: dict[str, Pending]
    scalars: dict[str, Pending]
    skipped: bool
    layers: LayerPending | None
    #: What the recurrence probe's module index refers to, on steps it measured.
    recurrent_names: list[str] | None = None
    #: Per name: the module is gated (an LSTM or GRU).
    recurrent_gated: list[bool] | None = None


class CarriedMaxAbs:
    """The weights' max-abs per layer as last measured, for the statistics steps that do not measure it
    (``stats.NOT_MEASURED``, on a CPU). Used by one sender thread, report after report, in step order.

    Only a finite measurement is carried: after a NaN/Inf (the run may restore a checkpoint next) and
    before any measurement reached the sender (a report dropped or lost), a layer not measured on its
    step is sent as None, not measured, rather than as a value it may no longer have.
    """

    def __init__(self) -> None:
        self._last: list[float | None] = []

    def fill(self, measured: list[float]) -> list[float | None]:
        if not measured:  # a record without weight statistics (the optimizer's step failed after its pre-hook)
            return []
        if len(self._last) != len(measured):
            self._last = [None] * len(measured)
        filled: list[float | None] = []
        for layer, value in enumerate(measured):
            if value < 0:
                filled.append(self._last[layer])
            else:
                filled.append(value)
                self._last[layer] = value if math.isfinite(value) else None
        return filled


class PendingReport:
    """Step records of one report, decoded on the sender thread."""

    def __init__(
        self,
        steps: list[StepPending],
        host: HostValues,
        layout: LayerLayout,
        weight_max_abs: CarriedMaxAbs | None = None,
    ) -> None:
        self._steps = steps
        self._host = host
        self._layout = layout
        self._weight_max_abs = weight_max_abs or CarriedMaxAbs()
        self.num_steps = len(steps)

    def records(self) -> list[dict]:
        values = self._host.read()
        num_layers = self._layout.num_layers

        def resolve(item: Pending) -> float | None:
            if isinstance(item, tuple):
                key, offset, _ = item
                return values[key][offset]
            return item

        def combined(slots: list[Slot], row: int) -> list[float]:
            """Row 0 (sum of squares) adds over devices; row 1 (max-abs) takes the max."""
            parts = [
                values[key][offset + row * num_layers : offset + (row + 1) * num_layers] for key, offset, _ in slots
            ]
            if len(parts) == 1:
                return parts[0]
            reduce = max if row == 1 else sum
            return [reduce(column) for column in zip(*parts, strict=True)]

        out = []
        for pending in self._steps:
            record: dict[str, Any] = {"step": pending.step, "skipped": pending.skipped}
            for name, item in pending.values.items():
                record[name] = resolve(item)
            if "local_grad_nonfinite" in record:
                record["local_grad_nonfinite"] = record["local_grad_nonfinite"] != 0.0
            if "recurrent_module" in record:
                index, names = record.pop("recurrent_module"), pending.recurrent_names or []
                if index is not None and 0 <= index < len(names):
                    record["recurrent_module"] = names[int(index)]
                    gated = pending.recurrent_gated or []
                    if int(index) < len(gated):
                        record["recurrent_gated"] = gated[int(index)]
            if pending.scalars:
                record["scalars"] = {name: resolve(item) for name, item in pending.scalars.items()}
            if pending.layers is not None:
                layers = pending.layers
                grad_sumsq = combined(layers.grads, 0)
                # The caller's norm (typically clip_grad_norm_'s, before clipping) wins
                # over ours, which is measured after any clipping.
                if layers.grad_layers and record.get("grad_norm") is None:
                    record["grad_norm"] = math.sqrt(math.fsum(grad_sumsq[i] for i in layers.grad_layers))
                record["layers"] = self._layer_record(layers, grad_sumsq, combined)
            out.append(record)
        return out

    def _layer_record(self, layers: LayerPending, grad_sumsq: list[float], combined: Any) -> dict:
        present = layers.grad_layers
        record: dict[str, Any] = {
            "names": list(self._layout.names),
            "numel": list(self._layout.numel),
            "grad_norm": [math.sqrt(v) if i in present else None for i, v in enumerate(grad_sumsq)],
            "grad_max_abs": [v if i in present else None for i, v in enumerate(combined(layers.grads, 1))],
            "weight_norm": [math.sqrt(v) for v in combined(layers.weights, 0)],
            "weight_max_abs": self._weight_max_abs.fill(combined(layers.weights, 1)),
        }
        if layers.grad_missing is not None:
            # A layer of which any parameter got a gradient is reached by the loss.
            record["grad_missing"] = sorted(layers.grad_missing - present)
        if layers.updates:
            deltas, befores = combined(layers.updates, 0), combined(layers.updates, 1)
            record["update_ratio"] = [_ratio(d, b) for d, b in zip(deltas, befores, strict=True)]
        return record


def _ratio(delta_sumsq: float, before_sumsq: float) -> float:
    if before_sumsq > 0:
        return math.sqrt(delta_sumsq / before_sumsq)
    # A zero tensor that stayed zero did not change; one that moved changed without bound.
    return 0.0 if delta_sumsq == 0 else math.inf
