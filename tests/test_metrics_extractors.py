"""Feature extractors: tiny random versions of the real architectures, local-copy loading, offline errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.metrics_helpers import blob_image, save_hub_folder
from tlora_bench.errors import TloraBenchError
from tlora_bench.metrics import EXTRACTORS, load_extractor
from tlora_bench.metrics.extractors import TINY_VIT_ARGS, resolve_device

NAMES = ["clip-vit-b-32", "dino-vits16", "dinov2-vits14"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Image.Image]:
    folder = tmp_path_factory.mktemp("images")
    square = Image.open(blob_image(folder / "a.png", size=40)).convert("RGB")
    wide = Image.fromarray(np.random.default_rng(3).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    return [square, wide, square.rotate(90)]


def test_the_registry_names_the_real_models():
    assert EXTRACTORS.names() == NAMES
    assert EXTRACTORS.get("clip-vit-b-32").pretrained == "openai"
    assert EXTRACTORS.get("dino-vits16").model == "vit_small_patch16_224.dino"
    assert EXTRACTORS.get("dinov2-vits14").model == "vit_small_patch14_dinov2.lvd142m"
    with pytest.raises(TloraBenchError, match="did you mean 'dino-vits16'"):
        load_extractor("dino-vit16", tiny=True)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_extractors_give_unit_vectors_deterministically_whatever_the_batch(name, images):
    extractor = load_extractor(name, tiny=True)
    features = extractor.encode_images(images)
    assert features.dtype == np.float32 and features.shape[0] == 3
    assert np.linalg.norm(features, axis=1) == pytest.approx([1.0] * 3, abs=1e-5)
    alone = np.concatenate([extractor.encode_images([image]) for image in images])
    assert np.allclose(features, alone, atol=1e-5)  # batching does not change an image's embedding
    assert np.array_equal(load_extractor(name, tiny=True).encode_images(images), features)  # seeded
    assert "tiny-random" in extractor.identity and "fp32" in extractor.identity


def test_the_architectures_keep_the_real_patch_sizes_and_preprocessing():
    clip = load_extractor("clip-vit-b-32", tiny=True)
    assert clip.model.visual.patch_size == (32, 32) and clip.model.visual.image_size == (224, 224)
    assert "interpolation=bicubic" in clip.preprocess_id and "0.48145466" in clip.preprocess_id
    assert load_extractor("dino-vits16", tiny=True).model.patch_embed.patch_size == (16, 16)
    dinov2 = load_extractor("dinov2-vits14", tiny=True)
    assert dinov2.model.patch_embed.patch_size == (14, 14) and dinov2.model.patch_embed.img_size == (224, 224)
    assert dinov2.preprocess_id == "dino:resize256-bicubic,crop224,imagenet-mean-std"


@pytest.mark.parametrize("name", NAMES)
def test_a_local_copy_laid_out_like_the_hub_repo_loads_through_the_real_loader(name, images, tmp_path: Path):
    tiny = load_extractor(name, tiny=True)
    folder = save_hub_folder(tiny, tmp_path / name)
    loaded = load_extractor(name, weights=folder)  # not tiny: the folder's own config says what it is
    assert np.array_equal(loaded.encode_images(images), tiny.encode_images(images))
    assert loaded.weights.startswith(f"local:{folder.resolve()}")


def test_each_extractor_says_what_ran_for_the_provenance(tmp_path: Path):
    import safetensors.torch

    clip = load_extractor("clip-vit-b-32", tiny=True)
    assert clip.architecture == "open_clip ViT-B-32, tiny (width 32, depth 2), random (seeded)"
    assert load_extractor("dinov2-vits14", tiny=True).architecture == \
        "timm vit_small_patch14_dinov2.lvd142m, tiny (width 32, depth 2), random (seeded)"
    folder = save_hub_folder(clip, tmp_path / "clip")
    assert load_extractor("clip-vit-b-32", weights=folder).architecture == \
        "open_clip ViT-B-32, from a folder laid out like its hub repo (its config gives the sizes)"
    safetensors.torch.save_file(clip.model.state_dict(), tmp_path / "clip.safetensors")
    assert load_extractor("clip-vit-b-32", tiny=True, weights=tmp_path / "clip.safetensors").architecture == \
        "open_clip ViT-B-32, tiny (width 32, depth 2), from a checkpoint file"
    # Loaded from the hub, the real models say which pretrained weights (no download here: the spec alone).
    from tlora_bench.metrics.extractors import _architecture

    assert _architecture(EXTRACTORS.get("clip-vit-b-32"), None, False) == \
        "open_clip ViT-B-32, pretrained openai, from the hub"
    assert _architecture(EXTRACTORS.get("dino-vits16"), None, False) == "timm vit_small_patch16_224.dino, from the hub"


@pytest.mark.parametrize("name", ["clip-vit-b-32", "dino-vits16"])
def test_a_single_checkpoint_file_loads_too(name, images, tmp_path: Path):
    import safetensors.torch

    tiny = load_extractor(name, tiny=True)
    file = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(tiny.model.state_dict(), file)
    loaded = load_extractor(name, tiny=True, weights=file)
    assert np.array_equal(loaded.encode_images(images), tiny.encode_images(images))
    blob_image(tmp_path / "other.png")
    file.write_bytes((tmp_path / "other.png").read_bytes())  # not a checkpoint
    with pytest.raises(TloraBenchError, match="cannot load the weights"):
        load_extractor(name, tiny=True, weights=file)


@pytest.mark.parametrize("name", NAMES)
def test_missing_weights_are_one_line_naming_the_model_and_the_fixes(name):
    with pytest.raises(TloraBenchError) as error:
        load_extractor(name)
    message = str(error.value)
    assert "\n" not in message and f"'{name}'" in message and EXTRACTORS.get(name).hub_id in message
    assert "HF_HUB_OFFLINE" in message and f"--weights {name}=PATH" in message and "--tiny-models" in message
    with pytest.raises(TloraBenchError, match="not found at"):
        load_extractor(name, weights="/no/such/folder")


def test_texts_need_clip_and_other_dtypes_still_give_unit_vectors(images):
    dino = load_extractor("dino-vits16", tiny=True, dtype="bf16")
    assert "bf16" in dino.identity and dino.identity != load_extractor("dino-vits16", tiny=True).identity
    assert np.linalg.norm(dino.encode_images(images), axis=1) == pytest.approx([1.0] * 3, abs=1e-3)
    with pytest.raises(TloraBenchError, match="has no text encoder"):
        dino.encode_texts(["a dog"])
    with pytest.raises(TloraBenchError, match="unknown dtype 'fp8'"):
        load_extractor("dino-vits16", tiny=True, dtype="fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when no GPU is visible")
def test_cuda_without_a_gpu_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(TloraBenchError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(TloraBenchError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_fetching_evaluation_weights_names_every_model_and_fails_offline_in_one_line():
    from tlora_bench.metrics.weights import evaluation_weights, fetch_evaluation_weights

    assert set(evaluation_weights()) == {*NAMES, "grounded-sam"}
    assert "IDEA-Research/grounding-dino-tiny" in evaluation_weights()["grounded-sam"]
    with pytest.raises(TloraBenchError, match="did you mean 'dino-vits16'"):
        fetch_evaluation_weights(["dino-vit16"])
    with pytest.raises(TloraBenchError, match="HF_HUB_OFFLINE"):
        fetch_evaluation_weights(["dino-vits16"])


def test_dinov2_weights_saved_at_518_px_load_at_224_px(tmp_path: Path, images):
    # The hub's DINOv2 checkpoint is a 518 px model; evaluation runs it at 224 px (docs/evaluation.md), so the
    # position embeddings are resampled on load, through timm's own loader.
    import timm

    model = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, num_classes=0, **TINY_VIT_ARGS)
    assert model.pos_embed.shape[1] == 1 + 37 * 37
    timm.models.save_for_hf(model, tmp_path, model_args=dict(TINY_VIT_ARGS), safe_serialization=True)
    loaded = load_extractor("dinov2-vits14", weights=tmp_path)
    assert loaded.model.pos_embed.shape[1] == 1 + 16 * 16
    assert loaded.encode_images(images).shape == (3, TINY_VIT_ARGS["embed_dim"])


def test_without_the_hub_missing_weights_fail_at_once_with_the_whole_reason(monkeypatch):
    import time

    import huggingface_hub.constants as hub

    import tlora_bench.hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # online mode, but no route to the hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(tlora_bench.hub, "hub_unreachable", lambda: "https://huggingface.co cannot be reached")
    started = time.monotonic()
    with pytest.raises(TloraBenchError) as error:
        load_extractor("dino-vits16", device="cpu")
    assert time.monotonic() - started < 20  # no minute of retries
    message = str(error.value)
    assert "\n" not in message and "..." not in message and "--weights dino-vits16=PATH" in message
    assert hub.HF_HUB_OFFLINE is False  # the offline switch was for the load only
