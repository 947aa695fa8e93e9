"""FLUX.1: the backend (training and sampling through diffusers' FluxPipeline).

Training follows the diffusers FLUX DreamBooth LoRA example (weighting scheme "none"): rectified flow,
x_sigma = (1 - sigma) x + sigma noise, the transformer predicts the velocity noise - x. The transformer takes
sigma = t / 1000 as its timestep, while T-LoRA's rank schedule takes t = sigma x 1000 (docs/decisions.md §1), so the
timestep hook maps it back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from tlora_bench.errors import TloraBenchError
from tlora_bench.models.backend import (
    DiffusionBackend,
    TrainingExample,
    load_diffusers_pipeline,
)
from tlora_bench.models.spec import BackendSpec

# The embedded guidance of training: 1, as in the authors' FLUX trainer and diffusers' documented FLUX
# DreamBooth-LoRA commands (--guidance_scale=1); sampling keeps FLUX.1-dev's 3.5 (docs/decisions.md §3).
TRAIN_GUIDANCE = 1.0
# bf16 holds 8 significant bits: a timestep rounded by the pipeline is within this relative distance of the
# scheduler's own value.
_ROUNDING = 2.0 ** -7
# FluxTransformer2DModel multiplies its timestep by this constant (not by the scheduler's T); the pipeline and
# the example both divide by it.
TIMESTEP_SCALE = 1000
# FLUX.1-dev, transformer/config.json: the keys that set shapes (for checks on the meta device, no weights).
FLUX_TRANSFORMER_CONFIG = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                               attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                               pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def flux_transformer_on_meta():
    """The FLUX.1-dev transformer's module tree on the meta device: real shapes, no storage."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(**FLUX_TRANSFORMER_CONFIG).eval()


def _load_pipeline(spec: BackendSpec, source: str, revision: str | None, vae_source: str | None, dtype: torch.dtype):
    from diffusers import FluxPipeline

    # docs/decisions.md §4: the model's own flow-matching Euler scheduler, as the pipeline ships it.
    return load_diffusers_pipeline(FluxPipeline, spec, source, revision, vae_source, dtype)


