"""Backends: the registry, tiny models through the diffusers folder format and the real loading code,
and the one-line error for a model that cannot be loaded."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from tlora_bench.cli import main
from tlora_bench.errors import TloraBenchError
from tlora_bench.models import backend_names, backend_spec, load_backend
from tlora_bench.models.tiny import tiny_model_folder, tiny_sdxl_pipeline


def test_registry_names_aliases_and_did_you_mean():
    assert backend_names() == ["sdxl", "flux", "tiny-sdxl", "tiny-flux", "synthetic"]
    assert backend_spec("tiny") is backend_spec("tiny-sdxl")
    sdxl = backend_spec("sdxl")
    assert (sdxl.hub_id, sdxl.vae_id) == ("stabilityai/stable-diffusion-xl-base-1.0", "madebyollin/sdxl-vae-fp16-fix")
    assert (sdxl.num_inference_steps, sdxl.guidance_scale, sdxl.resolution) == (25, 5.0, 1024)  # docs/decisions.md §4
    assert (backend_spec("flux").num_inference_steps, backend_spec("flux").guidance_scale) == (28, 3.5)
    with pytest.raises(TloraBenchError, match="did you mean 'sdxl'"):
        backend_spec("sdxk")


def test_tiny_sdxl_round_trips_through_the_folder_format_and_from_pretrained():
    folder = tiny_model_folder("tiny-sdxl")
    assert (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file()
    assert tiny_model_folder("tiny-sdxl") == folder  # written once
    backend = load_backend("tiny", device="cpu")
    assert backend.source == str(folder)
    built = tiny_sdxl_pipeline(seed=0)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded, fresh = getattr(backend.pipeline, name).state_dict(), getattr(built, name).state_dict()
        assert loaded.keys() == fresh.keys() and all(torch.equal(loaded[k], fresh[k]) for k in fresh), name
    assert type(backend.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    ids = backend.pipeline.tokenizer("a photo of sks dog").input_ids
    assert ids == built.tokenizer("a photo of sks dog").input_ids


def test_building_a_tiny_model_prints_nothing(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("TLORA_BENCH_CACHE", str(tmp_path))
    capfd.readouterr()
    assert (tiny_model_folder("tiny-flux") / "model_index.json").is_file()
    assert capfd.readouterr() == ("", "")  # a user's first train prints its own lines only


def test_tiny_models_do_not_touch_the_global_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_sdxl_pipeline(seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_a_missing_model_is_one_line_naming_the_id_and_both_ways_out(tmp_path):
    with pytest.raises(TloraBenchError) as error:
        load_backend("sdxl", source=str(tmp_path / "no-such-model"), vae_source=str(tiny_model_folder("tiny-sdxl") /
                                                                                       "vae"), device="cpu")
    message = str(error.value)
    assert "\n" not in message and "no-such-model" in message
    assert "tlora-bench models download --model sdxl" in message and "--model-path" in message
    with pytest.raises(TloraBenchError, match=r"madebyollin/sdxl-vae-fp16-fix.*--vae-path"):
        load_backend("sdxl", device="cpu")  # offline in tests: the VAE, loaded first, is not cached


def test_train_with_a_missing_model_exits_with_one_line(tmp_path):
    from tests.train_helpers import write_concepts

    manifest = write_concepts(tmp_path / "data")
    result = CliRunner().invoke(main, ["train", "--method", "lora", "--concept", "rex", "--manifest", str(manifest),
                                       "--model", "sdxl", "--model-path", str(tmp_path / "nowhere"),
                                       "--vae-path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load model") and "Traceback" not in result.output


def test_models_list_and_download_of_a_tiny_model():
    runner = CliRunner()
    result = runner.invoke(main, ["models", "list"])
    assert result.exit_code == 0 and "stabilityai/stable-diffusion-xl-base-1.0" in result.output
    assert "not cached" in result.output  # the tests' Hugging Face cache is empty
    result = runner.invoke(main, ["models", "download", "--model", "tiny"])
    assert result.exit_code == 1 and "nothing to download" in result.output
    result = runner.invoke(main, ["models", "download", "--model", "sdxk"])
    assert result.exit_code == 1 and "did you mean 'sdxl'" in result.output


def test_without_the_hub_a_missing_model_fails_at_once_naming_the_reason(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    import tlora_bench.hub
    import tlora_bench.models.backend as backend

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # online mode, but no route to the hub
    monkeypatch.setattr(tlora_bench.hub, "hub_unreachable",
                        lambda: "https://huggingface.co cannot be reached: no route")
    with pytest.raises(TloraBenchError, match=r"'madebyollin/sdxl-vae-fp16-fix'.*not in the local cache, and "
                                              r"https://huggingface.co cannot be reached.*--vae-path"):
        load_backend("sdxl", device="cpu")
    folder = str(tiny_model_folder("tiny-sdxl"))
    assert not backend.local_files_only(backend_spec("sdxl"), folder, None, "model_index.json")  # a local folder
