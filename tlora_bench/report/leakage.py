"""Fidelity against leakage over training length (docs/report.md, "Figures"): the paper's Figure 2 and 10-12
question, measured by the synthetic concepts' exact judges (docs/synthetic.md). A method trained for several
step counts is one line through its lengths, so whether it learns the concept before it copies the training
image's background or position reads off the curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from tlora_bench.metrics.registry import get_metric
from tlora_bench.report.inputs import JobInfo
from tlora_bench.report.plots import interval_errors, method_colors

FIDELITY = "judged_fidelity"
LEAKAGES = ("judged_background_leakage", "judged_position_copying")
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


def fidelity_vs_leakage(board: pd.DataFrame, jobs: list[JobInfo],
                        order: Sequence[str] | None = None) -> Figure | None:
    """Judged fidelity against background leakage and against position copying, one point per method label
    with its 95% intervals, a line through each recipe's training lengths (labelled with its steps); None
    without the judged metrics (a run with no synthetic concept)."""
    columns = [f"{FIDELITY}_mean", *(f"{name}_mean" for name in LEAKAGES)]
    if not set(columns) <= set(board.columns):
        return None
    board = board.dropna(subset=columns)
    lengths = recipe_lengths(jobs)
    board = board[board["method_label"].astype(str).isin(lengths)]
    if board.empty:
        return None
    board = board.assign(recipe=[lengths[str(label)][0] for label in board["method_label"]],
                         steps=[lengths[str(label)][1] for label in board["method_label"]])
    colors = method_colors([*(lengths[str(label)][0] for label in order or () if str(label) in lengths),
                            *board["recipe"]])
    figure = Figure(figsize=(11, 4.8))
    for index, leakage in enumerate(LEAKAGES):
        axes = figure.add_subplot(1, len(LEAKAGES), index + 1)
        for recipe, group in board.groupby("recipe", sort=False):
            group = group.sort_values("steps")
            color = colors[str(recipe)]
            axes.plot(group[f"{leakage}_mean"], group[f"{FIDELITY}_mean"], color=color, alpha=0.6)
            axes.errorbar(group[f"{leakage}_mean"], group[f"{FIDELITY}_mean"],
                          xerr=interval_errors(group, leakage), yerr=interval_errors(group, FIDELITY), fmt="o",
                          color=color, capsize=3, label=str(recipe))
            for _, row in group.iterrows():
                axes.annotate(f"{row['steps']}", (row[f"{leakage}_mean"], row[f"{FIDELITY}_mean"]),
                              textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        axes.set(xlabel=f"{get_metric(leakage).label} (lower is better)", xlim=(-0.03, 1.03), ylim=(-0.03, 1.03),
                 ylabel=f"{get_metric(FIDELITY).label} (higher is better)")
        if index == 0:
            axes.legend(fontsize=7, title="method (points: training steps)", title_fontsize=7)
    figure.suptitle("Fidelity against leakage over training length (exact judges)")
    figure.tight_layout()
    return figure
