"""`load_into_pipeline`: a tlora-bench adapter in the user's own diffusers pipeline gives `tlora-bench generate`'s
images for the same seed, and unloading gives the pipeline back unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.train_helpers import load_tiny, spec, write_concepts
from tlora_bench.adapters.formats import export_adapter
from tlora_bench.errors import TloraBenchError
from tlora_bench.pipeline import load_into_pipeline
from tlora_bench.sample import SampleOptions, generate
from tlora_bench.train import ADAPTER_FILE, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    manifest = write_concepts(root / "data")
    out = {}
    for model in ("tiny-sdxl", "tiny-flux"):
        backend = load_tiny(model, root / "cache")
        method = "tlora-4" if model == "tiny-sdxl" else "vanilla-tlora-4"
        lr = {"lr": 5e-2} if model == "tiny-sdxl" else {}  # FLUX: Prodigy, whose lr 1 is a multiplier
        train(spec(manifest, method, model=model, steps=4, **lr), root / model, backend=backend, progress=False)
        out[model] = (backend, root / model / ADAPTER_FILE)
    return out


def _user_images(pipe, prompt: str, seed: int, backend, output_type: str = "pil") -> np.ndarray:
    size = backend.spec.resolution
    with torch.no_grad():
        image = pipe(prompt, generator=[torch.Generator("cpu").manual_seed(seed)], height=size, width=size,
                     num_inference_steps=backend.spec.num_inference_steps, guidance_scale=backend.spec.guidance_scale,
                     output_type=output_type).images[0]
    return np.asarray(image)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
def test_the_users_pipeline_gives_generates_images_and_is_unchanged_after_unloading(trained, model, tmp_path):
    backend, adapter = trained[model]
    result = generate(adapter, tmp_path / "images", options=SampleOptions(prompts=1, base_images=1),
                      backend=backend, progress=False)
    row = json.loads((result.folder / "images.jsonl").read_text().splitlines()[0])
    ours = np.asarray(__import__("PIL.Image").Image.open(result.folder / row["file"]).convert("RGB"))
    pipe = backend.pipeline  # a plain diffusers pipeline, as a user builds it
    denoiser = pipe.unet if model == "tiny-sdxl" else pipe.transformer
    weights = {k: v.clone() for k, v in denoiser.state_dict().items()}
    before = [_user_images(pipe, row["prompt"], row["seed"], backend, kind) for kind in ("pil", "latent")]
    with load_into_pipeline(pipe, adapter) as loaded:
        assert loaded.config.method in ("tlora", "vanilla-tlora")
        adapted = [_user_images(pipe, row["prompt"], row["seed"], backend, kind) for kind in ("pil", "latent")]
    after = [_user_images(pipe, row["prompt"], row["seed"], backend, kind) for kind in ("pil", "latent")]
    assert np.array_equal(adapted[0], ours)  # the same pixels as tlora-bench generate
    assert not np.array_equal(adapted[1], before[1])  # the adapter acts (latents: tiny VAEs flatten small changes)
    assert all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    assert list(denoiser.state_dict()) == list(weights)
    assert all(torch.equal(v, weights[k]) for k, v in denoiser.state_dict().items())
    assert not denoiser._forward_pre_hooks and not denoiser._forward_hooks


@pytest.mark.slow
def test_an_official_format_file_loads_the_same_way(trained, tmp_path):
    backend, adapter = trained["tiny-sdxl"]
    official = export_adapter(adapter, "official-sdxl", tmp_path / "official")[0]
    pipe, size = backend.pipeline, backend.spec.resolution
    with load_into_pipeline(pipe, adapter):
        ours = _user_images(pipe, "a photo of sks dog", 3, backend)
    with load_into_pipeline(pipe, official):
        theirs = _user_images(pipe, "a photo of sks dog", 3, backend)
    assert size and np.array_equal(ours, theirs)


def test_a_pipeline_of_another_kind_is_one_line(trained):
    with pytest.raises(TloraBenchError, match="takes a StableDiffusionXLPipeline or FluxPipeline"):
        load_into_pipeline(object(), trained["tiny-sdxl"][1])
