"""Did the weights change since the last step? Asked when the watched optimizer did not step."""

from __future__ import annotations

import torch

#: Compared each step: a few small tensors (biases, norm scales), about 10 microseconds on a CPU.
WITNESS_MAX_TENSORS = 4
WITNESS_MAX_NUMEL = 4096


class UpdateWitness:
    """A copy of a few small trainable tensors, kept at every ``mon.step()`` and compared with them only
    on a step where the watched optimizer did not step.

    Such a step was skipped (GradScaler found an inf) only if the weights stayed put. If they moved,
    something else trains the model: a new optimizer built mid-run, or a hand-written update beside an
    optimizer that only zeroes the gradients. Only on a CPU, where comparing costs no device
    synchronisation; on an accelerator ``moved()`` is None (cannot tell) and costs nothing.

    The copy goes into buffers made once, by one multi-tensor copy, and is compared only when needed:
    right after a training step every tensor operation pays for cold caches
    (``python benchmarks/hook_costs.py`` prints both in place and warm).
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        picked: list[torch.Tensor] = []
        total = 0
        for param in params:
            if param.device.type != "cpu":
                picked = []
                break
            if param.requires_grad and total + param.numel() <= WITNESS_MAX_NUMEL and len(picked) < WITNESS_MAX_TENSORS:
                picked.append(param)
                total += param.numel()
        self._params = picked
        self._copy: list[torch.Tensor] | None = None

    def remember(self) -> None:
        """Keep the tensors' values now (a step on which the watched optimizer stepped)."""
        if not self._params:
            return
        with torch.no_grad():
            copy = self._copy
            # A tensor replaced since by one of another shape or dtype (model.double()) would be cast or
            # broadcast into its old buffer, never equal again: make the buffers anew then.
            if copy is not None and all(
                c.shape == p.shape and c.dtype == p.dtype and c.device == p.device
                for c, p in zip(copy, self._params, strict=True)
            ):
                torch._foreach_copy_(copy, self._params)
                return
            self._copy = [p.detach().clone() for p in self._params]

    def moved(self) -> bool | None:
        """Whether any watched tensor changed since the previous call or ``remember()`` (False on the first
        look), keeping the values now; None: cannot tell."""
        if not self._params:
            return None
        before = self._copy
        moved = before is not None and not all(torch.equal(a, b) for a, b in zip(before, self._params, strict=True))
        self.remember()
        return moved
