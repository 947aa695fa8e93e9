"""How the feature metrics agree with the exact judges (docs/synthetic.md, "Feature metrics against the judges"):
the Spearman rank correlation, across a run's method labels (methods, ranks and training lengths), of each
feature metric's mean with each judged metric's mean. Only a run with synthetic concepts has judged metrics;
the feature metrics must come from real CLIP and DINO weights for the numbers to mean anything (a board made
with tiny extractors says so in `random_weights`).
"""

from __future__ import annotations

import pandas as pd

from tlora_bench.metrics.registry import JUDGED_METRICS, metrics

MIN_LABELS = 3  # a rank correlation of two points is always +-1


def judge_agreement(board: pd.DataFrame) -> pd.DataFrame | None:
    """One row per (feature metric, judged metric): Spearman's rho over the labels with both means, and their
    number; None when the board has no judged metric or too few labels."""
    judged = [name for name in JUDGED_METRICS if f"{name}_mean" in board]
    features = [m.name for m in metrics() if m.name not in JUDGED_METRICS and f"{m.name}_mean" in board]
    if not judged or len(board) < MIN_LABELS:
        return None
    rows = []
    for feature in features:
        for truth in judged:
            pair = board[[f"{feature}_mean", f"{truth}_mean"]].apply(pd.to_numeric, errors="coerce").dropna()
            rho = pair.rank().corr().iloc[0, 1] if len(pair) >= MIN_LABELS else float("nan")
            rows.append({"feature_metric": feature, "judged_metric": truth, "spearman_rho": float(rho),
                         "n_labels": len(pair)})
    return pd.DataFrame(rows)


def agreement_markdown(table: pd.DataFrame | None, random_weights: bool) -> str:
    """The table as markdown, feature metrics as rows and judged metrics as columns; '' without one."""
    if table is None or table.empty:
        return ""
    wide = table.pivot(index="feature_metric", columns="judged_metric", values="spearman_rho")
    wide = wide.loc[table["feature_metric"].unique(), table["judged_metric"].unique()]
    header = "| feature metric | " + " | ".join(wide.columns) + " |"
    lines = ["## Feature metrics against the judges (Spearman's rho across method labels)", ""]
    if random_weights:
        lines += ["**Scored with random-weight extractors or a random model: these correlations mean nothing.**", ""]
    lines += [header, "|---" * (len(wide.columns) + 1) + "|"]
    for feature, row in wide.iterrows():
        cells = " | ".join("" if pd.isna(v) else f"{v:+.2f}" for v in row)
        lines.append(f"| {feature} | {cells} |")
    return "\n".join(lines) + "\n"
