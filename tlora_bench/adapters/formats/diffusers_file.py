"""diffusers LoRA files (`diffusers`): `pipeline.save_lora_weights` / `pipeline.load_lora_weights`.

Keys "unet.<module>.lora_A.weight" / "lora_B.weight" (SD-XL) or "transformer.<module>..." (FLUX); r and lora_alpha
in the `lora_adapter_metadata` header diffusers reads. Written by diffusers' own `save_lora_weights`.
LoRA is held exactly (A, B, alpha). Ortho-LoRA's update B S A − B0 S0 A0 is a rank-2r LoRA (its layer's fused
down/up pair), so it exports as one and imports back as lora-2r with the same outputs, not the same tensors.
Timestep-dependent methods have no single LoRA and are refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from tlora_bench.adapters.formats.base import (
    CONFIG_KEY,
    AdapterFormat,
    config_from_record,
    load_tensors,
    recorded_config,
    register_format,
    target_suffixes,
)
from tlora_bench.adapters.io import AdapterData
from tlora_bench.adapters.registry import make_config
from tlora_bench.errors import TloraBenchError

FILE = "pytorch_lora_weights.safetensors"
PREFIXES = ("unet.", "transformer.")
UNET_BLOCKS = ("down_blocks.", "up_blocks.", "mid_block.")


class DiffusersFile(AdapterFormat):
    name = "diffusers"
    summary = "a diffusers LoRA file (pipeline.save_lora_weights / load_lora_weights)"
    holds = "lora (exactly), ortho-lora (as an equal rank-2r LoRA)"
    file_names = (FILE,)

    def detect(self, keys: set[str], path: Path) -> bool:
        return bool(keys) and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys) and \
            any(k.startswith(PREFIXES) for k in keys)

    def read(self, path: Path, options: dict[str, Any], model: str | None) -> AdapterData:
        tensors, metadata = load_tensors(path)
        others = sorted(k for k in tensors if not k.startswith(PREFIXES))
        if others:
            raise TloraBenchError(f"'{path}' holds text-encoder LoRA layers ('{others[0]}'), which tlora-bench does "
                                  "not train or score; it imports denoiser LoRA only")
        ours = {}
        for key, value in tensors.items():
            layer, _, tensor = key.split(".", 1)[1].rpartition(".lora_")
            ours[f"{layer}.{'A' if tensor == 'A.weight' else 'B'}"] = value
        record = recorded_config(metadata)
        if record is not None and record.get("method") == "lora":
            return AdapterData(config_from_record(record, options), ours)
        r = int(next(v for k, v in ours.items() if k.endswith(".A")).shape[0])
        peft = json.loads(metadata.get("lora_adapter_metadata", "{}") or "{}")
        alpha = next((float(v) for k, v in peft.items() if k.endswith(".lora_alpha")), float(r))
        layers = sorted({k.rpartition(".")[0] for k in ours})
        config = make_config(f"lora-{r}", alpha=None if alpha == r else alpha,
                             target_modules=target_suffixes(layers), **options)
        return AdapterData(config, ours)

    def write(self, data: AdapterData, out: Path) -> list[Path]:
        config = data.config
        if config.method not in ("lora", "ortho-lora"):
            raise TloraBenchError(f"format 'diffusers' holds lora and ortho-lora, not '{config.method}': "
                                  + ("its update depends on the timestep, which a LoRA file cannot hold"
                                     if getattr(config, "mask", False) else "its update is not a low-rank product"))
        factors = {layer: _factors(config, tensors) for layer, tensors in data.layers().items()}
        state = {f"{layer}.{key}.weight": value.contiguous() for layer, (down, up) in factors.items()
                 for key, value in (("lora_A", down), ("lora_B", up))}
        rank = next(iter(factors.values()))[0].shape[0]
        alpha = float(rank if config.alpha is None or config.method == "ortho-lora" else config.alpha)
        peft = {"r": rank, "lora_alpha": alpha, "target_modules": list(config.target_modules)}
        if config.method == "ortho-lora" and config.alpha is not None:  # the scale folds into up (B S − B0 S0, B0 S0)
            state = {k: v * config.scale if ".lora_B." in k else v for k, v in state.items()}
        return [_save(state, peft, out, unet=any(layer.startswith(UNET_BLOCKS) for layer in factors), config=config)]


def _factors(config: Any, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) of one layer's update as the T-LoRA family layer computes them (`low_rank_factors`)."""
    from torch import nn

    from tlora_bench.adapters.tlora.layer import TLoRALinear

    out_features, in_features = tensors["B"].shape[0], tensors["A"].shape[1]
    base = nn.Linear(in_features, out_features, bias=False, device="meta").to_empty(device="cpu")
    layer = TLoRALinear(base, config, "layer", init=False)
    layer.load_adapter_tensors(tensors)
    with torch.no_grad():
        down, up = layer.low_rank_factors(config.r)
    return down.clone(), up.clone()


def _save(state: dict[str, torch.Tensor], peft: dict[str, Any], out: Path, *, unet: bool, config: Any) -> Path:
    """diffusers' own save_lora_weights, into a temporary folder first (nothing half-written in `out`), then the
    tlora-bench config added to the header."""
    from diffusers import FluxPipeline, StableDiffusionXLPipeline
    from safetensors.torch import load_file, save

    from tlora_bench.fileio import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        if unet:
            StableDiffusionXLPipeline.save_lora_weights(tmp, unet_lora_layers=state, unet_lora_adapter_metadata=peft)
        else:
            FluxPipeline.save_lora_weights(tmp, transformer_lora_layers=state,
                                           transformer_lora_adapter_metadata=peft)
        from safetensors import safe_open

        with safe_open(str(Path(tmp) / FILE), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(Path(tmp) / FILE))
    metadata[CONFIG_KEY] = json.dumps(config.to_dict()) if config.method == "lora" else ""
    atomic_write_bytes(out / FILE, save(tensors, metadata={k: v for k, v in metadata.items() if v}))
    return out / FILE


register_format(DiffusersFile())
