"""The report's tables: leaderboard (with the paper beside ours), per concept, the markdown leaderboard, compare.

Paper IS and DINO-IS were computed on background-masked images, so they sit beside our masked IS and masked
DINO-IS; the paper's TS beside our headline TS (prompt with token and class removed). docs/report.md. Which
metrics there are, their labels and the paper's column beside each, come from the metric registry.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tlora_bench.metrics.registry import get_metric, headline_metrics, metric_names, paper_metrics
from tlora_bench.report.inputs import RunFolder
from tlora_bench.report.paper import method_key, paper_match


def concept_columns() -> list[str]:
    """The columns of per_concept.csv in the report."""
    return ["method_label", "concept", "class_word", *metric_names(), "n_base_images", "n_ts_prompts"]


def metric_title(name: str) -> str:
    """What a reader sees for a metric; a name the registry does not hold (another version's) as it is."""
    return get_metric(name).label if name in metric_names() else name


def labels(run: RunFolder) -> list[str]:
    """Method labels in run order (the run's leaderboard), then any others scored, sorted."""
    order = list(run.run_leaderboard["method_label"]) if run.run_leaderboard is not None else []
    scored = sorted(set(run.per_method["method_label"].astype(str)))
    return [*dict.fromkeys([*map(str, order), *scored])]


def _failed_labels(run: RunFolder) -> dict[str, int]:
    by_id = {f"{job.label}/{job.concept}/seed-{job.seed}": job.image_label for job in run.jobs}
    counts: dict[str, int] = {}
    for failure in (run.summary or {}).get("failures", []) or []:
        job_id = str(failure.get("job", ""))
        label = by_id.get(job_id, job_id.split("/")[0])
        counts[label] = counts.get(label, 0) + 1
    return counts


def _incomplete(run: RunFolder, label: str, n_concepts: int, most_concepts: int) -> str:
    """Why a method's row is incomplete ('' when it is not)."""
    reasons = []
    if run.run_leaderboard is not None:
        row = run.run_leaderboard[run.run_leaderboard["method_label"].astype(str) == label]
        if len(row) and not bool(row["complete"].iloc[0]):
            reasons.append(f"{int(row['concepts_scored'].iloc[0])} of {int(row['concepts_planned'].iloc[0])} "
                           "concepts scored")
    failed = _failed_labels(run).get(label, 0)
    if failed:
        reasons.append(f"{failed} failed jobs")
    if run.run_leaderboard is None and n_concepts < most_concepts:
        reasons.append(f"{n_concepts} of {most_concepts} concepts scored")
    return "; ".join(reasons)


def _n_images(run: RunFolder, label: str) -> int:
    if run.per_prompt is not None and "n_images" in run.per_prompt:
        return int(run.per_prompt.loc[run.per_prompt["method_label"].astype(str) == label, "n_images"].sum())
    return sum(len(records) for (method, _), records in run.indexes.items() if method == label)


def leaderboard(run: RunFolder) -> pd.DataFrame:
    """One row per method label: every metric's mean and interval, counts, incomplete mark, the paper's values."""
    per_method = run.per_method.assign(method_label=run.per_method["method_label"].astype(str))
    most = int(per_method["n_concepts"].max()) if len(per_method) else 0
    jobs = {job.image_label: job for job in run.jobs}
    rows = []
    for label in labels(run):
        table = per_method[per_method["method_label"] == label]
        job = jobs.get(label)
        method = job.method if job and job.method else (str(table["method"].iloc[0]) if len(table) else label)
        key = method_key(method, job.identity if job else None, job.train_images if job else None)
        rank = table["rank"].dropna()
        row: dict[str, Any] = {"method_label": label, "method": method,
                               "rank": int(rank.iloc[0]) if len(rank) else None, "size": key.size,
                               "train_images": key.train_images, "model": run.model}
        for metric in metric_names():
            values = table[table["metric"] == metric]
            for column in ("mean", "ci_low", "ci_high"):
                row[f"{metric}_{column}"] = float(values[column].iloc[0]) if len(values) else math.nan
        n_concepts = int(table["n_concepts"].max()) if len(table) else 0
        row["n_concepts"], row["n_images"] = n_concepts, _n_images(run, label)
        reason = _incomplete(run, label, n_concepts, most) or ("not scored" if table.empty else "")
        row["incomplete"], row["incomplete_reason"] = bool(reason), reason
        row["imported"] = bool(job and job.imported)  # scored from adapter files trained elsewhere
        row.update(_paper_columns(paper_match(key, run.model), row))
        rows.append(row)
    board = pd.DataFrame(rows)
    for column in ("rank", "size", "train_images"):  # integers, empty where a method has none (never 4.0)
        board[column] = board[column].astype("Int64")
    return board


def _paper_columns(paper: pd.Series | None, row: dict[str, Any]) -> dict[str, Any]:
    """paper_table, then paper_<column> and <column>_minus_paper for each metric set beside a paper column."""
    out: dict[str, Any] = {"paper_table": None if paper is None else str(paper["table"])}
    for metric in paper_metrics():
        theirs = metric.paper.column
        value = math.nan if paper is None or theirs not in paper.index else float(paper[theirs])
        out[f"paper_{theirs}"] = value
        out[f"{theirs}_minus_paper"] = row[f"{metric.name}_mean"] - value
    return out


def per_concept_table(run: RunFolder) -> pd.DataFrame:
    """Method x concept, the main metrics (long format: one row per pair)."""
    if run.per_concept is None:
        return pd.DataFrame(columns=concept_columns())
    columns = [c for c in concept_columns() if c in run.per_concept.columns]
    return run.per_concept[columns].sort_values(["method_label", "concept"], kind="stable").reset_index(drop=True)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def interval(row: pd.Series | dict[str, Any], metric: str) -> str:
    mean = row[f"{metric}_mean"]
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    return f"{fmt(mean)} [{fmt(row[f'{metric}_ci_low'])}, {fmt(row[f'{metric}_ci_high'])}]"


def leaderboard_markdown(board: pd.DataFrame) -> str:
    """A short markdown table for pasting: the headline metrics (masked IS, masked DINO-IS, TS) with intervals,
    and the paper's values."""
    shown, paper_columns = headline_metrics(), [m.paper.column for m in paper_metrics()]
    head = ["method", "concepts", "images", *(m.label for m in shown),
            "paper " + " / ".join(m.paper.label for m in paper_metrics()), "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in board.iterrows():
        paper = "–" if row["paper_table"] is None else (
            " / ".join(fmt(row[f"paper_{c}"]) for c in paper_columns) + f" ({row['paper_table']})")
        cells = [row["method_label"], str(row["n_concepts"]), str(row["n_images"]),
                 *(interval(row, m.name) for m in shown), paper,
                 "; ".join(note for note in ("imported adapters" if row.get("imported") else "",
                                             "incomplete: " + row["incomplete_reason"] if row["incomplete"] else "")
                           if note)]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def compare_table(ours: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Per method label in both leaderboards and metric: both means, the difference, do the intervals overlap."""
    rows = []
    theirs = {str(row["method_label"]): row for _, row in other.iterrows()}
    for _, row in ours.iterrows():
        match = theirs.get(str(row["method_label"]))
        if match is None:
            continue
        for metric in metric_names():
            a, b = row[f"{metric}_mean"], match[f"{metric}_mean"]
            low_a, high_a, low_b, high_b = (row[f"{metric}_ci_low"], row[f"{metric}_ci_high"],
                                            match[f"{metric}_ci_low"], match[f"{metric}_ci_high"])
            known = not any(math.isnan(v) for v in (low_a, high_a, low_b, high_b))
            rows.append({"method_label": row["method_label"], "metric": metric, "mean": a, "ci_low": low_a,
                         "ci_high": high_a, "other_mean": b, "other_ci_low": low_b, "other_ci_high": high_b,
                         "difference": a - b,
                         "intervals_overlap": (low_a <= high_b and low_b <= high_a) if known else None})
    return pd.DataFrame(rows, columns=["method_label", "metric", "mean", "ci_low", "ci_high", "other_mean",
                                       "other_ci_low", "other_ci_high", "difference", "intervals_overlap"])
