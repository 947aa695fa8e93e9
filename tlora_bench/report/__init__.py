"""`tlora-bench report DIR [--compare OTHER]`: tables, plots and a self-contained HTML page in DIR/report/.

Reads files only (torch is imported lazily, for the effective-rank plot of a folder with adapters).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tlora_bench.fileio import atomic_write_text, check_writable, replaced_folder
from tlora_bench.layout import LEADERBOARD_FILE, REPORT_DIR, REPORT_MARKDOWN, REPORT_PAGE
from tlora_bench.report.inputs import RunFolder, images_problem, load_run, missing_images
from tlora_bench.report.tables import compare_table, leaderboard, leaderboard_markdown, per_concept_table

if TYPE_CHECKING:
    import pandas as pd



def make_report(run_dir: str | Path, compare: str | Path | None = None,
                echo: Callable[[str], None] = lambda message: None) -> Path:
    """Write DIR/report/ (leaderboard.csv, leaderboard.md, per_concept.csv, plots/, report.html and, with
    `compare`, compare.csv); return that folder."""
    run = load_run(run_dir)
    other = load_run(compare) if compare is not None else None
    board = leaderboard(run)
    concepts = per_concept_table(run)
    compared = compare_table(board, leaderboard(other)) if other is not None else None
    target = run.root / REPORT_DIR
    check_writable(run.root, fix=f"make '{run.root}' writable: the report goes to its {REPORT_DIR}/ folder")
    with replaced_folder(target) as out:  # a report that fails half-way leaves the old one whole, or none
        _write_report(run, board, concepts, compared, compare, out, echo)
    return target


def _write_report(run: RunFolder, board: pd.DataFrame, concepts: pd.DataFrame, compared: pd.DataFrame | None,
                  compare: str | Path | None, out: Path, echo: Callable[[str], None]) -> None:
    from tlora_bench.report.grids import concept_grids
    from tlora_bench.report.html import render
    from tlora_bench.report.plots import make_plots

    atomic_write_text(out / LEADERBOARD_FILE, board.to_csv(index=False))
    atomic_write_text(out / REPORT_MARKDOWN, leaderboard_markdown(board))
    atomic_write_text(out / "per_concept.csv", concepts.to_csv(index=False))
    if compared is not None:
        atomic_write_text(out / "compare.csv", compared.to_csv(index=False))

    def note(message: str) -> None:
        run.problems.append(message)
        echo(f"warning: {message}")

    plots = make_plots(run, board, concepts, out / "plots", note)
    unreadable = missing_images(run)
    grids = concept_grids(run, list(board["method_label"]), on_unreadable=unreadable.append)
    if unreadable:
        note(images_problem(unreadable))
    page = render(title=run.name, board=board, plots=plots, grids=grids,
                  provenance=run.provenance, evaluation=run.evaluation, summary=run.summary, compare=compared,
                  compare_dir=str(compare) if compare is not None else None, problems=run.problems)
    atomic_write_text(out / REPORT_PAGE, page)


__all__ = ["REPORT_DIR", "make_report"]
