"""What a diffusion model must offer the trainer and the sampler, and nothing more.

A backend is described by a `BackendSpec` (names, hub ids, sampling defaults: no torch needed to read it) and
loaded as a `DiffusionBackend`, which holds the diffusers pipeline and implements the few model-specific
steps: encode the training prompt and image, draw timesteps, noise latents and give the target, call the
denoiser, make the denoiser's timestep reach the adapters, and sample images for (prompt, seed) pairs.
The trainer and the sampler see only this interface, so a new model plugs in without touching them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from tlora_bench.concepts.images import center_crop, load_image, resize
from tlora_bench.devices import resolve_dtype
from tlora_bench.errors import TloraBenchError
from tlora_bench.models.spec import BackendSpec


@dataclass
class TrainingExample:
    """One training image, encoded once: its latent distribution and any per-image conditioning."""

    path: str
    latent_mean: torch.Tensor  # (1, C, h, w) in latent space, before the VAE's scaling
    latent_std: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. SD-XL add_time_ids


@dataclass(frozen=True)
class PreparedImage:
    """The training recipe's preprocessing (docs/decisions.md §3): center crop to square, LANCZOS resize."""

    image: Image.Image  # size x size RGB
    original_size: tuple[int, int]  # (height, width) of the file
    crop_top_left: tuple[int, int]  # the crop's offset in the resized frame (SD-XL micro-conditioning)


def prepare_training_image(path: str | Path, size: int) -> PreparedImage:
    image = load_image(path)
    width, height = image.size
    return PreparedImage(resize(center_crop(image), size), (height, width), crop_top_left(height, width, size))


def crop_top_left(height: int, width: int, size: int) -> tuple[int, int]:
    """SD-XL's crop coordinates for a (height, width) image, by the arithmetic of diffusers'
    train_dreambooth_lora_sdxl.py (docs/decisions.md §3): torchvision's Resize(size) takes the shorter side to
    `size` and the longer to int(size * long / short); the center crop starts at int(round((side - size) / 2))."""
    short, long = sorted((height, width))
    resized_long = int(size * long / short)
    resized = (size, resized_long) if height <= width else (resized_long, size)
    top, left = (max(0, round((side - size) / 2.0)) for side in resized)
    return top, left


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float in [-1, 1]."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = data.view(image.height, image.width, 3).permute(2, 0, 1).float() / 127.5 - 1.0
    return pixels.unsqueeze(0)


