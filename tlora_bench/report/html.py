"""report.html: one self-contained page (inline CSS, plots and thumbnails as data URIs), rendered by jinja2
with autoescaping on for everything, so labels, prompts and class words from files can never become markup."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from tlora_bench.layout import COST_COLUMNS
from tlora_bench.metrics.registry import headline_metrics, metrics, paper_metrics
from tlora_bench.report.grids import ConceptGrid, png_uri
from tlora_bench.report.pareto import FRONTIERS
from tlora_bench.report.tables import board_caption, fmt, interval, metric_title

TEMPLATE = "report.html.j2"


def environment() -> jinja2.Environment:
    text = resources.files("tlora_bench.report").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(loader=jinja2.DictLoader({TEMPLATE: text}), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    return env


def _sort_key(value: Any) -> str:
    """What a column sorts by in the page: the number itself ('' for none, which sorts last)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _cell(text: Any, key: Any = None) -> dict[str, str]:
    return {"text": str(text), "key": _sort_key(text if key is None else key)}


def _cost_text(row: pd.Series, column: str) -> str:
    value = row.get(column)
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.3g}" if "seconds" in column else f"{int(value):,}"


def _fronts(row: pd.Series) -> str:
    return ", ".join(f.name for f in FRONTIERS if bool(row.get(f"pareto_{f.name}", False)))


def _board_rows(board: pd.DataFrame) -> list[dict[str, Any]]:
    names, paper_columns = [m.name for m in metrics()], [m.paper.column for m in paper_metrics()]
    rows = []
    for _, row in board.iterrows():
        cells = [_cell(row["method_label"]), _cell(row["method"]), _cell(row["n_concepts"]), _cell(row["n_images"]),
                 *(_cell(interval(row, name), row[f"{name}_mean"]) for name in names),
                 *(_cell(_cost_text(row, c), row.get(c)) for c in COST_COLUMNS), _cell(_fronts(row)),
                 _cell(row["paper_table"] or ""),
                 *(_cell(fmt(row[f"paper_{c}"]) + ("" if pd.isna(row[f"paper_{c}"]) else
                                                   f" ({fmt(row[f'{c}_minus_paper'])})"), row[f"paper_{c}"])
                   for c in paper_columns),
                 _cell(row["incomplete_reason"])]
        rows.append({"incomplete": row["incomplete_reason"], "cells": cells})
    return rows


def board_titles() -> list[str]:
    """The HTML leaderboard's column titles, in the order of _board_rows' cells."""
    return ["method", "trained", "concepts", "images", *(m.label for m in metrics()),
            *(c.replace("_", " ") for c in COST_COLUMNS), "Pareto fronts", "paper table",
            *(f"paper {m.paper.label} (ours − paper)" for m in paper_metrics()), "incomplete"]


def _paired_rows(paired: pd.DataFrame | None) -> list[dict[str, Any]]:
    if paired is None:
        return []
    shown = {m.name for m in headline_metrics()}
    return [{"label": r["method_label"], "metric": metric_title(r["metric"]), "n": r["n_concepts"],
             "difference": fmt(r["difference"]), "interval": f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
             "unpaired": f"[{fmt(r['unpaired_ci_low'])}, {fmt(r['unpaired_ci_high'])}]",
             "p": fmt(r["p_value"]), "p_holm": fmt(r["p_holm"])}
            for _, r in paired.iterrows() if r["metric"] in shown]


def _compare_rows(compare: pd.DataFrame | None) -> list[dict[str, Any]]:
    if compare is None:
        return []
    return [{"label": r["method_label"], "metric": metric_title(r["metric"]), "mean": fmt(r["mean"]),
             "other": fmt(r["other_mean"]), "difference": fmt(r["difference"]),
             "overlap": {True: "yes", False: "no"}.get(r["intervals_overlap"], "–"),
             "paired": "–" if pd.isna(r["paired_difference"]) else
             f"{fmt(r['paired_difference'])} [{fmt(r['paired_ci_low'])}, {fmt(r['paired_ci_high'])}]",
             "p_holm": fmt(r["p_holm"])} for _, r in compare.iterrows()]


def render(*, title: str, board: pd.DataFrame, plots: dict[str, Path], grids: list[ConceptGrid],
           provenance: dict[str, Any] | None, evaluation: dict[str, Any] | None, summary: dict[str, Any] | None,
           compare: pd.DataFrame | None, compare_dir: str | None, problems: list[str],
           paired: pd.DataFrame | None = None, reference: str | None = None) -> str:
    """The whole page as text."""
    failures = [{"job": f.get("job", ""), "error": f.get("error", "")} for f in (summary or {}).get("failures") or []]
    return environment().get_template(TEMPLATE).render(
        title=title, board_titles=board_titles(), board=_board_rows(board),
        caption=[line.replace("**", "") for line in board_caption(board)],
        warning=bool(len(board)) and bool(board["random_weights"].iloc[0]),
        paired=_paired_rows(paired), reference=reference or "",
        plots=[(name, png_uri(path.read_bytes())) for name, path in plots.items()], grids=grids,
        protocol=json.dumps((provenance or {}).get("protocol"), indent=2) if provenance else "",
        provenance=json.dumps(provenance, indent=2) if provenance else "",
        evaluation=json.dumps((evaluation or {}).get("provenance"), indent=2) if evaluation else "",
        evaluation_error=(summary or {}).get("evaluation_error") or "", failures=failures,
        compare=_compare_rows(compare), compare_dir=compare_dir or "", problems=problems)
