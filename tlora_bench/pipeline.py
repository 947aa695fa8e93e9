"""A tlora-bench adapter in a diffusers pipeline the user built, in one call (docs/interop.md).

    pipe = StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0")
    with load_into_pipeline(pipe, "results/run/adapters/tlora-64/dog6/adapter.safetensors"):
        image = pipe("a photo of sks dog on the beach").images[0]

The adapter goes onto the pipeline's denoiser (`unet` or `transformer`) exactly as `tlora-bench generate` puts
it there: attached, given the per-step timestep hook, so that T-LoRA's rank r(t) follows every step of the
pipeline's own loop (both halves of a classifier-free-guidance batch share the step's t), and folded into the
weights once or per r(t) for speed. `unload()`, or leaving the `with` block, removes all of it. Any file
`tlora-bench adapter import` reads (the authors' checkpoints, LyCORIS, diffusers, PEFT) loads the same way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from tlora_bench.adapters.config import AdapterConfig
from tlora_bench.errors import TloraBenchError

_PRECISIONS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class PipelineAdapter:
    """An adapter loaded into a user's pipeline; `unload()` (or the end of a `with` block) restores it."""

    def __init__(self, backend: Any, config: AdapterConfig) -> None:
        self.backend = backend
        self.config = config
        self.loaded = True

    def unload(self) -> None:
        """Take the hook and the adapter off the denoiser: the pipeline is then the one the user built."""
        from tlora_bench.adapters import detach_adapters

        if self.loaded:
            self.backend.remove_timestep_hook()
            detach_adapters(self.backend.denoiser)
            self.loaded = False

    def __enter__(self) -> PipelineAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()


def load_into_pipeline(pipe: Any, adapter: str | os.PathLike, *, format: str | None = None,
                       options: dict[str, Any] | None = None) -> PipelineAdapter:
    """Load `adapter` (a tlora-bench adapter file, or another tool's file in `format`, detected when None; with
    `options` for what such a file does not record) into `pipe`, a StableDiffusionXLPipeline or FluxPipeline."""
    from tlora_bench.adapters import detach_adapters, prepare_for_sampling
    from tlora_bench.adapters.io import load_adapter

    backend = _backend(pipe)
    path = Path(adapter)
    with tempfile.TemporaryDirectory() as tmp:
        if format is not None or not _is_tlora_file(path):
            from tlora_bench.adapters.formats import import_adapter

            import_adapter(path, Path(tmp) / "adapter.safetensors", format=format, options=options)
            path = Path(tmp) / "adapter.safetensors"
        config = load_adapter(backend.denoiser, path)
    try:
        backend.install_timestep_hook()
        prepare_for_sampling(backend.denoiser)
    except BaseException:
        backend.remove_timestep_hook()
        detach_adapters(backend.denoiser)
        raise
    return PipelineAdapter(backend, config)


def _is_tlora_file(path: Path) -> bool:
    from tlora_bench.adapters.io import FORMAT, read_adapter_metadata

    if not path.is_file() or path.suffix != ".safetensors":
        return False
    try:
        return read_adapter_metadata(path).get("format") == FORMAT
    except TloraBenchError:
        return False


def _backend(pipe: Any) -> Any:
    """tlora-bench's backend object around the user's pipeline (no weights load): it knows the denoiser, its
    timestep argument and, for FLUX, the exact t of each step."""
    from tlora_bench.models import backend_spec
    from tlora_bench.specs import DEFAULT_MODEL  # SD-XL

    kinds = {"StableDiffusionXL": (DEFAULT_MODEL, "unet", "tlora_bench.models.sdxl:SDXLBackend"),
             "Flux": ("flux", "transformer", "tlora_bench.models.flux:FluxBackend")}
    for prefix, (name, attribute, loader) in kinds.items():
        if type(pipe).__name__.startswith(prefix) and hasattr(pipe, attribute):
            from tlora_bench.registry import resolve_object

            denoiser = getattr(pipe, attribute)
            dtype = next(denoiser.parameters()).dtype
            cls = resolve_object(loader, f"backend '{name}'")
            return cls(backend_spec(name), pipe, source="the caller's pipeline", revision=None,
                       precision=_PRECISIONS.get(dtype, "fp32"), device=denoiser.device)
    raise TloraBenchError(f"load_into_pipeline takes a StableDiffusionXLPipeline or FluxPipeline (or one of their "
                          f"variants), got {type(pipe).__name__}")
