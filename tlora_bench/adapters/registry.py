"""The method registry: name -> how to build its config and layers, and its training defaults.

A method label may carry a size suffix: "tlora-64" is T-LoRA with r = 64, "oft-32" OFT with 32 blocks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tlora_bench.adapters.config import AdapterConfig, LayerShape, matches_target
from tlora_bench.errors import TloraBenchError
from tlora_bench.registry import Registry, resolve_object


def linear_targets(table: Sequence[LayerShape], config: AdapterConfig) -> list[LayerShape]:
    """The modules whose dotted name matches one of `config.target_modules` (`matches_target`); each must be a
    Linear."""
    found = [layer for layer in table if matches_target(layer.name, config.target_modules)]
    for layer in found:
        if layer.kind != "Linear":
            raise TloraBenchError(f"target '{layer.name}' is a {layer.kind}, not a Linear; {config.method} adapts "
                                  "Linear layers only")
    return found


@dataclass(frozen=True)
class MethodSpec:
    """Everything the trainer and the CLI need to know about one method."""

    name: str
    summary: str
    config_cls: type[AdapterConfig]
    layer: str | type  # its AdapterLayer class, or "module:Class", imported when a model is adapted (torch)
    family: str  # "low-rank", "orthogonal", "spectral": how the update is built (tables group by it)
    # Config values that define the method (e.g. mask=True for T-LoRA); users cannot override them.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    size_field: str | None = None  # the config field a "-N" label suffix sets
    steps: int = 500  # docs/decisions.md section 3
    lr: float = 1e-4
    weight_decay: float = 1e-4
    mergeable: bool = True  # can be merged into W once, for every timestep
    # The modules it adapts, chosen from a model's layer table (names and shapes: no torch, no weights).
    find_targets: Callable[[Sequence[LayerShape], AdapterConfig], list[LayerShape]] = linear_targets

    @property
    def layer_cls(self) -> type:
        return resolve_object(self.layer, f"method '{self.name}'")

    @property
    def size_default(self) -> int | None:
        """The size a label without "-N" gets (None: the method takes no size)."""
        return next((f.default for f in dataclasses.fields(self.config_cls) if f.name == self.size_field), None)

    def config_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config_cls)]


METHODS: Registry[MethodSpec] = Registry("method", entry_points="tlora_bench.methods", item_type=MethodSpec)


def register_method(spec: MethodSpec) -> MethodSpec:
    return METHODS.register(spec.name, spec)


METHODS.register_plugin = register_method
# Methods other packages implement, registered on the first lookup of one of their names (docs/interop.md).
METHODS.add_provider("peft", "tlora_bench.adapters.peft_methods.config:register", "PEFT (pip install peft)")
METHODS.add_provider("lycoris", "tlora_bench.adapters.lycoris_methods.config:register",
                     "LyCORIS (pip install -e '.[lycoris]')")


def method_choices() -> list[str]:
    """What help texts list: the bundled and plugin names, and each provider's names as a pattern."""
    hints = {"peft": "peft:<tuner> (loha, lokr, dora, boft, ...)", "lycoris": "lycoris:<algo> (tlora, lokr, ...)"}
    return [*METHODS.names(), *(hints.get(prefix, f"{prefix}:<name>") for prefix in METHODS.providers())]


def low_rank_methods() -> list[str]:
    """The methods of the low-rank family (an update B A: effective-rank plots read B)."""
    return [name for name in METHODS if METHODS.get(name).family == "low-rank"]


def parse_method(text: str) -> tuple[MethodSpec, int | None]:
    """What a user writes for a method: 'tlora-64' -> (T-LoRA's spec, 64); 'svdiff' -> (SVDiff's spec, None).
    Read by matching registered names, once, when a run is planned; results then carry the size as a number."""
    if text in METHODS:
        return METHODS.get(text), None
    prefix = text.partition(":")[0] if ":" in text else None
    if prefix in METHODS.providers():
        METHODS.load_provider(prefix)  # a provider not installed: one line saying what to install
    for name in sorted(METHODS.names(providers=prefix or False), key=len, reverse=True):  # "vanilla-tlora-4"
        # is never "tlora"
        size = text[len(name) + 1:]
        if text.startswith(name + "-") and size.isascii() and size.isdigit():
            spec = METHODS.get(name)
            if spec.size_field is None:
                raise TloraBenchError(f"method '{spec.name}' takes no size suffix; write '{spec.name}'")
            return spec, int(size)
    return METHODS.get(text), None  # raises the did-you-mean error


def make_config(text: str, /, **overrides: Any) -> AdapterConfig:
    """The config for a method as a user writes it ("tlora-64"), with options (e.g. r_min, seed, target_modules)."""
    return build_config(*parse_method(text), **overrides)


def build_config(spec: MethodSpec, size: int | None = None, /, **overrides: Any) -> AdapterConfig:
    """The config of `spec` at `size` (None: its default), with options; a bad option is one line naming it."""
    fields = spec.config_fields()
    if size is not None and spec.size_field in overrides and overrides[spec.size_field] != size:
        raise TloraBenchError(f"option '{spec.size_field}={overrides[spec.size_field]}' contradicts the size {size} "
                              f"of '{spec.name}-{size}'; give the size once, in the label")
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
