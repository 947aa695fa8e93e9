"""The training loop on the tiny SD-XL backend: every method trains, logs, saves, reloads; determinism,
resume, divergence and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.train_helpers import SEVEN_METHODS, adapter_tensors, load_tiny, spec, write_concepts
from tlora_bench.adapters import adapter_layers, detach_adapters
from tlora_bench.adapters.io import load_adapter, read_adapter_metadata
from tlora_bench.errors import TloraBenchError
from tlora_bench.sample import SampleOptions, generate
from tlora_bench.train import (
    ADAPTER_FILE,
    CHECKPOINT_FILE,
    LOG_FILE,
    SPEC_FILE,
    TrainingDiverged,
    TrainSpec,
    resolve_recipe,
    train,
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {"manifest": write_concepts(root / "data"), "backend": load_tiny("tiny-sdxl", root / "cache")}


@pytest.mark.parametrize("method", SEVEN_METHODS)
def test_every_method_trains_logs_and_reloads(workspace, tmp_path, method):
    backend = workspace["backend"]
    result = train(spec(workspace["manifest"], method), tmp_path, backend=backend, progress=False)
    assert result.steps == 3 and (tmp_path / ADAPTER_FILE).is_file()
    assert not (tmp_path / CHECKPOINT_FILE).exists()  # the adapter replaces the optimizer state
    rows = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert set(row) == {"step", "t", "loss", "lr", "grad_norm", "seconds"}
        assert math.isfinite(row["loss"]) and row["loss"] >= 0 and row["grad_norm"] >= 0
        assert all(0 <= t < 1000 for t in row["t"])
    metadata = read_adapter_metadata(tmp_path / ADAPTER_FILE)
    assert metadata["concept"] == "rex" and json.loads(metadata["training_images"]) == ["01.jpg"]
    assert json.loads(metadata["base_model"])["backend"] == "tiny-sdxl"
    for key in ("git_commit", "torch_version", "diffusers_version", "peft_version", "steps", "seed", "precision"):
        assert key in metadata
    model = backend.denoiser
    assert not any(True for _ in model.modules() if hasattr(_, "base_layer"))  # train() detached its adapter
    load_adapter(model, tmp_path / ADAPTER_FILE)
    try:
        assert len(adapter_layers(model)) > 0
    finally:
        detach_adapters(model)


@pytest.fixture(scope="module")
def bf16_backends(tmp_path_factory):
    from tlora_bench.models import load_backend

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLORA_BENCH_CACHE", str(tmp_path_factory.mktemp("bf16-cache")))
        return {name: load_backend(name, precision="bf16", device="cpu") for name in ("tiny-sdxl", "tiny-flux")}


BF16_CASES = [("tiny-sdxl", m) for m in SEVEN_METHODS] + [("tiny-flux", m) for m in ("tlora-4", "svdiff")]


@pytest.mark.parametrize("model, method", BF16_CASES)
def test_bf16_trains_fp32_adapters_on_a_bf16_model_and_samples(workspace, bf16_backends, tmp_path, model, method):
    backend = bf16_backends[model]
    assert backend.denoiser.dtype == torch.bfloat16
    result = train(spec(workspace["manifest"], method, model=model, precision="bf16", steps=2), tmp_path,
                   backend=backend, progress=False)
    rows = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)  # gradients reach the fp32 factors
    assert all(v.dtype == torch.float32 for v in adapter_tensors(result.adapter_path).values())
    assert read_adapter_metadata(result.adapter_path)["precision"] == "bf16"
    assert backend.denoiser.dtype == torch.bfloat16  # the base model is left as it was
    sampled = generate(result.adapter_path, tmp_path / "images", options=SampleOptions(prompts=1, base_images=1),
                       backend=backend, progress=False)
    assert sampled.n_generated == sampled.n_images >= 1


def test_same_seed_gives_identical_adapters_and_another_seed_does_not(workspace, tmp_path):
    backend, manifest = workspace["backend"], workspace["manifest"]
    runs = {name: train(spec(manifest, seed=seed), tmp_path / name, backend=backend, progress=False)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}
    a, b, c = (adapter_tensors(runs[n].adapter_path) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_from_a_mid_run_checkpoint_equals_an_uninterrupted_run(workspace, tmp_path):
    backend, manifest = workspace["backend"], workspace["manifest"]
    job = spec(manifest, "tlora-4", steps=6, checkpoint_every=2, batch_size=2)
    full = train(job, tmp_path / "full", backend=backend, progress=False)

    def crash(row):
        if row["step"] == 5:
            raise KeyboardInterrupt  # a kill after step 5, whose checkpoint was never written

    with pytest.raises(KeyboardInterrupt):
        train(job, tmp_path / "cut", backend=backend, progress=False, on_step=crash)
    assert (tmp_path / "cut" / CHECKPOINT_FILE).is_file() and not (tmp_path / "cut" / ADAPTER_FILE).exists()
    resumed = train(job, tmp_path / "cut", backend=backend, progress=False)
    assert resumed.resumed_from == 4
    x, y = adapter_tensors(full.adapter_path), adapter_tensors(resumed.adapter_path)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    logs = [[json.loads(line)["loss"] for line in (tmp_path / d / LOG_FILE).read_text().splitlines()]
            for d in ("full", "cut")]
    assert logs[0] == logs[1]  # the log is cut back to the checkpoint, then continues
    assert train(job, tmp_path / "cut", backend=backend, progress=False).already_done


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(workspace, tmp_path, monkeypatch):
    backend, manifest = workspace["backend"], workspace["manifest"]
    predict, calls = backend.predict, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        out = predict(*args, **kwargs)
        return out * float("nan") if len(calls) == 3 else out

    monkeypatch.setattr(backend, "predict", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 3 .*checkpoint \(step 2\)"):
        train(spec(manifest, steps=5, checkpoint_every=2), tmp_path, backend=backend, progress=False)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["adapter"].values())
    assert not (tmp_path / ADAPTER_FILE).exists()


def test_timestep_range_and_batch_give_per_sample_t_inside_the_range(workspace, tmp_path):
    job = spec(workspace["manifest"], "vanilla-tlora-4", batch_size=3, timestep_range=(800, 1000))
    train(job, tmp_path, backend=workspace["backend"], progress=False)
    ts = [t for line in (tmp_path / LOG_FILE).read_text().splitlines() for t in json.loads(line)["t"]]
    assert len(ts) == 9 and all(800 <= t < 1000 for t in ts)


def test_several_training_images_are_the_concept_images_training_image_first(workspace, tmp_path):
    train(spec(workspace["manifest"], "lora-4", concept="mug", train_images=3), tmp_path,
          backend=workspace["backend"], progress=False)
    assert json.loads(read_adapter_metadata(tmp_path / ADAPTER_FILE)["training_images"]) == \
        ["00.jpg", "01.jpg", "02.jpg"]
    with pytest.raises(TloraBenchError, match="has 3 images; --images 4"):
        train(spec(workspace["manifest"], concept="mug", train_images=4), tmp_path / "x", backend=workspace["backend"])


def test_a_folder_refuses_another_spec_and_bad_specs_fail_before_writing(workspace, tmp_path):
    manifest = workspace["manifest"]
    train(spec(manifest, "lora-4"), tmp_path / "a", backend=workspace["backend"], progress=False)
    with pytest.raises(TloraBenchError, match="method='lora-4', not 'lora-8'"):
        train(spec(manifest, "lora-8"), tmp_path / "a", backend=workspace["backend"])
    for bad, message in ((dict(method="tlroa"), "did you mean 'tlora'"), (dict(model="tinyy"), "model backend"),
                         (dict(concept="nope"), "unknown concept 'nope'"), (dict(method="tlora-0"), "rank")):
        with pytest.raises(TloraBenchError, match=message):
            train(spec(manifest, **{"method": "tlora-4", **bad}), tmp_path / "b")
        assert not (tmp_path / "b").exists()
    with pytest.raises(TloraBenchError, match="timestep range"):
        TrainSpec(method="lora", concept="rex", timestep_range=(900, 800))


def test_recipe_takes_method_and_backend_defaults_and_overrides():
    recipe = resolve_recipe(TrainSpec(method="tlora", concept="dog6", rank=16))
    assert (recipe.label, recipe.steps, recipe.optimizer, recipe.lr) == ("tlora-16", 800, "adamw", 1e-4)
    assert recipe.adapter_config.r == 16 and recipe.adapter_config.r_min == 8
    flux = resolve_recipe(TrainSpec(method="vanilla-tlora-64", concept="dog6", model="flux"))
    assert (flux.steps, flux.optimizer, flux.lr) == (500, "prodigy", 1.0)
    assert "add_q_proj" in flux.adapter_config.target_modules
    svdiff = resolve_recipe(TrainSpec(method="svdiff", concept="dog6", steps=7, lr=5e-4))
    assert (svdiff.steps, svdiff.lr, svdiff.weight_decay) == (7, 5e-4, 0.01)
    with pytest.raises(TloraBenchError, match="has no rank"):
        resolve_recipe(TrainSpec(method="oft", concept="dog6", rank=8))


def test_a_finished_folder_answers_only_for_its_own_adapter(workspace, tmp_path):
    """The adapter's own record of its training decides "already trained", not train_spec.json (which may be
    missing or a folder); an unreadable adapter is refused, never taken as finished."""
    import shutil

    backend, manifest = workspace["backend"], workspace["manifest"]
    job = spec(manifest, "lora-4", steps=1)
    train(job, tmp_path / "a", backend=backend, progress=False)
    for name, damage, message in (
            ("no-spec", lambda d: (d / SPEC_FILE).unlink(), "an adapter trained with concept='rex', not 'mug'"),
            ("spec-folder", lambda d: ((d / SPEC_FILE).unlink(), (d / SPEC_FILE).mkdir()), "is a folder")):
        shutil.copytree(tmp_path / "a", tmp_path / name)
        damage(tmp_path / name)
        with pytest.raises(TloraBenchError, match=message):
            train(spec(manifest, "lora-4", steps=1, concept="mug"), tmp_path / name, backend=backend)
    assert train(job, tmp_path / "no-spec", backend=backend).already_done  # the same spec: its adapter stands
    shutil.copytree(tmp_path / "a", tmp_path / "cut")
    (tmp_path / "cut" / ADAPTER_FILE).write_bytes((tmp_path / "a" / ADAPTER_FILE).read_bytes()[:100])
    with pytest.raises(TloraBenchError, match=r"not a readable safetensors file.*delete"):
        train(job, tmp_path / "cut", backend=backend)


def test_a_rank_above_a_layer_width_is_refused_for_every_rank_sized_method(workspace, tmp_path):
    """tiny's attention layers are 64 wide: r=65 adds parameters and no rank, r=100000 would allocate GBs."""
    from tlora_bench.planner.sizes import size_problem

    for method in ("lora", "vanilla-tlora", "ortho-lora", "tlora"):
        recipe = resolve_recipe(TrainSpec(method=f"{method}-65", concept="rex", model="tiny"))
        assert "rank r=65 is impossible" in size_problem("tiny", recipe.adapter_config)
        assert size_problem("tiny", resolve_recipe(TrainSpec(method=f"{method}-64", concept="rex",
                                                             model="tiny")).adapter_config) is None
    with pytest.raises(TloraBenchError, match="rank r=100000 is impossible"):
        train(spec(workspace["manifest"], "lora-100000"), tmp_path / "out", backend=workspace["backend"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("values, message", [
    (dict(lr=-1.0), "lr must be a finite number above 0"), (dict(lr=float("inf")), "lr must be a finite"),
    (dict(weight_decay=-1.0), "weight_decay must be"), (dict(max_grad_norm=-1.0), "max_grad_norm must be"),
    (dict(token=""), "token must be one word"), (dict(token="{x}"), "token must be one word"),
    (dict(adapter={"alpha": "abc"}), "option 'alpha' must be a finite number"),
    (dict(adapter={"seed": 1}), "option 'seed' is the training seed"),
    (dict(adapter={"r": 8}, rank=4, method="lora"), "'r=8' and --rank 4"),
    (dict(adapter={"alpha": -4}), "alpha must be positive"),
])
def test_bad_training_values_fail_before_anything_is_written(workspace, tmp_path, values, message):
    with pytest.raises(TloraBenchError, match=message):
        train(spec(workspace["manifest"], **{"method": "lora-4", **values}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_target_modules_string_is_a_list_of_names():
    recipe = resolve_recipe(TrainSpec(method="lora-4", concept="rex", adapter={"target_modules": "to_q, to_k"}))
    assert recipe.adapter_config.target_modules == ("to_q", "to_k")
