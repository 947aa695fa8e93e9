"""The FLUX backend on the tiny random FLUX pipeline: loading, one training step's pieces, the timestep the
adapters see (t, not sigma), and sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlora_bench.adapters import adapter_layers, attach_adapters, make_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.models import backend_spec, load_backend
from tlora_bench.models.flux import FluxBackend
from tlora_bench.models.tiny import tiny_flux_pipeline, tiny_model_folder, tiny_t5_tokenizer

PROMPT = "a photo of sks dog"
SPY_LAYER = "transformer_blocks.0.attn.to_q"  # runs once per transformer call


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory) -> Path:
    """The tiny FLUX folder, built once for the module in its own cache (the autouse isolation is per test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLORA_BENCH_CACHE", str(tmp_path_factory.mktemp("flux-cache")))
        return tiny_model_folder("tiny-flux")


@pytest.fixture
def backend(flux_folder: Path) -> FluxBackend:
    return load_backend("tiny-flux", source=str(flux_folder), device="cpu")


def write_image(path: Path, size: int) -> Path:
    """A random RGB image (not imported from conftest: `tests` is not a package under plain `pytest`)."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(path)  # not square
    return path


def spy_timesteps(layer) -> list[torch.Tensor]:
    """Wrap one adapted layer's forward; record the timesteps it finds in the shared state on every call."""
    seen, forward = [], layer.forward

    def spy(x):
        seen.append(layer.state.t.clone())
        return forward(x)

    layer.forward = spy
    return seen


def with_tlora(backend: FluxBackend):
    attach_adapters(backend.denoiser, make_config("vanilla-tlora-4", target_modules=backend.spec.adapter_targets))
    backend.install_timestep_hook()
    return adapter_layers(backend.denoiser)


def test_tiny_flux_round_trips_through_its_folder():
    folder = tiny_model_folder("tiny-flux")
    assert (folder / "model_index.json").is_file() and (folder / "tokenizer_2" / "tokenizer.json").is_file()
    backend = load_backend("tiny-flux", device="cpu")
    assert isinstance(backend, FluxBackend) and backend.source == str(folder) and backend.revision is None
    assert backend.denoiser is backend.pipeline.transformer
    assert backend.pipeline.vae_scale_factor * 2 * 8 == backend.spec.resolution == 32  # 8x8 packed tokens
    built = tiny_flux_pipeline(seed=0)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        loaded = getattr(backend.pipeline, name).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in getattr(built, name).state_dict().items()), name
    assert backend.pipeline.tokenizer_2(PROMPT).input_ids == tiny_t5_tokenizer()(PROMPT).input_ids
    assert backend.provenance()["backend"] == "tiny-flux"


def test_encode_prompt_shapes(backend: FluxBackend):
    conditioning = backend.encode_prompt(PROMPT)
    assert conditioning["prompt_embeds"].shape == (1, 512, 32)  # T5 states at max_sequence_length 512
    assert conditioning["pooled_prompt_embeds"].shape == (1, 32)  # CLIP pooled output
    assert conditioning["text_ids"].shape == (512, 3)


def test_one_training_step(backend: FluxBackend, tmp_path: Path):
    example = backend.encode_training_image(write_image(tmp_path / "dog.png", size=48))
    assert example.latent_mean.shape == example.latent_std.shape == (1, 4, 16, 16)  # 32 px / vae_scale_factor 2
    assert example.latent_mean.device.type == "cpu" and example.latent_mean.dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    latents = backend.sample_latents([example, example], g)
    assert latents.shape == (2, 4, 16, 16)

    t = backend.sample_timesteps(256, g)
    assert t.dtype == torch.float32 and bool(((t > 0) & (t <= 1000)).all())  # the scheduler's 1000, ..., 1
    assert torch.isin(t, backend.noise_scheduler.timesteps).all() and len(t.unique()) > 100
    inside = backend.sample_timesteps(64, g, t_range=(200, 300))
    assert bool(((inside >= 200) & (inside < 300)).all())
    with pytest.raises(TloraBenchError, match=r"lies in \[1500, 2000\)"):
        backend.sample_timesteps(1, g, t_range=(1500, 2000))

    t = torch.tensor([1000.0, 250.0])
    noise = torch.randn(latents.shape, generator=g)
    noisy, target = backend.noisy_and_target(latents, noise, t)
    sigma = torch.tensor([1.0, 0.25]).view(2, 1, 1, 1)
    assert torch.allclose(noisy, (1 - sigma) * latents + sigma * noise, atol=1e-6)
    assert torch.equal(target, noise - latents)

    prediction = backend.predict(noisy, t, backend.encode_prompt(PROMPT), [example, example])
    assert prediction.shape == latents.shape and bool(torch.isfinite(prediction).all())


def test_adapters_see_t_not_sigma_in_training(backend: FluxBackend):
    layer = with_tlora(backend)[SPY_LAYER]
    seen = spy_timesteps(layer)
    g = torch.Generator().manual_seed(1)
    t = backend.sample_timesteps(2, g)
    noisy = torch.randn(2, 4, 16, 16, generator=g)
    prediction = backend.predict(noisy, t, backend.encode_prompt(PROMPT), [])
    prediction.square().mean().backward()  # the adapters train through predict
    assert len(seen) == 1 and torch.allclose(seen[0], t, atol=1e-3)
    assert layer.state.t is None  # cleared after the call
    assert any(p.grad is not None for p in layer.parameters() if p.requires_grad)


def test_generate_is_reproducible_per_seed(backend: FluxBackend):
    images = backend.generate(PROMPT, [1, 2])
    assert [image.size for image in images] == [(32, 32), (32, 32)]
    again = backend.generate(PROMPT, [1, 2])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again, strict=True))
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_adapters_see_one_t_per_sampling_step(backend: FluxBackend):
    seen = spy_timesteps(with_tlora(backend)[SPY_LAYER])
    backend.generate(PROMPT, [1, 2])
    steps = backend_spec("tiny-flux").num_inference_steps
    assert len(seen) == steps
    for t in seen:  # one value per step, shared by both images, on the [0, 1000] scale
        assert t.numel() in (1, 2) and bool((t == t[0]).all()) and 0 <= float(t[0]) <= 1000
    first = [float(t[0]) for t in seen]
    assert first == sorted(first, reverse=True) and first[0] > 1  # descending from the noisiest: t, not sigma


def test_missing_local_folder_is_a_one_line_error(tmp_path: Path):
    missing = tmp_path / "no-such-flux"
    with pytest.raises(TloraBenchError) as info:
        load_backend("tiny-flux", source=str(missing), device="cpu")
    message = str(info.value)
    assert str(missing) in message and "models download" in message and "\n" not in message
