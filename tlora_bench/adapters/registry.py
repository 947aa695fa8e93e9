"""The method registry: name -> how to build its config and layers, and its training defaults.

A method label may carry a size suffix: "tlora-64" is T-LoRA with r = 64, "oft-32" OFT with 32 blocks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tlora_bench.adapters.layer import AdapterConfig, AdapterLayer
from tlora_bench.errors import TloraBenchError
from tlora_bench.registry import Registry


def matches_target(name: str, targets: Iterable[str]) -> bool:
    """Whether a module's dotted name is one of `targets` or ends with ".<target>" ("to_out.0" matches
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", never "xto_out.0"). The one rule every
    method uses to find its layers."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _linear_targets(model: nn.Module, config: AdapterConfig) -> list[tuple[str, nn.Module]]:
    """Modules whose dotted name matches one of `config.target_modules` (`matches_target`)."""
    found = []
    for name, module in model.named_modules():
        if matches_target(name, config.target_modules):
            if not isinstance(module, nn.Linear):
                raise TloraBenchError(f"target '{name}' is a {type(module).__name__}, not a Linear; "
                                      f"{config.method} adapts Linear layers only")
            found.append((name, module))
    return found


@dataclass(frozen=True)
class MethodSpec:
    """Everything the trainer and the CLI need to know about one method."""

    name: str
    summary: str
    config_cls: type[AdapterConfig]
    layer_cls: type[AdapterLayer]
    # Config values that define the method (e.g. mask=True for T-LoRA); users cannot override them.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    size_field: str | None = None  # the config field a "-N" label suffix sets
    steps: int = 500  # docs/decisions.md section 3
    lr: float = 1e-4
    weight_decay: float = 1e-4
    mergeable: bool = True  # can be merged into W once, for every timestep
    find_targets: Callable[[nn.Module, AdapterConfig], list[tuple[str, nn.Module]]] = _linear_targets

    def config_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config_cls)]


METHODS: Registry[MethodSpec] = Registry("method")
_LABEL = re.compile(r"(?P<name>.+?)-(?P<size>\d+)")


def register_method(spec: MethodSpec) -> MethodSpec:
    return METHODS.register(spec.name, spec)


def parse_method(label: str) -> tuple[MethodSpec, int | None]:
    """'tlora-64' -> (T-LoRA's spec, 64); 'svdiff' -> (SVDiff's spec, None)."""
    if label in METHODS:
        return METHODS.get(label), None
    match = _LABEL.fullmatch(label)
    if match and match["name"] in METHODS:
        spec = METHODS.get(match["name"])
        if spec.size_field is None:
            raise TloraBenchError(f"method '{spec.name}' takes no size suffix; write '{spec.name}'")
        return spec, int(match["size"])
    return METHODS.get(label), None  # raises the did-you-mean error


def make_config(label: str, /, **overrides: Any) -> AdapterConfig:
    """The config for a method label, with user overrides (e.g. r_min, seed, target_modules)."""
    spec, size = parse_method(label)
    fields = spec.config_fields()
    if size is not None and spec.size_field in overrides and overrides[spec.size_field] != size:
        raise TloraBenchError(f"option '{spec.size_field}={overrides[spec.size_field]}' contradicts the size {size} "
                              f"of '{label}'; give the size once, in the label")
    for key in overrides:
        if key in spec.fixed and overrides[key] != spec.fixed[key]:
            raise TloraBenchError(f"'{key}' is fixed to {spec.fixed[key]!r} by method '{spec.name}'; "
                                  "choose the method that has the value you want")
        if key not in fields or key == "method":
            raise TloraBenchError(f"method '{spec.name}' has no option '{key}' (options: "
                                  f"{', '.join(f for f in fields if f not in spec.fixed and f != 'method')})")
    values = {**overrides, **spec.fixed, "method": spec.name}
    if size is not None:
        values[spec.size_field] = size
    return spec.config_cls.from_dict(values)
