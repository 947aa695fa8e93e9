"""The units of work of the two model stages, as data: what trains an adapter (`TrainSpec`, resolved into the
`Recipe` the loop runs) and what samples it (`SampleOptions`). No torch: a run's plan builds and checks them
all before any model loads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tlora_bench.adapters import METHODS, AdapterConfig, MethodSpec, build_config, parse_method
from tlora_bench.adapters.config import DEFAULT_TARGETS
from tlora_bench.devices import PRECISIONS
from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.limits import check_seed
from tlora_bench.prompts import DEFAULT_TOKEN, IMAGES_PER_BASE_PROMPT, IMAGES_PER_PROMPT, check_token

OPTIMIZERS = ("adamw", "prodigy")
DEFAULT_MODEL = "sdxl"  # the paper's main model


@dataclass(frozen=True)
class TrainSpec:
    """Everything that decides a trained adapter. Two equal specs give the same adapter on the same setup."""

    method: str  # a method label: "tlora", "tlora-64", "oft-32"
    concept: str
    model: str = DEFAULT_MODEL
    rank: int | None = None  # r for rank-sized methods whose label has no "-N" (None: the method default)
    adapter: Mapping[str, Any] = field(default_factory=dict)  # adapter options: r_min, gamma, svd_source, ...
    manifest: str | None = None  # a user manifest .toml; None: the bundled DreamBooth manifest
    data_dir: str | None = None
    model_path: str | None = None  # a hub id or local diffusers folder instead of the backend's default
    vae_path: str | None = None
    revision: str | None = None
    precision: str = "fp32"  # fp32 (the authors); bf16, fp16: base model in half precision, adapter and optimizer fp32
    steps: int | None = None  # None: the method's default (docs/decisions.md section 3)
    optimizer: str | None = None  # None: the backend's default (adamw; prodigy for FLUX)
    lr: float | None = None  # None: the method's default (prodigy: 1.0)
    weight_decay: float | None = None
    batch_size: int = 1
    max_grad_norm: float | None = 1.0  # as diffusers' DreamBooth LoRA scripts; None: no clipping
    seed: int = 0
    timestep_range: tuple[int, int] | None = None  # train on t in [low, high) only (paper Figure 2)
    train_images: int = 1  # the first N images of the concept, the training image first (paper Table 4)
    token: str = DEFAULT_TOKEN  # the paper's V*
    checkpoint_every: int = 100  # steps between checkpoints (0: only at the end)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        from tlora_bench.concepts.manifest import refuse_data_dir_with_manifest

        object.__setattr__(self, "adapter", MappingProxyType(dict(self.adapter)))
        refuse_data_dir_with_manifest(self.manifest, self.data_dir)
        if self.timestep_range is not None:
            object.__setattr__(self, "timestep_range", tuple(self.timestep_range))
            if len(self.timestep_range) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                        for v in self.timestep_range):
                raise TloraBenchError(f"timestep range must be two integers low,high, got {self.timestep_range}")
            low, high = self.timestep_range
            if not 0 <= low < high <= 1000:
                raise TloraBenchError(f"timestep range must be low,high with 0 <= low < high <= 1000, got {low},{high}")
        for key in ("batch_size", "train_images", "seed", "checkpoint_every", "steps"):
            value = getattr(self, key)
            if not (value is None and key == "steps") and (isinstance(value, bool) or not isinstance(value, int)):
                raise TloraBenchError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        for key in ("batch_size", "train_images"):
            if getattr(self, key) < 1:
                raise TloraBenchError(f"{key} must be at least 1, got {getattr(self, key)}")
        check_seed(self.seed, "seed")  # torch generators take 64 bits; the seed rule adds to it
        if self.steps is not None and self.steps < 1:
            raise TloraBenchError(f"steps must be at least 1, got {self.steps}")
        if self.checkpoint_every < 0:
            raise TloraBenchError(f"checkpoint_every must be 0 or more, got {self.checkpoint_every}")
        _check_number("lr", self.lr, above_zero=True)
        _check_number("weight_decay", self.weight_decay, above_zero=False)
        _check_number("max_grad_norm", self.max_grad_norm, above_zero=False, note=" (0: no clipping)")
        check_token(self.token)
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise unknown_name_error("optimizer", self.optimizer, OPTIMIZERS)
        if self.precision not in PRECISIONS:
            raise unknown_name_error("precision", self.precision, PRECISIONS)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["adapter"] = dict(self.adapter)
        data["timestep_range"] = list(self.timestep_range) if self.timestep_range else None
        return data

    def __reduce__(self):  # read-only mappings do not pickle: rebuild from plain values (process pools, Ray)
        return (TrainSpec.from_dict, (self.to_dict(),))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TloraBenchError(f"unknown training option '{unknown[0]}'")
        return cls(**data)


def _check_number(key: str, value: Any, *, above_zero: bool, note: str = "") -> None:
    """An optional optimizer value: a finite number, above 0 or at least 0 (torch checks these only once the
    model has loaded, and lets infinity through)."""
    if value is None:
        return
    bound = "above 0" if above_zero else "0 or more"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0 or (above_zero and value == 0):
        raise TloraBenchError(f"{key} must be a finite number {bound}{note}, got {value!r}")


@dataclass(frozen=True)
class Recipe:
    """A spec resolved against the method and backend registries: the values the loop actually uses."""

    label: str  # the method with its size, e.g. "tlora-64", "oft-32"; "svdiff" (no size)
    adapter_config: AdapterConfig
    steps: int
    optimizer: str
    lr: float
    weight_decay: float
    mergeable: bool

    @property
    def method(self) -> MethodSpec:
        return METHODS.get(self.adapter_config.method)

    @property
    def size(self) -> int | None:
        """The value its label's "-N" names (rank r, OFT's and GSOFT's blocks), as the adapter config holds it."""
        field_name = self.method.size_field
        return None if field_name is None else getattr(self.adapter_config, field_name)

    @property
    def rank(self) -> int | None:
        """The rank r of a rank-sized method (None for block-sized or unsized ones)."""
        return self.size if self.method.size_field == "r" else None

    def identity(self) -> dict[str, Any]:
        """What names the method in results (job.json `method`): readers take these fields, never a label apart."""
        return {"name": self.method.name, "family": self.method.family, "size": self.size, "rank": self.rank,
                "label": self.label}


