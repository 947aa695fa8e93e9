"""What every adapter layer shares: it wraps a frozen base layer and never changes its weight.

A method subclasses `AdapterLayer` (its forward pass and its merged weight). Merging never touches the base
weight: the layer keeps the merged weight beside it and uses it until `unmerge()`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tlora_bench.adapters.config import AdapterConfig, LayerShape
from tlora_bench.adapters.timestep import TimestepState
from tlora_bench.errors import TloraBenchError

_KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)


def layer_shape(name: str, module: nn.Module) -> LayerShape:
    """The size checks' view of a module (`AdapterConfig.layer_problem`): a subclass of a torch layer (diffusers
    has some) counts as that layer; a norm without an affine weight has no shape."""
    kind = next((k.__name__ for k in _KINDS if isinstance(module, k)), type(module).__name__)
    weight = getattr(module, "weight", None)
    shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else None
    return LayerShape(name, kind, shape)


def layer_table(model: nn.Module) -> list[LayerShape]:
    """Every module of `model` (the root excluded) as size checks see it, in model order."""
    return [layer_shape(name, module) for name, module in model.named_modules() if name]


class AdapterLayer(nn.Module):
    """Wraps `base_layer`, whose parameters stay frozen and unchanged.

    Subclasses implement `adapted_forward(x)` and `merged_weight(t)`; their own parameters (trainable)
    and persistent buffers (frozen factors) are the adapter's tensors, saved and loaded as one.
    """

    #: whether the update depends on the timestep (such layers merge only at a given t)
    timestep_dependent: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Module, config: AdapterConfig, name: str, *,
                 state: TimestepState | None = None, init: bool = True, dtype: torch.dtype = torch.float32) -> None:
        """`state` carries the current timesteps (shared by a model's layers); `init=False` leaves the
        adapter tensors uninitialised for a load to fill; `dtype` is the adapter tensors' dtype."""
        super().__init__()
        problem = config.layer_problem(layer_shape(name, base_layer))  # before any tensor of its size exists
        if problem:
            raise TloraBenchError(problem)
        self.base_layer = base_layer.requires_grad_(False)
        self.config = config
        self.name = name
        self.state = state
        self._merged: torch.Tensor | None = None  # not a buffer: never saved, never in state_dict

    # -- what a method implements ------------------------------------------------------------------------
    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        """A new tensor: the base weight with the update folded in (at timestep t where it depends on t)."""
        raise NotImplementedError

    # -- shared behaviour ----------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """Attributes of the wrapped layer (in_features, kernel_size, ...) read through: model code that
        inspects a layer (diffusers reads `add_embedding.linear_1.in_features`) keeps working."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    @property
    def weight(self) -> torch.Tensor:  # code that reads `module.weight` (e.g. dtype checks) still works
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def merged(self) -> bool:
        return self._merged is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._merged is not None:
            return self.forward_with_weight(x, self._merged)
        return self.adapted_forward(x)

    def forward_with_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The base layer's operation with another weight (Linear here; conv and norm layers override)."""
        return F.linear(x, weight, self.base_layer.bias)

    def merge(self, t: float | None = None) -> None:
        if self.timestep_dependent and t is None:
            raise TloraBenchError(f"layer '{self.name}' ({self.config.method}) depends on the timestep: "
                                  "merge it at a given t (merge_adapters(model, t=...))")
        with torch.no_grad():
            self._merged = self.merged_weight(t).to(self.base_layer.weight.dtype)

    def unmerge(self) -> None:
        self._merged = None

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups of this layer; methods with per-parameter learning rates override it."""
        return [{"params": list(self.parameters()), "lr": lr, "weight_decay": weight_decay}]

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and frozen buffers of the adapter (not the base layer's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base_layer.")}

    def load_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = set(self.adapter_tensors())
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise TloraBenchError(f"adapter tensors for layer '{self.name}' do not match its config "
                                  f"(missing {missing}, unexpected {extra}); the file is from another method")
        current = self.adapter_tensors()
        for key, value in tensors.items():
            if value.shape != current[key].shape:
                raise TloraBenchError(f"layer '{self.name}': tensor '{key}' has shape {tuple(value.shape)}, the "
                                      f"model needs {tuple(current[key].shape)}; was it trained on another model?")
        self.fill_adapter_tensors(tensors)
        self.unmerge()

    def fill_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy checked tensors (the names and shapes of `adapter_tensors()`) into the layer."""
        self.load_state_dict(tensors, strict=False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, method={self.config.method!r}"
