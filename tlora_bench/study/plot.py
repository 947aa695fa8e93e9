"""The study's figure: win rate of each pair's first method per question, with Wilson 95% intervals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tlora_bench.study.questions import QUESTIONS


def plot_win_rates(table: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(table["pair"]))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.9 * len(pairs)))
    offsets = {q.number: (i - (len(QUESTIONS) - 1) / 2) * 0.22 for i, q in enumerate(QUESTIONS)}
    for q in QUESTIONS:
        rows = table[table["question"] == q.number].set_index("pair").reindex(pairs)
        y = [i + offsets[q.number] for i in range(len(pairs))]
        rate = rows["win_rate_a"].to_numpy()
        err = [rate - rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy() - rate]
        ax.errorbar(rate, y, xerr=err, fmt="o", capsize=3, label=f"{q.number}. {q.name.replace('_', ' ')}")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)  # no preference
    ax.set_yticks(range(len(pairs)), [p.replace(":", " vs ") for p in pairs])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate of the first method (Wilson 95% interval)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(pairs) < 3 else -0.15), ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
