"""SVDiff's hyperparameters, the layers it adapts (chosen from a layer table) and its registration (the formula:
`layer.py`; docs/decisions.md section 2). No torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tlora_bench.adapters.config import MATRIX_KINDS, NORM_KINDS, AdapterConfig, LayerShape, matches_target
from tlora_bench.adapters.registry import MethodSpec, register_method
from tlora_bench.errors import TloraBenchError


@dataclass(frozen=True)
class SVDiffConfig(AdapterConfig):
    # Empty: every Linear, Conv and affine GroupNorm/LayerNorm of the model. Names (or dotted suffixes)
    # restrict SVDiff to those layers.
    target_modules: tuple[str, ...] = ()
    norm_lr: float = 1e-6  # learning rate of the norm layers' scalar shifts (SVDiff's choice, docs/decisions.md §2)
    # Store U and Vᵀ in adapter files (bit-exact reload on any machine, 13.7 GiB for SD-XL) instead of
    # recomputing them from the frozen weight on load (7 MB files).
    save_factors: bool = False

    def __post_init__(self) -> None:
        if not self.norm_lr > 0:
            raise TloraBenchError(f"norm_lr must be positive, got {self.norm_lr!r}")


def spectral_kind(layer: LayerShape) -> str | None:
    """'matrix' (Linear, Conv), 'norm' (GroupNorm, LayerNorm with a weight) or None (not adaptable)."""
    if layer.kind in MATRIX_KINDS:
        return "matrix"
    if layer.kind in NORM_KINDS and layer.shape is not None:
        return "norm"
    return None


def spectral_targets(table: Sequence[LayerShape], config: AdapterConfig) -> list[LayerShape]:
    """Every adaptable layer of a model's table, or only those named by `config.target_modules` (which must be)."""
    found = []
    for layer in table:
        if config.target_modules and not matches_target(layer.name, config.target_modules):
            continue
        if spectral_kind(layer) is not None:
            found.append(layer)
        elif config.target_modules:
            raise TloraBenchError(f"target '{layer.name}' is a {layer.kind}; svdiff adapts Linear, Conv and "
                                  "affine GroupNorm/LayerNorm layers")
    return found


register_method(MethodSpec(
    name="svdiff", summary="SVDiff: W_δ = U·diag(ReLU(σ+δ))·Vᵀ on every Linear/Conv, scalar shift per norm",
    config_cls=SVDiffConfig, layer="tlora_bench.adapters.svdiff.layer:SVDiffLayer", family="spectral",
    find_targets=spectral_targets,
    steps=1600, lr=1e-3, weight_decay=0.01))  # docs/decisions.md sections 2-3 (AdamW, eps 1e-8)
