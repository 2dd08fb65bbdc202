"""Which parameters belong to which layer, decided once at ``watch()`` time.

A layer is a module that owns parameters directly. Statistics are computed
per parameter tensor with fused multi-tensor kernels and then combined per
layer on the device with one ``index_add_``/``scatter_reduce`` each, so the
per-layer grouping costs no Python loop on the training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.parameter import is_lazy

from gradwatch.agents.distributed import local_tensor

ROOT_LAYER = "(root)"

#: Elements of one tensor that the update ratio ||dw||/||w|| reads at most. It
#: needs the weights from before the optimizer step, so every element it reads is
#: copied, then read twice more: on the whole of a 1.3B model that was 2x the
#: statistics step's own cost (on an H200, 4.8 ms). A fixed stride sample of
#: 65,536 elements a tensor estimates a sum of squares to within a few percent
#: (tests/unit/test_agent_stats.py: 3% for update sizes that vary by 3x between
#: elements, as Adam's do), and keeps exact zeros exact: a frozen tensor still reads 0.
UPDATE_SAMPLE_NUMEL = 1 << 16
#: Tensors are sampled only at a stride of at least this many elements: a strided
#: read touches a whole memory line (32 B on a GPU, 64 B on a CPU) per element, so
#: a short stride reads as many lines as the whole tensor and copies them element
#: by element (on a 2-core CPU, stride 2 made the update ratio twice as slow).
UPDATE_MIN_STRIDE = 64


def update_stride(numel: int) -> int:
    """Every how many elements the update ratio reads a tensor of ``numel`` elements (1: all)."""
    stride = -(-numel // UPDATE_SAMPLE_NUMEL)
    return stride if stride >= UPDATE_MIN_STRIDE else 1


@dataclass(frozen=True)
class DeviceGroup:
    """The parameters of one device, with their layer index on that device."""

    device: torch.device
    params: tuple[torch.Tensor, ...]
    #: Layer index of each parameter in ``params``, as a host tuple (for
    #: choosing the tensors that have a gradient) and as a device tensor.
    layer_of_param: tuple[int, ...]
    layer_index: torch.Tensor
    #: The update ratio reads every ``update_stride[i]``-th element of parameter i
    #: (1: all of it), and weighs its sums by the stride (``update_weight``, on
    #: the device) to stand for the whole tensor.
    update_stride: tuple[int, ...]
    update_weight: torch.Tensor
    #: Every parameter a plain (not sharded), real, non-empty tensor: statistics may take them as
    #: they are, without a per-tensor check on the training step.
    plain: bool = False
    #: The layers of ``layer_of_param``, as a set.
    layers: frozenset[int] = frozenset()


@dataclass(frozen=True)
class LayerLayout:
    """Layers in model order (the order parameters were registered)."""

    names: tuple[str, ...]
    numel: tuple[int, ...]
    groups: tuple[DeviceGroup, ...]
    #: Parameters of lazy modules not initialised yet (no shape to lay out), left out.
    lazy: int = 0

    @property
    def num_layers(self) -> int:
        return len(self.names)

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> LayerLayout:
        """Group ``model``'s parameters by owning module, once per tensor.

        Tied weights (one tensor registered in two modules) count once, for the
        module that registered it first. Parameters that are not floating point
        or complex cannot carry gradients and are left out.
        """
        owner: dict[int, str] = {}
        ordered: list[torch.Tensor] = []
        lazy: set[int] = set()
        for module_name, module in model.named_modules(remove_duplicate=False):
            for param in module.parameters(recurse=False):
                if is_lazy(param):
                    lazy.add(id(param))
                    continue
                if id(param) in owner or not (param.is_floating_point() or param.is_complex()):
                    continue
                owner[id(param)] = module_name or ROOT_LAYER
                ordered.append(param)

        names: list[str] = []
        layer_id: dict[str, int] = {}
        numel: list[int] = []
        per_device: dict[torch.device, tuple[list[torch.Tensor], list[int]]] = {}
        for param in ordered:
            name = owner[id(param)]
            if name not in layer_id:
                layer_id[name] = len(names)
                names.append(name)
                numel.append(0)
            index = layer_id[name]
            # This rank's elements: a sharded layer's shards add up at the service.
            numel[index] += local_tensor(param).numel()
            params, indices = per_device.setdefault(param.device, ([], []))
            params.append(param)
            indices.append(index)

        groups = tuple(_device_group(device, params, indices) for device, (params, indices) in per_device.items())
        return cls(names=tuple(names), numel=tuple(numel), groups=groups, lazy=len(lazy))


def _device_group(device: torch.device, params: list[torch.Tensor], layers: list[int]) -> DeviceGroup:
    strides = tuple(update_stride(local_tensor(p).numel()) for p in params)
    return DeviceGroup(
        device=device,
        params=tuple(params),
        layer_of_param=tuple(layers),
        layer_index=torch.tensor(layers, dtype=torch.long, device=device),
        update_stride=strides,
        update_weight=torch.tensor(strides, dtype=torch.float32, device=device),
        plain=all(local_tensor(p) is p and not p.is_complex() and p.numel() > 0 for p in params),
        layers=frozenset(layers),
    )


class TrainedParams:
    """Ids of the parameters an optimizer holds, rebuilt only when its param groups change size.

    Read on statistics steps to tell a parameter the optimizer trains but the loss does not reach
    (no gradient) from one left out of training on purpose; the key is one length per group, so an
    unchanged optimizer costs a few list lengths, not a walk over every parameter.
    """

    def __init__(self) -> None:
        self._key: tuple[int, ...] | None = None
        self._ids: frozenset[int] = frozenset()

    def of(self, optimizer: torch.optim.Optimizer) -> frozenset[int]:
        groups = optimizer.param_groups
        key = (id(optimizer), *(len(group["params"]) for group in groups))
        if key != self._key:
            self._ids = frozenset(id(param) for group in groups for param in group["params"])
            self._key = key
        return self._ids
