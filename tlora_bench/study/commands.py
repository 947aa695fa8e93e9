"""`tlora-bench study make|analyze`: the click group; cli.py registers it with `main.add_command(study)`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tlora_bench.cli_common import ErrorLineGroup, data_dir_option, manifest_option

if TYPE_CHECKING:
    import pandas as pd  # the CLI imports pandas only when a command runs


@click.group(cls=ErrorLineGroup)
def study() -> None:
    """Blind pairwise user study (paper §4.5): make rater forms, analyze their answers."""


@study.command("make")
@click.argument("images_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--pairs", required=True,
              help="Comma-separated METHOD_A:METHOD_B method labels, e.g. tlora-64:lora-64,tlora-64:oft-32. "
                   "Win rates are reported for METHOD_A.")
@click.option("--n", "n", type=int, default=60, show_default=True,
              help="Trials per pair: unique (concept, template) pairs drawn at random.")
@click.option("--raters", type=int, default=5, show_default=True, help="Number of forms (rater-01.html, ...).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Draws trials, image indices, left/right sides and each rater's trial order.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder. Default: IMAGES_DIR/../study (a run folder: RUN/study).")
@click.option("--image-size", type=int, default=512, show_default=True,
              help="Images are re-encoded as JPEG at most this many pixels on the long side.")
@manifest_option
@data_dir_option
def make_command(images_dir: str, pairs: str, n: int, raters: int, seed: int, out: str | None,
                 image_size: int, manifest_path: str | None, data_dir: str | None) -> None:
    """Write one self-contained HTML form per rater and the answer key (key.csv) from IMAGES_DIR.

    IMAGES_DIR is DIR/<method_label>/<concept_id>/images.jsonl, or a run folder (its images/ is used).
    """
    from tlora_bench.concepts.manifest import manifest_for
    from tlora_bench.study.make import images_folder, make_study, parse_pairs

    manifest = manifest_for(manifest_path)
    folder = images_folder(images_dir)
    target = Path(out) if out else folder.parent / "study"
    forms = make_study(images_dir, parse_pairs(pairs), n, raters, seed, target, manifest, data_dir, image_size)
    click.echo(f"wrote {len(forms)} form(s) and the answer key {target / 'key.csv'}; "
               "send each rater one form, keep key.csv to yourself")


@study.command("analyze")
@click.argument("answers", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The key.csv written by `study make`.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder. Default: the key's folder.")
@click.option("--bootstrap", type=int, default=1000, show_default=True,
              help="Bootstrap replicates (trials resampled) for Bradley-Terry intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def analyze_command(answers: tuple[str, ...], key_path: str, out: str | None, bootstrap: int, seed: int) -> None:
    """Win rates (Wilson 95%, exact binomial p) per pair and question from raters' ANSWERS CSV files, the raters'
    agreement (Krippendorff's alpha, Fleiss' kappa) and Bradley-Terry strengths with tied ranks."""
    # The docstring above is the README's command reference (tlora_bench.cli_docs); docs/study.md says more.
    from tlora_bench.study.analyze import AGREEMENT_FILE, ANALYSIS_FILE, BT_FILE, PLOT_FILE, analyze

    target = Path(out) if out else Path(key_path).parent
    tables = analyze(answers, key_path, target, bootstrap=bootstrap, seed=seed)
    _echo_tables(tables)
    written = [ANALYSIS_FILE, AGREEMENT_FILE, *([BT_FILE] if "bradley_terry" in tables else []), PLOT_FILE]
    click.echo(f"wrote {', '.join(str(target / name) for name in written)}")


def _echo_tables(tables: dict[str, pd.DataFrame]) -> None:
    """The win rates, one line each (`*`: a degenerate interval), the agreement over all pairs, and why."""
    from tlora_bench.study.agreement import describe
    from tlora_bench.study.analyze import ALL_PAIRS

    for row in tables["win_rates"].itertuples():
        flag = "*" if row.interval_degenerate else " "
        click.echo(f"{row.pair:<28} q{row.question} {row.question_name:<21} {row.wins_a:>4}/{row.n:<4} "
                   f"{row.win_rate_a:6.1%}  [{row.ci_low:.1%}, {row.ci_high:.1%}]{flag} p={row.p_value:.3g}  "
                   f"{describe(row._asdict())}")
    for row in tables["agreement"][tables["agreement"]["pair"] == ALL_PAIRS].itertuples():
        click.echo(f"agreement, all pairs, q{row.question} {row.question_name}: "
                   f"Krippendorff's {describe(row._asdict())}")
    notes = {note for name in ("win_rates", "bradley_terry") if name in tables
             for note in tables[name].loc[tables[name]["interval_degenerate"], "interval_note"]}
    for note in sorted(notes):
        click.echo(f"* interval_degenerate: {note}")
