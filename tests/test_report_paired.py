"""The report's paired comparisons, LaTeX table, Pareto columns and random-weights marker (docs/evaluation.md,
"Paired comparisons"; docs/report.md)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_one_line_error
from tests.report_helpers import BASE, CONCEPTS, TEMPLATES, make_evaluated_folder
from tlora_bench.cli import main
from tlora_bench.errors import TloraBenchError
from tlora_bench.metrics import paired
from tlora_bench.metrics.registry import headline_metrics, metric_names
from tlora_bench.report import make_report
from tlora_bench.report.comparisons import default_reference, method_name
from tlora_bench.report.latex import escape, leaderboard_latex
from tlora_bench.report.pareto import FRONTIERS, on_front

LABELS = {"lora-64": ("lora-64", 64), "tlora-64": ("tlora-64", 64), "oft-32": ("oft-32", None)}
SHIFT = {"lora-64": 0.0, "tlora-64": 0.05, "oft-32": -0.03}  # each method's known offset from lora-64


def write_scores(root: Path, shift: dict[str, float] = SHIFT, concept_effect: float = 0.2) -> pd.DataFrame:
    """evaluation/scores.csv for the folder's images: metric = 0.5 + the concept's effect + the method's shift
    + small noise, so concepts are correlated across methods (an easy concept is easy for all)."""
    rng = np.random.default_rng(1)
    rows = []
    for label, offset in shift.items():
        for c, concept in enumerate(CONCEPTS):
            for template in TEMPLATES:
                for index in range(2):
                    seed = 100 * TEMPLATES.index(template) + index
                    noise = dict(zip(metric_names(), rng.normal(0, 0.001, len(metric_names())), strict=True))
                    rows.append({"concept": concept, "class_word": CONCEPTS[concept], "method_label": label,
                                 "method": LABELS[label][0], "rank": LABELS[label][1], "template": template,
                                 "image_index": index, "seed": seed,
                                 "prompt_kind": "base" if template == BASE else "contextual",
                                 "gen_mask_fallback": False, "n_real": 3, "real_mask_fallbacks": 0,
                                 **{m: 0.5 + concept_effect * c + offset + n for m, n in noise.items()}})
    table = pd.DataFrame(rows)
    table.to_csv(root / "evaluation" / "scores.csv", index=False)
    return table


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = make_evaluated_folder(tmp_path / "eval", labels=LABELS)
    write_scores(root)
    return root


def test_the_default_reference_is_the_first_tlora_variant() -> None:
    board = pd.DataFrame({"method_label": ["a", "b", "c"], "method": ["lora-4", "lycoris:vanilla-tlora-8", "tlora-4"]})
    assert method_name("lycoris:tlora-4") == "tlora" and method_name("vanilla-tlora-16") == "vanilla-tlora"
    assert default_reference(board) == "b"
    assert default_reference(board.iloc[[0]]) is None


def test_the_report_pairs_every_method_with_the_first_tlora(folder: Path) -> None:
    out = make_report(folder)
    table = pd.read_csv(out / "paired.csv")
    assert set(table["reference"]) == {"tlora-64"} and list(dict.fromkeys(table["method_label"])) == ["lora-64",
                                                                                                         "oft-32"]
    for label in ("lora-64", "oft-32"):
        rows = table[table["method_label"] == label]
        assert set(rows.loc[rows["difference"].isna(), "metric"]) == {"drift"}  # no drift prompts in this folder
        rows = rows.dropna(subset=["difference"])
        assert np.allclose(rows["difference"], SHIFT[label] - SHIFT["tlora-64"], atol=2e-3)
        # the concept effect cancels in the pairing, not in the unpaired interval of the difference
        assert ((rows["ci_high"] - rows["ci_low"]) < (rows["unpaired_ci_high"] - rows["unpaired_ci_low"]) / 10).all()
    markdown = (out / "leaderboard.md").read_text()
    assert "Paired against tlora-64" in markdown
    assert all(f"{m.label} − tlora-64" in markdown for m in headline_metrics())
    assert "Paired against tlora-64" in (out / "report.html").read_text()


def test_the_paired_table_equals_the_module_on_the_folders_scores(folder: Path) -> None:
    out = make_report(folder, reference="oft-32")
    ours = pd.read_csv(out / "paired.csv")
    scores = pd.read_csv(folder / "evaluation" / "scores.csv")
    direct = paired.against_reference(scores, "oft-32")
    pd.testing.assert_frame_equal(ours.sort_values(["method_label", "metric"]).reset_index(drop=True),
                                  direct.sort_values(["method_label", "metric"]).reset_index(drop=True),
                                  check_dtype=False)


def test_an_unknown_reference_is_one_line_naming_the_labels(folder: Path) -> None:
    with pytest.raises(TloraBenchError, match=r"reference method 'tlora-6' .*did you mean 'tlora-64'.*use one of"):
        make_report(folder, reference="tlora-6")
    result = CliRunner().invoke(main, ["report", str(folder), "--reference", "nope"])
    assert_one_line_error(result, "reference method 'nope'")
    assert not (folder / "report").exists()  # nothing half-written


def test_without_a_tlora_variant_there_is_no_paired_table_and_the_page_says_how(tmp_path: Path) -> None:
    labels = {"lora-64": LABELS["lora-64"], "oft-32": LABELS["oft-32"]}
    root = make_evaluated_folder(tmp_path / "eval", labels=labels)
    write_scores(root, {k: SHIFT[k] for k in labels})
    out = make_report(root)
    assert not (out / "paired.csv").exists() and "Paired against" not in (out / "leaderboard.md").read_text()
    assert "--reference LABEL" in (out / "report.html").read_text()


def test_compare_pairs_run_against_run_on_the_images_both_have(folder: Path, tmp_path: Path) -> None:
    other = make_evaluated_folder(tmp_path / "other", labels=LABELS)
    scores = write_scores(other)
    shifted = scores.assign(**{"ts": scores["ts"] - 0.1})  # the other run: TS 0.1 lower, same images
    shifted.to_csv(other / "evaluation" / "scores.csv", index=False)
    table = pd.read_csv(make_report(folder, compare=other) / "compare.csv")
    ts = table[table["metric"] == "ts"]
    assert len(ts) == len(LABELS) and np.allclose(ts["paired_difference"], 0.1, atol=1e-9)
    assert np.allclose(ts["paired_ci_low"], 0.1, atol=1e-9) and np.allclose(ts["paired_ci_high"], 0.1, atol=1e-9)
    same = table[table["metric"] == "is"]
    assert np.allclose(same["paired_difference"], 0.0, atol=1e-12) and (same["p_value"] == 1).all()
    assert ((ts["p_holm"] >= ts["p_value"]) & (ts["paired_concepts"] == len(CONCEPTS))).all()


def test_a_compare_pairs_only_the_images_both_folders_have(folder: Path, tmp_path: Path) -> None:
    other = make_evaluated_folder(tmp_path / "other", labels=LABELS)
    scores = write_scores(other)
    scores[scores["template"] == BASE].to_csv(other / "evaluation" / "scores.csv", index=False)
    table = pd.read_csv(make_report(folder, compare=other) / "compare.csv")
    ours = pd.read_csv(folder / "evaluation" / "scores.csv")
    mine = ours[(ours["method_label"] == "lora-64") & (ours["template"] == BASE)]
    theirs = scores[(scores["method_label"] == "lora-64") & (scores["template"] == BASE)]
    expected = paired.compare(mine, theirs)
    row = table[(table["method_label"] == "lora-64") & (table["metric"] == "dino_is")].iloc[0]
    want = expected[expected["metric"] == "dino_is"].iloc[0]
    assert math.isclose(row["paired_difference"], want["difference"], abs_tol=1e-12)


def test_the_latex_table_bolds_the_best_by_direction_and_gives_half_intervals(folder: Path) -> None:
    out = make_report(folder)
    text = (out / "leaderboard.tex").read_text()
    board = pd.read_csv(out / "leaderboard.csv")
    assert text.count(r"\toprule") == 1 and r"\bottomrule" in text and r"\midrule" in text
    lines = {line.split(" & ")[0]: line for line in text.splitlines() if " & " in line}
    for metric in headline_metrics():
        column = list(lines["Method"].split(" & ")).index(next(c for c in lines["Method"].split(" & ")
                                                                if c.startswith(escape(metric.label))))
        values = board.set_index("method_label")[f"{metric.name}_mean"].round(3)
        bold = {label for label in values.index if r"\textbf" in lines[escape(label)].split(" & ")[column]}
        if metric.higher_is_better is None:
            assert not bold
        else:
            best = values.max() if metric.higher_is_better else values.min()
            assert bold == set(values.index[values == best])
    row = board.iloc[0]
    half = (row["ts_ci_high"] - row["ts_ci_low"]) / 2
    assert f"$\\pm$ {half:.3f}" in lines[escape(row["method_label"])]
    assert escape("a_b & 50%") == r"a\_b \& 50\%"


def test_latex_leaves_a_missing_value_as_a_dash() -> None:
    metric = headline_metrics()[0].name
    board = pd.DataFrame({"method_label": ["x"], f"{metric}_mean": [math.nan], f"{metric}_ci_low": [math.nan],
                          f"{metric}_ci_high": [math.nan], "clip_model": ["c"], "dino_model": ["d"],
                          "random_weights": [False], "random_weights_reason": [""]})
    assert re.search(r"^x & -- \\\\$", leaderboard_latex(board), re.MULTILINE)


def test_the_leaderboard_marks_pareto_members_and_carries_scoring_models(folder: Path) -> None:
    board = pd.read_csv(make_report(folder) / "leaderboard.csv")
    for frontier in FRONTIERS:
        if frontier.x in board and frontier.y in board:
            expected = on_front(board[frontier.x].to_numpy(float), board[frontier.y].to_numpy(float),
                                frontier.x_higher, frontier.y_higher)
            assert board[f"pareto_{frontier.name}"].tolist() == expected.tolist()
    assert "pareto_is_ts" in board and board["pareto_is_ts"].any()
    assert {"clip_model", "dino_model", "random_weights"} <= set(board.columns)


@pytest.mark.parametrize(("model", "tiny_extractors", "marked"), [("tiny", False, True), ("sdxl", True, True),
                                                                  ("sdxl", False, False)])
def test_random_weight_runs_are_marked_meaningless_everywhere(tmp_path: Path, model: str, tiny_extractors: bool,
                                                              marked: bool) -> None:
    root = make_evaluated_folder(tmp_path / "eval", model=model, labels=LABELS)
    per_method = pd.read_csv(root / "evaluation" / "per_method.csv")
    per_method.assign(tiny_models=tiny_extractors, clip_extractor="clip-vit-b-32", clip_weights="openai",
                      dino_extractor="dino-vits16", dino_weights="facebook").to_csv(
        root / "evaluation" / "per_method.csv", index=False)
    out = make_report(root)
    board = pd.read_csv(out / "leaderboard.csv")
    assert board["random_weights"].tolist() == [marked] * len(board)
    assert board["dino_model"].iloc[0] == "dino-vits16 (facebook)" and board["clip_model"].iloc[0].startswith("clip")
    for text in ((out / "leaderboard.md").read_text(), (out / "report.html").read_text(),
                 (out / "leaderboard.tex").read_text()):
        assert ("these numbers are meaningless" in text) == marked
        assert "dino-vits16 (facebook)" in text


def test_per_image_scores_without_a_pairing_column_are_one_line(folder: Path) -> None:
    scores = pd.read_csv(folder / "evaluation" / "scores.csv").drop(columns=["seed"])
    scores.to_csv(folder / "evaluation" / "scores.csv", index=False)
    with pytest.raises(TloraBenchError, match=r"scores.csv' has no column 'seed'; re-run `tlora-bench evaluate`"):
        make_report(folder)
