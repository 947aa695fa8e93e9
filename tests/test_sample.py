"""The sampler on the tiny SD-XL backend: determinism, the timesteps adapters see, image-level resume, the
index `evaluate` reads, and the CLI path train -> generate -> evaluate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.train_helpers import load_tiny, spec, write_concepts
from tlora_bench.adapters import adapter_layers
from tlora_bench.layout import read_images_index
from tlora_bench.sample import SampleOptions, generate, plan_items, read_adapter_info
from tlora_bench.train import ADAPTER_FILE, train

OPTIONS = SampleOptions(prompts=2, images_per_prompt=2, base_images=3, batch_size=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    manifest = write_concepts(root / "data")
    backend = load_tiny("tiny-sdxl", root / "cache")
    adapters = {m: train(spec(manifest, m, steps=2), root / m, backend=backend, progress=False).adapter_path
                for m in ("tlora-4", "lora-4")}
    return {"backend": backend, "adapters": adapters}


def pixels(folder) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_images_follow_the_seed_rule_and_are_identical_twice(trained, tmp_path):
    backend, adapter = trained["backend"], trained["adapters"]["tlora-4"]
    first = generate(adapter, tmp_path / "a", options=OPTIONS, backend=backend, progress=False)
    second = generate(adapter, tmp_path / "b", options=OPTIONS, backend=backend, progress=False)
    assert first.n_images == first.n_generated == 5  # 3 base images + 2 of the first contextual prompt
    a, b = pixels(first.folder), pixels(second.folder)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    records = read_images_index(first.folder / "images.jsonl")
    _, items = plan_items(read_adapter_info(adapter), OPTIONS)
    assert [(r.template, r.image_index, r.seed) for r in records] == \
        [(i.template, i.image_index, i.seed) for i in items]
    assert {r.method for r in records} == {"tlora-4"} and {r.rank for r in records} == {4}
    text = Image.open(first.folder / records[0].file).text
    assert text["prompt"] == "a photo of a sks dog" and text["seed"] == str(records[0].seed)
    assert text["method"] == "tlora-4" and text["model"] == "tiny"


def test_batch_size_does_not_change_the_images(trained, tmp_path):
    backend, adapter = trained["backend"], trained["adapters"]["lora-4"]
    one = generate(adapter, tmp_path / "one", options=SampleOptions(prompts=1, base_images=3, batch_size=1),
                   backend=backend, progress=False)
    three = generate(adapter, tmp_path / "three", options=SampleOptions(prompts=1, base_images=3, batch_size=3),
                     backend=backend, progress=False)
    a, b = pixels(one.folder), pixels(three.folder)
    assert all(np.abs(a[k].astype(int) - b[k].astype(int)).max() <= 1 for k in a)


def test_tlora_layers_see_each_scheduler_timestep_once_for_both_guidance_halves(trained, tmp_path, monkeypatch):
    backend, adapter = trained["backend"], trained["adapters"]["tlora-4"]
    seen = []
    from tlora_bench.adapters.tlora.layer import TLoRALinear

    original = TLoRALinear.adapted_forward

    def spy(self, x):
        if self.name == next(iter(adapter_layers(backend.denoiser))):
            seen.append((self.state.t.clone(), x.shape[0]))
        return original(self, x)

    monkeypatch.setattr(TLoRALinear, "adapted_forward", spy)
    generate(adapter, tmp_path, options=SampleOptions(prompts=1, base_images=2, batch_size=2), backend=backend,
             progress=False)
    steps = backend.spec.num_inference_steps
    backend.pipeline.scheduler.set_timesteps(steps)
    expected = backend.pipeline.scheduler.timesteps.float()
    assert len(seen) == steps  # one denoiser call per step, classifier-free guidance batched into it
    for (t, batch), want in zip(seen, expected, strict=True):
        assert batch == 4  # 2 images x (unconditional, conditional)
        assert t.numel() == 1 and float(t) == pytest.approx(float(want))  # one t for the whole batch


def test_resume_keeps_finished_images_and_redoes_a_truncated_one(trained, tmp_path):
    backend, adapter = trained["backend"], trained["adapters"]["tlora-4"]
    first = generate(adapter, tmp_path, options=OPTIONS, backend=backend, progress=False)
    before = pixels(first.folder)
    victim = first.folder / sorted(before)[1]
    victim.write_bytes(victim.read_bytes()[:100])  # a file cut short by a crash
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.folder.glob("*.png")}
    again = generate(adapter, tmp_path, options=OPTIONS, backend=backend, progress=False)
    assert (again.n_generated, again.n_kept) == (1, 4)
    after = pixels(first.folder)
    assert np.array_equal(after[victim.name], before[victim.name])  # made in the same batch as the first time
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in first.folder.glob("*.png") if p != victim)
    assert generate(adapter, tmp_path, options=OPTIONS, backend=backend, progress=False).n_generated == 0


def test_an_image_from_another_adapter_is_redone(trained, tmp_path):
    backend, adapters = trained["backend"], trained["adapters"]
    generate(adapters["lora-4"], tmp_path, options=OPTIONS, backend=backend, label="same", progress=False)
    result = generate(adapters["tlora-4"], tmp_path, options=OPTIONS, backend=backend, label="same", progress=False)
    assert result.n_generated == 5


def test_mergeable_methods_sample_merged_and_leave_the_base_model_unchanged(trained, tmp_path, monkeypatch):
    backend, adapter = trained["backend"], trained["adapters"]["lora-4"]
    before = {k: v.clone() for k, v in backend.denoiser.state_dict().items()}
    merged = []
    import tlora_bench.adapters.model as adapters

    original = adapters.merge_adapters
    monkeypatch.setattr(adapters, "merge_adapters", lambda model, t=None: (merged.append(1), original(model, t)))
    generate(adapter, tmp_path, options=SampleOptions(prompts=1, base_images=1), backend=backend, progress=False)
    assert merged == [1]
    after = backend.denoiser.state_dict()
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_cli_train_generate_evaluate_on_a_fresh_cache(tmp_path):
    from click.testing import CliRunner

    from tlora_bench.cli import main

    manifest = write_concepts(tmp_path / "data")
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--method", "tlora", "--rank", "4", "--concept", "rex", "--model", "tiny",
                                  "--manifest", str(manifest), "--out", str(out), "--steps", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (out / ADAPTER_FILE).is_file() and "trained 2 steps" in result.output
    generate_command = ["generate", str(out), "--prompts", "2", "--images-per-prompt", "1", "--base-images", "2",
                        "--drift-images", "1", "--drift-prompts", "2", "--device", "cpu"]
    result = runner.invoke(main, generate_command)
    assert result.exit_code == 0, result.output
    assert "5 images generated" in result.output  # 3 of the concept's prompts, 2 drift prompts
    assert "2 images generated" in result.output and "_base_model" in result.output  # the base model's twins
    result = runner.invoke(main, ["evaluate", str(out / "images"), "--manifest", str(manifest), "--tiny-models",
                                  "--bootstrap", "20", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "images" / "evaluation" / "evaluation.json").read_text())
    assert summary["n_scored"] == 5 and "drift" not in summary["unavailable"]
    per_method = pd.read_csv(out / "images" / "evaluation" / "per_method.csv").set_index("metric")
    assert 0 <= per_method.loc["drift", "mean"] <= 2  # 1 - cosine, from the base model's twins
    again = runner.invoke(main, generate_command)
    assert again.exit_code == 0 and again.output.count("0 images generated") == 2, again.output
    result = runner.invoke(main, [*generate_command, "--drift-prompts", "11"])
    assert result.exit_code == 1 and "drift prompts must be from 1 to 10" in result.output
    result = runner.invoke(main, ["generate", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no adapter at" in result.output


def test_drift_images_pair_with_the_base_models_by_prompt_and_seed(trained, tmp_path):
    from tlora_bench.layout import find_base_images
    from tlora_bench.prompts import drift_prompts
    from tlora_bench.sample import LazyBackend, generate_base_drift

    backend, adapter = trained["backend"], trained["adapters"]["lora-4"]
    options = SampleOptions(prompts=1, base_images=1, batch_size=2, drift_images=1)
    result = generate(adapter, tmp_path, options=options, backend=backend, progress=False)
    drift = [r for r in read_images_index(result.folder / "images.jsonl") if r.kind == "drift"]
    assert [r.template for r in drift] == list(drift_prompts()) and len(drift_prompts()) == 10
    assert [r.file for r in drift][:2] == ["d00_i00.png", "d01_i00.png"]
    base = generate_base_drift(backend, tmp_path, base_seed=0, options=options, model="tiny")
    never = LazyBackend(lambda: pytest.fail("a model was loaded with every image already there"))
    again = generate_base_drift(never, tmp_path, base_seed=0, options=options, model="tiny")
    assert base.n_generated == 10 and again.n_generated == 0  # made once, then found
    pairs = find_base_images(tmp_path)
    assert set(pairs) == {(r.template, r.seed) for r in drift}  # every adapted image has its base twin
    assert Image.open(pairs[(drift[0].template, drift[0].seed)]).text["adapter_sha256"] == ""
