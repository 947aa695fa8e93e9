"""Every method on both tiny backends: a short training run writes an adapter that loads back and samples."""

from __future__ import annotations

import pytest

from tests.train_helpers import SEVEN_METHODS, load_tiny, spec, write_concepts
from tlora_bench.adapters import adapter_layers, detach_adapters
from tlora_bench.adapters.io import load_adapter
from tlora_bench.sample import SampleOptions, generate
from tlora_bench.train import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return {"manifest": write_concepts(root / "data"),
            "backends": {name: load_tiny(name, root / "cache") for name in ("tiny-sdxl", "tiny-flux")}}


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
@pytest.mark.parametrize("method", SEVEN_METHODS)
def test_train_reload_and_sample(setup, tmp_path, model, method):
    backend = setup["backends"][model]
    result = train(spec(setup["manifest"], method, model=model, steps=2), tmp_path / "train", backend=backend,
                   progress=False)
    load_adapter(backend.denoiser, result.adapter_path)
    try:
        assert adapter_layers(backend.denoiser)
    finally:
        detach_adapters(backend.denoiser)
    sampled = generate(result.adapter_path, tmp_path / "images", options=SampleOptions(prompts=1, base_images=1),
                       backend=backend, progress=False)
    assert sampled.n_generated == 1 and (sampled.folder / "images.jsonl").is_file()
    size = backend.spec.resolution
    from PIL import Image

    assert Image.open(next(sampled.folder.glob("*.png"))).size == (size, size)


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
def test_a_resumed_run_equals_an_uninterrupted_one_on_both_backends(setup, tmp_path, model):
    """tiny-flux trains with Prodigy (its optimizer state must resume too), tiny-sdxl with AdamW."""
    import torch

    from tests.train_helpers import adapter_tensors

    backend = setup["backends"][model]
    job = spec(setup["manifest"], "tlora-4", model=model, steps=4, checkpoint_every=2)
    whole = train(job, tmp_path / "whole", backend=backend, progress=False)

    def crash(row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(job, tmp_path / "cut", backend=backend, progress=False, on_step=crash)
    resumed = train(job, tmp_path / "cut", backend=backend, progress=False)
    assert resumed.resumed_from == 2
    x, y = adapter_tensors(whole.adapter_path), adapter_tensors(resumed.adapter_path)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    again = train(job, tmp_path / "again", backend=backend, progress=False)  # the same seed twice
    z = adapter_tensors(again.adapter_path)
    assert all(torch.equal(x[k], z[k]) for k in x)
