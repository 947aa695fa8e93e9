"""The paper's numbers (docs/decisions.md section 8, `paper_tables.csv`) and which of them a result matches.

A result matches a paper row when the method name, its size (rank r, or OFT / GSOFT blocks), the model and the
number of training images all agree. Several tables can hold the same setting (T-LoRA-64 is in Tables 1, 2
and 4): the row with DINO-IS wins (Table 2), then the lowest table number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tlora_bench.adapters import parse_method
from tlora_bench.errors import TloraBenchError
from tlora_bench.resources import bundled

PAPER_FILE = "paper_tables.csv"
PAPER_COLUMNS = ("table", "model", "method", "rank_or_config", "n_images", "dino_is", "is", "ts", "notes")


@dataclass(frozen=True)
class MethodKey:
    """What a paper row is matched on."""

    name: str  # e.g. "lora", "vanilla-tlora", "svdiff"
    size: int | None  # rank r or number of blocks; None for unsized methods
    train_images: int | None = None


@functools.cache
def paper_tables() -> pd.DataFrame:
    """The paper's tables (`results/paper/`), one row per (table, model, method, size, images)."""
    with (bundled("paper") / PAPER_FILE).open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle, dtype={"rank_or_config": "string", "notes": "string"})
    return table


def method_key(method: str, identity: dict[str, Any] | None = None, train_images: int | None = None) -> MethodKey:
    """The key of a result: the method's name and size as its job recorded them (job.json `method`); for a folder
    without jobs (`tlora-bench evaluate` of images made elsewhere), its method as a user writes one ("lora-64"),
    read against the method registry; an unknown method matches no paper row. Training images: job.json's, else
    1 (the paper's setting)."""
    images = int(train_images or 1)
    if identity and identity.get("name"):
        return MethodKey(str(identity["name"]), identity.get("size"), images)
    try:
        spec, size = parse_method(method)
    except TloraBenchError:
        return MethodKey(method, None, images)
    return MethodKey(spec.name, size if size is not None else spec.size_default, images)


def paper_match(key: MethodKey, model: str | None, paper: pd.DataFrame | None = None) -> pd.Series | None:
    """The paper's row for this method on this model, or None (unknown or tiny models match nothing)."""
    if not model:
        return None
    paper = paper_tables() if paper is None else paper
    size = "" if key.size is None else str(key.size)
    sizes = paper["rank_or_config"].fillna("").astype(str)
    rows = paper[(paper["model"] == model) & (paper["method"] == key.name) & (sizes == size)
                 & (paper["n_images"] == (key.train_images or 1))]
    if rows.empty:
        return None
    rows = rows.assign(_no_dino=rows["dino_is"].isna()).sort_values(["_no_dino", "table"], kind="stable")
    return rows.drop(columns="_no_dino").iloc[0]
