"""The report's tables: leaderboard (with the paper beside ours), per concept, the markdown leaderboard, compare.

Paper IS and DINO-IS were computed on background-masked images, so they sit beside our masked IS and masked
DINO-IS; the paper's TS beside our headline TS (prompt with token and class removed). docs/report.md. Which
metrics there are, their labels and the paper's column beside each, come from the metric registry.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tlora_bench.errors import TloraBenchError
from tlora_bench.layout import COST_COLUMNS
from tlora_bench.metrics.registry import get_metric, headline_metrics, metric_names, paper_metrics
from tlora_bench.report.inputs import RunFolder
from tlora_bench.report.paper import method_key, paper_match
from tlora_bench.report.pareto import mark_fronts

UNKNOWN = "unknown"  # a folder whose per_method.csv predates the scoring models' columns
COST_KIND = "peak_memory_kind"  # what peak_memory_bytes measures (CUDA allocated or CPU resident set)


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


def random_weights_reason(model: str | None, tiny_extractors: bool) -> str:
    """Why a run's numbers mean nothing ('' when they can): a random-weight (tiny) diffusion model or scoring
    models. Shown in the console table, both leaderboards and the report's header."""
    from tlora_bench.models import is_tiny

    try:
        tiny_model = bool(model) and is_tiny(str(model))
    except TloraBenchError:  # a backend this install does not have: it is not one of ours
        tiny_model = False
    parts = ([f"the diffusion model '{model}'"] if tiny_model else []) + \
        (["the scoring models (CLIP, DINO)"] if tiny_extractors else [])
    return f"random-weight models ({' and '.join(parts)}): these numbers are meaningless" if parts else ""


def _first(run: RunFolder, column: str) -> Any:
    value = run.per_method[column].iloc[0] if column in run.per_method and len(run.per_method) else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def scoring_models(run: RunFolder) -> dict[str, str]:
    """The CLIP model and DINO variant the folder was scored with (per_method.csv's provenance columns)."""
    def named(kind: str) -> str:
        extractor, weights = _first(run, f"{kind}_extractor"), _first(run, f"{kind}_weights")
        return UNKNOWN if extractor is None else f"{extractor} ({weights})" if weights else str(extractor)

    return {"clip_model": named("clip"), "dino_model": named("dino")}


def run_random_weights(run: RunFolder) -> str:
    tiny = _first(run, "tiny_models")
    return random_weights_reason(run.model, str(tiny).lower() == "true")


def _costs(run: RunFolder, label: str) -> dict[str, Any]:
    """The run leaderboard's median cost columns of a label (empty where the folder has no run leaderboard)."""
    board = run.run_leaderboard
    row = board[board["method_label"].astype(str) == label] if board is not None else None
    return {column: (row[column].iloc[0] if row is not None and len(row) and column in row else math.nan)
            for column in (*COST_COLUMNS, COST_KIND)}


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
        row.update(_costs(run, label))
        rows.append(row)
    reason = run_random_weights(run)
    board = pd.DataFrame(rows).assign(**scoring_models(run), random_weights=bool(reason),
                                      random_weights_reason=reason)
    for column in ("rank", "size", "train_images"):  # integers, empty where a method has none (never 4.0)
        board[column] = board[column].astype("Int64")
    return mark_fronts(board)


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


def board_caption(board: pd.DataFrame) -> list[str]:
    """The lines above every table of the board: the scoring models, and the random-weights warning."""
    if board.empty:
        return []
    first = board.iloc[0]
    known = first["clip_model"] != UNKNOWN or first["dino_model"] != UNKNOWN
    lines = [f"Scored with CLIP {first['clip_model']} and DINO {first['dino_model']}."] if known else []
    if first["random_weights"]:
        lines.insert(0, f"**WARNING: {first['random_weights_reason']}** (a smoke test of the pipeline, not a result).")
    return lines


def leaderboard_markdown(board: pd.DataFrame) -> str:
    """A short markdown table for pasting: the headline metrics (masked IS, masked DINO-IS, TS) with intervals,
    and the paper's values, under the caption (scoring models; random-weights warning)."""
    shown, paper_columns = headline_metrics(), [m.paper.column for m in paper_metrics()]
    head = ["method", "concepts", "images", *(m.label for m in shown),
            "paper " + " / ".join(m.paper.label for m in paper_metrics()), "note"]
    caption = board_caption(board)
    lines = [*caption, *([""] if caption else []), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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


COMPARE_COLUMNS = ["method_label", "metric", "mean", "ci_low", "ci_high", "other_mean", "other_ci_low",
                   "other_ci_high", "difference", "intervals_overlap", "paired_concepts", "paired_difference",
                   "paired_ci_low", "paired_ci_high", "p_value", "p_holm"]
PAIRED_RENAMES = {"n_concepts": "paired_concepts", "difference": "paired_difference", "ci_low": "paired_ci_low",
                  "ci_high": "paired_ci_high"}


def compare_table(ours: pd.DataFrame, other: pd.DataFrame, paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method label in both leaderboards and metric: both means, the difference, do the intervals overlap,
    and (from `paired`: comparisons.paired_runs) the difference paired on the images both folders have."""
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
    table = pd.DataFrame(rows, columns=COMPARE_COLUMNS[:10])
    if paired is None or paired.empty:
        return table.reindex(columns=COMPARE_COLUMNS)
    extra = paired.rename(columns=PAIRED_RENAMES)[["method_label", "metric", *PAIRED_RENAMES.values(), "p_value",
                                                   "p_holm"]]
    table["method_label"] = table["method_label"].astype(str)
    return table.merge(extra, on=["method_label", "metric"], how="left")[COMPARE_COLUMNS]
