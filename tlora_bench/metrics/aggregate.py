"""Per-image rows -> per prompt -> per concept -> per method, with a bootstrap interval over concepts.

docs/decisions.md section 5, Aggregation: a prompt's score is the mean over its images; a concept's IS and DINO-IS
are its base prompt's (the real x generated matrix mean), its TS the mean over its contextual prompts (every
template but the base one, each prompt weighted equally); a method's score is the mean over concepts.
Decision: a 95% percentile bootstrap interval over concepts, resampled with replacement. Which metrics there are,
and which of the two concept rules each follows (its `aggregation`), is the metric registry's (registry.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tlora_bench.metrics.registry import metric_names, metrics

METHOD_KEYS = ["method_label", "method", "rank"]
CONCEPT_KEYS = [*METHOD_KEYS, "concept"]
PROMPT_KEYS = [*CONCEPT_KEYS, "template"]


def bootstrap_ci(values: Sequence[float], n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean: resample the values with replacement `n_resamples` times.

    numpy's Generator with a fixed seed: the same inputs always give the same interval, and two methods
    scored on the same concepts (in the same order) are resampled identically (a paired comparison).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def per_prompt(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, concept, template): the mean of each score over the prompt's images."""
    grouped = scores.groupby(PROMPT_KEYS, dropna=False, sort=True)
    table = grouped[metric_names()].mean()
    table["n_images"] = grouped.size()
    table["gen_mask_fallbacks"] = grouped["gen_mask_fallback"].sum().astype(int)
    for column in ("class_word", "prompt_kind", "n_real", "real_mask_fallbacks"):
        table[column] = grouped[column].first()
    return table.reset_index()


def per_concept(prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, concept): "base" metrics (IS family) from the base prompt, "contextual" ones (TS
    family) the mean over contextual prompts, "all" ones over every concept prompt, "drift" ones over the drift
    prompts."""
    rows = []
    for keys, group in prompts.groupby(CONCEPT_KEYS, dropna=False, sort=True):
        base = group[group["prompt_kind"] == "base"]
        contextual = group[group["prompt_kind"] == "contextual"]
        prompts_of = {"base": base, "contextual": contextual, "all": group[group["prompt_kind"] != "drift"],
                      "drift": group[group["prompt_kind"] == "drift"]}
        row = dict(zip(CONCEPT_KEYS, keys, strict=True))
        row["class_word"] = group["class_word"].iloc[0]
        for metric in metrics():
            if metric.aggregation == "base":
                row[metric.name] = float(base[metric.name].iloc[0]) if len(base) else float("nan")
            else:  # each prompt weighted once; a prompt without a value (NaN) is left out of the mean
                values = prompts_of[metric.aggregation][metric.name]
                row[metric.name] = float(values.mean()) if values.notna().any() else float("nan")
        row["n_base_images"] = int(base["n_images"].sum())
        row["n_ts_prompts"] = int(contextual["ts"].notna().sum())
        row["n_real"] = int(group["n_real"].iloc[0])
        row["real_mask_fallbacks"] = int(group["real_mask_fallbacks"].iloc[0])
        row["gen_mask_fallbacks"] = int(base["gen_mask_fallbacks"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def per_method(concepts: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """One row per (method, metric): mean over concepts, bootstrap interval, number of concepts with a value."""
    rows = []
    for keys, group in concepts.groupby(METHOD_KEYS, dropna=False, sort=True):
        group = group.sort_values("concept")  # a fixed order, so the resampling is paired across methods
        for metric in metric_names():
            values = group[metric].dropna().to_numpy()
            low, high = bootstrap_ci(values, n_resamples, seed, level)
            rows.append({**dict(zip(METHOD_KEYS, keys, strict=True)), "metric": metric,
                         "mean": float(values.mean()) if values.size else float("nan"),
                         "ci_low": low, "ci_high": high, "n_concepts": int(values.size),
                         "ci_level": level, "bootstrap_resamples": n_resamples, "bootstrap_seed": seed})
    table = pd.DataFrame(rows)
    if "rank" in table:  # integers, empty for methods without a rank (a column with gaps is float otherwise)
        table["rank"] = table["rank"].astype("Int64")
    return table


def __getattr__(name: str) -> Any:
    """IS_METRICS ("base" aggregation), TS_METRICS ("contextual") and METRICS (all), read from the registry on
    each access (PEP 562), so that a metric registered after this import is in them."""
    lists = {"IS_METRICS": "base", "TS_METRICS": "contextual", "METRICS": None}
    if name not in lists:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return tuple(metric_names(lists[name]))
