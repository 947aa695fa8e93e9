"""Model backends, registered by name: `RunConfig.model` and `--model` are checked against `BACKENDS`.

Specs are plain data, so listing and validating names imports no model code; `load_backend` imports the
backend's module and loads its weights (from the hub id, a local folder, or, for tiny models, a folder
written once to the cache).
"""

from __future__ import annotations

from tlora_bench.models.backend import BackendSpec, DiffusionBackend, TrainingExample, model_load_error
from tlora_bench.registry import Registry

BACKENDS: Registry[BackendSpec] = Registry("model backend")


def register_backend(spec: BackendSpec) -> BackendSpec:
    BACKENDS.register(spec.name, spec)
    for alias in spec.aliases:
        BACKENDS.register(alias, spec)
    return spec


register_backend(BackendSpec(
    name="sdxl", summary="Stable Diffusion XL base 1.0 (the paper's main model)",
    loader="tlora_bench.models.sdxl:SDXLBackend", hub_id="stabilityai/stable-diffusion-xl-base-1.0",
    vae_id="madebyollin/sdxl-vae-fp16-fix",
    resolution=1024, num_inference_steps=25, guidance_scale=5.0))
register_backend(BackendSpec(
    name="flux", summary="FLUX.1-dev (paper Table 5; gated on the hub: log in with a token that has access)",
    loader="tlora_bench.models.flux:FluxBackend", hub_id="black-forest-labs/FLUX.1-dev",
    revision=None, resolution=1024, num_inference_steps=28, guidance_scale=3.5, optimizer="prodigy",
    adapter_targets=("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"),
    default_steps={"lora": 400, "vanilla-tlora": 500, "tlora": 500}, default_precision="bf16", default_r_min=1))
register_backend(BackendSpec(
    name="tiny-sdxl", summary="a tiny random-weight SD-XL pipeline (tests and smoke runs; meaningless images)",
    loader="tlora_bench.models.sdxl:SDXLBackend", hub_id=None, resolution=64, num_inference_steps=4,
    guidance_scale=5.0, aliases=("tiny",)))
register_backend(BackendSpec(
    name="tiny-flux", summary="a tiny random-weight FLUX pipeline (tests and smoke runs; meaningless images)",
    loader="tlora_bench.models.flux:FluxBackend", hub_id=None, resolution=32, num_inference_steps=4,
    guidance_scale=3.5, optimizer="prodigy",
    adapter_targets=("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"),
    default_steps={"lora": 400, "vanilla-tlora": 500, "tlora": 500}, default_r_min=1))


def backend_spec(name: str) -> BackendSpec:
    """The spec of a backend name or alias; an unknown name is a did-you-mean error."""
    return BACKENDS.get(name)


def is_tiny(name: str) -> bool:
    """Whether a backend is a tiny random model (no hub weights: built locally for tests and smoke runs)."""
    return backend_spec(name).hub_id is None


def backend_names() -> list[str]:
    """Canonical names, without aliases."""
    return [name for name in BACKENDS if BACKENDS.get(name).name == name]


def load_backend(name: str, *, source: str | None = None, revision: str | None = None,
                 vae_source: str | None = None, precision: str = "fp32",
                 device: str = "auto") -> DiffusionBackend:
    """Load a backend's model: from `source` (a hub id or local folder), else the spec's default."""
    from tlora_bench.devices import resolve_device

    spec = backend_spec(name)
    return spec.backend_class().load(spec, source=source, revision=revision, vae_source=vae_source,
                                     precision=precision, device=resolve_device(device))


__all__ = ["BACKENDS", "BackendSpec", "DiffusionBackend", "TrainingExample", "backend_names", "backend_spec",
           "is_tiny", "load_backend", "model_load_error", "register_backend"]


# FLUX.1-dev, transformer/config.json: the keys that set shapes (for checks on the meta device, no weights).
FLUX_TRANSFORMER_CONFIG = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                               attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                               pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def denoiser_skeleton(name: str):
    """The backend's denoiser with the real module tree and shapes, built without weights in a fraction of a
    second (the meta device for SD-XL and FLUX): for counting parameters and checking adapter sizes."""
    import torch

    spec = backend_spec(name)
    if spec.name == "sdxl":
        from tlora_bench.models.sdxl import sdxl_unet_on_meta

        return sdxl_unet_on_meta()
    if spec.name == "flux":
        from diffusers import FluxTransformer2DModel

        with torch.device("meta"):
            return FluxTransformer2DModel(**FLUX_TRANSFORMER_CONFIG).eval()
    from tlora_bench.models.tiny import tiny_flux_transformer, tiny_unet

    return tiny_unet() if spec.name == "tiny-sdxl" else tiny_flux_transformer()
