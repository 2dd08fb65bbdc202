"""Which parameters belong to which layer, decided once at ``watch()`` time.

A layer is a module that owns parameters directly. Statistics are computed
per parameter tensor with fused multi-tensor kernels and then combined per
layer on the device with one ``index_add_``/``scatter_reduce`` each, so the
per-layer grouping costs no Python loop on the training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradwatch.agents.distributed import local_tensor

ROOT_LAYER = "(root)"


@dataclass(frozen=True)
class DeviceGroup:
    """The parameters of one device, with their layer index on that device."""

    device: torch.device
    params: tuple[torch.Tensor, ...]
    #: Layer index of each parameter in ``params``, as a host tuple (for
    #: choosing the tensors that have a gradient) and as a device tensor.
    layer_of_param: tuple[int, ...]
    layer_index: torch.Tensor


@dataclass(frozen=True)
class LayerLayout:
    """Layers in model order (the order parameters were registered)."""

    names: tuple[str, ...]
    numel: tuple[int, ...]
    groups: tuple[DeviceGroup, ...]

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
        for module_name, module in model.named_modules(remove_duplicate=False):
            for param in module.parameters(recurse=False):
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

        groups = tuple(
            DeviceGroup(
                device=device,
                params=tuple(params),
                layer_of_param=tuple(indices),
                layer_index=torch.tensor(indices, dtype=torch.long, device=device),
            )
            for device, (params, indices) in per_device.items()
        )
        return cls(names=tuple(names), numel=tuple(numel), groups=groups)
