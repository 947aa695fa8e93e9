"""Aggregation per prompt, concept and method, and the bootstrap interval, against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tlora_bench.metrics import bootstrap_ci, per_concept, per_method, per_prompt
from tlora_bench.metrics.registry import metric_names

BASE, JUNGLE, BEACH = "a photo of a {0}", "a {0} in the jungle", "a {0} on the beach"
NAN = float("nan")
BUILTINS = ("is", "is_masked", "dino_is", "dino_is_masked", "ts", "ts_class_kept")


def _row(concept, template, is_=NAN, ts=NAN, ts_kept=NAN, method="lora", fallback=False):
    kind = "base" if template == BASE else "contextual"
    return {"concept": concept, "class_word": "dog", "method_label": method, "method": method, "rank": None,
            "template": template, "prompt_kind": kind, "is": is_,
            "is_masked": NAN if math.isnan(is_) else is_ + 0.1, "dino_is": NAN if math.isnan(is_) else is_ - 0.3,
            "dino_is_masked": NAN if math.isnan(is_) else is_ - 0.2, "ts": ts, "ts_class_kept": ts_kept,
            "gen_mask_fallback": fallback, "n_real": 3, "real_mask_fallbacks": 0,
            **{name: NAN for name in metric_names() if name not in BUILTINS}}  # any other registered metric


@pytest.fixture
def scores() -> pd.DataFrame:
    rows = [
        _row("A", BASE, is_=0.8, ts=0.10, ts_kept=0.3), _row("A", BASE, is_=0.6, ts=0.20, ts_kept=0.3, fallback=True),
        _row("A", JUNGLE, ts=0.2, ts_kept=0.5), _row("A", JUNGLE, ts=0.4, ts_kept=0.7),
        _row("A", BEACH, ts=0.1, ts_kept=0.2),
        _row("B", BASE, is_=0.5, ts=0.0, ts_kept=0.1), _row("B", JUNGLE, ts=0.4, ts_kept=0.5),
        _row("A", BASE, is_=0.9, method="tlora"), _row("A", JUNGLE, ts=0.3, ts_kept=0.6, method="tlora"),
    ]
    table = pd.DataFrame(rows)
    table["rank"] = table["rank"].astype("Int64")
    return table


def test_per_prompt_is_the_mean_over_its_images(scores):
    prompts = per_prompt(scores).set_index(["method_label", "concept", "template"])
    assert prompts.loc[("lora", "A", BASE), "is"] == pytest.approx(0.7)
    assert prompts.loc[("lora", "A", BASE), "dino_is"] == pytest.approx(0.4)
    assert prompts.loc[("lora", "A", JUNGLE), "ts"] == pytest.approx(0.3)
    assert prompts.loc[("lora", "A", JUNGLE), "ts_class_kept"] == pytest.approx(0.6)
    assert math.isnan(prompts.loc[("lora", "A", JUNGLE), "is"])
    assert prompts.loc[("lora", "A", BASE), "n_images"] == 2
    assert prompts.loc[("lora", "A", BASE), "gen_mask_fallbacks"] == 1
    assert len(prompts) == 7  # lora: 3 prompts of A, 2 of B; tlora: 2 of A


def test_per_concept_takes_is_from_the_base_prompt_and_ts_over_contextual_prompts(scores):
    concepts = per_concept(per_prompt(scores)).set_index(["method_label", "concept"])
    a = concepts.loc[("lora", "A")]
    assert a["is"] == pytest.approx(0.7) and a["is_masked"] == pytest.approx(0.8)
    assert a["dino_is"] == pytest.approx(0.4) and a["dino_is_masked"] == pytest.approx(0.5)
    # TS: mean over the contextual prompts (0.3 and 0.1), each prompt weighted once; the base prompt's 0.15 and
    # the image-weighted mean (0.2 + 0.4 + 0.1) / 3 are both not it.
    assert a["ts"] == pytest.approx(0.2) and a["ts_class_kept"] == pytest.approx(0.4)
    assert a["n_base_images"] == 2 and a["n_ts_prompts"] == 2 and a["gen_mask_fallbacks"] == 1
    b = concepts.loc[("lora", "B")]
    assert b["is"] == pytest.approx(0.5) and b["ts"] == pytest.approx(0.4)


def test_per_method_means_over_concepts_with_a_bootstrap_interval(scores):
    methods = per_method(per_concept(per_prompt(scores)), n_resamples=1000, seed=0)
    lora = methods[methods["method_label"] == "lora"].set_index("metric")
    assert lora.loc["is", "mean"] == pytest.approx(0.6) and lora.loc["ts", "mean"] == pytest.approx(0.3)
    # Two concepts: resampled means are 0.5, 0.6 or 0.7 with chances 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # percentiles of 1,000 resamples are the two values themselves.
    assert (lora.loc["is", "ci_low"], lora.loc["is", "ci_high"]) == pytest.approx((0.5, 0.7))
    assert (lora.loc["ts", "ci_low"], lora.loc["ts", "ci_high"]) == pytest.approx((0.2, 0.4))
    assert set(lora.loc[["is", "is_masked", "dino_is", "dino_is_masked", "ts", "ts_class_kept"], "n_concepts"]) == {2}
    tlora = methods[methods["method_label"] == "tlora"].set_index("metric")
    assert tlora.loc["is", "mean"] == pytest.approx(0.9) and tlora.loc["is", "n_concepts"] == 1
    assert (tlora.loc["is", "ci_low"], tlora.loc["is", "ci_high"]) == pytest.approx((0.9, 0.9))
    assert list(methods.loc[methods["method_label"] == "lora", "metric"]) == metric_names()
    assert set(methods["bootstrap_resamples"]) == {1000} and set(methods["bootstrap_seed"]) == {0}


def test_a_concept_without_contextual_prompts_has_no_ts_and_is_not_counted(scores):
    only_base = scores[(scores["concept"] == "B") & (scores["prompt_kind"] == "base")]
    concepts = per_concept(per_prompt(pd.concat([scores[scores["concept"] == "A"], only_base])))
    assert math.isnan(concepts.set_index(["method_label", "concept"]).loc[("lora", "B"), "ts"])
    lora = per_method(concepts).query("method_label == 'lora'").set_index("metric")
    assert lora.loc["ts", "n_concepts"] == 1 and lora.loc["is", "n_concepts"] == 2


def test_bootstrap_by_hand():
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.42]) == (0.42, 0.42)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_bootstrap_is_the_documented_recipe_and_contains_the_mean():
    values = np.random.default_rng(7).normal(0.8, 0.05, size=25)
    picks = np.random.default_rng(0).integers(0, 25, size=(1000, 25))  # numpy Generator, seed 0, 1,000 resamples
    assert bootstrap_ci(values) == pytest.approx(tuple(np.percentile(values[picks].mean(axis=1), [2.5, 97.5])))
    for seed in range(5):
        sample = np.random.default_rng(seed).random(6)
        low, high = bootstrap_ci(sample, seed=seed)
        assert low <= sample.mean() <= high
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    narrow, wide = bootstrap_ci(values, level=0.5), bootstrap_ci(values, level=0.95)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
