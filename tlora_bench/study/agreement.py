"""Inter-rater agreement: Krippendorff's alpha (nominal) and Fleiss' kappa over the trial-questions of a study.

A unit is one question of one trial; its values are the raters' answers, coded as the method they chose (or the
answer itself for anything but left/right, such as a tie), so that every category means the same thing in every
unit (docs/study.md, "Rater agreement").
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from tlora_bench.study.keyfile import Trial

NO_UNITS = "no question of a trial was answered by two or more raters"
NO_VARIATION = "every answer names the same category: agreement beyond chance is undefined (0/0)"


def answer_category(trial: Trial, answer: str) -> str:
    """The category an answer counts as: the chosen method for left/right; any other answer (a tie) is its own."""
    return trial.winner(answer) if answer in ("left", "right") else answer


def category_counts(units: Sequence[Mapping[str, Hashable]]) -> np.ndarray:
    """(units, categories) counts of the values in each unit; each unit maps rater -> value."""
    categories = sorted({v for unit in units for v in unit.values()}, key=str)
    column = {c: j for j, c in enumerate(categories)}
    counts = np.zeros((len(units), len(categories)))
    for i, unit in enumerate(units):
        for value in unit.values():
            counts[i, column[value]] += 1
    return counts


def krippendorff_alpha(counts: np.ndarray) -> tuple[float, str]:
    """Nominal alpha from (units, categories) counts (Krippendorff 2011), and why it is NaN ("" when it is not).

    Units with fewer than two values are not pairable and drop out, which is how missing answers are handled.
    """
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0:
        return math.nan, NO_UNITS
    per_unit = pairable.sum(axis=1, keepdims=True)
    # Coincidences of a category with itself, each unit's pairs weighted by 1/(m_u - 1).
    matches = (pairable * (pairable - 1) / (per_unit - 1)).sum()
    totals = pairable.sum(axis=0)
    n = totals.sum()
    expected = n * n - (totals * totals).sum()
    if expected == 0:
        return math.nan, NO_VARIATION
    return float(1 - (n - 1) * (n - matches) / expected), ""


def fleiss_kappa(counts: np.ndarray) -> tuple[float, str]:
    """Fleiss' (1971) kappa from (units, categories) counts of the units with two or more raters, and why it is
    NaN; it needs the same number of raters in every unit, unlike alpha."""
    rated = counts[counts.sum(axis=1) >= 2]
    if len(rated) == 0:
        return math.nan, NO_UNITS
    raters = rated.sum(axis=1)
    if raters.min() != raters.max():
        return math.nan, (f"questions have {int(raters.min())} to {int(raters.max())} raters; "
                          "Fleiss' kappa needs the same number for each")
    m = raters[0]
    observed = ((rated * (rated - 1)).sum(axis=1) / (m * (m - 1))).mean()
    shares = rated.sum(axis=0) / rated.sum()
    chance = (shares * shares).sum()
    if chance == 1:
        return math.nan, NO_VARIATION
    return float((observed - chance) / (1 - chance)), ""


def agreement(units: Sequence[Mapping[str, Hashable]]) -> dict[str, object]:
    """Alpha and kappa of units (rater -> value), with the number of pairable units and of raters in them."""
    pairable = [unit for unit in units if len(unit) >= 2]
    counts = category_counts(pairable)
    alpha, alpha_note = krippendorff_alpha(counts)
    kappa, kappa_note = fleiss_kappa(counts)
    return {"krippendorff_alpha": alpha, "alpha_units": len(pairable),
            "alpha_raters": len({rater for unit in pairable for rater in unit}), "alpha_note": alpha_note,
            "fleiss_kappa": kappa, "kappa_note": kappa_note}


def describe(row: Mapping[str, object]) -> str:
    """One human-readable phrase for an agreement row, e.g. "alpha 0.74 (40 questions, 4 raters)"."""
    alpha = float(row["krippendorff_alpha"])  # type: ignore[arg-type]
    if math.isnan(alpha):
        return f"alpha n/a: {row['alpha_note']}"
    return f"alpha {alpha:.2f} ({row['alpha_units']} trial-questions, {row['alpha_raters']} raters)"
