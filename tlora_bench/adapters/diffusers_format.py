"""Export low-rank adapters in the diffusers/PEFT LoRA format, for `pipeline.load_lora_weights`.

LoRA exports as it is (B scaled by alpha / r when alpha is set). Ortho-LoRA's update
B S A − B0 S0 A0 is itself a rank-2r LoRA (the layer's fused down/up pair). Timestep-dependent methods
have no single LoRA; merge them per step instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save

from tlora_bench.adapters.model import adapter_config, adapter_layers
from tlora_bench.adapters.registry import METHODS, low_rank_methods
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_bytes


def diffusers_lora_state_dict(model: torch.nn.Module, prefix: str = "unet",
                              dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Keys "<prefix>.<module>.lora_A.weight" / "lora_B.weight", as diffusers writes them for a UNet."""
    config = adapter_config(model)
    exportable = [name for name in low_rank_methods() if METHODS.get(name).mergeable]
    if config.method not in exportable:
        raise TloraBenchError(f"'{config.method}' has no diffusers LoRA form (its update depends on the timestep "
                              f"or is not low-rank); only {' and '.join(exportable)} export")
    state = {}
    for name, layer in adapter_layers(model).items():
        down, up = layer.low_rank_factors(config.r)
        up = up * config.scale
        for key, value in (("lora_A", down), ("lora_B", up)):
            value = value.detach().to("cpu", dtype or value.dtype).contiguous()
            state[f"{prefix}.{name}.{key}.weight"] = value
    return state


def save_diffusers_lora(model: torch.nn.Module, path: str | os.PathLike, prefix: str = "unet",
                        dtype: torch.dtype | None = None) -> Path:
    atomic_write_bytes(path, save(diffusers_lora_state_dict(model, prefix, dtype)))
    return Path(path)
