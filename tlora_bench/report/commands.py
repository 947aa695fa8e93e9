"""The `tlora-bench report` command; cli.py registers `report_cmd`."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--compare", "compare", metavar="OTHER_DIR", type=click.Path(file_okay=False), default=None,
              help="Another run or evaluated folder: compare.csv with both means, and whether the 95% "
                   "intervals overlap.")
def report_cmd(run_dir: str, compare: str | None) -> None:
    """Write DIR/report/: leaderboard (beside the paper's numbers), per-concept table, plots and report.html."""
    from tlora_bench.report import make_report

    out = make_report(run_dir, compare, echo=lambda message: click.echo(message, err=True))
    click.echo(f"report: {out / 'report.html'}")
