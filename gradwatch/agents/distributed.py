"""Data-parallel and sharded training: who reports layers, local shards, and where a NaN began.

- Under DDP every replica holds the same gradients after the all-reduce, so one
  rank (rank 0) reports layer statistics; every rank still reports its own
  loss, step time and local non-finite flag.
- Under FSDP2 (``fully_shard``) parameters and gradients are DTensors and each
  rank holds one shard of every layer. The agent reads only the local shard
  (``to_local()``: no collective in the training job) and ships per-shard
  norms; the service squares and sums them into the true layer norm. With
  HSDP (replicate x shard mesh) only the first replica's shards report.
- A NaN from one rank's batch is on every rank after the reduction. A DDP
  communication hook checks each bucket *before* the all-reduce, on the
  device, so the report can say which rank it began on.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, cast

import torch


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


_DTENSOR = _dtensor_type()


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this rank holds: a DTensor's local shard, else the tensor itself."""
    if _DTENSOR is not None and isinstance(tensor, _DTENSOR):
        return cast(Any, tensor).to_local()
    return tensor


@dataclass(frozen=True)
class ShardPlan:
    """How this rank's layer statistics relate to the layer's true values."""

    #: This rank's shard and the number of shards of each layer (1: whole layers).
    index: int = 0
    count: int = 1
    #: False for a data-parallel replica whose statistics duplicate another rank's.
    reports_layers: bool = True


def shard_plan(model: torch.nn.Module, rank: int, world_size: int) -> ShardPlan:
    """Decide, once at ``watch()`` time, what this rank's layer statistics are."""
    if _DTENSOR is not None:
        for param in model.parameters():
            if isinstance(param, _DTENSOR):
                return _dtensor_plan(param)
    if world_size > 1 and _is_ddp(model):
        return ShardPlan(reports_layers=rank == 0)
    return ShardPlan()


def _dtensor_plan(param: Any) -> ShardPlan:
    mesh = param.device_mesh
    coordinate = mesh.get_coordinate()
    if coordinate is None:  # this rank is not in the parameter's mesh
        return ShardPlan(reports_layers=False)
    shard_dims = [d for d, placement in enumerate(param.placements) if placement.is_shard()]
    replica_dims = [d for d in range(mesh.ndim) if d not in shard_dims]
    index = 0
    for d in shard_dims:
        index = index * mesh.size(d) + coordinate[d]
    count = math.prod(mesh.size(d) for d in shard_dims)
    first_replica = all(coordinate[d] == 0 for d in replica_dims)
    return ShardPlan(index=index, count=count, reports_layers=first_replica)


def unwrap_data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """The user's model inside a (Distributed)DataParallel wrapper, so layer names have no ``module.`` prefix."""
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def _is_ddp(model: torch.nn.Module) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


class NanOriginHook:
    """A DDP communication hook: all-reduce as usual, after flagging non-finite local gradients.

    The flag is a device tensor OR-ed over the step's buckets, never read on the
    host here; :meth:`take` hands it to the report and starts the next step's.
    It costs one read of each bucket per step, overlapped with communication.

    It holds the model's process group itself and registers with no state: DDP
    keeps its hooks' states among what it pickles, and a process group cannot be
    pickled. A copy of the model leaves this hook out (:func:`_state_without_gradwatch`).
    """

    def __init__(self, process_group: Any = None) -> None:
        self.process_group = process_group
        self._flag: torch.Tensor | None = None
        #: The user's own communication hook (state, hook), registered after this one: it does the reduction.
        self.inner: tuple[Any, Any] | None = None

    # No annotations on purpose: DDP rejects a hook whose annotations are not
    # exactly dist.GradBucket / Future[Tensor] (and here they would be strings).
    def reduce(self, state, bucket):  # type: ignore[no-untyped-def]
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        try:
            buffer = bucket.buffer()
            bad = ~torch.isfinite(buffer).all()
            self._flag = bad if self._flag is None else self._flag | bad
        except Exception:  # noqa: BLE001 - the all-reduce below must run whatever happens here
            pass
        if self.inner is not None:
            inner_state, hook = self.inner
            return hook(inner_state, bucket)
        return allreduce_hook(self.process_group, bucket)

    def take(self) -> torch.Tensor | None:
        """This step's flag (a 0-d bool tensor), or None if no bucket was reduced since the last call."""
        flag, self._flag = self._flag, None
        return flag

    def register_user_hook(self, state: Any, hook: Any) -> None:
        """Stands in for the model's ``register_comm_hook`` once this hook holds DDP's one slot.

        The user's own hook (fp16 compression, PowerSGD), registered after watch(), would
        otherwise raise; it does the reduction inside ours. A method, not a closure, so
        that the model it is set on still pickles.
        """
        if self.inner is not None:
            raise RuntimeError("register_comm_hook can only be called once (gradwatch already holds DDP's slot)")
        self.inner = (state, hook)


def attach_nan_origin_hook(model: torch.nn.Module) -> NanOriginHook | None:
    """Register a :class:`NanOriginHook` on a DDP model; None when it is not DDP or has a hook already."""
    if not _is_ddp(model):
        return None
    origin = NanOriginHook(model.process_group)
    try:
        cast(Any, model).register_comm_hook(state=None, hook=origin.reduce)
    except Exception:  # noqa: BLE001 - watch() must not fail on DDP's checks
        return None  # a hook of the user's own is registered (or an odd DDP): theirs stays, no origin flags
    object.__setattr__(model, "register_comm_hook", origin.register_user_hook)
    object.__setattr__(model, "__getstate__", functools.partial(_state_without_gradwatch, model, origin))
    return origin


#: What attach_nan_origin_hook sets on the DDP model itself (pickle and copy look both up on the instance).
_INSTANCE_ATTRIBUTES = ("register_comm_hook", "__getstate__")


def _state_without_gradwatch(model: torch.nn.Module, origin: NanOriginHook) -> dict[str, Any]:
    """DDP's own pickled state of ``model``, as if gradwatch had never hooked it.

    A copy (an EMA, ``torch.save(ddp_model)``) is a DDP model of its own: it must not need gradwatch to
    load, and its ``register_comm_hook`` must be DDP's again (its new reducer has no gradwatch hook to
    nest a user's hook in). The user's hook, if one was registered after watch(), stays listed.
    """
    state: dict[str, Any] = type(model).__getstate__(model)  # type: ignore[operator]
    for name in _INSTANCE_ATTRIBUTES:
        state.pop(name, None)
    hooks = [
        (hook, hook_state)
        for hook, hook_state in state.get("_comm_hooks", ())
        if getattr(hook, "__self__", None) is not origin
    ]
    if origin.inner is not None:
        inner_state, inner_hook = origin.inner
        hooks.append((inner_hook, inner_state))
    state["_comm_hooks"] = hooks
    return state
