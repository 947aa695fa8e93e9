"""SD-XL: the backend (training and sampling through diffusers), and the UNet's config as a literal.

The config is `stabilityai/stable-diffusion-xl-base-1.0/unet/config.json` with every key that changes a
shape written out, so parameter counts and memory estimates for SD-XL need neither a download nor 10 GiB
of RAM: `sdxl_unet_on_meta()` has the real module tree, with tensors that have shapes but no storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tlora_bench.models.backend import DiffusionBackend, PreparedImage, TrainingExample, load_diffusers_pipeline
from tlora_bench.models.spec import BackendSpec

# stable-diffusion-xl-base-1.0, unet/config.json (diffusers UNet2DConditionModel): 2,567,463,684 parameters.
SDXL_UNET_CONFIG: dict[str, Any] = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20), block_out_channels=(320, 640, 1280), center_input_sample=False,
    class_embed_type=None, class_embeddings_concat=False, conv_in_kernel=3, conv_out_kernel=3,
    cross_attention_dim=2048, cross_attention_norm=None,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), downsample_padding=1,
    dual_cross_attention=False, encoder_hid_dim=None, encoder_hid_dim_type=None, flip_sin_to_cos=True, freq_shift=0,
    in_channels=4, layers_per_block=2, mid_block_only_cross_attention=None, mid_block_scale_factor=1,
    mid_block_type="UNetMidBlock2DCrossAttn", norm_eps=1e-05, norm_num_groups=32, num_attention_heads=None,
    num_class_embeds=None, only_cross_attention=False, out_channels=4,
    projection_class_embeddings_input_dim=2816,  # pooled text (1280) + 6 micro-conditioning values x 256
    resnet_out_scale_factor=1.0, resnet_skip_time_act=False, resnet_time_scale_shift="default", sample_size=128,
    time_cond_proj_dim=None, time_embedding_act_fn=None, time_embedding_dim=None, time_embedding_type="positional",
    timestep_post_act=None, transformer_layers_per_block=(1, 2, 10),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), upcast_attention=None,
    use_linear_projection=True,
)

SDXL_UNET_PARAMETERS = 2_567_463_684  # the real checkpoint's count; a test checks the meta model against it


def sdxl_unet_on_meta():
    """The SD-XL UNet module tree on the meta device: real shapes, no storage, built in a fraction of a second.

    Use it to count parameters or to size memory; it cannot run a forward pass.
    """
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**SDXL_UNET_CONFIG).eval()


def _load_pipeline(spec: BackendSpec, source: str, revision: str | None, vae_source: str | None, dtype: torch.dtype):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    pipeline = load_diffusers_pipeline(StableDiffusionXLPipeline, spec, source, revision, vae_source, dtype)
    # docs/decisions.md §4: the Euler scheduler from the model's own scheduler config.
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    return pipeline


class SDXLBackend(DiffusionBackend):
    """SD-XL through diffusers: epsilon-prediction MSE with DDPM noising, micro-conditioning, Euler sampling."""

    load_pipeline = staticmethod(_load_pipeline)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(self.pipeline.scheduler.config)

    @property
    def denoiser(self) -> nn.Module:
        return self.pipeline.unet

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            embeds, _, pooled, _ = self.pipeline.encode_prompt(prompt, device=self.device, num_images_per_prompt=1,
                                                               do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def image_conditioning(self, prepared: PreparedImage) -> dict[str, torch.Tensor]:
        # docs/decisions.md §3: add_time_ids = (orig_h, orig_w, crop_top, crop_left, target_h, target_w)
        size = self.spec.resolution
        return {"time_ids": torch.tensor([[*prepared.original_size, *prepared.crop_top_left, size, size]],
                                         dtype=torch.float32)}

    def sample_latents(self, examples: Sequence[TrainingExample], generator: torch.Generator) -> torch.Tensor:
        mean = torch.cat([e.latent_mean for e in examples])
        std = torch.cat([e.latent_std for e in examples])
        latents = mean + std * torch.randn(mean.shape, generator=generator)
        return (latents * self.pipeline.vae.config.scaling_factor).to(self.device)

    def noisy_and_target(self, latents: torch.Tensor, noise: torch.Tensor,
                         t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ddpm_noisy_and_target(self.noise_scheduler, latents, noise, t)

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, conditioning: dict[str, torch.Tensor],
                examples: Sequence[TrainingExample]) -> torch.Tensor:
        batch, dtype = noisy.shape[0], self.dtype  # not denoiser.dtype: an fp32 adapter parameter may come first
        added = {"text_embeds": conditioning["pooled_prompt_embeds"].repeat(batch, 1).to(dtype),
                 "time_ids": torch.cat([e.extra["time_ids"] for e in examples]).to(self.device, dtype)}
        return self.denoiser(noisy.to(dtype), t.to(self.device),
                             encoder_hidden_states=conditioning["prompt_embeds"].repeat(batch, 1, 1).to(dtype),
                             added_cond_kwargs=added).sample


def ddpm_noisy_and_target(scheduler, latents: torch.Tensor, noise: torch.Tensor,
                          t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPM noising and the regression target the scheduler's prediction type asks for (epsilon: SD-XL base;
    velocity: the synthetic scene model)."""
    t = t.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    if scheduler.config.prediction_type == "v_prediction":
        return noisy, scheduler.get_velocity(latents, noise, t)
    return noisy, noise
