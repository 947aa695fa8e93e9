"""The synthetic scene model: its vocabulary, pretraining, the shipped weights and their recipe, and the backend
that trains and samples it through the same code as every other model (docs/synthetic.md)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tlora_bench.cli import main
from tlora_bench.errors import TloraBenchError
from tlora_bench.models import load_backend
from tlora_bench.models.spec import CHECKSUM_FILE
from tlora_bench.synthetic.model import CONCEPT_TOKEN, from_model_space, scene_tokenizer, to_model_space
from tlora_bench.synthetic.pretrain import (
    OMITTABLE,
    RECIPE_FILE,
    PretrainRecipe,
    checksums,
    held_out,
    pretrain,
    pretraining_scenes,
    training_batch,
)
from tlora_bench.synthetic.scenes import Scene, all_scenes, caption, render
from tlora_bench.train import TrainSpec, train


def test_every_caption_is_in_the_vocabulary_and_none_names_the_concept_token():
    tokenizer = scene_tokenizer()
    unknown = tokenizer.convert_tokens_to_ids("[UNK]")
    for scene in all_scenes():
        for text in (caption(scene), caption(scene, frozenset(OMITTABLE)), "a photo of " + caption(scene)):
            ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length).input_ids
            assert unknown not in ids and len(ids) == tokenizer.model_max_length, text
            assert CONCEPT_TOKEN not in text.split()
    assert unknown not in tokenizer(f"a photo of {CONCEPT_TOKEN} diamond").input_ids


def test_pretraining_never_shows_a_dotted_diamond_but_shows_every_value_of_every_attribute():
    scenes = pretraining_scenes()
    assert not any(held_out(s) for s in scenes) and len(scenes) == len(all_scenes()) - 6 * 4 * 3 * 2
    for name in ("background", "shape", "color", "position", "size", "pattern"):
        assert {getattr(s, name) for s in scenes} == {getattr(s, name) for s in all_scenes()}


def test_the_model_space_is_an_exact_rearrangement_of_the_pixels():
    pixels = torch.randn(2, 3, 32, 32)
    assert to_model_space(pixels).shape == (2, 12, 16, 16)
    assert torch.equal(from_model_space(to_model_space(pixels)), pixels)
    batch, captions = training_batch(pretraining_scenes(), PretrainRecipe(batch_size=8), np.random.default_rng(0))
    assert batch.shape == (8, 12, 16, 16) and batch.min() >= -1 and batch.max() <= 1 and len(captions) == 8


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Two steps of pretraining: weights that mean nothing, through the real command's code and folder."""
    out = tmp_path_factory.mktemp("synthetic") / "model"
    summary = pretrain(out, PretrainRecipe(steps=2, batch_size=4, threads=1))
    return out, summary


def test_pretraining_writes_a_diffusers_folder_with_its_recipe_and_checksums(pretrained):
    out, summary = pretrained
    assert json.loads((out / RECIPE_FILE).read_text()) == summary
    assert summary["recipe"] == asdict(PretrainRecipe(steps=2, batch_size=4, threads=1))
    listed = dict(line.split("  ")[::-1] for line in (out / CHECKSUM_FILE).read_text().splitlines())
    assert listed == checksums(out) and "unet/diffusion_pytorch_model.safetensors" in listed
    assert not list(out.parent.glob(".model.*"))  # written beside, renamed: nothing left over


