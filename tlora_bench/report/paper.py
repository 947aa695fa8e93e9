"""The paper's numbers (docs/decisions.md section 8, `paper_tables.csv`) and which of them a method label matches.

A label matches a paper row when the method name, its size (rank r, or OFT / GSOFT blocks), the model and the
number of training images all agree. Several tables can hold the same setting (T-LoRA-64 is in Tables 1, 2
and 4): the row with DINO-IS wins (Table 2), then the lowest table number.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import pandas as pd

from tlora_bench.resources import bundled

PAPER_FILE = "paper_tables.csv"
PAPER_COLUMNS = ("table", "model", "method", "rank_or_config", "n_images", "dino_is", "is", "ts", "notes")
_LABEL = re.compile(r"(?P<name>[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*?)(?:-(?P<size>\d+))?(?:-img(?P<images>\d+))?")


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


def parse_label(label: str) -> MethodKey:
    """'lora-64' -> (lora, 64); 'lora-64-img2' -> (lora, 64, 2 images); 'svdiff.seed1' -> (svdiff, None)."""
    base = label.split(".seed")[0]
    match = _LABEL.fullmatch(base)
    if match is None:
        return MethodKey(base, None)
    size, images = match["size"], match["images"]
    return MethodKey(match["name"], int(size) if size else None, int(images) if images else None)


def method_key(label: str, method: str | None = None, train_images: int | None = None) -> MethodKey:
    """The key of a result: the trained method label (job.json `train.method`) when known, else the folder label;
    training images from job.json, else a '-imgN' suffix of the label, else 1 (the paper's setting)."""
    from_label = parse_label(label)
    key = parse_label(method) if method else from_label
    images = train_images or key.train_images or from_label.train_images or 1
    return MethodKey(key.name, key.size, int(images))


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
