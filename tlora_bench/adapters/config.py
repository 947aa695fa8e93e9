"""What every adapter method's config shares: serialisable, checked values, and the shape rules of its layers.

A method subclasses `AdapterConfig` with its hyperparameters (each documented with the paper's symbol) and,
when its layers constrain the size, `layer_problem`. Nothing here imports torch: configs are built and checked
when a run is planned, before any model code loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from tlora_bench.errors import TloraBenchError, did_you_mean

# docs/decisions.md section 1: the four projections of every attention module.
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


MATRIX_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv3d")
NORM_KINDS = ("GroupNorm", "LayerNorm")


class LayerShape(NamedTuple):
    """What a size check reads of one module: its dotted name, its kind (the torch class it is, or is a subclass
    of: "Linear", "Conv2d", "GroupNorm", ...; else its own class name) and its weight's shape (None: no weight)."""

    name: str
    kind: str
    shape: tuple[int, ...] | None = None

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]


def matches_target(name: str, targets: Iterable[str]) -> bool:
    """Whether a module's dotted name is one of `targets` or ends with ".<target>" ("to_out.0" matches
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", never "xto_out.0"). The one rule every
    method uses to find its layers."""
    return any(name == t or name.endswith("." + t) for t in targets)


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
                raise TloraBenchError(f"unknown {cls.__name__} key {key!r}{did_you_mean(key, fields)}")
        hints = typing.get_type_hints(cls)
        values = {key: _typed_value(key, value, hints[key]) for key, value in data.items()}
        return cls(**values)

    def layer_problem(self, layer: LayerShape) -> str | None:
        """Why this config cannot adapt `layer` (e.g. a rank above its width), or None. The one size rule of a
        method: its layers apply it when they are built, and a run's plan applies it to the model's layer table
        before any weight loads."""
        return None


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
