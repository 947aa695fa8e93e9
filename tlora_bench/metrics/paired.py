"""Paired comparisons (docs/evaluation.md, "Paired comparisons"): a method against a reference, image by image.

Two methods scored on the same concepts, prompts and seeds are compared on exactly what both have: their
per-image rows are matched on (concept, template, image index, seed), each side is aggregated from the matched
rows alone by the usual rules (aggregate.py), and the per-concept differences give

    mean difference     the mean over concepts of (method - reference)
    interval            the percentile bootstrap over concepts of that mean (aggregate.bootstrap_ci)
    p value             the sign-flip permutation test of a zero mean difference, two-sided: exact (all 2^n
                        sign vectors) up to EXACT_MAX concepts, else PERMUTATIONS random ones, (1 + k) / (1 + N)
    Holm                the p values of one metric corrected across every method compared with the reference

Concept scores of two methods are correlated (an easy concept is easy for both), so this interval is narrower
than the difference of the two unpaired intervals, which is given beside it for the comparison.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from tlora_bench.metrics import aggregate
from tlora_bench.metrics.registry import metric_names

MATCH_KEYS = ["concept", "template", "image_index", "seed"]
EXACT_MAX = 16  # 2^16 sign vectors: exact and still instant
PERMUTATIONS = 20_000
COLUMNS = ["method_label", "reference", "metric", "n_concepts", "mean", "reference_mean", "difference", "ci_low",
           "ci_high", "unpaired_ci_low", "unpaired_ci_high", "p_value", "p_holm", "ci_level", "bootstrap_resamples"]


def sign_flip_p(differences: np.ndarray, seed: int = 0) -> float:
    """Two-sided p value of mean(differences) = 0 under random signs; NaN without differences."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return float("nan")
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, observed)  # flips that only reorder a float sum count as equal
    if d.size <= EXACT_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        return float(np.mean(np.abs(signs @ d / d.size) >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(PERMUTATIONS, d.size))
    extreme = int(np.sum(np.abs(signs @ d / d.size) >= observed - tolerance))
    return (1 + extreme) / (1 + PERMUTATIONS)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p values (NaN ones are left out of the family)."""
    known = sorted((p, i) for i, p in enumerate(p_values) if not np.isnan(p))
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for position, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - position) * p))
        adjusted[i] = running
    return adjusted


def concept_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-concept scores of one method's per-image rows (the aggregation of aggregate.py)."""
    return aggregate.per_concept(aggregate.per_prompt(scores)).set_index("concept")


def _matched(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of `a` and of `b` whose (concept, template, image index, seed) the other has too."""
    def keys(table: pd.DataFrame) -> pd.Series:
        return table[MATCH_KEYS].astype(str).agg("\x1f".join, axis=1)

    ka, kb = keys(a), keys(b)
    return a[ka.isin(set(kb))], b[kb.isin(set(ka))]


def compare(a: pd.DataFrame, b: pd.DataFrame, n_resamples: int = 1000, seed: int = 0,
            level: float = 0.95) -> pd.DataFrame:
    """One row per metric: `a` (one method's per-image rows) minus `b` (the reference's), paired by concept
    on the images both have; the unpaired interval of the difference, from each side's own interval, beside."""
    ma, mb = _matched(a, b)
    ca, cb = (concept_scores(t.assign(method_label="x", method="x", rank=pd.NA)) if len(t) else None
              for t in (ma, mb))
    rows = []
    for metric in metric_names():
        if ca is None or cb is None or metric not in ca or metric not in cb:
            d = va = vb = np.array([])
        else:
            both = pd.concat([ca[metric], cb[metric]], axis=1, keys=["a", "b"]).dropna().sort_index()
            va, vb = both["a"].to_numpy(), both["b"].to_numpy()
            d = va - vb
        low, high = aggregate.bootstrap_ci(d, n_resamples, seed, level)
        (la, ha), (lb, hb) = (aggregate.bootstrap_ci(v, n_resamples, seed, level) for v in (va, vb))
        rows.append({"metric": metric, "n_concepts": int(d.size), "mean": _mean(va), "reference_mean": _mean(vb),
                     "difference": _mean(d), "ci_low": low, "ci_high": high, "unpaired_ci_low": la - hb,
                     "unpaired_ci_high": ha - lb, "p_value": sign_flip_p(d, seed), "ci_level": level,
                     "bootstrap_resamples": n_resamples})
    return pd.DataFrame(rows)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def against_reference(scores: pd.DataFrame, reference: str, n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> pd.DataFrame:
    """Every other method label of `scores` against `reference`, Holm-corrected per metric across them."""
    labels = [str(label) for label in dict.fromkeys(scores["method_label"]) if str(label) != reference]
    ref_rows = scores[scores["method_label"].astype(str) == reference]
    tables = [compare(scores[scores["method_label"].astype(str) == label], ref_rows, n_resamples, seed, level)
              .assign(method_label=label, reference=reference) for label in labels]
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    return holm_by_metric(pd.concat(tables, ignore_index=True))


def holm_by_metric(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (compare's rows for several methods) with p_holm: each metric's p values corrected together."""
    table = table.assign(p_holm=np.nan)
    for _, group in table.groupby("metric", sort=False):
        table.loc[group.index, "p_holm"] = holm(group["p_value"].tolist())
    return table[COLUMNS]
