"""Rater agreement against published worked examples: Krippendorff's alpha and Fleiss' kappa (docs/study.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlora_bench.study.agreement import (
    NO_UNITS,
    NO_VARIATION,
    agreement,
    answer_category,
    describe,
    fleiss_kappa,
    krippendorff_alpha,
)
from tlora_bench.study.keyfile import Trial
from tlora_bench.study.stats import competition_ranks

_ = None  # a missing answer


def _units(table: dict[str, list[object]]) -> list[dict[str, object]]:
    """Units (rater -> value) from one row of values per rater, one column per unit, `_` where missing."""
    return [{rater: v for rater, v in zip(table, column, strict=True) if v is not None}
            for column in zip(*table.values(), strict=True)]


def test_alpha_krippendorff_2011_nominal_example_with_missing_data() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
    # values 1-5, missing data; published nominal alpha = 0.743 over 40 pairable values (unit 12 has one value).
    units = _units({"A": [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
                    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
                    "C": [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
                    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _]})
    result = agreement(units)
    assert round(result["krippendorff_alpha"], 3) == 0.743
    assert (result["alpha_units"], result["alpha_raters"], result["alpha_note"]) == (11, 4, "")
    assert math.isnan(result["fleiss_kappa"]) and result["kappa_note"].startswith("questions have 2 to 4 raters")
    assert describe(result) == "alpha 0.74 (11 trial-questions, 4 raters)"


def test_alpha_krippendorff_2011_binary_example() -> None:
    # Krippendorff (2011), section A: 2 observers, 10 units, binary data; published alpha = 0.095.
    units = _units({"A": [0, 1, 0, 0, 0, 0, 0, 0, 1, 0], "B": [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]})
    assert round(agreement(units)["krippendorff_alpha"], 3) == 0.095


def test_alpha_perfect_agreement_is_one_and_undefined_cases_say_why() -> None:
    perfect = _units({"r1": ["x", "y", "x", _], "r2": ["x", "y", "x", "y"], "r3": [_, "y", "x", "y"]})
    result = agreement(perfect)
    assert result["krippendorff_alpha"] == 1.0 and result["alpha_units"] == 4
    constant = _units({"r1": ["x", "x"], "r2": ["x", "x"]})  # agreement, but nothing to tell it from chance
    assert agreement(constant)["alpha_note"] == NO_VARIATION and math.isnan(agreement(constant)["krippendorff_alpha"])
    alone = [{"r1": "x"}, {"r2": "y"}]  # no question with two raters
    result = agreement(alone)
    assert math.isnan(result["krippendorff_alpha"]) and result["alpha_note"] == NO_UNITS
    assert result["alpha_units"] == 0 and describe(result) == f"alpha n/a: {NO_UNITS}"
    assert math.isnan(result["fleiss_kappa"]) and result["kappa_note"] == NO_UNITS


def test_fleiss_1971_wikipedia_worked_example() -> None:
    # Fleiss' kappa, Wikipedia "Fleiss' kappa", worked example (after Fleiss 1971): 10 subjects, 14 raters each,
    # 5 categories; published kappa = 0.210 (P-bar = 0.378, P-e = 0.213).
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                       [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    kappa, note = fleiss_kappa(counts)
    assert round(kappa, 3) == 0.210 and note == ""
    alpha, _ = krippendorff_alpha(counts)
    assert alpha == pytest.approx(kappa, abs=0.01)  # alpha is kappa with a small-sample correction


def test_a_tie_is_its_own_category() -> None:
    trial = Trial("t1", "a:b", "a", "b", "rex", "{0}", "V* dog", 0, 0, 1, 1, "a/x.png", "b/x.png", "b", "a", 0, "s")
    assert [answer_category(trial, x) for x in ("left", "right", "tie")] == ["b", "a", "tie"]
    # A tie beside a choice is a disagreement (3 categories: 1 - 5 * 2 / 22), not a missing answer, which would
    # leave two unanimous units and alpha = 1.
    units = [{"r1": "a", "r2": "tie"}, {"r1": "b", "r2": "b"}, {"r1": "a", "r2": "a"}]
    assert agreement(units)["krippendorff_alpha"] == pytest.approx(1 - 10 / 22)


def test_competition_ranks_share_ties() -> None:
    assert competition_ranks(np.array([0.5, 0.5, -1.0])).tolist() == [1, 1, 3]
    assert competition_ranks(np.array([-1.0, 1.0, 1.0 + 1e-9, 0.0])).tolist() == [4, 1, 1, 3]
    assert competition_ranks(np.array([0.3, 0.2, 0.1])).tolist() == [1, 2, 3]
