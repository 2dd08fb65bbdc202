"""The ``Monitor`` that lives in the training loop (``gradwatch.watch()``, in watching.py, builds it).

Per optimizer step the monitor records the loss (and anything else the user
passes) without reading it on the host. Every ``stats_every`` steps it also
computes per-layer gradient statistics just before ``optimizer.step()`` (the
gradients are gone by the time ``mon.step()`` runs, after ``zero_grad``) and
weight statistics just after it, through the optimizer's step hooks.

Nothing here may raise into the training loop: every entry point is guarded,
an internal failure is logged once, and a monitor that keeps failing turns
itself off.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from dataclasses import replace
from typing import Any

import torch

from gradwatch import __version__
from gradwatch.agents import ray_transport, stats
from gradwatch.agents.distributed import attach_nan_origin_hook, shard_plan, unwrap_data_parallel
from gradwatch.agents.gather import DeviceGather, PinnedPool
from gradwatch.agents.layout import LayerLayout, TrainedParams
from gradwatch.agents.options import AgentOptions
from gradwatch.agents.pending import CarriedMaxAbs, LayerPending, Pending, PendingReport, StepPending
from gradwatch.agents.ranks import detect_rank
from gradwatch.agents.recurrence import RecurrenceProbe
from gradwatch.agents.sender import HttpTransport, Sender, Transport, exit_budget, weak_call
from gradwatch.agents.values import pending_scalars, pending_value
from gradwatch.agents.witness import UpdateWitness
from gradwatch.wire import MAX_LAYERS_PER_REPORT

logger = logging.getLogger("gradwatch.agent")

_MAX_FAILURES = 3


def _transport_for(endpoint: str, options: AgentOptions) -> Transport:
    if endpoint.startswith(ray_transport.SCHEME):
        return ray_transport.RayActorTransport(endpoint)
    return HttpTransport.from_options(endpoint, options)


#: The newest monitor of each watched optimizer (to tell a second watch() of the same one).
_WATCHING: weakref.WeakKeyDictionary[Any, weakref.ref[Monitor]] = weakref.WeakKeyDictionary()
#: In a forked child, what its monitors held at the fork (never freed there, see _after_fork_in_child).
_KEPT_AT_FORK: list[Any] = []


class Monitor:
    """Watches one model in one training process. Create it with :func:`gradwatch.watch`."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        run: str,
        endpoint: str,
        options: AgentOptions,
        transport: Transport | None = None,
    ) -> None:
        self.run = run
        self.endpoint = endpoint
        self._options = options
        self._layout = LayerLayout.from_model(unwrap_data_parallel(model))
        if self._layout.lazy:
            logger.warning(
                "gradwatch: %d parameter(s) of lazy modules are not initialised yet and are not watched; "
                "call watch() after the model's first forward pass to watch them",
                self._layout.lazy,
            )
        self._optimizer = optimizer
        self._trained = TrainedParams()
        rank = detect_rank()
        self._plan = shard_plan(model, rank.rank, rank.world_size)
        if self._layout.num_layers > MAX_LAYERS_PER_REPORT:
            # The service refuses a report with more layers, and the steps in it with it.
            logger.warning(
                "gradwatch: the model has %d layers (modules with parameters), more than a report carries (%d); "
                "per-layer statistics are off, losses, learning rates and NaN checks are still sent",
                self._layout.num_layers,
                MAX_LAYERS_PER_REPORT,
            )
            self._plan = replace(self._plan, reports_layers=False)
        self._nan_origin = attach_nan_origin_hook(model)
        # A NaN/Inf only in the gradients (the loss still finite) would otherwise be seen on the next
        # statistics step, or when the weights it spoils make the loss NaN a step later. With
        # DDP the communication hook already checks every gradient; with other data parallelism
        # every rank holds the reduced NaN, so a per-rank check would not say where it began.
        single = self._nan_origin is None and rank.world_size == 1 and len(self._layout.groups) == 1
        self._sentinels = stats.sentinel_params(self._layout.groups[0]) if single and optimizer is not None else []
        self._sentinel_flag: torch.Tensor | float | None = None
        self._witness = UpdateWitness(self._sentinels) if self._sentinels else None
        # DataParallel over several devices runs fresh replicas of the model each forward, not the modules here.
        # (A compiled model, or one with a compiled part, the probe itself leaves alone.)
        replicated = isinstance(model, torch.nn.DataParallel) and len(model.device_ids or ()) > 1
        self._recurrence = None if replicated else RecurrenceProbe(unwrap_data_parallel(model))
        self._recurrent: tuple[torch.Tensor, torch.Tensor] | None = None
        envelope: dict[str, Any] = {
            "run": run,
            "rank": rank.rank,
            "world_size": rank.world_size,
            "host": socket.gethostname()[:255],
            "local_rank": rank.local_rank,
            "agent": __version__,
            "session": uuid.uuid4().hex,
        }
        if self._plan.count > 1:
            envelope["shard"] = {"index": self._plan.index, "count": self._plan.count}
        self._sender = Sender(
            envelope,
            transport or _transport_for(endpoint, options),
            options,
            describe=f"run {run!r} rank {rank.rank} -> {endpoint}",
        )
        self._step = 0
        self._stats_taken = 0
        self._last_time: float | None = None
        self._steps: list[StepPending] = []
        # Page-locked host buffers for the device→host copies, reused report after report.
        self._pinned = PinnedPool()
        self._gather = DeviceGather(self._pinned)
        self._layers: LayerPending | None = None
        on_cpu = all(group.device.type == "cpu" for group in self._layout.groups)
        self._weight_max_abs_every = stats.WEIGHT_MAX_ABS_EVERY_CPU if on_cpu else 1
        self._weight_max_abs = CarriedMaxAbs()
        self._weights_before: list[list[torch.Tensor]] | None = None
        self._optimizer_stepped = False
        self._failures = 0
        self._closed = False
        self._recording = threading.RLock()
        self._warned: set[str] = set()
        # A script that never calls close() still delivers its last steps at
        # exit (within close_timeout); registered after the sender's hook, so it runs first.
        atexit.register(weak_call(self, Monitor._close_at_exit))
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=weak_call(self, Monitor._after_fork_in_child))
        self._hooks = []
        if optimizer is not None:
            self._note_watching(optimizer)
            self._hooks = [
                optimizer.register_step_pre_hook(self._before_optimizer_step),
                optimizer.register_step_post_hook(self._after_optimizer_step),
            ]
        self._arm_recurrence()

    def _note_watching(self, optimizer: Any) -> None:
        """Warn when ``optimizer`` is watched already (a notebook cell run again: both monitors report)."""
        try:
            earlier = _WATCHING.get(optimizer)
            if earlier is not None and (monitor := earlier()) is not None and not monitor._closed:
                logger.warning(
                    "gradwatch: this optimizer is already watched (run %r) by a monitor that was not closed; "
                    "both report every step: call close() on the first",
                    monitor.run,
                )
            _WATCHING[optimizer] = weakref.ref(self)
        except TypeError:  # an optimizer class that cannot be a weak key (unhashable, say): nothing to tell
            pass

    # --- public API --------------------------------------------------------
    @property
    def delivered(self) -> int:
        """Step records the service has accepted so far."""
        return self._sender.delivered

    @property
    def dropped(self) -> int:
        """Step records given up on (buffer full, or rejected by the service)."""
        return self._sender.dropped

    def step(self, loss: Any = None, *, val_loss: Any = None, grad_norm: Any = None, **scalars: Any) -> None:
        """Record one optimizer step. Call it once per ``optimizer.step()``, after it.

        ``loss``, ``val_loss`` and ``grad_norm`` may be Python numbers or tensors
        (a tensor is never read on the host here); extra keyword arguments are
        recorded as named scalars. ``grad_norm`` is the total gradient norm your
        loop already has, e.g. what ``clip_grad_norm_`` returned: passing it
        costs nothing and lets a NaN/Inf that is only in the gradients be seen
        on the step it happens, not just on statistics steps. Never raises.
        """
        if self._closed or self._failures >= _MAX_FAILURES:
            return
        try:
            # One training loop calls this; the lock (uncontended there) keeps a step recorded from another
            # thread from landing in a report whose values were swapped out under it.
            with self._recording:
                self._record_step(loss, val_loss, scalars, grad_norm)
        except Exception:  # noqa: BLE001 - the training loop comes first
            self._fail("step")

    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything recorded so far; True when it was delivered within ``timeout``."""
        try:
            with self._recording:
                self._submit()
            return self._sender.flush(timeout)
        except Exception:  # noqa: BLE001
            self._fail("flush")
            return False

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is left (waiting at most ``timeout`` seconds), then detach. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for hook in self._hooks:
                hook.remove()
            if self._recurrence is not None:
                self._recurrence.take()
            with self._recording:
                self._submit()
            self._sender.close(self._options.close_timeout if timeout is None else timeout)
        except Exception:  # noqa: BLE001
            self._fail("close")

    def _close_at_exit(self) -> None:
        self.close(exit_budget(self._options.close_timeout))

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # The steps recorded but not yet sent are the parent's to send; this process starts with none. What
        # they hold is kept, not freed: freeing device memory here could wait on an allocator lock that a
        # thread of the parent held at the fork. A lock held then is made anew for the same reason.
        _KEPT_AT_FORK.append((self._steps, self._layers, self._weights_before, self._gather))
        self._steps = []
        self._layers = None
        self._weights_before = None
        self._gather = DeviceGather(self._pinned)
        self._recording = threading.RLock()

    # --- optimizer hooks ------------------------------------------------------
    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._closed or self._failures >= _MAX_FAILURES:
            return
        if self._optimizer_stepped:
            # A second optimizer step before mon.step(): this record's statistics are the first step's,
            # and taking them again at every step would multiply their cost.
            self._warn_once(
                "steps_between",
                "gradwatch: optimizer.step() ran again before mon.step(); call mon.step() after every optimizer "
                "step (statistics are taken on the first step after each mon.step() only)",
            )
            return
        if not self._is_stats_step():  # the statistics' per-layer max-abs flag every gradient
            if self._sentinels:
                try:
                    self._sentinel_flag = stats.nonfinite_sentinel(self._sentinels)
                except Exception:  # noqa: BLE001
                    self._fail("gradient check")
            return
        try:
            self._take_gradient_stats(optimizer)
            if self._is_update_sample():
                self._weights_before = [stats.snapshot_weights(g) for g in self._layout.groups]
        except Exception:  # noqa: BLE001
            self._fail("gradient statistics")

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        # Weights after the first optimizer step since mon.step() only: the record's gradients are that step's.
        first, self._optimizer_stepped = not self._optimizer_stepped, True
        if not first or self._layers is None or self._closed:
            return
        try:
            self._take_weight_stats()
        except Exception:  # noqa: BLE001
            self._fail("weight statistics")

    # --- internals --------------------------------------------------------------
    def _is_stats_step(self) -> bool:
        return self._plan.reports_layers and self._step % self._options.stats_every == 0

    def _is_update_sample(self) -> bool:
        every = self._options.update_ratio_every
        return every > 0 and self._stats_taken % every == 0

    def _take_gradient_stats(self, optimizer: Any = None) -> None:
        """``optimizer``: the watched one, about to step (None when read outside its step): its parameters
        that get no gradient are listed as missing one."""
        if self._recurrence is not None:
            self._recurrent = self._recurrence.take()
            if not self._recurrence.active:
                self._recurrence = None  # no recurrence in this model: nothing to arm on later steps
        trained = self._trained.of(optimizer) if optimizer is not None else None
        layers = LayerPending(grad_missing=None if trained is None else set())
        for group in self._layout.groups:
            values, present, wanting = stats.gradient_stats(group, self._layout.num_layers, trained or frozenset())
            layers.grads.append(self._gather.add(values))
            layers.grad_layers |= present
            if layers.grad_missing is not None:
                layers.grad_missing |= wanting
        self._layers = layers

    def _take_weight_stats(self) -> None:
        assert self._layers is not None
        num_layers = self._layout.num_layers
        max_abs = self._stats_taken % self._weight_max_abs_every == 0
        for index, group in enumerate(self._layout.groups):
            self._layers.weights.append(self._gather.add(stats.weight_stats(group, num_layers, max_abs)))
            if self._weights_before is not None:
                self._layers.updates.append(
                    self._gather.add(stats.update_sumsq(group, self._weights_before[index], num_layers))
                )
        self._weights_before = None

    def _record_step(self, loss: Any, val_loss: Any, scalars: dict[str, Any], grad_norm: Any = None) -> None:
        now = time.perf_counter()
        elsewhere = self._stepped_elsewhere()
        if (self._optimizer is None or elsewhere) and self._is_stats_step():
            # No hooks (no optimizer, or not the one that steps): read what is there now.
            self._take_gradient_stats()
            self._take_weight_stats()
        if self._layers is not None and self._layers.grads and not self._layers.weights:
            # optimizer.step() raised after its pre-hook (the loop caught an out-of-memory error, say):
            # gradients without the weights they would have moved make no statistics row.
            self._layers = None
        values: dict[str, Pending] = {
            "loss": self._value(loss, "loss"),
            "val_loss": self._value(val_loss, "val_loss"),
            "lr": self._learning_rate(),
            "step_time": None if self._last_time is None else now - self._last_time,
            "grad_norm": self._value(grad_norm, "grad_norm"),
            "local_grad_nonfinite": self._local_grad_flag(),
        }
        recurrent, self._recurrent = self._recurrent, None
        if recurrent is not None and self._recurrence is not None:
            values["recurrent_grad_ratio"] = self._gather.add(recurrent[0])
            values["recurrent_module"] = self._gather.add(recurrent[1])
        record = StepPending(
            step=self._step,
            values={k: v for k, v in values.items() if v is not None},
            scalars=pending_scalars(scalars, self._value, self._warn_once),
            skipped=self._optimizer is not None and not self._optimizer_stepped and not elsewhere,
            layers=self._layers,
            recurrent_names=self._recurrence.names if recurrent is not None and self._recurrence else None,
            recurrent_gated=self._recurrence.gated if recurrent is not None and self._recurrence else None,
        )
        if self._layers is not None and self._layers.weights:
            self._stats_taken += 1
        self._steps.append(record)
        self._layers = None
        self._weights_before = None
        self._optimizer_stepped = False
        self._last_time = now
        self._step += 1
        self._arm_recurrence()
        if record.layers is not None or len(self._steps) >= self._options.stats_every:
            self._submit()

    def _stepped_elsewhere(self) -> bool:
        """The watched optimizer did not step, but the weights moved: something else trains the model."""
        if self._witness is None:
            return False
        if self._optimizer_stepped:
            self._witness.remember()  # compared only on a step where the optimizer does not step
            return False
        if not self._witness.moved():
            return False
        self._warn_once(
            "elsewhere",
            "gradwatch: the weights changed on a step where the optimizer given to watch() did not step; "
            "reading statistics in mon.step() instead (pass watch() the optimizer that trains the model)",
        )
        return True

    def _submit(self) -> None:
        if not self._steps:
            return
        steps, gather = self._steps, self._gather
        self._steps, self._gather = [], DeviceGather(self._pinned)
        self._sender.submit(PendingReport(steps, gather.start_copy(), self._layout, self._weight_max_abs))

    def _arm_recurrence(self) -> None:
        """Hook the coming forward when its step takes statistics (the probe is measured with them)."""
        if self._recurrence is not None and self._is_stats_step():
            try:
                self._recurrence.arm()
            except Exception:  # noqa: BLE001 - a model that takes no hooks (a TorchScript module): no probe
                probe, self._recurrence = self._recurrence, None
                with contextlib.suppress(Exception):
                    probe.take()

    def _local_grad_flag(self) -> Pending:
        """This rank's own gradients held NaN/Inf on this step, as a pending device value (nonzero: yes).

        From the DDP hook (before the reduction), or in a single process from the
        small tensors checked on steps without statistics.
        """
        if self._nan_origin is not None:
            flag = self._nan_origin.take()
            return None if flag is None else self._gather.add(flag.float())
        sentinel, self._sentinel_flag = self._sentinel_flag, None
        return self._gather.add(sentinel) if isinstance(sentinel, torch.Tensor) else sentinel

    def _value(self, value: Any, name: str) -> Pending:
        return pending_value(value, name, self._gather, self._warn_once)

    def _learning_rate(self) -> Pending:
        if self._optimizer is None or not self._optimizer.param_groups:
            return None
        return self._value(self._optimizer.param_groups[0].get("lr"), "lr")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _fail(self, where: str) -> None:
        self._failures += 1
        self._layers = None
        self._weights_before = None
        self._steps.clear()
        self._gather = DeviceGather(self._pinned)
        self._recurrent = None
        if self._failures >= _MAX_FAILURES:
            if self._recurrence is not None:
                self._recurrence.take()  # no hook stays in a model nobody watches
            logger.exception("gradwatch: %s failed %d times; monitoring is off for this run", where, self._failures)
        else:
            logger.exception("gradwatch: %s failed; this step is not recorded", where)
