"""`tlora-bench report`: files, numbers equal to the evaluation's, the paper's values, escaping, no network."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tests.report_helpers import EVIL, make_evaluated_folder, metric_value
from tlora_bench.errors import TloraBenchError
from tlora_bench.metrics.registry import Metric, metric_names, registered_metric
from tlora_bench.report import make_report
from tlora_bench.report.commands import report_cmd
from tlora_bench.report.paper import paper_tables

OUTPUTS = ("leaderboard.csv", "leaderboard.md", "per_concept.csv", "report.html")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from tests.runner_helpers import reduced_config
    from tlora_bench.runner import run

    tmp_path = tmp_path_factory.mktemp("report-run")
    run(reduced_config(tmp_path), tmp_path / "run", progress=False, echo=lambda m: None)
    make_report(tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    root = make_evaluated_folder(tmp_path_factory.mktemp("report-evaluated") / "eval")
    make_report(root)
    return root


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    sources = re.findall(r"""<img[^>]*\ssrc=["']([^"']*)""", html)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "<link" not in html.lower()
    assert re.findall(r"<script[^>]*>", html, re.IGNORECASE) == ["<script>"]  # the page's own sorter, inline


def test_run_report_files(tiny_run: Path) -> None:
    out = tiny_run / "report"
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    for plot in ("is_vs_ts", "by_rank", "heat_map", "loss", "effective_rank"):
        assert (out / "plots" / f"{plot}.png").is_file() and (out / "plots" / f"{plot}.svg").is_file(), plot


def test_run_leaderboard_equals_evaluation(tiny_run: Path) -> None:
    board = pd.read_csv(tiny_run / "report" / "leaderboard.csv")
    per_method = pd.read_csv(tiny_run / "evaluation" / "per_method.csv")
    run_board = pd.read_csv(tiny_run / "leaderboard.csv")
    assert list(board["method_label"]) == list(run_board["method_label"])
    for _, row in per_method.iterrows():
        ours = board[board["method_label"] == row["method_label"]].iloc[0]
        for column in ("mean", "ci_low", "ci_high"):
            assert ours[f"{row['metric']}_{column}"] == pytest.approx(row[column], abs=1e-12, nan_ok=True)
        assert row["n_concepts"] in (0, ours["n_concepts"])  # 0: a metric with no value in this run (drift)
    assert (board["n_images"] > 0).all() and not board["incomplete"].any()
    assert board["paper_table"].isna().all() and board["paper_is"].isna().all()  # tiny models match nothing


def test_run_html_self_contained_with_training_images(tiny_run: Path) -> None:
    html = (tiny_run / "report" / "report.html").read_text()
    assert_self_contained(html)
    assert "Training image 01.jpg" in html and "Protocol" in html and "effective_rank" in html


def test_evaluated_folder_numbers_and_paper(evaluated: Path) -> None:
    board = pd.read_csv(evaluated / "report" / "leaderboard.csv").set_index("method_label")
    for i, label in enumerate(("tlora-64", "lora-64")):
        for m, metric in enumerate(metric_names()):
            assert board.loc[label, f"{metric}_mean"] == pytest.approx(metric_value(i, m))
            assert board.loc[label, f"{metric}_ci_low"] == pytest.approx(metric_value(i, m) - 0.02)
        assert board.loc[label, "n_concepts"] == 2 and board.loc[label, "n_images"] == 16
    tlora = board.loc["tlora-64"]
    assert tlora["paper_table"] == "table2"
    assert (tlora["paper_is"], tlora["paper_ts"], tlora["paper_dino_is"]) == pytest.approx((0.900, 0.256, 0.802))
    assert tlora["is_minus_paper"] == pytest.approx(tlora["is_masked_mean"] - 0.900)
    assert tlora["dino_is_minus_paper"] == pytest.approx(tlora["dino_is_masked_mean"] - 0.802)
    assert tlora["ts_minus_paper"] == pytest.approx(tlora["ts_mean"] - 0.256)
    assert board.loc["lora-64", "paper_is"] == pytest.approx(0.901)
    assert board.loc["evil" + EVIL, "paper_table"] == "table2"  # oft-32 from per_method's method column
    per_concept = pd.read_csv(evaluated / "report" / "per_concept.csv")
    assert len(per_concept) == 6 and set(per_concept["concept"]) == {"dog6", "teapot"}


def test_tiny_model_matches_no_paper_row(tmp_path: Path) -> None:
    root = make_evaluated_folder(tmp_path / "eval", model="tiny-sdxl")
    board = pd.read_csv(make_report(root) / "leaderboard.csv")
    assert board["paper_table"].isna().all()


def test_html_escapes_file_contents(evaluated: Path) -> None:
    html = (evaluated / "report" / "report.html").read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert_self_contained(html)
    assert "a photo of a {0}" in html and "dog6" in html


def test_report_reads_files_only(tmp_path: Path) -> None:
    root = make_evaluated_folder(tmp_path / "eval")
    code = (f"import sys; from tlora_bench.report import make_report; make_report({str(root)!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_compare(evaluated: Path, tmp_path: Path) -> None:
    other = make_evaluated_folder(tmp_path / "other", labels={"tlora-64": ("tlora-64", 64)})
    out = make_report(evaluated, compare=other)
    table = pd.read_csv(out / "compare.csv")
    assert set(table["method_label"]) == {"tlora-64"} and len(table) == len(metric_names())
    assert (table["difference"].abs() < 1e-12).all() and table["intervals_overlap"].all()
    assert "Compared with" in (out / "report.html").read_text()
    shifted = make_evaluated_folder(tmp_path / "shifted", labels={"lora-64": ("lora-64", 64)})
    table = pd.read_csv(make_report(shifted, compare=evaluated) / "compare.csv")  # lora-64: 0.5 vs 0.6
    assert table["difference"].to_numpy() == pytest.approx([-0.1] * len(metric_names()))
    assert not table["intervals_overlap"].any()


def test_incomplete_from_summary(tmp_path: Path) -> None:
    root = make_evaluated_folder(tmp_path / "eval", labels={"tlora-64": ("tlora-64", 64)})
    (root / "summary.json").write_text('{"failures": [{"job": "tlora-64/dog6/seed-0", "error": "boom ' + EVIL
                                       + '"}]}')
    out = make_report(root)
    board = pd.read_csv(out / "leaderboard.csv")
    assert bool(board["incomplete"].iloc[0]) and "1 failed jobs" in board["incomplete_reason"].iloc[0]
    html = (out / "report.html").read_text()
    assert "tlora-64/dog6/seed-0" in html and EVIL not in html
    assert "incomplete" in (out / "leaderboard.md").read_text()


def test_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(TloraBenchError, match="does not exist"):
        make_report(tmp_path / "nowhere")
    with pytest.raises(TloraBenchError, match=r"per_method\.csv' not found; score the folder first"):
        make_report(tmp_path)
    root = make_evaluated_folder(tmp_path / "eval")
    (root / "config.json").write_text("{broken")
    with pytest.raises(TloraBenchError, match=r"config\.json"):
        make_report(root)


@pytest.mark.parametrize("table", ["per_method.csv", "per_concept.csv"])
def test_a_word_where_a_score_belongs_is_one_line_and_no_report(tmp_path: Path, table: str) -> None:
    root = make_evaluated_folder(tmp_path / "eval")
    path = root / "evaluation" / table
    frame = pd.read_csv(path)
    column = "mean" if table == "per_method.csv" else "is_masked"
    frame[column] = frame[column].astype(object)
    frame.loc[1, column] = "abc"
    frame.to_csv(path, index=False)
    with pytest.raises(TloraBenchError, match=rf"{table}' row 3, column '{column}': 'abc' is not a number"):
        make_report(root)
    assert not (root / "report").exists()


def test_a_metric_with_no_value_gets_no_panel_and_no_warning(tmp_path: Path) -> None:
    """Only the base prompt (no TS anywhere), as with `--set prompts=1`: the heat map shows CLIP-IS alone."""
    root = make_evaluated_folder(tmp_path / "eval")
    path = root / "evaluation" / "per_concept.csv"
    pd.read_csv(path).assign(ts=float("nan")).to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = make_report(root)
    assert (out / "plots" / "heat_map.png").is_file()


def test_command(evaluated: Path) -> None:
    result = CliRunner().invoke(report_cmd, [str(evaluated)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output


def test_paper_copy_is_verbatim() -> None:
    shipped = Path(__file__).parent.parent / "results" / "paper" / "paper_tables.csv"
    spec = Path(__file__).parent.parent.parent / "shared" / "spec" / "paper_tables.csv"
    if spec.is_file():
        assert shipped.read_bytes() == spec.read_bytes()
    assert list(paper_tables().columns) == ["table", "model", "method", "rank_or_config", "n_images", "dino_is",
                                            "is", "ts", "notes"]


def test_a_registered_metric_gets_leaderboard_columns_and_html(tmp_path: Path) -> None:
    """A metric added by one register_metric call shows in every table of the report; removed, it is gone."""
    metric = Metric("sharpness", "sharpness " + EVIL, higher_is_better=False, scale="0..1",
                    score="tests.metrics_helpers:brightness")
    with registered_metric(metric):
        root = make_evaluated_folder(tmp_path / "eval")
        other = make_evaluated_folder(tmp_path / "other", labels={"tlora-64": ("tlora-64", 64)})
        out = make_report(root, compare=other)
    index = len(metric_names())  # make_evaluated_folder numbered it after the built-ins
    board = pd.read_csv(out / "leaderboard.csv").set_index("method_label")
    columns = list(board.columns)
    assert columns.index("sharpness_mean") == columns.index("drift_ci_high") + 1
    assert board.loc["lora-64", "sharpness_mean"] == pytest.approx(metric_value(1, index))
    assert board.loc["lora-64", "sharpness_ci_low"] == pytest.approx(metric_value(1, index) - 0.02)
    assert "sharpness" in pd.read_csv(out / "per_concept.csv").columns
    assert "sharpness" in set(pd.read_csv(out / "compare.csv")["metric"])
    html = (out / "report.html").read_text()
    assert EVIL not in html and "sharpness &lt;script&gt;" in html
    assert f"{metric_value(1, index):.3f} [" in html
    header = next(line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("|"))
    assert "sharpness" in header
    assert "sharpness_mean" not in pd.read_csv(make_report(root) / "leaderboard.csv").columns
