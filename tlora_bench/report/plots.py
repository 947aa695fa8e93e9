"""The report's figures, each saved as PNG and SVG; a figure whose data the folder lacks is skipped (None).

matplotlib's object API (Figure, no pyplot): no global backend state, nothing opens a window.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tlora_bench.adapters.registry import low_rank_methods
from tlora_bench.fileio import atomic_write_bytes
from tlora_bench.metrics.registry import Metric, get_metric
from tlora_bench.report.inputs import JobInfo, RunFolder
from tlora_bench.report.paper import method_key, paper_tables

# The figures plot the headline image metric against the headline text metric (docs/evaluation.md); their
# labels and the paper's columns come from the metric registry.
IMAGE_METRIC, TEXT_METRIC = "is_masked", "ts"


def _headline() -> tuple[Metric, Metric]:
    return get_metric(IMAGE_METRIC), get_metric(TEXT_METRIC)


def _paper_column(metric: Metric) -> str:
    return metric.paper.column if metric.paper is not None else metric.name


def save(figure: Figure, folder: Path, name: str) -> Path:
    """Write name.png and name.svg (each atomically); return the PNG."""
    figure.tight_layout()
    for suffix in ("png", "svg"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix, dpi=110)
        atomic_write_bytes(folder / f"{name}.{suffix}", buffer.getvalue())
    return folder / f"{name}.png"


def _errors(board: pd.DataFrame, metric: str) -> np.ndarray:
    mean = board[f"{metric}_mean"].to_numpy(float)
    return np.abs(np.vstack([mean - board[f"{metric}_ci_low"].to_numpy(float),
                             board[f"{metric}_ci_high"].to_numpy(float) - mean]))


def is_vs_ts(board: pd.DataFrame) -> Figure | None:
    """Masked CLIP-IS against TS per method with 95% intervals; the paper's point for each matched method."""
    image, text = _headline()
    board = board.dropna(subset=[f"{image.name}_mean", f"{text.name}_mean"])
    if board.empty:
        return None
    figure = Figure(figsize=(6.5, 5))
    axes = figure.add_subplot()
    for index, (_, row) in enumerate(board.iterrows()):
        color = f"C{index % 10}"
        one = board.loc[[row.name]]
        axes.errorbar(one[f"{text.name}_mean"], one[f"{image.name}_mean"], xerr=_errors(one, text.name),
                      yerr=_errors(one, image.name), fmt="o", color=color, capsize=3, label=row["method_label"])
        if row["paper_table"] is not None:
            axes.scatter([row[f"paper_{_paper_column(text)}"]], [row[f"paper_{_paper_column(image)}"]], marker="*",
                         s=120, color=color, edgecolor="black",
                         label=f"{row['method_label']} (paper, {row['paper_table']})")
    axes.set(xlabel=f"{text.label} (text similarity, headline)", ylabel=image.label, title="IS against TS")
    axes.legend(fontsize=7)
    return figure


def by_rank(board: pd.DataFrame, model: str | None) -> Figure | None:
    """IS and TS against rank r for rank-sized methods (paper Table 1), the paper's values dashed."""
    board = board.dropna(subset=["rank"])
    if board.empty:
        return None
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    paper = paper_tables()
    paper = paper[(paper["table"] == "table1") & (paper["model"] == (model or ""))]
    families = board.assign(family=[method_key(row["method"]).name for _, row in board.iterrows()])
    panels = tuple(zip((left, right), _headline(), strict=True))
    for index, (family, group) in enumerate(families.groupby("family", sort=True)):
        group = group.sort_values("rank")
        for axes, metric in panels:
            axes.errorbar(group["rank"], group[f"{metric.name}_mean"], yerr=_errors(group, metric.name), marker="o",
                          capsize=3, color=f"C{index % 10}", label=family)
        ours = paper[paper["method"] == family]
        if len(ours):
            ranks = ours["rank_or_config"].astype(int)
            for axes, metric in panels:
                axes.plot(ranks, ours[_paper_column(metric)], linestyle="--", color=f"C{index % 10}",
                          label=f"{family} (paper)")
    for axes, metric in panels:
        axes.set(xscale="log", xlabel="rank r", ylabel=metric.label, title=f"{metric.label} by rank")
        axes.legend(fontsize=7)
    return figure


