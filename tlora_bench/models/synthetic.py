"""The synthetic backend: the project's pretrained scene model (tlora_bench/synthetic), trained and sampled
through the same interface as SD-XL. Pixel space: a training "latent" is the image itself (pixel-unshuffled,
tlora_bench/synthetic/model.py), with no spread."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from tlora_bench.models.backend import (
    PreparedImage,
    TrainingExample,
    image_to_tensor,
    load_diffusers_pipeline,
    prepare_training_image,
)
from tlora_bench.models.sdxl import SDXLBackend
from tlora_bench.models.spec import BackendSpec


def _load_pipeline(spec: BackendSpec, source: str, revision: str | None, vae_source: str | None, dtype: torch.dtype):
    from tlora_bench.synthetic.model import SyntheticScenePipeline

    return load_diffusers_pipeline(SyntheticScenePipeline, spec, source, revision, None, dtype)


class SyntheticBackend(SDXLBackend):
    """The scene model: SD-XL's loss and DDPM noising (inherited; velocity target), no VAE, no micro-conditioning."""

    load_pipeline = staticmethod(_load_pipeline)

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"prompt_embeds": self.pipeline.encode_prompt([prompt])}

    @torch.no_grad()
    def encode_training_image(self, path: str | Path) -> TrainingExample:
        from tlora_bench.synthetic.model import to_model_space

        pixels = to_model_space(image_to_tensor(prepare_training_image(path, self.spec.resolution).image))
        return TrainingExample(str(path), pixels, torch.zeros_like(pixels))

    def image_conditioning(self, prepared: PreparedImage) -> dict[str, torch.Tensor]:
        return {}

    def sample_latents(self, examples: Sequence[TrainingExample], generator: torch.Generator) -> torch.Tensor:
        return torch.cat([e.latent_mean for e in examples]).to(self.device)

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, conditioning: dict[str, torch.Tensor],
                examples: Sequence[TrainingExample]) -> torch.Tensor:
        from tlora_bench.synthetic.model import with_coordinates

        batch, dtype = noisy.shape[0], self.dtype
        states = conditioning["prompt_embeds"].repeat(batch, 1, 1).to(dtype)
        return self.denoiser(with_coordinates(noisy.to(dtype)), t.to(self.device), encoder_hidden_states=states).sample
