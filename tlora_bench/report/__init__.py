"""`tlora-bench report DIR [--compare OTHER]`: tables, plots and a self-contained HTML page in DIR/report/.

Reads files only (torch is imported lazily, for the effective-rank plot of a folder with adapters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tlora_bench.fileio import atomic_write_text, check_writable, replaced_folder
from tlora_bench.layout import LEADERBOARD_FILE, REPORT_DIR, REPORT_MARKDOWN, REPORT_PAGE
from tlora_bench.metrics.registry import metric_scope
from tlora_bench.report.comparisons import paired_markdown, paired_runs, paired_table, resolve_reference
from tlora_bench.report.inputs import RunFolder, images_problem, load_run, missing_images
from tlora_bench.report.judge_agreement import agreement_markdown, judge_agreement
from tlora_bench.report.tables import compare_table, leaderboard, leaderboard_markdown, per_concept_table

LATEX_FILE = "leaderboard.tex"
PAIRED_FILE = "paired.csv"
AGREEMENT_FILE = "judge_agreement.csv"


@dataclass
class Tables:
    """What the report shows, computed before anything is written."""

    board: pd.DataFrame
    concepts: pd.DataFrame
    reference: str | None
    paired: pd.DataFrame | None  # every method against the reference
    compared: pd.DataFrame | None  # against another folder (--compare)
    agreement: pd.DataFrame | None = None  # feature metrics against the judges (synthetic concepts only)


def make_report(run_dir: str | Path, compare: str | Path | None = None,
                echo: Callable[[str], None] = lambda message: None, reference: str | None = None) -> Path:
    """Write DIR/report/ (leaderboard.csv, leaderboard.md, leaderboard.tex, per_concept.csv, paired.csv,
    plots/, report.html and, with `compare`, compare.csv); return that folder. `reference`: the method every
    other is compared with, paired (default: the run config's, else its first T-LoRA variant)."""
    run = load_run(run_dir)
    with metric_scope(run.per_method["metric"]):  # the metrics its evaluation held (docs/synthetic.md)
        return _make_report(run, compare, echo, reference)


def _make_report(run: RunFolder, compare: str | Path | None, echo: Callable[[str], None],
                 reference: str | None) -> Path:
    other = load_run(compare) if compare is not None else None
    board = leaderboard(run)
    chosen = resolve_reference(run, board, reference)
    compared = compare_table(board, leaderboard(other), paired_runs(run, other)) if other is not None else None
    tables = Tables(board, per_concept_table(run), chosen, paired_table(run, board, chosen), compared,
                    judge_agreement(board))
    target = run.root / REPORT_DIR
    check_writable(run.root, fix=f"make '{run.root}' writable: the report goes to its {REPORT_DIR}/ folder")
    with replaced_folder(target) as out:  # a report that fails half-way leaves the old one whole, or none
        _write_report(run, tables, compare, out, echo)
    return target


def _write_tables(tables: Tables, out: Path) -> None:
    from tlora_bench.report.latex import leaderboard_latex

    atomic_write_text(out / LEADERBOARD_FILE, tables.board.to_csv(index=False))
    random = bool(tables.board.get("random_weights", pd.Series(dtype=bool)).any())
    atomic_write_text(out / REPORT_MARKDOWN, "\n".join(
        part for part in (leaderboard_markdown(tables.board), paired_markdown(tables.paired, tables.reference),
                          agreement_markdown(tables.agreement, random)) if part))
    atomic_write_text(out / LATEX_FILE, leaderboard_latex(tables.board))
    atomic_write_text(out / "per_concept.csv", tables.concepts.to_csv(index=False))
    if tables.paired is not None:
        atomic_write_text(out / PAIRED_FILE, tables.paired.to_csv(index=False))
    if tables.agreement is not None:
        atomic_write_text(out / AGREEMENT_FILE, tables.agreement.to_csv(index=False))
    if tables.compared is not None:
        atomic_write_text(out / "compare.csv", tables.compared.to_csv(index=False))


def _write_report(run: RunFolder, tables: Tables, compare: str | Path | None, out: Path,
                  echo: Callable[[str], None]) -> None:
    from tlora_bench.report.grids import concept_grids
    from tlora_bench.report.html import render
    from tlora_bench.report.plots import make_plots

    _write_tables(tables, out)
    board, concepts = tables.board, tables.concepts

    def note(message: str) -> None:
        run.problems.append(message)
        echo(f"warning: {message}")

    plots = make_plots(run, board, concepts, out / "plots", note)
    unreadable = missing_images(run)
    grids = concept_grids(run, list(board["method_label"]), on_unreadable=unreadable.append)
    if unreadable:
        note(images_problem(unreadable))
    page = render(title=run.name, board=board, plots=plots, grids=grids, provenance=run.provenance,
                  evaluation=run.evaluation, summary=run.summary, compare=tables.compared,
                  compare_dir=str(compare) if compare is not None else None, problems=run.problems,
                  paired=tables.paired, reference=tables.reference)
    atomic_write_text(out / REPORT_PAGE, page)


__all__ = ["REPORT_DIR", "make_report"]
