"""The study's figure: win rate of each pair's first method per question, with Wilson 95% intervals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from tlora_bench.study.agreement import describe
from tlora_bench.study.questions import QUESTIONS


def plot_title(table: pd.DataFrame, agreement: pd.DataFrame | None) -> str:
    """The figure's title: the agreement each question's win rates rest on, and why any interval is degenerate."""
    lines = []
    if agreement is not None:
        lines.append("Rater agreement over all pairs:")
        lines += [f"{row.question}. {row.question_name.replace('_', ' ')}: Krippendorff's "
                  f"{describe(row._asdict())}" for row in agreement.itertuples()]
    if "interval_degenerate" in table and table["interval_degenerate"].any():
        notes = sorted(set(table.loc[table["interval_degenerate"], "interval_note"]))
        lines.append("hollow: degenerate interval (" + "; ".join(notes) + ")")
    return "\n".join(textwrap.fill(line, 100, subsequent_indent="    ") for line in lines)


def plot_win_rates(table: pd.DataFrame, path: Path, agreement: pd.DataFrame | None = None) -> Path:
    """Win rates with their intervals; `agreement` (one row per question, over all pairs) goes into the title."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(table["pair"]))
    title = plot_title(table, agreement)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.9 * len(pairs) + 0.18 * title.count("\n")))
    offsets = {q.number: (i - (len(QUESTIONS) - 1) / 2) * 0.22 for i, q in enumerate(QUESTIONS)}
    for q in QUESTIONS:
        rows = table[table["question"] == q.number].set_index("pair").reindex(pairs)
        y = [i + offsets[q.number] for i in range(len(pairs))]
        rate = rows["win_rate_a"].to_numpy()
        err = [rate - rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy() - rate]
        ax.errorbar(rate, y, xerr=err, fmt="o", capsize=3, label=f"{q.number}. {q.name.replace('_', ' ')}")
        if "interval_degenerate" in rows:  # hollow markers: the title says why these intervals say little
            hollow = rows["interval_degenerate"].eq(True).to_numpy()
            ax.plot(rate[hollow], np.asarray(y)[hollow], "o", color="white", markersize=3, zorder=3)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)  # no preference
    ax.set_yticks(range(len(pairs)), [p.replace(":", " vs ") for p in pairs])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate of the first method (Wilson 95% interval)")
    if title:
        ax.set_title(title, fontsize=7, loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(pairs) < 3 else -0.15), ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
