"""The report's paired comparisons (docs/evaluation.md, "Paired comparisons"): every method against a reference
method of the same run, and a run against another run, image by image (metrics/paired.py does the statistics).

The reference is the one named (`--reference`, or `reference` in the run's config), else the run's first T-LoRA
variant in leaderboard order; a run without one has no paired table unless a reference is named.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from tlora_bench.errors import TloraBenchError, did_you_mean
from tlora_bench.metrics import paired
from tlora_bench.metrics.registry import headline_metrics
from tlora_bench.report.inputs import RunFolder

TLORA_VARIANTS = ("tlora", "vanilla-tlora")  # the paper's method and its variant without orthogonal init


def method_name(method: Any) -> str:
    """'lycoris:tlora-4' -> 'tlora': the method without its provider and size."""
    return re.sub(r"-\d+$", "", str(method).rsplit(":", 1)[-1])


def default_reference(board: pd.DataFrame) -> str | None:
    """The first T-LoRA variant's label in leaderboard order, or None."""
    for _, row in board.iterrows():
        if method_name(row["method"]) in TLORA_VARIANTS:
            return str(row["method_label"])
    return None


def resolve_reference(run: RunFolder, board: pd.DataFrame, reference: str | None) -> str | None:
    """The label to compare with: `reference`, else the run's config's, else the default; a variant run with
    several seeds stands for its first seed's label; a label the board does not have is a one-line error."""
    named = reference or (run.config or {}).get("reference")
    if named is None:
        return default_reference(board)
    labels = [str(label) for label in board["method_label"]]
    seeds = [label for label in labels if label.startswith(f"{named}.seed")]  # a variant run with several seeds
    if str(named) not in labels and seeds:
        return seeds[0]
    if str(named) not in labels:
        raise TloraBenchError(f"reference method '{named}' is not in '{run.root}'{did_you_mean(str(named), labels)}; "
                              f"use one of: {', '.join(labels)}")
    return str(named)


def bootstrap_settings(run: RunFolder) -> dict[str, Any]:
    """The resamples, seed and level the folder's own intervals used (per_method.csv), for the paired ones."""
    first = run.per_method.iloc[0] if len(run.per_method) else pd.Series(dtype=object)

    def setting(column: str, cast: type) -> Any:
        value = first.get(column)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else cast(value)

    settings = {"n_resamples": setting("bootstrap_resamples", int), "seed": setting("bootstrap_seed", int),
                "level": setting("ci_level", float)}
    return {key: value for key, value in settings.items() if value is not None}  # else paired.py's own


def paired_table(run: RunFolder, board: pd.DataFrame, reference: str | None) -> pd.DataFrame | None:
    """Every method against the reference (paired.against_reference), in leaderboard order; None without
    per-image scores or a reference."""
    if run.scores is None or reference is None:
        return None
    table = paired.against_reference(run.scores, reference, **bootstrap_settings(run))
    order = {str(label): i for i, label in enumerate(board["method_label"])}
    return table.sort_values("method_label", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def paired_runs(run: RunFolder, other: RunFolder) -> pd.DataFrame:
    """Each method label in both folders: this run minus the other, paired on the images both have, Holm-
    corrected per metric across the labels (columns of paired.COLUMNS; `reference` names the other folder)."""
    if run.scores is None or other.scores is None:
        return pd.DataFrame(columns=paired.COLUMNS)
    theirs = other.scores.assign(method_label=other.scores["method_label"].astype(str))
    ours = run.scores.assign(method_label=run.scores["method_label"].astype(str))
    tables = [paired.compare(ours[ours["method_label"] == label], theirs[theirs["method_label"] == label],
                             **bootstrap_settings(run)).assign(method_label=label, reference=str(other.root))
              for label in dict.fromkeys(ours["method_label"]) if label in set(theirs["method_label"])]
    if not tables:
        return pd.DataFrame(columns=paired.COLUMNS)
    return paired.holm_by_metric(pd.concat(tables, ignore_index=True))


def _cell(row: pd.Series) -> str:
    if row["n_concepts"] == 0 or math.isnan(row["difference"]):
        return "–"
    return f"{row['difference']:+.3g} [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}] p={row['p_holm']:.3g}"


def paired_markdown(table: pd.DataFrame | None, reference: str | None) -> str:
    """The markdown table of the headline metrics' paired differences ('' when there is none)."""
    if table is None or table.empty:
        return ""
    shown = headline_metrics()
    head = ["method", "concepts", *(f"{m.label} − {reference}" for m in shown)]
    lines = [f"Paired against {reference}: mean difference over concepts [95% paired bootstrap interval], "
             "Holm-corrected sign-flip p (docs/evaluation.md, \"Paired comparisons\").", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rows in table.groupby("method_label", sort=False):
        by_metric = rows.set_index("metric")
        cells = [str(label), str(int(rows["n_concepts"].max())),
                 *(_cell(by_metric.loc[m.name]) if m.name in by_metric.index else "–" for m in shown)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
