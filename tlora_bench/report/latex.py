"""leaderboard.tex: the leaderboard's headline metrics as a booktabs table for a paper (docs/report.md).

Each cell is mean ± half the width of the 95% bootstrap interval (the interval itself is in leaderboard.csv);
the best mean of a metric with a direction is bold, every method that ties with it at the printed precision too.
Needs \\usepackage{booktabs} in the preamble.
"""

from __future__ import annotations

import math

import pandas as pd

from tlora_bench.metrics.registry import Metric, headline_metrics
from tlora_bench.report.tables import board_caption

DIGITS = 3
SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
           "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: object) -> str:
    """Text safe inside a LaTeX table cell."""
    return "".join(SPECIAL.get(char, char) for char in str(text))


def _best(board: pd.DataFrame, metric: Metric) -> float | None:
    """The best mean at the printed precision, or None for a metric without a direction (or no values)."""
    values = pd.to_numeric(board[f"{metric.name}_mean"], errors="coerce").dropna().round(DIGITS)
    if metric.higher_is_better is None or values.empty:
        return None
    return float(values.max() if metric.higher_is_better else values.min())


def _cell(row: pd.Series, metric: Metric, best: float | None) -> str:
    mean, low, high = (float(row[f"{metric.name}_{part}"]) for part in ("mean", "ci_low", "ci_high"))
    if math.isnan(mean):
        return "--"
    text = f"{mean:.{DIGITS}f}"
    if best is not None and round(mean, DIGITS) == best:
        text = rf"\textbf{{{text}}}"
    if not (math.isnan(low) or math.isnan(high)):
        text += rf" $\pm$ {(high - low) / 2:.{DIGITS}f}"
    return text


def _arrow(metric: Metric) -> str:
    return {True: r" $\uparrow$", False: r" $\downarrow$"}.get(metric.higher_is_better, "")


def leaderboard_latex(board: pd.DataFrame) -> str:
    """The table environment, caption first (the scoring models; the random-weights warning)."""
    shown = [m for m in headline_metrics() if f"{m.name}_mean" in board]
    best = {m.name: _best(board, m) for m in shown}
    caption = " ".join(board_caption(board)).replace("**", "")
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{escape(caption)} Mean $\pm$ half the 95\% "
             r"bootstrap interval over concepts; best in bold.}", r"\begin{tabular}{l" + "c" * len(shown) + "}",
             r"\toprule", " & ".join(["Method", *(escape(m.label) + _arrow(m) for m in shown)]) + r" \\",
             r"\midrule"]
    for _, row in board.iterrows():
        lines.append(" & ".join([escape(row["method_label"]), *(_cell(row, m, best[m.name]) for m in shown)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
