"""The recipes pinned to the authors' and the reference code where the paper is silent (docs/decisions.md §1, §3):
FLUX trains with guidance 1 and r_min = 1, a bf16 FLUX sample runs every step at the fp32 schedule's rank, and
SD-XL's crop coordinates follow diffusers' SD-XL DreamBooth example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tlora_bench.adapters import adapter_layers, attach_adapters, make_config
from tlora_bench.adapters.timestep import rank_schedule
from tlora_bench.models import load_backend
from tlora_bench.models.backend import crop_top_left, prepare_training_image
from tlora_bench.models.flux import TRAIN_GUIDANCE, FluxBackend
from tlora_bench.models.tiny import tiny_model_folder
from tlora_bench.train import TrainSpec, resolve_recipe

PROMPT = "a photo of sks dog"


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLORA_BENCH_CACHE", str(tmp_path_factory.mktemp("flux-cache")))
        return tiny_model_folder("tiny-flux")


# ---- FLUX: guidance 1 in training, 3.5 in sampling ----------------------------------------------------------

def test_flux_trains_with_guidance_one_and_samples_with_three_and_a_half(flux_folder: Path):
    backend = load_backend("tiny-flux", source=str(flux_folder), device="cpu")
    seen: list[torch.Tensor] = []
    backend.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["guidance"].clone()), with_kwargs=True)
    g = torch.Generator().manual_seed(0)
    t = backend.sample_timesteps(2, g)
    backend.predict(torch.randn(2, 4, 16, 16, generator=g), t, backend.encode_prompt(PROMPT), [])
    assert TRAIN_GUIDANCE == 1.0 and seen[0].tolist() == [1.0, 1.0]
    backend.generate(PROMPT, [1], num_inference_steps=2)
    assert seen[1].tolist() == [3.5] and backend.spec.guidance_scale == 3.5  # FluxPipeline's embedded guidance


# ---- r_min: the authors' FLUX command (1), the paper's SD-XL default (r / 2) --------------------------------

@pytest.mark.parametrize("model, method, adapter, expected", [
    ("flux", "vanilla-tlora-64", {}, 1), ("tiny-flux", "tlora-8", {}, 1), ("sdxl", "tlora-64", {}, 32),
    ("tiny-sdxl", "vanilla-tlora-8", {}, 4), ("flux", "vanilla-tlora-64", {"r_min": 16}, 16)])
def test_r_min_defaults_per_model(model: str, method: str, adapter: dict, expected: int):
    recipe = resolve_recipe(TrainSpec(method=method, concept="dog6", model=model, adapter=adapter))
    assert recipe.adapter_config.r_min == expected


def test_lora_gets_no_r_min_on_flux():
    recipe = resolve_recipe(TrainSpec(method="lora-64", concept="dog6", model="flux"))
    assert recipe.adapter_config == make_config("lora-64", target_modules=recipe.adapter_config.target_modules)


def test_config_shows_the_resolved_r_min():
    from tlora_bench.cli import main

    result = CliRunner().invoke(main, ["config", "--model", "flux", "--methods", "vanilla-tlora,lora",
                                       "--ranks", "32", "--concepts", "dog6"])
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.stdout)["resolved"]
    assert resolved["vanilla-tlora-32"]["r_min"] == 1 and resolved["vanilla-tlora-32"]["steps"] == 500
    assert "r_min" not in resolved["lora-32"] and resolved["lora-32"]["optimizer"] == "prodigy"
    result = CliRunner().invoke(main, ["config", "--methods", "tlora", "--ranks", "64", "--concepts", "dog6"])
    assert json.loads(result.stdout)["resolved"]["tlora-64"]["r_min"] == 32


# ---- bf16 FLUX: every sampling step at the rank of the fp32 schedule ------------------------------------------

def _sampled_ranks(backend: FluxBackend, steps: int) -> tuple[list[int], list[int]]:
    """(the rank each denoiser call used, the rank r(t) of the scheduler's fp32 timesteps), per step."""
    layer = adapter_layers(backend.denoiser)["transformer_blocks.0.attn.to_q"]
    config = layer.config
    used, forward = [], layer.forward

    def spy(x):
        used.append(int(layer.state.ranks(layer.name, config.r, config.r_min, config.num_train_timesteps,
                                          config.gamma, 1)[1][0]))
        return forward(x)

    layer.forward = spy
    backend.generate(PROMPT, [3], num_inference_steps=steps)
    schedule = backend.pipeline.scheduler.timesteps.float()
    expected = [int(r) for r in rank_schedule(schedule, config.r, config.r_min, config.num_train_timesteps)]
    return used, expected


@pytest.mark.parametrize("steps", [28, 50])
def test_bf16_flux_samples_every_step_at_the_fp32_rank(flux_folder: Path, steps: int):
    backend = load_backend("tiny-flux", source=str(flux_folder), precision="bf16", device="cpu")
    attach_adapters(backend.denoiser, make_config("vanilla-tlora-32", r_min=1,
                                                  target_modules=backend.spec.adapter_targets))
    backend.install_timestep_hook()
    used, expected = _sampled_ranks(backend, steps)
    assert len(used) == steps and used == expected
    # What the denoiser's own bf16 argument would give: at 50 steps some steps fall one rank lower.
    bf16 = (backend.pipeline.scheduler.timesteps.to(torch.bfloat16) / 1000 * 1000).float()
    rounded = [int(r) for r in rank_schedule(bf16, 32, 1)]
    assert steps == 28 or rounded != expected


def test_a_stale_pipeline_timestep_is_never_used(flux_folder: Path):
    backend = load_backend("tiny-flux", source=str(flux_folder), device="cpu")
    backend.pipeline._current_timestep = torch.tensor(900.0)  # left by an interrupted sampling call
    assert backend.rank_timesteps(torch.tensor([0.25])).tolist() == [250.0]
    assert backend.rank_timesteps(torch.tensor([0.9], dtype=torch.bfloat16)).tolist() == [900.0]


# ---- SD-XL micro-conditioning: diffusers' example's crop arithmetic --------------------------------------------

def _example_crop(height: int, width: int, size: int) -> tuple[int, int]:
    """train_dreambooth_lora_sdxl.py with --center_crop: torchvision Resize(size), then the crop's offset."""
    from torchvision import transforms

    resized = transforms.Resize(size)(Image.new("RGB", (width, height)))
    return (max(0, round((resized.height - size) / 2.0)), max(0, round((resized.width - size) / 2.0)))


@pytest.mark.parametrize("height, width, size", [
    (900, 1200, 64), (1200, 900, 64), (900, 1200, 1024), (512, 512, 1024), (1000, 1333, 1024), (333, 1000, 64),
    (767, 1024, 1024), (1025, 1024, 1024)])
def test_crop_top_left_is_the_sdxl_examples(height: int, width: int, size: int):
    assert crop_top_left(height, width, size) == _example_crop(height, width, size)


def test_a_non_square_training_image_gets_the_examples_coordinates(tmp_path: Path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (1200, 900), "white").save(path)
    prepared = prepare_training_image(path, 64)
    assert prepared.original_size == (900, 1200) and prepared.crop_top_left == (0, 10)  # not (0, 11)
    assert prepared.image.size == (64, 64)
