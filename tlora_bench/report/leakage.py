"""Fidelity against leakage over training length (docs/report.md, "Figures"): the paper's Figure 2 and 10-12
question, measured by the synthetic concepts' exact judges (docs/synthetic.md). A method trained for several
step counts is one line through its lengths, so whether it learns the concept before it copies the training
image's background or position reads off the curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tlora_bench.metrics.aggregate import bootstrap_ci
from tlora_bench.metrics.registry import JUDGED_METRICS, get_metric
from tlora_bench.report.inputs import JobInfo
from tlora_bench.report.plots import interval_errors, method_colors

FIDELITY = JUDGED_METRICS[0]
LEAKAGES = JUDGED_METRICS[1:3]  # background leakage, position copying
# What a training length does not change: the keys of a job's TrainSpec that differ between its lengths' jobs
# or between the concepts and seeds of one variant.
_NOT_RECIPE = ("steps", "concept", "seed", "manifest", "data_dir", "checkpoint_every")


def recipe_lengths(jobs: list[JobInfo]) -> dict[str, tuple[str, int]]:
    """image label -> (its recipe's name, its steps), for each label whose jobs share one recipe and step count.
    Labels whose TrainSpecs differ only in steps share a recipe, named after its method label (after its first
    variant's label where two recipes share a method label, as two learning rates of lora-4 do)."""
    found: dict[str, set[tuple[str, str, int]]] = {}
    for job in jobs:
        if isinstance(job.train.get("steps"), int):
            found.setdefault(job.image_label, set()).add((_recipe_key(job.train), str(job.method),
                                                          job.train["steps"]))
    single = {label: next(iter(values)) for label, values in found.items() if len(values) == 1}
    recipes: dict[str, list[str]] = {}
    for label, (key, _, _) in single.items():
        recipes.setdefault(key, []).append(label)
    methods = [single[labels[0]][1] for labels in recipes.values()]
    names = {key: single[labels[0]][1] if methods.count(single[labels[0]][1]) == 1 else labels[0]
             for key, labels in recipes.items()}
    return {label: (names[key], steps) for label, (key, _, steps) in single.items()}


def _recipe_key(train: dict[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in train.items() if k not in _NOT_RECIPE))


def pooled_lengths(concepts: pd.DataFrame, jobs: list[JobInfo]) -> pd.DataFrame | None:
    """One row per (recipe, steps) in the order first met: each judged metric's mean over concepts, a concept's
    value the mean over its seed labels (`.seed<s>`: one training each), with a 95% bootstrap interval over
    concepts (docs/decisions.md section 5); None without the judged metrics or a recipe with steps."""
    names = [FIDELITY, *LEAKAGES]
    if not set(names) <= set(concepts.columns):
        return None
    lengths = recipe_lengths(jobs)
    rows = concepts[concepts["method_label"].astype(str).isin(lengths)]
    if rows.empty:
        return None
    rows = rows.assign(recipe=[lengths[str(label)][0] for label in rows["method_label"]],
                       steps=[lengths[str(label)][1] for label in rows["method_label"]])
    by_concept = rows.groupby(["recipe", "steps", "concept"], sort=False)[names].mean()
    out = []
    for (recipe, steps), group in by_concept.groupby(level=[0, 1], sort=False):
        row = {"recipe": recipe, "steps": int(steps), "n_concepts": len(group)}
        for name in names:
            values = group[name].dropna().sort_index(level="concept").to_numpy()
            low, high = bootstrap_ci(values)
            row.update({f"{name}_mean": values.mean() if values.size else float("nan"),
                        f"{name}_ci_low": low, f"{name}_ci_high": high})
        out.append(row)
    return pd.DataFrame(out)


def fidelity_vs_leakage(concepts: pd.DataFrame, jobs: list[JobInfo],
                        order: Sequence[str] | None = None) -> Figure | None:
    """Judged fidelity against background leakage and against position copying (`pooled_lengths`): a line
    through each recipe's training lengths, each point labelled with its steps and drawn with its 95% intervals;
    None without the judged metrics (a run with no synthetic concept)."""
    table = pooled_lengths(concepts, jobs)
    if table is None:
        return None
    lengths = recipe_lengths(jobs)
    colors = method_colors([*(lengths[str(label)][0] for label in order or () if str(label) in lengths),
                            *table["recipe"]])
    figure = Figure(figsize=(11, 4.8))
    for index, leakage in enumerate(LEAKAGES):
        axes = figure.add_subplot(1, len(LEAKAGES), index + 1)
        for recipe, group in table.groupby("recipe", sort=False):
            group = group.sort_values("steps")
            color = colors[str(recipe)]
            axes.plot(group[f"{leakage}_mean"], group[f"{FIDELITY}_mean"], color=color, alpha=0.6)
            axes.errorbar(group[f"{leakage}_mean"], group[f"{FIDELITY}_mean"],
                          xerr=interval_errors(group, leakage), yerr=interval_errors(group, FIDELITY), fmt="o",
                          color=color, capsize=3, label=str(recipe))
            for _, row in group.iterrows():
                axes.annotate(f"{row['steps']}", (row[f"{leakage}_mean"], row[f"{FIDELITY}_mean"]),
                              textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        right = float(np.nanmax(table[f"{leakage}_ci_high"].to_numpy(float), initial=0.0))
        axes.set(xlabel=f"{get_metric(leakage).label} (lower is better)", xlim=(-0.02, min(1.02, right + 0.05)),
                 ylim=(-0.03, 1.03), ylabel=f"{get_metric(FIDELITY).label} (higher is better)")
        if index == 0:
            axes.legend(fontsize=7, title="method (points: training steps)", title_fontsize=7)
    figure.suptitle("Fidelity against leakage over training length (exact judges; mean over concepts, 95% intervals)")
    figure.tight_layout()
    return figure
