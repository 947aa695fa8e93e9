"""Run configuration: a frozen dataclass loaded from a preset file, with CLI values overriding the preset.

A RunConfig checks its own fields (types, ranges, known keys) and imports no torch and no registry: names of
methods, models, concepts and scorers are checked by the plan (`tlora_bench.planner`), which joins them with
the registries. Unknown keys and bad values are errors that name the key and say what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tlora_bench.devices import PRECISIONS
from tlora_bench.errors import TloraBenchError, did_you_mean, unknown_name_error
from tlora_bench.fileio import read_toml
from tlora_bench.limits import check_bootstrap, check_seed
from tlora_bench.metrics.names import DEFAULT_DINO, DEFAULT_SEGMENTER
from tlora_bench.prompts import (
    DEFAULT_TOKEN,
    DRIFT_PROMPTS,
    IMAGES_PER_BASE_PROMPT,
    IMAGES_PER_PROMPT,
    MAX_IMAGES_PER_PROMPT,
    check_token,
    load_prompt_set,
)
from tlora_bench.resources import bundled_names, bundled_path
from tlora_bench.specs import DEFAULT_MODEL

# Far above any protocol's values (the paper trains 800 steps, in batches of 1, and samples 5 images per batch): a
# larger value is a typo that would run for weeks or ask a device for more memory than any has.
MAX_STEPS = 1_000_000
MAX_BATCH = 1024


def _field(default: Any, help: str) -> Any:
    """A config field with its help text, which `--help` and the docs read (the one place a field is explained)."""
    if isinstance(default, dict):  # a mutable default: each config gets its own copy
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def field_help(name: str) -> str:
    """The help text of a RunConfig field."""
    return _FIELDS[name].metadata["help"]


@dataclass(frozen=True)
class RunConfig:
    """Everything a `tlora-bench run` needs; each field's help text says where its value comes from."""

    name: str = _field("run", "The run's name: its folder is <output_dir>/<name>")
    methods: tuple[str, ...] = _field(("tlora",), "Method labels (tlora, lora-64, oft-32) or names of `variants`; a "
                                      "rank-sized method without a -N size runs once per rank in `ranks`")
    ranks: tuple[int, ...] = _field((64,), "Adapter ranks r for methods given without a size (paper: r = 64)")
    r_min: int | None = _field(None, "r_min of T-LoRA's rank schedule (default: r // 2, the paper's; FLUX 1)")
    variants: Mapping[str, Mapping[str, Any]] = _field(
        {}, "Named variants: a label -> {method = \"lora\", rank = 64, timestep_range = [800, 1000], r_min = 16, "
            "steps = 500, train_images = 2, svd_source = \"W\", ...}: any training or adapter option")
    concepts: str = _field("dreambooth25", "A concept set name, comma-separated concept ids, a user manifest .toml, "
                                           "or synthetic (docs/synthetic.md)")
    model: str = _field(DEFAULT_MODEL, "Model backend (`tlora-bench models list`)")
    model_path: str | None = _field(None, "A hub id or local diffusers folder instead of the backend's default")
    vae_path: str | None = _field(None, "A hub id or local folder for the VAE instead of the backend's")
    revision: str | None = _field(None, "Hub revision of the model")
    precision: str | None = _field(None, "The base model's precision (adapters train in fp32); default: the "
                                         "backend's (fp32 SD-XL, bf16 FLUX; the paper presets set fp32 for SD-XL, "
                                         "docs/decisions.md section 3)")
    steps: Mapping[str, int] = _field({}, "Training steps by method name, label or variant, e.g. all=100 or "
                                          "tlora=800,lora=500 (\"all\": every method without its own)")
    seeds: tuple[int, ...] = _field((0,), "Base seeds of the seed rule (docs/decisions.md section 4)")
    output_dir: str = _field("results", "Where runs go: <output_dir>/<name>, unless `run --out` names the folder")
    data_dir: str | None = _field(None, "The concept images' folder (default: $TLORA_BENCH_DATA, the checkout's "
                                        "concepts/, then the download cache)")
    token: str = _field(DEFAULT_TOKEN, "The rare token that stands for the paper's V*")
    images_per_prompt: int = _field(IMAGES_PER_PROMPT, "Images per contextual prompt (docs/decisions.md section 4)")
    base_images: int = _field(IMAGES_PER_BASE_PROMPT, "Images of the base prompt (docs/decisions.md section 4)")
    prompts: int | None = _field(None, "Only the first N prompt templates, the base prompt first (default: all)")
    drift_images: int = _field(1, "Images of each of the ten drift prompts (prompts/drift.txt), made by every "
                                  "adapted model and once by the base model, for the drift score; 0: no drift")
    drift_prompts: int | None = _field(None, "Only the first N drift prompts (default: all ten)")
    sample_batch_size: int = _field(5, "Images of one prompt per denoiser batch")
    checkpoint_every: int = _field(100, "Training steps between checkpoints (0: only at the end)")
    gradient_checkpointing: bool = _field(False, "Trade compute for memory in the denoiser")
    segmenter: str = _field(DEFAULT_SEGMENTER, "Masks for masked IS and DINO-IS (docs/evaluation.md)")
    dino: str = _field(DEFAULT_DINO, "The DINO-IS model (docs/decisions.md section 5)")
    tiny_extractors: bool = _field(False, "Score with tiny random extractors: smoke runs only, meaningless numbers")
    bootstrap: int = _field(1000, "Bootstrap resamples of the 95% interval over concepts")
    reference: str | None = _field(None, "The method label every other is compared with, paired by concept "
                                         "(docs/evaluation.md, \"Paired comparisons\"); default: the first T-LoRA "
                                         "variant")

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", MappingProxyType(dict(self.steps)))
        object.__setattr__(self, "variants", MappingProxyType({k: MappingProxyType(dict(v))
                                                                for k, v in self.variants.items()}))
        _check(bool(self.name.strip()), "name", "must not be empty")
        _check_name(self.name)
        _check(bool(self.concepts.strip()), "concepts",
               "must not be empty; name a set (e.g. dreambooth25), concept ids (dog6,cat) or a manifest .toml")
        _check(len(self.methods) > 0, "methods", "name at least one method, e.g. methods = [\"tlora\"]")
        _check(len(set(self.methods)) == len(self.methods), "methods", f"lists a method twice: {self.methods}")
        _check(len(self.ranks) > 0 and all(_is_int(r) and r >= 1 for r in self.ranks), "ranks",
               f"must be positive integers, got {list(self.ranks)}")
        if self.r_min is not None:
            _check(_is_int(self.r_min) and self.r_min >= 1, "r_min", f"must be at least 1, got {self.r_min!r}")
            _check(self.r_min <= min(self.ranks), "r_min",
                   f"is {self.r_min}, larger than rank {min(self.ranks)}; use r_min <= every rank")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise unknown_name_error("precision (key 'precision')", self.precision, PRECISIONS)
        for method, steps in self.steps.items():
            _check_int("steps", steps, 1, MAX_STEPS, f" for '{method}'")
        try:
            check_token(self.token)
        except TloraBenchError as e:
            raise TloraBenchError(f"config key 'token': {e}") from None
        _check_counts(self)
        _check(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds",
               f"must list distinct base seeds, got {list(self.seeds)}")
        for seed in self.seeds:
            check_seed(seed, "config key 'seeds'")
        check_bootstrap(self.bootstrap, "config key 'bootstrap'")  # the plan bounds it by the concepts too
        _check_names(self)

    def steps_for(self, method: str, default: int) -> int:
        """The step count for a method: its own override, else the "all" override, else its default."""
        return self.steps.get(method, self.steps.get("all", default))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (lists and dicts), in field order."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["variants"] = {k: _plain(v) for k, v in self.variants.items()}
        return {k: _plain(v) for k, v in data.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, never a count


def _check_int(key: str, value: Any, low: int, high: int, where: str = "") -> None:
    """An integer key from `low` to `high`, or one line naming it and the range."""
    if not _is_int(value):
        raise TloraBenchError(f"config key '{key}'{where} must be an integer, got {_got(value)}")
    _check(low <= value <= high, key, f"{where.lstrip()}{' ' if where else ''}must be from {low} to {high:,}, "
                                      f"got {value:,}")


def _check_counts(config: RunConfig) -> None:
    """The image counts, the batch size and the checkpoint interval in their ranges, and the flags true or false."""
    templates = 1 + max(len(load_prompt_set(name)) for name in ("live", "object"))  # the base prompt first
    for key, low, high in (("images_per_prompt", 1, MAX_IMAGES_PER_PROMPT), ("base_images", 1, MAX_IMAGES_PER_PROMPT),
                           ("sample_batch_size", 1, MAX_BATCH), ("checkpoint_every", 0, MAX_STEPS),
                           ("drift_images", 0, MAX_IMAGES_PER_PROMPT),
                           ("prompts", 1, templates), ("drift_prompts", 1, DRIFT_PROMPTS)):
        if getattr(config, key) is not None or key not in ("prompts", "drift_prompts"):
            _check_int(key, getattr(config, key), low, high)
    for key in ("gradient_checkpointing", "tiny_extractors"):
        _check(isinstance(getattr(config, key), bool), key, f"must be true or false, got {_got(getattr(config, key))}")


def _check_names(config: RunConfig) -> None:
    """Names are not empty (that they name registered things, the plan checks)."""
    for key in ("model", "segmenter", "dino"):
        _check(bool(getattr(config, key).strip()), key, "must not be empty")
    for key in config.variants:
        _check(bool(key.strip()), "variants", "names a variant with an empty name")


def _check_name(name: str) -> None:
    """The run folder is <output_dir>/<name>: a name with '/', '..' or a leading '/' would put it elsewhere."""
    from tlora_bench.concepts.manifest import is_safe_name

    _check(is_safe_name(name), "name", f"{_quote(name)} is not a safe folder name: use letters, digits, '_', '-', "
                                       "'.', starting with a letter or digit (run --out chooses another folder)")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise TloraBenchError(f"config key '{key}' {message}")


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_TYPES = typing.get_type_hints(RunConfig)


def _got(value: Any) -> str:
    """`value` for an error message: its type and a short repr, on one line."""
    text = " ".join(repr(value).split())
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _quote(name: Any) -> str:
    """A name for an error message: 'name', or its repr when it holds quotes or control characters."""
    text = str(name)
    return f"'{text}'" if text.isprintable() and "'" not in text else " ".join(repr(text).split())


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TloraBenchError(f"config key '{key}' must be an integer, got {_got(value)}")
    try:
        return int(value)
    except ValueError:
        raise TloraBenchError(f"config key '{key}' must be an integer, got {_got(value)}") from None


def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, (str, Path)):
        raise TloraBenchError(f"config key '{key}' must be a string, got {_got(value)}")
    if not str(value).isprintable():  # control characters: never a name or path the user meant
        raise TloraBenchError(f"config key '{key}' must be a string without control characters, got {_got(value)}")
    return str(value)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise TloraBenchError(f"config key '{key}' must be true or false, got {_got(value)}")


