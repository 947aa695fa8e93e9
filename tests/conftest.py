"""Shared fixtures: the real data folder (from $TLORA_BENCH_DATA) and tiny synthetic concepts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The DreamBooth images: $TLORA_BENCH_DATA, else the copy bundled in this checkout (`concepts/`). Skipped when
    neither exists (an installed wheel); CI sets TLORA_BENCH_REQUIRE_DATA=1, which makes that a failure."""
    from tlora_bench.errors import TloraBenchError

    try:
        from tlora_bench.concepts import resolve_data_root

        return resolve_data_root(os.environ.get("TLORA_BENCH_DATA"))
    except TloraBenchError as e:
        if os.environ.get("TLORA_BENCH_REQUIRE_DATA") == "1":
            pytest.fail(f"{e}; this run requires the dataset")
        pytest.skip(str(e))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test reads or writes the user's real caches, and none reaches the Hugging Face hub: missing
    weights fail the same way everywhere. huggingface_hub reads its settings at import time, so its module
    constants are patched too."""
    import huggingface_hub.constants as hub

    monkeypatch.setenv("TLORA_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    hub_cache = str(tmp_path_factory.mktemp("hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", hub_cache)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", hub_cache)


def write_image(path: Path, size: int = 16, seed: int = 0, fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def make_tiny_dataset(root: Path, concepts: dict[str, list[str]], mask_for: str | None = None) -> Path:
    """Folders of small random images, one per concept; optionally a mask beside one image each."""
    for index, (cid, names) in enumerate(concepts.items()):
        for j, name in enumerate(names):
            write_image(root / cid / name, seed=index * 10 + j)
        if mask_for:
            mask = np.zeros((16, 16), dtype=np.uint8)
            mask[4:12, 4:12] = 255
            Image.fromarray(mask).save(root / cid / f"{Path(mask_for).stem}_mask.png")
    return root


TINY_MANIFEST = """
[dataset]
name = "tiny"
archive_root = "tiny-main/dataset"

[[concepts]]
id = "rex"
class_word = "dog"
live = true
train_image = "01.jpg"
images = ["00.jpg", "01.jpg"]

[[concepts]]
id = "mug"
class_word = "mug"
images = ["00.jpg", "01.jpg", "02.jpg"]
"""


@pytest.fixture
def tiny_manifest_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_MANIFEST)
    return path