def heat_map(concepts: pd.DataFrame) -> Figure | None:
    """Method x concept: TS and masked CLIP-IS, one panel each, values written in the cells."""
    shown = [get_metric(TEXT_METRIC), get_metric(IMAGE_METRIC)]
    if concepts.empty or not {m.name for m in shown} <= set(concepts.columns):
        return None
    # A metric with no value at all (TS of a run with only the base prompt) gets no panel.
    titles = {m.name: m.label for m in shown if concepts[m.name].notna().any()}
    if not titles:
        return None
    tables = [concepts.pivot_table(index="method_label", columns="concept", values=m, aggfunc="mean")
              for m in titles]
    rows, columns = tables[0].shape
    figure = Figure(figsize=(min(4 + 0.9 * columns, 30) * len(titles), 1.5 + 0.45 * rows))
    for axes, table, title in zip(np.atleast_1d(figure.subplots(1, len(titles))), tables, titles.values(),
                                  strict=True):
        image = axes.imshow(table.to_numpy(float), aspect="auto", cmap="viridis")
        axes.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=60, ha="right", fontsize=7)
        axes.set_yticks(range(table.shape[0]), [str(i) for i in table.index], fontsize=7)
        if table.size <= 400:
            for (i, j), value in np.ndenumerate(table.to_numpy(float)):
                axes.text(j, i, "" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=6,
                          color="white")
        axes.set_title(title)
        figure.colorbar(image, ax=axes)
    return figure


def _losses(job: JobInfo) -> list[tuple[int, float]]:
    points = []
    for line in job.train_log.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            points.append((int(entry["step"]), float(entry["loss"])))
        except (ValueError, KeyError, TypeError):
            continue
    return points


def loss_curves(jobs: list[JobInfo]) -> Figure | None:
    """Training loss per step, one thin line per job, one colour per method label."""
    logged = [job for job in jobs if job.train_log.is_file()]
    if not logged:
        return None
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    colors = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(job.image_label for job in logged))}
    seen = set()
    for job in logged:
        points = _losses(job)
        if points:
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, color=colors[job.image_label], alpha=0.6, linewidth=1,
                      label=None if job.image_label in seen else job.image_label)
            seen.add(job.image_label)
    axes.set(xlabel="step", ylabel="loss", title="Training loss")
    axes.legend(fontsize=7)
    return figure


def effective_ranks(jobs: list[JobInfo], energy: float = 0.95,
                    on_problem: Callable[[str], None] = lambda message: None) -> Figure | None:
    """Mean effective rank of B over layers per adapter (paper Figure 4), beside r; needs torch, lazily."""
    adapters = [job for job in jobs if job.adapter.is_file()
                and method_key(job.method or job.label, job.identity).name in low_rank_methods()]
    if not adapters:
        return None
    try:
        from tlora_bench.adapters.rank_analysis import adapter_ranks
    except ImportError as e:
        on_problem(f"effective-rank plot skipped: {e}")
        return None
    names, means, ranks = [], [], []
    for job in adapters:
        try:
            rows = adapter_ranks(job.adapter, energy)
        except Exception as e:  # an unreadable adapter costs this one bar, not the report
            on_problem(f"effective rank of '{job.adapter}' skipped: {e}")
            continue
        if rows:
            names.append(f"{job.image_label}/{job.concept}/s{job.seed}")
            means.append(float(np.mean([row.effective_rank for row in rows])))
            ranks.append(rows[0].rank)
    if not names:
        return None
    figure = Figure(figsize=(max(6, 0.35 * len(names) + 2), 4))
    axes = figure.add_subplot()
    axes.bar(range(len(names)), ranks, color="lightgrey", label="r")
    axes.bar(range(len(names)), means, color="tab:blue", width=0.6, label=f"mean effective rank ({energy:.0%})")
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    axes.set(ylabel="rank", title="Effective rank of B per adapter")
    axes.legend(fontsize=7)
    return figure


def make_plots(run: RunFolder, board: pd.DataFrame, concepts: pd.DataFrame, folder: Path,
               on_problem: Callable[[str], None]) -> dict[str, Path]:
    """Every figure the folder has data for: name -> PNG path (an SVG lies beside each)."""
    figures = {"is_vs_ts": is_vs_ts(board), "by_rank": by_rank(board, run.model), "heat_map": heat_map(concepts),
               "loss": loss_curves(run.jobs), "effective_rank": effective_ranks(run.jobs, on_problem=on_problem)}
    return {name: save(figure, folder, name) for name, figure in figures.items() if figure is not None}
