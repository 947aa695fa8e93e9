"""Every registered method with its training defaults and its trainable-parameter count on a model.

Backs `tlora-bench methods`. SD-XL is counted on the meta device (`sdxl_unet_on_meta`): shapes without
storage, so the count needs neither the checkpoint nor its 10 GiB.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tlora_bench.adapters.registry import METHODS, MethodSpec, make_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.models import denoiser_skeleton
from tlora_bench.specs import DEFAULT_MODEL

_SIZE_MEANINGS = {"r": "rank r"}  # for size fields without a "help" in their dataclass metadata


@dataclass(frozen=True)
class MethodRow:
    """One line of the catalog; `trainable` is None when the method cannot be built on the model (`note`)."""

    method: str
    label: str  # the label counted, e.g. "tlora-64", "oft-32", "svdiff"
    summary: str
    steps: int
    lr: float
    weight_decay: float
    mergeable: bool
    size_meaning: str  # what the "-N" suffix sets; "" when the method takes none
    trainable: int | None
    note: str = ""


def _size_field(spec: MethodSpec) -> dataclasses.Field | None:
    return next((f for f in dataclasses.fields(spec.config_cls) if f.name == spec.size_field), None)


def size_meaning(spec: MethodSpec) -> str:
    field = _size_field(spec)
    if field is None:
        return ""
    return field.metadata.get("help", _SIZE_MEANINGS.get(field.name, field.name))


def method_label(name: str, rank: int) -> str:
    """The label a catalog counts: rank-sized methods at `rank`, block-sized ones at their default size."""
    spec = METHODS.get(name)
    if spec.size_field is None:
        return name
    return f"{name}-{rank if spec.size_field == 'r' else spec.size_default}"


def method_rows(model: str = DEFAULT_MODEL, rank: int = 64, providers: bool = False) -> list[MethodRow]:
    """One row per registered method, its trainable parameters counted on the skeleton of backend `model`;
    `providers`: also the methods of the installed provider packages (PEFT's tuners, LyCORIS's algorithms)."""
    from tlora_bench.adapters import attach_adapters, count_trainable, detach_adapters

    if rank < 1:
        raise TloraBenchError(f"rank must be a positive integer, got {rank}")
    base = denoiser_skeleton(model)
    rows = []
    for name in METHODS.names(providers=providers):
        spec, label = METHODS.get(name), method_label(name, rank)
        trainable, note = None, ""
        if ":" in name:  # a provider's method: counted when a run builds it (building ~40 tuners takes minutes)
            rows.append(MethodRow(name, label, spec.summary, spec.steps, spec.lr, spec.weight_decay, spec.mergeable,
                                  size_meaning(spec), None))
            continue
        try:
            attach_adapters(base, make_config(label), init=False)  # counting needs shapes, not an init
        except TloraBenchError as e:  # e.g. an impossible size for this model; attach left it unchanged
            note = str(e)
        else:
            trainable = count_trainable(base)
            detach_adapters(base)
        rows.append(MethodRow(name, label, spec.summary, spec.steps, spec.lr, spec.weight_decay, spec.mergeable,
                              size_meaning(spec), trainable, note))
    return rows


def provider_notes() -> list[str]:
    """One line per provider package that is not installed, and per PEFT tuner PEFT cannot inject layer by layer."""
    notes = []
    for prefix in METHODS.providers():
        try:
            METHODS.load_provider(prefix)
        except TloraBenchError as e:
            notes.append(f"not available: {e}")
    if not any(line.startswith("not available: methods 'peft:") for line in notes):
        from tlora_bench.adapters.peft_methods.config import injectable_tuners

        for name, why in sorted(injectable_tuners()[1].items()):
            notes.append(f"not available: peft:{name}: {why}")
    return notes