def resolve_recipe(spec: TrainSpec) -> Recipe:
    """Method and backend defaults, overridden by the spec; every bad value is a one-line error here."""
    from tlora_bench.models import backend_spec

    method, size = parse_method(spec.method)
    backend = backend_spec(spec.model)
    options = dict(spec.adapter)
    _refuse_flag_options(spec, method, size, options)
    if size is None and spec.rank is not None:
        if method.size_field != "r":
            raise TloraBenchError(f"method '{method.name}' has no rank; give its size in the label "
                                  f"(e.g. '{method.name}-32') instead of --rank")
        size = spec.rank
    if "num_train_timesteps" in method.config_fields():
        options.setdefault("num_train_timesteps", backend.num_train_timesteps)
    if method.fixed.get("mask") and backend.default_r_min is not None:
        options.setdefault("r_min", backend.default_r_min)
    if backend.adapter_targets and "target_modules" not in options:
        default = next(f.default for f in dataclasses.fields(method.config_cls) if f.name == "target_modules")
        if tuple(default) == DEFAULT_TARGETS:  # SVDiff adapts every layer: it keeps its own default
            options["target_modules"] = backend.adapter_targets
    config = build_config(method, size, seed=spec.seed, **options)
    size = None if method.size_field is None else getattr(config, method.size_field)
    optimizer = spec.optimizer or backend.optimizer
    # Prodigy estimates the step size itself.
    default_lr = 1.0 if optimizer == "prodigy" else method.lr * backend.lr_scale
    return Recipe(label=method.name if size is None else f"{method.name}-{size}", adapter_config=config,
                  steps=spec.steps or backend.default_steps.get(method.name, method.steps), optimizer=optimizer,
                  lr=default_lr if spec.lr is None else spec.lr,
                  weight_decay=method.weight_decay if spec.weight_decay is None else spec.weight_decay,
                  mergeable=method.mergeable)


def _refuse_flag_options(spec: TrainSpec, method, size: int | None, options: Mapping[str, Any]) -> None:
    """Adapter options that a flag or the label sets are refused: two places for one value would disagree."""
    if "seed" in options:
        raise TloraBenchError("option 'seed' is the training seed (train --seed, a run's seeds), which also seeds "
                              "the adapter init; drop the adapter option and set the training seed")
    field = method.size_field
    if field is None or field not in options:
        return
    given = f"option '{field}={options[field]}'"
    if spec.rank is not None:
        raise TloraBenchError(f"{given} and --rank {spec.rank} both set the rank; give it once, with --rank")
    if size is not None:
        raise TloraBenchError(f"{given} and the method label '{spec.method}' both set the size; give it once, in "
                              "the label")
    example = f"--rank {options[field]} or " if field == "r" else ""
    raise TloraBenchError(f"{given} sets the size of '{method.name}'; give it with {example}the label "
                          f"'{method.name}-{options[field]}' instead, so results are named by it")


@dataclass(frozen=True)
class SampleOptions:
    prompts: int | None = None  # only the first N prompt templates (the base prompt first); None: all 32
    images_per_prompt: int = IMAGES_PER_PROMPT
    base_images: int = IMAGES_PER_BASE_PROMPT
    batch_size: int = 5  # images of one prompt per denoiser batch
    base_seed: int | None = None  # the seed rule's base seed; None: the adapter's training seed
    num_inference_steps: int | None = None  # None: the backend's (SD-XL 25, FLUX 28)
    guidance_scale: float | None = None
    drift_images: int = 0  # images of each drift prompt (prompts/drift.txt); 0: none
    drift_prompts: int | None = None  # only the first N drift prompts; None: all ten

    def __post_init__(self) -> None:
        if self.drift_images < 0:
            raise TloraBenchError(f"--drift-images must be 0 or more, got {self.drift_images}")
        if self.drift_prompts is not None and self.drift_prompts < 1:
            raise TloraBenchError(f"--drift-prompts must be at least 1, got {self.drift_prompts}")
        if self.prompts is not None and self.prompts < 1:
            raise TloraBenchError(f"--prompts must be at least 1, got {self.prompts}")
        if self.batch_size < 1:
            raise TloraBenchError(f"--batch-size must be at least 1, got {self.batch_size}")
