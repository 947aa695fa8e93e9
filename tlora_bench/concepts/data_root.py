"""Where concept images live: --data-dir, then $TLORA_BENCH_DATA, then the copy bundled in a checkout
(`concepts/`), then the per-user download cache."""

from __future__ import annotations

import os
from pathlib import Path

from tlora_bench.cache import cache_dir
from tlora_bench.errors import TloraBenchError
from tlora_bench.resources import bundled_concept_images

DATA_ENV = "TLORA_BENCH_DATA"
BUNDLED_DATASET = "dreambooth"  # the dataset whose images a checkout's concepts/ folder holds


def download_dir(dataset: str = "dreambooth") -> Path:
    """Where `tlora-bench concepts download` unpacks a dataset."""
    return cache_dir() / "datasets" / dataset


def resolve_data_root(data_dir: str | Path | None = None, dataset: str = "dreambooth") -> Path:
    """The data folder to read concept images from, checked to exist; the error says where it came from."""
    if data_dir:
        path, origin = Path(data_dir).expanduser(), "--data-dir"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    elif dataset == BUNDLED_DATASET and bundled_concept_images() is not None:
        path, origin = bundled_concept_images(), "the copy bundled in this checkout"
    else:
        path, origin = download_dir(dataset), "the download cache"
    if path.exists() and not path.is_dir():
        raise TloraBenchError(f"data folder '{path}' (from {origin}) is a file, not a folder; point {origin} at the "
                              f"folder that holds one sub-folder per concept")
    if not path.is_dir():
        raise TloraBenchError(
            f"data folder '{path}' (from {origin}) does not exist; run `tlora-bench concepts download`, "
            f"or pass --data-dir / set {DATA_ENV} to a copy of the {dataset} dataset")
    return path
