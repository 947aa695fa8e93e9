"""Run configuration: a frozen dataclass loaded from a preset file, with CLI values overriding the preset.

Unknown keys and bad values are errors that name the key and say what is allowed.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tlora_bench.devices import PRECISIONS
from tlora_bench.errors import TloraBenchError, did_you_mean, unknown_name_error
from tlora_bench.fileio import read_toml


@dataclass(frozen=True)
class RunConfig:
    """Everything a `tlora-bench run` needs. Field comments cite the paper where a value comes from it."""

    name: str = "run"
    methods: tuple[str, ...] = ("tlora",)  # registry names, e.g. tlora, lora, oft
    ranks: tuple[int, ...] = (64,)  # r: adapter rank (paper main results r = 64)
    r_min: int | None = None  # r_min of T-LoRA's rank schedule; None = r // 2, the paper's default
    concepts: str = "dreambooth25"  # a set name, comma-separated ids, or a user manifest .toml
    model: str = "sdxl"  # model backend
    precision: str = "fp32"  # REFERENCE.md section 3, Decision: fp32 for paper presets
    # Step overrides by method name; the key "all" applies to every method without its own entry.
    steps: Mapping[str, int] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)  # base seeds of the seed rule (REFERENCE.md section 4)
    output_dir: str = "results"
    data_dir: str | None = None  # None: $TLORA_BENCH_DATA, then the download cache
    token: str = "sks"  # the paper's V*
    images_per_prompt: int = 5
    base_images: int = 15

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", MappingProxyType(dict(self.steps)))
        _check(bool(self.name.strip()), "name", "must not be empty")
        _check(len(self.methods) > 0, "methods", "name at least one method, e.g. methods = [\"tlora\"]")
        _check(len(set(self.methods)) == len(self.methods), "methods", f"lists a method twice: {self.methods}")
        _check_methods(self.methods)
        _check(len(self.ranks) > 0 and all(r >= 1 for r in self.ranks), "ranks",
               f"must be positive integers, got {list(self.ranks)}")
        if self.r_min is not None:
            _check(self.r_min >= 1, "r_min", f"must be at least 1, got {self.r_min}")
            _check(self.r_min <= min(self.ranks), "r_min",
                   f"is {self.r_min}, larger than rank {min(self.ranks)}; use r_min <= every rank")
        if self.precision not in PRECISIONS:
            raise unknown_name_error("precision (key 'precision')", self.precision, PRECISIONS)
        for method, steps in self.steps.items():
            _check(steps >= 1, "steps", f"for '{method}' must be at least 1, got {steps}")
        _check(bool(self.token) and " " not in self.token, "token", f"must be one word, got {self.token!r}")
        _check(self.images_per_prompt >= 1, "images_per_prompt", "must be at least 1")
        _check(self.base_images >= 1, "base_images", "must be at least 1")

    def steps_for(self, method: str, default: int) -> int:
        """The step count for a method: its own override, else the "all" override, else its default."""
        return self.steps.get(method, self.steps.get("all", default))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (lists and dicts), in field order."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
                for k, v in data.items()}


def _check_methods(labels: tuple[str, ...]) -> None:
    from tlora_bench.adapters import parse_method  # imports torch: only when a config is built

    for label in labels:
        try:
            parse_method(label)
        except TloraBenchError as e:
            raise TloraBenchError(f"config key 'methods': {e}") from None


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise TloraBenchError(f"config key '{key}' {message}")


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_TYPES = typing.get_type_hints(RunConfig)


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TloraBenchError(f"config key '{key}' must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise TloraBenchError(f"config key '{key}' must be an integer, got {value!r}") from None


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def coerce(key: str, value: Any) -> Any:
    """Turn a preset or CLI value into the field's type ("4,8" -> (4, 8); "tlora=800" -> {"tlora": 800})."""
    if key not in _FIELDS:
        raise TloraBenchError(f"unknown config key '{key}'{did_you_mean(key, _FIELDS)}")
    kind = _TYPES[key]
    optional = type(None) in typing.get_args(kind)
    if optional and value in (None, "", "none", "None"):
        return None
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if optional else kind
    origin = typing.get_origin(base)
    if base is int:
        return _as_int(key, value)
    if base is str:
        if not isinstance(value, (str, Path)):
            raise TloraBenchError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    if origin is tuple:
        item = typing.get_args(base)[0]
        return tuple(_as_int(key, v) if item is int else str(v) for v in _as_list(value))
    if origin is Mapping:
        if isinstance(value, str):
            pairs = [p.split("=", 1) for p in _as_list(value)]
            if any(len(p) != 2 for p in pairs):
                raise TloraBenchError(f"config key '{key}' takes method=steps pairs, e.g. tlora=800,lora=500")
            value = dict(pairs)
        if not isinstance(value, Mapping):
            raise TloraBenchError(f"config key '{key}' must be a table of method = steps, got {value!r}")
        return {str(k).strip(): _as_int(f"{key}.{k}", v) for k, v in value.items()}
    raise AssertionError(f"no coercion for field {key}: {kind}")  # a new field type needs a branch here


def preset_names() -> list[str]:
    folder = resources.files("tlora_bench.presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_preset(preset: str) -> dict[str, Any]:
    """A bundled preset by name, or a path to a .toml file."""
    if preset.endswith(".toml") or "/" in preset:
        return read_toml(preset)
    if preset not in preset_names():
        raise unknown_name_error("preset", preset, preset_names())
    with resources.as_file(resources.files("tlora_bench.presets") / f"{preset}.toml") as path:
        return read_toml(path)


def load_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Preset values, then overrides (CLI flags); None-valued overrides mean "not given"."""
    values: dict[str, Any] = {}
    for source in (read_preset(preset) if preset else {}), (overrides or {}):
        for key, value in source.items():
            if value is None:
                continue
            value = coerce(key, value)
            # Tables merge ("--steps tlora=5" keeps the preset's other entries); everything else replaces.
            values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    return RunConfig(**values)


def parse_assignments(assignments: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--set key=value` pairs as a dict of overrides."""
    overrides = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TloraBenchError(f"--set takes key=value, got '{item}'")
        overrides[key.strip()] = value
    return overrides