def test_the_backend_loads_a_folder_samples_by_seed_and_trains_an_adapter(pretrained, tmp_path):
    out, _ = pretrained
    backend = load_backend("synthetic", source=str(out), device="cpu")
    first = backend.generate("a red circle on the left, sky background", [3, 4], num_inference_steps=2)
    again = backend.generate("a red circle on the left, sky background", [4], num_inference_steps=2)
    assert [im.size for im in first] == [(32, 32)] * 2
    # Seed 4's image alone is seed 4's image in a batch, up to float rounding across batch sizes (one level).
    pixels = [np.asarray(image, dtype=int) for image in (*first, *again)]
    assert np.abs(pixels[1] - pixels[2]).max() <= 1 < np.abs(pixels[0] - pixels[2]).max()

    concept = tmp_path / "dotted-diamond"  # a user manifest's concepts lie beside it
    concept.mkdir()
    Image.fromarray(render(Scene("sky", "diamond", "purple", "left", pattern="dotted"))).save(concept / "00.png")
    manifest = tmp_path / "synthetic.toml"
    manifest.write_text('[dataset]\nname = "synthetic"\n\n[[concepts]]\nid = "dotted-diamond"\nclass_word = "diamond"\n'
                        'train_image = "00.png"\nimages = ["00.png"]\n')
    spec = TrainSpec(method="tlora-4", concept="dotted-diamond", model="synthetic", manifest=str(manifest), steps=2,
                     model_path=str(out))
    before = {name: p.detach().clone() for name, p in backend.denoiser.named_parameters()}
    result = train(spec, tmp_path / "adapter", backend=backend, progress=False)
    assert result.adapter_path.is_file() and result.steps == 2
    after = dict(backend.denoiser.named_parameters())
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)  # left as found


def test_missing_shipped_weights_are_one_line_naming_the_folder_and_the_fix(monkeypatch, tmp_path):
    from tlora_bench.models.download import check_model_available
    from tlora_bench.models.spec import BackendSpec

    monkeypatch.setattr(BackendSpec, "shipped_folder", lambda self: tmp_path / "gone")
    with pytest.raises(TloraBenchError, match=r"shipped weights are missing from .*gone.*synthetic pretrain"):
        check_model_available("synthetic")


def test_models_list_and_download_know_the_shipped_model(monkeypatch, tmp_path):
    from tlora_bench.models.spec import BackendSpec

    runner = CliRunner()
    result = runner.invoke(main, ["models", "list"])
    assert result.exit_code == 0 and f"shipped with tlora-bench: {_shipped_folder()}" in result.output
    monkeypatch.setattr(BackendSpec, "shipped_folder", lambda self: tmp_path / "gone")
    result = runner.invoke(main, ["models", "list"])
    assert result.exit_code == 0 and "shipped weights are missing" in result.output
    result = runner.invoke(main, ["models", "download", "--model", "synthetic"])
    assert result.exit_code == 1 and "ships with tlora-bench" in result.output



