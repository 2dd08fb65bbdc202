"""Did the weights change since the last step? Asked when the watched optimizer did not step."""

from __future__ import annotations

import torch

#: Compared each step: a few small tensors (biases, norm scales), about 10 microseconds on a CPU.
WITNESS_MAX_TENSORS = 4
WITNESS_MAX_NUMEL = 4096


class UpdateWitness:
    """A copy of a few small trainable tensors, compared with them at every ``mon.step()``.

    A step on which the optimizer given to ``watch()`` did not step is skipped (GradScaler found an
    inf) only if the weights stayed put. If they moved, something else trains the model: a new
    optimizer built mid-run, or a hand-written update beside an optimizer that only zeroes the
    gradients. Only on a CPU, where comparing costs no device synchronisation; on an accelerator
    ``moved()`` is None (cannot tell) and costs nothing.
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
        self._copy: torch.Tensor | None = None

    def moved(self) -> bool | None:
        """Whether any watched tensor changed since the previous call (False on the first); None: cannot tell."""
        if not self._params:
            return None
        now = torch.cat([p.detach().reshape(-1) for p in self._params])
        moved = self._copy is not None and not torch.equal(now, self._copy)
        self._copy = now
        return moved
