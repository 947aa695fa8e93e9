"""The bundled model backends, registered by name in `BACKENDS` (tlora_bench/models/registry.py).

Specs are plain data, so listing and validating names imports no model code (no torch); `load_backend` imports
the backend's module and loads its weights (from the hub id, a local folder, or, for tiny models, a folder
written once to the cache).
"""

from __future__ import annotations

import importlib
from typing import Any

from tlora_bench.models.registry import (
    BACKENDS,
    backend_names,
    backend_spec,
    denoiser_skeleton,
    is_tiny,
    load_backend,
    register_backend,
)
from tlora_bench.models.spec import BackendSpec

FLUX_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")
# The synthetic model's attention is 64 channels wide at 8 x 8 and 4 x 4: its transformer blocks' projections and
# feed-forward beside the attention's, or no method learns the concept's detail (docs/decisions.md §10).
SYNTHETIC_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
FLUX_STEPS = {"lora": 400, "vanilla-tlora": 500, "tlora": 500}  # the authors' FLUX commands (docs/decisions.md §3)


register_backend(BackendSpec(
    name="sdxl", summary="Stable Diffusion XL base 1.0 (the paper's main model)",
    loader="tlora_bench.models.sdxl:SDXLBackend", hub_id="stabilityai/stable-diffusion-xl-base-1.0",
    skeleton="tlora_bench.models.sdxl:sdxl_unet_on_meta", bundled_table=True,
    vae_id="madebyollin/sdxl-vae-fp16-fix", resolution=1024, num_inference_steps=25, guidance_scale=5.0))
register_backend(BackendSpec(
    name="flux", summary="FLUX.1-dev (paper Table 5; gated on the hub: log in with a token that has access)",
    loader="tlora_bench.models.flux:FluxBackend", hub_id="black-forest-labs/FLUX.1-dev",
    skeleton="tlora_bench.models.flux:flux_transformer_on_meta", bundled_table=True,
    revision=None, resolution=1024, num_inference_steps=28, guidance_scale=3.5, optimizer="prodigy",
    adapter_targets=FLUX_TARGETS, default_steps=FLUX_STEPS, default_precision="bf16", default_r_min=1))
register_backend(BackendSpec(
    name="tiny-sdxl", summary="a tiny random-weight SD-XL pipeline (tests and smoke runs; meaningless images)",
    loader="tlora_bench.models.sdxl:SDXLBackend", hub_id=None, skeleton="tlora_bench.models.tiny:tiny_unet",
    bundled_table=True, resolution=64, num_inference_steps=4, guidance_scale=5.0, aliases=("tiny",)))
register_backend(BackendSpec(
    name="tiny-flux", summary="a tiny random-weight FLUX pipeline (tests and smoke runs; meaningless images)",
    loader="tlora_bench.models.flux:FluxBackend", hub_id=None, skeleton="tlora_bench.models.tiny:tiny_flux_transformer",
    bundled_table=True, resolution=32, num_inference_steps=4, guidance_scale=3.5, optimizer="prodigy",
    adapter_targets=FLUX_TARGETS, default_steps=FLUX_STEPS, default_r_min=1))

register_backend(BackendSpec(
    name="synthetic", summary="the project's pretrained scene model (32 px procedural scenes, CPU; docs/synthetic.md)",
    loader="tlora_bench.models.synthetic:SyntheticBackend", hub_id=None,
    shipped_weights="tlora_bench.synthetic:weights", drift_prompts="synthetic-drift",
    skeleton="tlora_bench.synthetic.model:unet_skeleton", bundled_table=True, resolution=32, num_inference_steps=20,
    guidance_scale=1.5, adapter_targets=SYNTHETIC_TARGETS, lr_scale=20.0,
    small=True))


_LAZY = ("DiffusionBackend", "TrainingExample", "model_load_error")  # torch-side names of models.backend


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("tlora_bench.models.backend"), name)
    raise AttributeError(f"module 'tlora_bench.models' has no attribute '{name}'")


__all__ = ["BACKENDS", "BackendSpec", "backend_names", "backend_spec", "denoiser_skeleton", "is_tiny",
           "load_backend", "register_backend", *_LAZY]
