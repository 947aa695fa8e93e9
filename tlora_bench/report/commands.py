"""The `tlora-bench report` command; cli.py registers `report_cmd`."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--compare", "compare", metavar="OTHER_DIR", type=click.Path(file_okay=False), default=None,
              help="Another run or evaluated folder: compare.csv with both means, whether the 95% "
                   "intervals overlap, and the difference paired on the images both have.")
@click.option("--reference", default=None, metavar="LABEL",
              help="The method every other is compared with, paired by concept (default: the run config's "
                   "`reference`, else its first T-LoRA variant).")
def report_cmd(run_dir: str, compare: str | None, reference: str | None) -> None:
    """Write DIR/report/: leaderboard (beside the paper's numbers), paired table, per-concept table, plots, a LaTeX
    table and report.html."""
    from tlora_bench.report import make_report

    out = make_report(run_dir, compare, echo=lambda message: click.echo(message, err=True), reference=reference)
    click.echo(f"report: {out / 'report.html'}")