def _as_variants(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise TloraBenchError("config key 'variants' must be a table of tables, e.g. "
                              "[variants.lora-late] method = \"lora\" timestep_range = [800, 1000]")
    return {_as_str("variants (a variant name)", k): dict(v) for k, v in value.items()}


def _as_list(key: str, value: Any, item: type) -> list:
    """A list value: a list, a comma-separated string, or one bare item (`ranks = 64`); never a table."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    if item is int and isinstance(value, int) and not isinstance(value, bool):
        return [value]
    kind = "integers" if item is int else "strings"
    raise TloraBenchError(f"config key '{key}' must be a list of {kind} (or a comma-separated string), "
                          f"got {_got(value)}")


def coerce(key: str, value: Any) -> Any:
    """Turn a preset or CLI value into the field's type ("4,8" -> (4, 8); "tlora=800" -> {"tlora": 800})."""
    if key not in _FIELDS:
        raise TloraBenchError(f"unknown config key {_quote(key)}{did_you_mean(str(key), _FIELDS)}")
    kind = _TYPES[key]
    optional = type(None) in typing.get_args(kind)
    if optional and (value is None or (isinstance(value, str) and value in ("", "none", "None"))):
        return None
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if optional else kind
    origin = typing.get_origin(base)
    if key == "variants":
        return _as_variants(value)
    if base is int:
        return _as_int(key, value)
    if base is bool:
        return _as_bool(key, value)
    if base is str:
        return _as_str(key, value)
    if origin is tuple:
        item = typing.get_args(base)[0]
        return tuple(_as_int(key, v) if item is int else _as_str(key, v) for v in _as_list(key, value, item))
    if origin is Mapping:
        if isinstance(value, str):
            pairs = [p.split("=", 1) for p in _as_list(key, value, str)]
            if any(len(p) != 2 for p in pairs):
                raise TloraBenchError(f"config key '{key}' takes method=steps pairs, e.g. tlora=800,lora=500")
            value = dict(pairs)
        if not isinstance(value, Mapping):
            raise TloraBenchError(f"config key '{key}' must be a table of method = steps, got {_got(value)}")
        return {_as_str(f"{key} (a method name)", k).strip(): _as_int(f"{key}.{k}", v) for k, v in value.items()}
    raise AssertionError(f"no coercion for field {key}: {kind}")  # a new field type needs a branch here


EXECUTOR_TABLE = "executor"


def preset_names() -> list[str]:
    return bundled_names("presets", ".toml")


def read_preset(preset: str) -> dict[str, Any]:
    """A bundled preset by name, or a file read through the checked TOML reader. A bundled preset's bare name
    always means the preset, so a folder named like one (`run --preset smoke --out smoke`) never shadows it;
    any other value ending in .toml, holding a path separator or naming an existing file is a file."""
    names = preset_names()
    is_path = preset.endswith(".toml") or any(sep and sep in preset for sep in ("/", os.sep, os.altsep))
    if is_path or (preset not in names and Path(preset).exists()):
        return read_toml(preset)
    if preset not in names:
        raise unknown_name_error("preset", preset, names)
    with bundled_path("presets", f"{preset}.toml") as path:
        return read_toml(path)


def preset_executor(preset: str | None) -> dict[str, Any]:
    """A preset's [executor] table (where its jobs run: name = "slurm", partition, gpus_per_job, ...): not part
    of the run's configuration, so the same run may move between executors."""
    table = read_preset(preset).get(EXECUTOR_TABLE, {}) if preset else {}
    if not isinstance(table, dict):
        raise TloraBenchError(f"preset '{preset}': [executor] must be a table, e.g. [executor] name = \"slurm\"")
    return table


def load_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Preset values, then overrides (CLI flags); None-valued overrides mean "not given"."""
    values: dict[str, Any] = {}
    preset_values = {k: v for k, v in (read_preset(preset) if preset else {}).items() if k != EXECUTOR_TABLE}
    for source, where in (preset_values, f" (in preset '{preset}')"), (overrides or {}, ""):
        for key, value in source.items():
            if value is None:
                continue
            try:
                value = coerce(key, value)
            except TloraBenchError as e:  # a preset's bad value names the preset file too
                raise TloraBenchError(f"{e}{where}") from None
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
