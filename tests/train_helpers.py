"""Shared pieces of the trainer and sampler tests: a tiny concept set on disk and loaded tiny backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import TINY_MANIFEST, make_tiny_dataset
from tlora_bench.train import TrainSpec

SEVEN_METHODS = ("lora-4", "vanilla-tlora-4", "ortho-lora-4", "tlora-4", "oft-4", "gsoft-4", "svdiff")


def write_concepts(root: Path) -> Path:
    """The conftest tiny manifest ('rex' the dog, 'mug') with random 16 px images; returns the manifest."""
    make_tiny_dataset(root, {"rex": ["00.jpg", "01.jpg"], "mug": ["00.jpg", "01.jpg", "02.jpg"]})
    manifest = root / "tiny.toml"
    manifest.write_text(TINY_MANIFEST)
    return manifest


def spec(manifest: Path, method: str = "tlora-4", model: str = "tiny", **values) -> TrainSpec:
    return TrainSpec(method=method, concept=values.pop("concept", "rex"), model=model, manifest=str(manifest),
                     steps=values.pop("steps", 3), **values)


def load_tiny(name: str, cache: Path):
    """A tiny backend built into `cache` and loaded through the real from_pretrained path."""
    from tlora_bench.models import load_backend

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLORA_BENCH_CACHE", str(cache))
        return load_backend(name, device="cpu")


def adapter_tensors(path: Path) -> dict:
    return load_file(str(path))