def cpu_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image: the initial noise of a seed is the same on every device and batch size."""
    return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]


def model_load_error(spec: BackendSpec, source: str, revision: str | None, error: BaseException,
                     flag: str = "--model-path") -> TloraBenchError:
    """The one-line error for weights that cannot be loaded, naming the id and both ways out."""
    reason = " ".join(str(error).split()) or type(error).__name__
    at = f" at revision '{revision}'" if revision else ""
    return TloraBenchError(
        f"cannot load model '{source}'{at} for backend '{spec.name}' ({type(error).__name__}: {reason}); "
        f"run `tlora-bench models download --model {spec.name}` on a machine with internet (then copy the "
        f"Hugging Face cache), or pass a local diffusers folder with {flag} DIR")


class DiffusionBackend:
    """A loaded model. Subclasses implement the model-specific steps; the attributes are the contract."""

    denoiser_argument = "timestep"  # the denoiser's argument that carries the timestep

    def __init__(self, spec: BackendSpec, pipeline, *, source: str, revision: str | None, precision: str,
                 device: torch.device, vae_source: str | None = None) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.source = source
        self.revision = revision
        self.vae_source = vae_source
        self.precision = precision
        self.dtype = resolve_dtype(precision)
        self.device = device
        self._hooks: list = []

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: BackendSpec, *, source: str | None = None, revision: str | None = None,
             vae_source: str | None = None, precision: str = "fp32",
             device: str | torch.device = "cpu") -> DiffusionBackend:
        """Load from `source` (a hub id or a local diffusers folder; default: the spec's hub id, its shipped
        folder, or for a tiny model its folder in the cache, written on first use)."""
        from tlora_bench.models.tiny import tiny_model_folder

        source = source or spec.hub_id or str(spec.shipped_folder() or tiny_model_folder(spec.name))
        revision = revision or spec.revision
        vae_source = vae_source or spec.vae_id
        pipeline = cls.load_pipeline(spec, source, revision, vae_source, resolve_dtype(precision))
        pipeline.to(device)
        shipped = spec.shipped_revision() if source == str(spec.shipped_folder()) else None
        return cls(spec, pipeline, source=source, revision=revision or resolved_revision(pipeline) or shipped,
                   precision=precision, device=torch.device(device), vae_source=vae_source)

    @staticmethod
    def load_pipeline(spec: BackendSpec, source: str, revision: str | None, vae_source: str | None,
                      dtype: torch.dtype):
        """The diffusers pipeline from `source`; a missing model is `model_load_error`."""
        raise NotImplementedError

    # -- what the trainer uses -----------------------------------------------------------------------------
    @property
    def denoiser(self) -> nn.Module:
        raise NotImplementedError

    @property
    def num_train_timesteps(self) -> int:
        return int(self.pipeline.scheduler.config.num_train_timesteps)

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        """The conditioning of one prompt (batch 1), computed once: the text encoders are frozen."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_training_image(self, path: str | Path) -> TrainingExample:
        """The training recipe's preprocessing, then the VAE's latent distribution (kept on the CPU, in fp32)."""
        prepared = prepare_training_image(path, self.spec.resolution)
        vae = self.pipeline.vae
        pixels = image_to_tensor(prepared.image).to(self.device, vae.dtype)
        distribution = vae.encode(pixels).latent_dist
        return TrainingExample(str(path), distribution.mean.float().cpu(), distribution.std.float().cpu(),
                               self.image_conditioning(prepared))

    def image_conditioning(self, prepared: PreparedImage) -> dict[str, torch.Tensor]:
        """Per-image conditioning beside the latent (SD-XL's micro-conditioning); none by default (FLUX)."""
        return {}

    def sample_latents(self, examples: Sequence[TrainingExample], generator: torch.Generator) -> torch.Tensor:
        """A draw from each example's latent distribution, scaled as the denoiser expects."""
        raise NotImplementedError

    def sample_timesteps(self, batch: int, generator: torch.Generator,
                         t_range: tuple[int, int] | None = None) -> torch.Tensor:
        """Training timesteps on the scheduler's [0, T) scale, one per sample, uniform in t_range."""
        low, high = t_range or (0, self.num_train_timesteps)
        return torch.randint(low, high, (batch,), generator=generator)

    def noisy_and_target(self, latents: torch.Tensor, noise: torch.Tensor,
                         t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, conditioning: dict[str, torch.Tensor],
                examples: Sequence[TrainingExample]) -> torch.Tensor:
        raise NotImplementedError

    def to_train_timesteps(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Maps the denoiser's timestep argument to the scheduler's [0, T) scale; None: already on it."""
        return None

    def install_timestep_hook(self) -> None:
        """Let every denoiser call set the adapters' timesteps from its own argument (training and sampling)."""
        from tlora_bench.adapters.timestep import install_timestep_hook

        self.remove_timestep_hook()
        self._hooks = list(install_timestep_hook(self.denoiser, self.denoiser_argument, self.to_train_timesteps()))

    def remove_timestep_hook(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # -- what the sampler uses -----------------------------------------------------------------------------
    def generate(self, prompt: str, seeds: Sequence[int], *, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, resolution: int | None = None) -> list[Image.Image]:
        """One image per seed for `prompt`, in one batch of the diffusers pipeline; each image's noise comes from
        its own CPU generator. `guidance_scale` is SD-XL's CFG scale, FLUX.1-dev's embedded guidance."""
        size = resolution or self.spec.resolution
        with torch.no_grad():
            return self.pipeline(
                prompt=prompt, num_images_per_prompt=len(seeds), generator=cpu_generators(seeds),
                num_inference_steps=num_inference_steps or self.spec.num_inference_steps,
                guidance_scale=self.spec.guidance_scale if guidance_scale is None else guidance_scale,
                height=size, width=size, output_type="pil").images

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.spec.name, "model_id": self.source, "model_revision": self.revision,
                "vae_id": self.vae_source, "precision": self.precision, "device": str(self.device),
                "resolution": self.spec.resolution, "num_inference_steps": self.spec.num_inference_steps,
                "guidance_scale": self.spec.guidance_scale}


def resolved_revision(pipeline) -> str | None:
    """The hub commit a pipeline was loaded from (the Hugging Face cache's snapshots/<commit> folder), or None
    for a local folder: a result records what was actually loaded, not just "main"."""
    for component in pipeline.components.values():
        name = str(getattr(getattr(component, "config", None), "_name_or_path", "") or "")
        match = re.search(r"snapshots[/\\]([0-9a-f]{40})", name)
        if match:
            return match.group(1)
    return None


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No progress bars and no info chatter from diffusers and transformers while weights load; errors
    still raise. Scoped: the libraries' settings are restored afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    previous = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled())
                for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in previous:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in previous:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def local_files_only(spec: BackendSpec, source: str, revision: str | None, index_file: str,
                     flag: str = "--model-path") -> bool:
    """Whether to load `source` from the local cache only. Without the hub, a cached model loads at once and a
    missing one fails in seconds with the way out, instead of after a minute of the hub client's retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(source).expanduser().is_dir() or constants.HF_HUB_OFFLINE:
        return False  # a local folder; or the client is offline already and fails at once by itself
    from tlora_bench.hub import hub_unreachable

    reason = hub_unreachable()
    if reason is None:
        return False
    if isinstance(try_to_load_from_cache(source, index_file, revision=revision), str):
        return True
    raise model_load_error(spec, source, revision, ConnectionError(f"not in the local cache, and {reason}"), flag)


def load_diffusers_pipeline(pipeline_class, spec: BackendSpec, source: str, revision: str | None,
                            vae_source: str | None, dtype: torch.dtype):
    """`pipeline_class.from_pretrained(source)`, with a separate VAE when given, quietly; a model that cannot be
    loaded (not cached offline, a wrong id, gated without a token, not a diffusers folder) is one line naming
    it and both ways out."""
    from diffusers import AutoencoderKL

    extra = {}
    with quiet_loading():
        if vae_source:
            try:
                local = local_files_only(spec, vae_source, None, "config.json", flag="--vae-path")
                extra["vae"] = AutoencoderKL.from_pretrained(vae_source, dtype=dtype, local_files_only=local)
            except (OSError, ValueError) as e:
                raise model_load_error(spec, vae_source, None, e, flag="--vae-path") from None
        try:
            local = local_files_only(spec, source, revision, "model_index.json")
            pipeline = pipeline_class.from_pretrained(source, revision=revision, dtype=dtype, local_files_only=local,
                                                      **extra)
        except (OSError, ValueError) as e:
            raise model_load_error(spec, source, revision, e) from None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
