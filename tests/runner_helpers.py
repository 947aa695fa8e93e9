"""A reduced smoke run on tiny data: the config, and readers of what a run folder holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from safetensors.torch import load_file

from tests.train_helpers import write_concepts
from tlora_bench.config import load_config

REDUCED = {"methods": "tlora,lora,oft-4", "ranks": "4", "steps": "all=3", "model": "tiny", "prompts": "2",
           "images_per_prompt": "1", "base_images": "2", "sample_batch_size": "2", "checkpoint_every": "1",
           "drift_prompts": "1", "segmenter": "none", "tiny_extractors": "true", "bootstrap": "50"}


def reduced_config(tmp_path: Path, **overrides):
    manifest = write_concepts(tmp_path / "data")
    return load_config(None, {**REDUCED, "name": "reduced", "concepts": str(manifest), **overrides})


def preset_file(tmp_path: Path, **overrides) -> Path:
    """The reduced config as a TOML preset file, for the CLI."""
    manifest = write_concepts(tmp_path / "data")
    values = {**REDUCED, "name": "reduced", "concepts": str(manifest), **overrides}
    path = tmp_path / "reduced.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if k != "steps")
                    + "[steps]\nall = 3\n")
    return path


def results(run_dir: Path) -> dict:
    """Everything a run produced that must not depend on how it got there: adapters, pixels, scores."""
    adapters = {str(p.relative_to(run_dir)): load_file(str(p)) for p in sorted(run_dir.glob("jobs/**/*.safetensors"))}
    images = {str(p.relative_to(run_dir)): np.asarray(Image.open(p)) for p in sorted(run_dir.glob("images/**/*.png"))}
    scores = pd.read_csv(run_dir / "evaluation" / "scores.csv")
    return {"adapters": adapters, "images": images, "scores": scores,
            "leaderboard": pd.read_csv(run_dir / "leaderboard.csv")}


def assert_same_results(a: dict, b: dict, *, cache_differs: bool = False) -> None:
    """`cache_differs`: the runs loaded the model from different caches, whose path each adapter file's
    provenance names (so its size differs by the paths' lengths)."""
    import torch

    assert a["adapters"].keys() == b["adapters"].keys() and a["adapters"]
    for name in a["adapters"]:
        x, y = a["adapters"][name], b["adapters"][name]
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    assert a["images"].keys() == b["images"].keys() and a["images"]
    assert all(np.array_equal(a["images"][k], b["images"][k]) for k in a["images"])
    pd.testing.assert_frame_equal(a["scores"], b["scores"])  # file hashes too: byte-identical PNGs
    measured = ["train_seconds_per_step", "sample_seconds_per_image", "peak_memory_bytes"]  # clocks and RSS vary
    measured += ["adapter_bytes"] if cache_differs else []
    pd.testing.assert_frame_equal(a["leaderboard"].drop(columns=measured), b["leaderboard"].drop(columns=measured))
    assert a["leaderboard"][measured].notna().all().all() and b["leaderboard"][measured].notna().all().all()
