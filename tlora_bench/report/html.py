"""report.html: one self-contained page (inline CSS, plots and thumbnails as data URIs), rendered by jinja2
with autoescaping on for everything, so labels, prompts and class words from files can never become markup."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from tlora_bench.metrics.registry import metrics, paper_metrics
from tlora_bench.report.grids import ConceptGrid, png_uri
from tlora_bench.report.tables import fmt, interval, metric_title

TEMPLATE = "report.html.j2"


def environment() -> jinja2.Environment:
    text = resources.files("tlora_bench.report").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(loader=jinja2.DictLoader({TEMPLATE: text}), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    return env


def _board_rows(board: pd.DataFrame) -> list[dict[str, Any]]:
    names, paper_columns = [m.name for m in metrics()], [m.paper.column for m in paper_metrics()]
    rows = []
    for _, row in board.iterrows():
        rows.append({"label": row["method_label"], "method": row["method"], "n_concepts": row["n_concepts"],
                     "n_images": row["n_images"], "incomplete": row["incomplete_reason"],
                     "metrics": [interval(row, name) for name in names],
                     "paper_table": row["paper_table"] or "",
                     "paper": [(fmt(row[f"paper_{c}"]), fmt(row[f"{c}_minus_paper"])) for c in paper_columns]})
    return rows


def _compare_rows(compare: pd.DataFrame | None) -> list[dict[str, Any]]:
    if compare is None:
        return []
    return [{"label": r["method_label"], "metric": metric_title(r["metric"]), "mean": fmt(r["mean"]),
             "other": fmt(r["other_mean"]), "difference": fmt(r["difference"]),
             "overlap": {True: "yes", False: "no"}.get(r["intervals_overlap"], "–")} for _, r in compare.iterrows()]


def render(*, title: str, board: pd.DataFrame, plots: dict[str, Path], grids: list[ConceptGrid],
           provenance: dict[str, Any] | None, evaluation: dict[str, Any] | None, summary: dict[str, Any] | None,
           compare: pd.DataFrame | None, compare_dir: str | None, problems: list[str]) -> str:
    """The whole page as text."""
    failures = [{"job": f.get("job", ""), "error": f.get("error", "")} for f in (summary or {}).get("failures") or []]
    return environment().get_template(TEMPLATE).render(
        title=title, metric_titles=[m.label for m in metrics()],
        paper_titles=[m.paper.label for m in paper_metrics()], board=_board_rows(board),
        plots=[(name, png_uri(path.read_bytes())) for name, path in plots.items()], grids=grids,
        protocol=json.dumps((provenance or {}).get("protocol"), indent=2) if provenance else "",
        provenance=json.dumps(provenance, indent=2) if provenance else "",
        evaluation=json.dumps((evaluation or {}).get("provenance"), indent=2) if evaluation else "",
        evaluation_error=(summary or {}).get("evaluation_error") or "", failures=failures,
        compare=_compare_rows(compare), compare_dir=compare_dir or "", problems=problems)
