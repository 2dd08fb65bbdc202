"""How much gradient reaches the first time step of a recurrence.

A recurrent network can starve through time rather than through depth: the
label depends on an early input, but the gradient that flows back to it is
multiplied by one recurrent Jacobian per step and vanishes. Per-layer norms do
not show it, because the shared weights still get gradient from the last
steps. What shows it is the gradient at each time step:

* a fused recurrent module (``nn.RNN``/``nn.LSTM``/``nn.GRU``): the gradient of
  its input sequence, per time step (when the input does not need a gradient
  anyway, a leaf copy that does is passed in on the measured steps only);
* a module the forward calls again and again (a cell or a ``Linear`` in a
  hand-written loop): the gradient of each call's output.

The measure is ``RMS(gradient at the first step) / RMS(gradient at the last)``,
the worst over the probed modules, as a device value (never read here).

Hooks exist only for the forward of a statistics step. Which modules a loop
calls repeatedly is learned once, by counting calls during the first measured
forward; a model with neither kind keeps no hook at all afterwards.

The hooks are torch's global module hooks, dispatched here to the watched
modules, never hooks stored on the user's modules: a module's own hooks are
part of it, so ``torch.save(model)`` would have to pickle ours (it cannot, and
a checkpoint should not need gradwatch to load) and ``copy.deepcopy(model)``
(an EMA copy) would carry them into the copy.
"""

from __future__ import annotations

import functools
import logging
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle

from gradwatch.agents.layout import ROOT_LAYER

logger = logging.getLogger("gradwatch.agent")

# While the probe's global hooks exist, torch warns at each call of any torch.compile'd module in the process (a
# compiled teacher, say) that global hooks fire once more for its wrapper. Ours ignore every module but the
# watched ones; the warning would only alarm, and under -W error it would raise into the user's forward.
warnings.filterwarnings(
    "ignore", message=r"Using `torch\.compile\(module\)` when there are global hooks", category=UserWarning
)

#: Fewer time steps (or calls) than this are not a recurrence worth judging.
MIN_STEPS = 8
#: Recurrences with gates: they start with the gates half shut (the gradient through 100 steps
#: underflows) and open them as they learn, which a plain RNN cannot.
GATED = (nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)


class _Probe:
    """Per-call (or per-time-step) gradient mean squares of one module's measured forward."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name or ROOT_LAYER  # named as the layer list names it
        self.module = module
        self.calls = 0
        #: call index -> mean square of the gradient, a device scalar
        self.first_last: dict[int, torch.Tensor] = {}
        #: fused modules: mean square per time step, first and last
        self.profile: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> None:
        self.calls = 0
        self.first_last = {}
        self.profile = None

    def ratio(self) -> torch.Tensor | None:
        """RMS gradient at the first step over that at the last, or None when too short or not measured."""
        if self.profile is not None:
            first, last = self.profile
        elif self.calls >= MIN_STEPS and 0 in self.first_last and self.calls - 1 in self.first_last:
            first, last = self.first_last[0], self.first_last[self.calls - 1]
        else:
            return None
        # A last step with no gradient says nothing; NaN keeps that visible as "not measured".
        return torch.where(last > 0, (first / last).sqrt(), torch.full_like(last, float("nan")))


def _never_raises(hook: Callable[..., Any]) -> Callable[..., Any]:
    """These hooks run inside the user's forward and backward: a failure is logged, never raised."""

    @functools.wraps(hook)
    def guarded(*args: Any) -> Any:
        try:
            return hook(*args)
        except Exception:  # noqa: BLE001 - the training loop comes first
            logger.exception("gradwatch: the recurrence probe failed; this step is not measured")
            return None

    return guarded


def _mean_square(grad: torch.Tensor) -> torch.Tensor:
    return grad.detach().float().pow(2).mean()