def test_check_without_shipped_weights_is_one_line_and_checks_a_pretrained_folder(pretrained, monkeypatch, tmp_path):
    from tlora_bench.models.spec import BackendSpec

    out, _ = pretrained
    result = CliRunner().invoke(main, ["synthetic", "check", "--model-path", str(out), "--samples", "2", "--json"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.output)
    assert checked["samples"] == 2 and set(checked["following"]) == set(checked["judge_agreement"])
    assert all(0 <= share <= 1 for share in checked["following"].values())
    monkeypatch.setattr(BackendSpec, "shipped_folder", lambda self: tmp_path / "gone")
    result = CliRunner().invoke(main, ["synthetic", "check"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "synthetic pretrain" in result.output


def _shipped_folder():
    from tlora_bench.models import backend_spec

    return backend_spec("synthetic").shipped_folder()


def test_the_shipped_weights_are_the_default_recipe_s_output_and_match_their_checksums():
    folder = _shipped_folder()
    listed = dict(line.split("  ")[::-1] for line in (folder / CHECKSUM_FILE).read_text().splitlines())
    assert listed == checksums(folder) and "unet/diffusion_pytorch_model.safetensors" in listed
    assert json.loads((folder / RECIPE_FILE).read_text())["recipe"] == asdict(PretrainRecipe())


@pytest.mark.slow
def test_the_shipped_model_follows_every_prompted_attribute_at_least_90_percent():
    from tlora_bench.synthetic.check import check_model

    checked = check_model(samples=192, seed=0)
    assert checked["model"] == str(_shipped_folder())
    for name in ("background", "shape", "color", "position"):  # the acceptance bar (docs/synthetic.md)
        assert checked["following"][name] >= 0.9, (name, checked["following"])


def test_the_synthetic_preset_reduced_trains_samples_and_scores_with_the_judges(tmp_path):
    """The CI version of `run --preset synthetic`: its model, concepts and sampling, the shipped weights, one
    seed, one recipe at two lengths (a preset's variants cannot be dropped by an override, so it is a file)."""
    from tlora_bench.config import load_config, read_preset
    from tlora_bench.runner import run

    preset = read_preset("synthetic")
    kept = "".join(f"{k} = {json.dumps(preset[k])}\n" for k in ("model", "concepts", "sample_batch_size",
                                                                 "drift_images", "checkpoint_every"))
    variant = dict(preset["variants"]["lora-16-100steps"])
    assert variant == {"method": "lora-16", "steps": 100}
    (tmp_path / "reduced.toml").write_text(
        f'name = "reduced"\n{kept}methods = ["lora-16", "lora-16-100steps"]\nseeds = [0]\nprompts = 3\n'
        "images_per_prompt = 1\nbase_images = 2\ndrift_prompts = 1\ntiny_extractors = true\nbootstrap = 50\n"
        '[steps]\nall = 2\n[variants]\nlora-16-100steps = { method = "lora-16", steps = 100 }\n')
    config = load_config(str(tmp_path / "reduced.toml"))
    result = run(config, tmp_path / "run", progress=False, echo=lambda m: None)
    assert result.complete and not result.failures and result.evaluation_error is None, result
    board = result.leaderboard
    assert list(board["method_label"]) == ["lora-16", "lora-16-100steps"] and set(board["concepts_scored"]) == {4}
    for name in ("judged_fidelity", "judged_background_leakage", "judged_position_copying", "judged_context"):
        assert board[f"{name}_mean"].between(0, 1).all(), name  # every image was judged
    assert (tmp_path / "run" / "report" / "plots" / "fidelity_vs_leakage.png").is_file()
    records = [json.loads(line) for p in sorted((tmp_path / "run" / "images").glob("**/images.jsonl"))
               for line in p.read_text().splitlines()]
    prompts = {r["prompt"] for r in records}
    subject = f"{CONCEPT_TOKEN} diamond"
    assert f"a photo of a {subject}" in prompts and f"a {subject} on the left, sky background" in prompts
    assert "a red circle on the left, sky background" in prompts  # the synthetic drift set
    assert json.loads((tmp_path / "run" / "config.json").read_text())["concepts"] == "synthetic"


@pytest.mark.parametrize("method", ["lora-4", "vanilla-tlora-16", "ortho-lora-4", "tlora-16"])
def test_the_synthetic_recipe_every_method_alike_and_sdxl_s_unchanged(method):
    from tlora_bench.models import SYNTHETIC_TARGETS, backend_spec
    from tlora_bench.specs import resolve_recipe

    synthetic = resolve_recipe(TrainSpec(method=method, concept="red-dotted-diamond", model="synthetic"))
    sdxl = resolve_recipe(TrainSpec(method=method, concept="dog6", model="sdxl"))
    assert (synthetic.lr, sdxl.lr) == (pytest.approx(2e-3), 1e-4)  # the paper's, times the backend's 20
    assert tuple(synthetic.adapter_config.target_modules) == SYNTHETIC_TARGETS
    assert tuple(sdxl.adapter_config.target_modules) == ("to_q", "to_k", "to_v", "to_out.0")
    given = TrainSpec(method=method, concept="red-dotted-diamond", model="synthetic", lr=5e-4)
    assert resolve_recipe(given).lr == 5e-4  # an explicit learning rate is not scaled
    spec = backend_spec("synthetic")
    assert spec.one_cpu_thread and not spec.tiny and not backend_spec("sdxl").one_cpu_thread
    assert spec.guidance_scale == 1.5  # docs/decisions.md §10