class FluxBackend(DiffusionBackend):
    """FLUX through diffusers: flow-matching MSE on packed latents, embedded guidance, Euler sampling."""

    load_pipeline = staticmethod(_load_pipeline)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from diffusers import FlowMatchEulerDiscreteScheduler

        # A fresh copy for training: sampling calls set_timesteps on the pipeline's scheduler, which replaces
        # its timesteps and sigmas. Fresh, with dynamic shifting (FLUX.1-dev), sigma_i = t_i / T exactly.
        self.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.pipeline.scheduler.config)
        self._training_t: torch.Tensor | None = None  # the exact t of the training call in flight

    @property
    def denoiser(self) -> nn.Module:
        return self.pipeline.transformer

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # T5 at the pipeline's max_sequence_length (512), as the example trains
            embeds, pooled, text_ids = self.pipeline.encode_prompt(prompt, prompt_2=None, device=self.device,
                                                                   num_images_per_prompt=1)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "text_ids": text_ids}

    def sample_latents(self, examples: Sequence[TrainingExample], generator: torch.Generator) -> torch.Tensor:
        mean = torch.cat([e.latent_mean for e in examples])
        std = torch.cat([e.latent_std for e in examples])
        latents = mean + std * torch.randn(mean.shape, generator=generator)
        config = self.pipeline.vae.config
        return ((latents - (config.shift_factor or 0.0)) * config.scaling_factor).to(self.device)

    def sample_timesteps(self, batch: int, generator: torch.Generator,
                         t_range: tuple[int, int] | None = None) -> torch.Tensor:
        """The example's draw: u ~ U[0, 1) indexes the training scheduler's timesteps (T, T-1, ..., 1), so
        t = sigma x T lies in (0, T] (t = T is pure noise, as at the first sampling step). A t_range keeps
        the timesteps in [low, high) and draws uniformly among them."""
        schedule = everything = self.noise_scheduler.timesteps
        if t_range is not None:
            low, high = t_range
            schedule = everything[(everything >= low) & (everything < high)]
            if len(schedule) == 0:
                raise TloraBenchError(f"no training timestep of backend '{self.spec.name}' lies in [{low}, {high}); "
                                      f"its timesteps run from {everything.min():g} to {everything.max():g}")
        u = torch.rand(batch, generator=generator)  # weighting_scheme "none": uniform, no loss weighting
        return schedule[(u * len(schedule)).long()].float()

    def _sigmas(self, t: torch.Tensor) -> torch.Tensor:
        """The training scheduler's sigma of each t (the nearest of its timesteps: exact for sampled t)."""
        schedule = self.noise_scheduler.timesteps
        index = (schedule[None, :] - t.detach().cpu().float().reshape(-1, 1)).abs().argmin(dim=1)
        return self.noise_scheduler.sigmas[index]

    def noisy_and_target(self, latents: torch.Tensor, noise: torch.Tensor,
                         t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self._sigmas(t).to(latents.device, latents.dtype).view(-1, *([1] * (latents.ndim - 1)))
        return (1.0 - sigma) * latents + sigma * noise, noise - latents  # flow matching: velocity target

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, conditioning: dict[str, torch.Tensor],
                examples: Sequence[TrainingExample]) -> torch.Tensor:
        pipe, dtype = self.pipeline, self.dtype  # not denoiser.dtype: an fp32 adapter parameter may come first
        batch, channels, height, width = noisy.shape
        # The transformer sees 2x2 patches of the latents as tokens, each with its (0, row, col) position.
        packed = pipe._pack_latents(noisy.to(dtype), batch, channels, height, width)
        image_ids = pipe._prepare_latent_image_ids(batch, height // 2, width // 2, self.device, dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), TRAIN_GUIDANCE, device=self.device, dtype=torch.float32)
        t = t.to(self.device, torch.float32)  # fp32: the transformer casts it itself
        self._training_t = t  # r(t) takes t itself: t / 1000 x 1000 is not always t in fp32
        try:
            prediction = self.denoiser(
                hidden_states=packed, timestep=t / TIMESTEP_SCALE, guidance=guidance,
                pooled_projections=conditioning["pooled_prompt_embeds"].repeat(batch, 1).to(dtype),
                encoder_hidden_states=conditioning["prompt_embeds"].repeat(batch, 1, 1).to(dtype),
                txt_ids=conditioning["text_ids"].to(self.device, dtype), img_ids=image_ids, return_dict=False)[0]
        finally:
            self._training_t = None
        scale = pipe.vae_scale_factor  # _unpack_latents takes the image size in pixels
        return pipe._unpack_latents(prediction, height * scale, width * scale, scale)

    def to_train_timesteps(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self.rank_timesteps  # the denoiser gets sigma = t / 1000; r(t) needs t (docs/decisions.md §1)

    def rank_timesteps(self, sigma: torch.Tensor) -> torch.Tensor:
        """The t of r(t) for the denoiser's sigma argument: the exact fp32 t of the call in flight. In sampling,
        FluxPipeline casts t to the model's dtype before dividing it by 1000, so in bf16 some steps would fall
        one rank lower than the fp32 schedule gives; the pipeline's own fp32 timestep of the step
        (`current_timestep`) is used instead, as the authors' pipeline does. In training, predict's own t."""
        from tlora_bench.adapters.timestep import sigma_to_timestep

        t = sigma_to_timestep(sigma.float())
        exact = self._training_t if self._training_t is not None else self.pipeline.current_timestep
        if exact is None:
            return t
        exact = torch.as_tensor(exact, dtype=torch.float32).to(t.device).reshape(-1).expand_as(t)
        same_step = bool(((exact - t).abs() <= _ROUNDING * exact.abs() + 1e-3).all())
        return exact if same_step else t  # a stale value (an interrupted call) is never trusted
