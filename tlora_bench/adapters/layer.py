"""What every adapter method shares: a serialisable config and a layer that wraps a frozen base layer.

A method subclasses `AdapterConfig` (its hyperparameters, each documented with the paper's symbol) and
`AdapterLayer` (its forward pass and its merged weight). Merging never touches the base weight: the layer
keeps the merged weight beside it and uses it until `unmerge()`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tlora_bench.adapters.timestep import TimestepState
from tlora_bench.errors import TloraBenchError, did_you_mean

# docs/decisions.md section 1: the four projections of every attention module.
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class AdapterConfig:
    """Fields every method has. `method` is the registry name the config was made for."""

    method: str
    target_modules: tuple[str, ...] = DEFAULT_TARGETS  # module names (or dotted suffixes) to adapt
    seed: int = 0  # seeds every random init, per layer, so an init is reproducible

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Rebuild a config; unknown keys, and values of the wrong type, are an error that names them (a file from
        another version, a word where a number belongs in `--option`)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                raise TloraBenchError(f"unknown {cls.__name__} key '{key}'{did_you_mean(key, fields)}")
        hints = typing.get_type_hints(cls)
        values = {key: _typed_value(key, value, hints[key]) for key, value in data.items()}
        return cls(**values)


def _typed_value(key: str, value: Any, hint: Any) -> Any:
    """`value` checked against a config field's type; a list field takes a comma-separated string ("to_q,to_k",
    as `--option` gives it), never its characters."""
    is_list = typing.get_origin(hint) is tuple
    if is_list and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if is_list and isinstance(value, tuple):
        value = list(value)
    if not fits_type(value, hint):
        text = " ".join(repr(value).split())
        raise TloraBenchError(f"option '{key}' must be {describe_type(hint)}, got {type(value).__name__} "
                              f"{text if len(text) <= 60 else text[:60] + '...'}")
    return tuple(value) if is_list else value


def fits_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type (int, float, bool, str, tuple[str, ...], X | None); a
    float must be finite (no config value means anything at NaN or infinity)."""
    args = typing.get_args(hint)
    if type(None) in args:
        return value is None or any(fits_type(value, a) for a in args if a is not type(None))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, list) and all(fits_type(v, args[0]) for v in value)
    return True  # a type this check does not know: the config class checks it


def describe_type(hint: Any) -> str:
    args = typing.get_args(hint)
    if type(None) in args:
        return " or ".join([describe_type(a) for a in args if a is not type(None)] + ["null"])
    if typing.get_origin(hint) is tuple:
        return "a list of " + {int: "integers", str: "strings"}.get(args[0], str(args[0]))
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(hint, str(hint))


def layer_seed(seed: int, layer_name: str) -> int:
    """A per-layer seed that depends on the layer's name, not on the order layers are visited."""
    digest = hashlib.sha256(f"{seed}:{layer_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


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
        self.load_state_dict(tensors, strict=False)
        self.unmerge()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, method={self.config.method!r}"
