"""Paired comparisons against a brute-force computation on a small table (docs/evaluation.md, "Paired
comparisons"): matching on the images both methods have, the per-concept differences, their bootstrap
interval, the exact sign-flip p value and Holm's correction."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from tlora_bench.metrics.paired import against_reference, holm, sign_flip_p
from tlora_bench.metrics.registry import metric_names
from tlora_bench.prompts import base_template

TEMPLATES = [base_template(), "a {0} in the jungle", "a {0} on the beach"]
CONCEPTS = ["c0", "c1", "c2", "c3", "c4"]


def scores_table(seed: int = 0) -> pd.DataFrame:
    """Three methods x five concepts x three prompts x two images, every metric random; the methods share a
    per-concept offset (correlated concepts, as real ones are); method 'b' lacks one image."""
    rng = np.random.default_rng(seed)
    offset = dict(zip(CONCEPTS, rng.normal(0, 1, len(CONCEPTS)), strict=True))
    rows = []
    for label, shift in (("ref", 0.0), ("a", 0.3), ("b", -0.1)):
        for concept, (t, template), index in itertools.product(CONCEPTS, enumerate(TEMPLATES), range(2)):
            if label == "b" and concept == "c1" and t == 1 and index == 1:
                continue
            row = {"method_label": label, "method": label, "rank": 4, "concept": concept, "class_word": "dog",
                   "template": template, "image_index": index, "seed": 100 * t + index,
                   "prompt_kind": "base" if t == 0 else "contextual", "gen_mask_fallback": False, "n_real": 3,
                   "real_mask_fallbacks": 0}
            row.update({m: offset[concept] + shift + rng.normal(0, 0.2) for m in metric_names()})
            rows.append(row)
    table = pd.DataFrame(rows)
    table.loc[table["prompt_kind"] == "contextual", ["is", "is_masked", "dino_is", "dino_is_masked"]] = np.nan
    return table


def brute_force(table: pd.DataFrame, label: str, metric: str, base: bool) -> np.ndarray:
    """Per-concept differences label - ref, by loops: only the images both have; IS-like metrics are the base
    prompt's mean, TS-like ones the mean over contextual prompts of each prompt's mean."""
    def rows(name):
        return {(r["concept"], r["template"], r["image_index"], r["seed"]): r[metric]
                for r in table[table["method_label"] == name].to_dict("records")}

    mine, ref = rows(label), rows("ref")
    common = sorted(set(mine) & set(ref))
    out = []
    for concept in CONCEPTS:
        per_side = []
        for side in (mine, ref):
            means = []
            for template in TEMPLATES[:1] if base else TEMPLATES[1:]:
                values = [side[k] for k in common if k[0] == concept and k[1] == template]
                means.append(sum(values) / len(values))
            per_side.append(sum(means) / len(means))
        out.append(per_side[0] - per_side[1])
    return np.array(out)


@pytest.mark.parametrize(("metric", "base"), [("is", True), ("ts", False)])
def test_paired_comparison_equals_brute_force(metric, base):
    table = scores_table()
    result = against_reference(table, "ref", n_resamples=500, seed=3).set_index(["method_label", "metric"])
    p_values = {}
    for label in ("a", "b"):
        d = brute_force(table, label, metric, base)
        row = result.loc[(label, metric)]
        assert row["difference"] == pytest.approx(d.mean(), abs=1e-12)
        assert row["n_concepts"] == len(CONCEPTS)
        picks = np.random.default_rng(3).integers(0, d.size, size=(500, d.size))
        low, high = np.percentile(d[picks].mean(axis=1), [2.5, 97.5])
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-12)
        flips = [abs(np.mean(np.array(signs) * d)) for signs in itertools.product((1, -1), repeat=d.size)]
        p_values[label] = np.mean([f >= abs(d.mean()) - 1e-12 for f in flips])
        assert row["p_value"] == pytest.approx(p_values[label])
    low, high = sorted(p_values.values())
    first = min(1.0, 2 * low)
    expected = {k: first if v == low else max(first, min(1.0, high)) for k, v in p_values.items()}
    for label in ("a", "b"):
        assert result.loc[(label, metric), "p_holm"] == pytest.approx(expected[label])


def test_paired_intervals_are_narrower_when_concepts_are_correlated():
    result = against_reference(scores_table(), "ref", n_resamples=500).set_index(["method_label", "metric"])
    for label in ("a", "b"):
        row = result.loc[(label, "is")]
        assert row["ci_high"] - row["ci_low"] < row["unpaired_ci_high"] - row["unpaired_ci_low"]


def test_sign_flip_and_holm_edge_cases():
    assert sign_flip_p(np.zeros(4)) == 1.0  # no difference at all
    assert sign_flip_p(np.ones(5)) == pytest.approx(2 / 32)  # all five the same sign: the two extreme vectors
    assert np.isnan(sign_flip_p(np.array([])))
    large = sign_flip_p(np.ones(40), seed=1)  # Monte Carlo past EXACT_MAX: never below 1 / (N + 1)
    assert 0 < large < 1e-3
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([float("nan"), 0.5])[0]) and holm([float("nan"), 0.5])[1] == 0.5
