"""PEFT tuners as methods: "peft:<tuner>[-N]", one per tuner the installed PEFT can inject layer by layer.

Registered on the first lookup of a "peft:" name (`METHODS.add_provider`): PEFT and torch import then, never
for other methods. Each tuner's config here is made from PEFT's own config class: its fields of plain types
(numbers, booleans, strings) are the method's options (`--option KEY=VALUE`, checked like every method's), its
size field ("r" where it has one) is what "-N" sets, and PEFT's own checks run when a run is planned. Where the
targets come from (`target_modules`) stays tlora-bench's: the attention projections (docs/decisions.md).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Literal

from tlora_bench.adapters.config import AdapterConfig, LayerShape
from tlora_bench.adapters.registry import MethodSpec, register_method
from tlora_bench.errors import TloraBenchError

PREFIX = "peft"
LAYER = "tlora_bench.adapters.peft_methods.layer:PeftLayer"
SIZE_FIELDS = ("r", "boft_block_size", "n_frequency", "block_size")  # the first a tuner has is its "-N"
ALIASES = {"dora": ("lora", {"use_dora": True})}  # DoRA is LoRA with use_dora (PEFT's own switch)
# Tuners that inject layer by layer but need PEFT's model wrapper or training loop to mean anything.
_NEEDS_PEFT_MODEL = {"adaption_prompt": "adapts a language model's prompt (PEFT injects it through get_peft_model)",
                     "shadow": "PEFT injects it only through get_peft_model",
                     "adalora": "reallocates its rank budget from PEFT's training loop (update_and_allocate)",
                     "poly": "routes by task ids given with every batch"}
# Fields that say where an adapter goes or how PEFT stores it, not what it is: tlora-bench owns those.
_NOT_OPTIONS = {"peft_type", "task_type", "inference_mode", "base_model_name_or_path", "revision", "auto_mapping",
                "target_modules", "exclude_modules", "modules_to_save", "layers_to_transform", "layers_pattern",
                "target_parameters", "megatron_core", "init_weights_from_file"}


@dataclasses.dataclass(frozen=True)
class PeftTunerConfig(AdapterConfig):
    """The options of one PEFT tuner (fields made from its PEFT config class, `tuner_configs`)."""

    peft_class: ClassVar[type] = type(None)  # the PEFT config class, set per tuner
    peft_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.peft_config(["layer"])  # PEFT's own checks, when a run is planned

    def peft_config(self, target_modules: list[str]) -> Any:
        """PEFT's config object for these options and targets; a value PEFT refuses is one line."""
        values = {name: getattr(self, name) for name in self.peft_fields}
        try:
            return self.peft_class(target_modules=target_modules, **values)
        except (ValueError, TypeError) as e:
            raise TloraBenchError(f"method '{self.method}': PEFT's {self.peft_class.__name__} refuses these options "
                                  f"({' '.join(str(e).split())})") from None

    def layer_problem(self, layer: LayerShape) -> str | None:
        from tlora_bench.adapters.peft_methods.layer import injection_problem

        return injection_problem(self, layer)


def _plain_type(hint: Any) -> Any:
    """A PEFT field's type as a tlora-bench option type, or None when it is no plain value (lists, dicts, ...)."""
    if hint in (int, float, bool, str):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return str if all(isinstance(a, str) for a in args) else None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = [a for a in args if a is not type(None)]
        plain = [_plain_type(a) for a in members]
        if None in plain:
            return None
        kinds = set(plain)
        base = kinds.pop() if len(kinds) == 1 else Any  # e.g. bool | "gaussian": PEFT checks the value
        return base | None if type(None) in args and base is not Any else base
    return None


def _option_fields(peft_class: type) -> list[tuple[str, Any, dataclasses.Field]]:
    try:
        hints = typing.get_type_hints(peft_class)
    except Exception:  # a PEFT annotation that does not resolve: no options rather than no tuner
        return []
    fields = []
    for f in dataclasses.fields(peft_class):
        kind = _plain_type(hints.get(f.name))
        if f.name in _NOT_OPTIONS or kind is None or f.default is dataclasses.MISSING:
            continue
        help_text = " ".join(str(f.metadata.get("help", f.name)).split()).split(". ")[0]
        fields.append((f.name, kind, dataclasses.field(default=f.default, metadata={"help": help_text[:90]})))
    return fields


def tuner_config_class(tuner: str, peft_class: type) -> type[PeftTunerConfig]:
    fields = _option_fields(peft_class)
    cls = dataclasses.make_dataclass(f"Peft{peft_class.__name__}", fields, bases=(PeftTunerConfig,), frozen=True,
                                     namespace={"__module__": __name__})
    cls.peft_class = peft_class
    cls.peft_fields = tuple(name for name, _, _ in fields)
    return cls


def injectable_tuners() -> tuple[dict[str, type], dict[str, str]]:
    """({tuner name: PEFT config class} PEFT can inject layer by layer, {tuner name: why not} for the others)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    usable, refused = {}, {}
    for peft_type, config_class in PEFT_TYPE_TO_CONFIG_MAPPING.items():
        name = str(getattr(peft_type, "value", peft_type)).lower()
        fields = {f.name for f in dataclasses.fields(config_class)}
        tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)
        if name in _NEEDS_PEFT_MODEL:
            refused[name] = _NEEDS_PEFT_MODEL[name]
        elif "target_modules" not in fields or tuner is None:
            refused[name] = "adapts prompts or tokens, not layers"
        elif getattr(tuner, "uses_shared_state", False):
            refused[name] = "shares state across layers (PEFT injects it only through get_peft_model)"
        else:
            usable[name] = config_class
    return usable, refused


def register() -> None:
    """Register "peft:<tuner>" for every injectable tuner of the installed PEFT, and "peft:dora"."""
    import peft

    usable, _ = injectable_tuners()
    tuners = {name: (cls, {}) for name, cls in usable.items()}
    tuners.update({alias: (usable[base], fixed) for alias, (base, fixed) in ALIASES.items() if base in usable})
    for name, (peft_class, fixed) in sorted(tuners.items()):
        config_cls = tuner_config_class(name, peft_class)
        fields = {f.name for f in dataclasses.fields(config_cls)}
        size = next((f for f in SIZE_FIELDS if f in fields), None)
        register_method(MethodSpec(
            name=f"{PREFIX}:{name}", summary=f"PEFT {peft.__version__} {peft_class.__name__}"
            + "".join(f" {k}={v}" for k, v in fixed.items()), config_cls=config_cls, layer=LAYER, family="peft",
            fixed=fixed, size_field=size, mergeable=False))