def _first_tensor(output: Any) -> torch.Tensor | None:
    """A module's output, or the first tensor of a tuple output (an LSTM cell's h)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


class RecurrenceProbe:
    """Measures through-time gradient decay of a model's recurrences on the steps it is armed for."""

    def __init__(self, model: nn.Module) -> None:
        self._root = model
        self._fused = [_Probe(name, m) for name, m in model.named_modules() if isinstance(m, nn.RNNBase)]
        # Modules with parameters of their own: the candidates a loop may call repeatedly.
        self._candidates: list[_Probe] | None = [
            _Probe(name, m)
            for name, m in model.named_modules()
            if not isinstance(m, nn.RNNBase) and next(m.parameters(recurse=False), None) is not None
        ]
        self._looped: list[_Probe] = []
        #: The global hooks while armed; emptied in place, so that the finalizer below sees the current ones.
        self._handles: list[RemovableHandle] = []
        # torch's global hook tables would keep this probe (and the model) alive for good if the run ends armed
        # and its monitor is never closed: they hold it weakly, and its end takes them out.
        weakref.finalize(self, _remove_all, self._handles)
        #: A measured module ran without gradient inside a forward that had one: checkpointing that recomputes
        #: it in the backward, where it is measured, so the hooks stay on until take().
        self._recompute_expected = False
        #: While armed: id(module) -> what runs before / after that module's forward, in order.
        self._before: dict[int, list[Callable[[nn.Module, Any], Any]]] = {}
        self._after: dict[int, list[Callable[[nn.Module, Any, Any], None]]] = {}
        # A TorchScript forward never passes through module hooks. A torch.compile'd part would have to be
        # recompiled around them, and torch warns of global hooks on every call of one while they exist.
        if isinstance(model, torch.jit.ScriptModule) or any(hasattr(m, "_orig_mod") for m in model.modules()):
            self._fused, self._candidates = [], None

    @property
    def active(self) -> bool:
        """Whether arming can still measure anything (False once a model shows no recurrence)."""
        return bool(self._fused or self._looped or self._candidates)

    @property
    def names(self) -> list[str]:
        """Module names, in the order :meth:`take`'s index refers to."""
        return [p.name for p in self._fused + self._looped]

    @property
    def gated(self) -> list[bool]:
        """Per module of :attr:`names`: an LSTM or GRU (or their cells), whose gates can learn to carry gradient."""
        return [isinstance(p.module, GATED) for p in self._fused + self._looped]

    def arm(self) -> None:
        """Hook the next forward (and its backward). Idempotent."""
        if self._handles or not self.active:
            return
        self._before = {id(self._root): [self._forward_starts]}
        self._after = {}
        for probe in self._fused:
            self._before.setdefault(id(probe.module), []).append(self._fused_input(probe))
        for probe in self._looped:
            self._after.setdefault(id(probe.module), []).append(self._looped_output(probe))
        for probe in self._candidates or []:
            self._after.setdefault(id(probe.module), []).append(self._count(probe))
        # Last of all: the measured forward is over (its backward hooks are on tensors), and every other
        # module in the process goes back to torch's fast path without hooks.
        self._after.setdefault(id(self._root), []).append(self._forward_ends)
        this = weakref.ref(self)
        self._handles.append(register_module_forward_pre_hook(functools.partial(_dispatch_before, this)))
        self._handles.append(register_module_forward_hook(functools.partial(_dispatch_after, this)))

    def take(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Remove the hooks; the worst ratio and the index (in :attr:`names`) of its module, or None."""
        self._disarm()
        if self._candidates is not None and any(p.calls for p in self._candidates):
            # The first measured forward only counted calls: keep the modules a loop repeats.
            self._looped = [p for p in self._candidates if p.calls >= MIN_STEPS]
            self._candidates = None
        probes = self._fused + self._looped
        ratios = [(i, r) for i, p in enumerate(probes) if (r := p.ratio()) is not None]
        for probe in probes:
            probe.reset()
        if not ratios:
            return None
        stacked = torch.stack([r.to(ratios[0][1].device) for _, r in ratios])
        # NaN (a module whose last step had no gradient) must not win the minimum.
        worst = torch.nan_to_num(stacked, nan=float("inf")).argmin()
        index = torch.tensor([i for i, _ in ratios], device=stacked.device)[worst]
        return stacked[worst], index.float()

    # --- hooks ---------------------------------------------------------------
    def _disarm(self) -> None:
        _remove_all(self._handles)
        self._before, self._after = {}, {}

    @_never_raises
    def _forward_starts(self, module: nn.Module, args: Any) -> None:
        if not torch.is_grad_enabled():
            return  # an evaluation or a rollout between steps: the training forward is still to come
        # Nothing of an earlier forward may mix in. (Under gradient accumulation, several forwards per optimizer
        # step, the first is measured: the hooks go at its end.)
        self._recompute_expected = False
        for probe in self._fused + self._looped + (self._candidates or []):
            probe.reset()

    @_never_raises
    def _forward_ends(self, module: nn.Module, args: Any, output: Any) -> None:
        if torch.is_grad_enabled() and not self._recompute_expected:
            self._disarm()

    def _count(self, probe: _Probe) -> Any:
        @_never_raises
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            probe.calls += 1

        return hook

    def _looped_output(self, probe: _Probe) -> Any:
        @_never_raises
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            call = probe.calls
            probe.calls += 1
            out = _first_tensor(output)
            if out is None or not out.requires_grad:
                self._recompute_expected |= not torch.is_grad_enabled()
                return

            @_never_raises
            def keep(grad: torch.Tensor) -> None:
                probe.first_last[call] = _mean_square(grad)

            out.register_hook(keep)

        return hook

    def _fused_input(self, probe: _Probe) -> Any:
        @_never_raises
        def hook(module: nn.Module, args: Any) -> Any:
            if not torch.is_grad_enabled():
                self._recompute_expected = True  # inside a checkpoint, or an evaluation: not measured now
                return None
            if not args or not isinstance(args[0], torch.Tensor):
                return None  # a PackedSequence: not measured
            x = args[0]
            if x.dim() not in (2, 3) or not x.is_floating_point():
                return None
            time_dim = 1 if (x.dim() == 3 and getattr(module, "batch_first", False)) else 0
            if x.shape[time_dim] < MIN_STEPS:
                return None
            if x.requires_grad:
                # A view, not the tensor itself: a hook on a leaf the user keeps across steps (a learned
                # input sequence) would stay on it, one more every measured step.
                x = x.view_as(x)
            elif any(p.requires_grad for p in module.parameters()):
                # Only this measured forward pays for the input's gradient; nothing upstream changes.
                x = x.detach().requires_grad_(True)
            else:
                # A frozen recurrence on an input without gradient: no gradient goes through it in this
                # training, and a leaf that wants one would make its output require grad (and cost a backward).
                return None

            @_never_raises
            def keep(grad: torch.Tensor) -> None:
                g = grad.detach().float().pow(2).movedim(time_dim, 0)
                per_step = g.reshape(g.shape[0], -1).mean(dim=1)
                probe.profile = (per_step[0], per_step[-1])

            x.register_hook(keep)
            return (x, *args[1:])

        return hook


def _remove_all(handles: list[RemovableHandle]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()


# Module-level and holding the probe weakly (see RecurrenceProbe.__init__). Called before and after every module's
# forward in the process while armed: a module that is not watched costs one lookup.
def _dispatch_before(probe_ref: weakref.ref[RecurrenceProbe], module: nn.Module, args: Any) -> Any:
    probe = probe_ref()
    replaced = None
    for hook in probe._before.get(id(module), ()) if probe is not None else ():
        result = hook(module, args if replaced is None else replaced)
        replaced = replaced if result is None else result
    return replaced


def _dispatch_after(probe_ref: weakref.ref[RecurrenceProbe], module: nn.Module, args: Any, output: Any) -> None:
    probe = probe_ref()
    for hook in probe._after.get(id(module), ()) if probe is not None else ():
        hook(module, args, output)
