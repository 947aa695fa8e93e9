"""`tlora-bench study`: forms that reveal nothing, a key that maps every trial, and the analysis statistics."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.test_study_helpers import EVIL_CLASS, METHODS, make_images, make_manifest, read_key_rows, write_answers
from tlora_bench.study.commands import study
from tlora_bench.study.questions import QUESTIONS
from tlora_bench.study.stats import binomial_p, bradley_terry, mm_fit, wilson_interval, win_matrix

DATA_URI = re.compile(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+")


def _make(tmp_path: Path, *extra: str, pairs: str = "alpha-a:beta-b,alpha-a:gamma-c", n: int = 6,
          raters: int = 3, seed: int = 0, out: str = "study") -> tuple[Path, object]:
    manifest = tmp_path / "tiny.toml"
    if not manifest.exists():
        make_manifest(tmp_path)
        make_images(tmp_path / "gen")
    target = tmp_path / out
    result = CliRunner().invoke(study, ["make", str(tmp_path / "gen"), "--pairs", pairs, "--n", str(n),
                                        "--raters", str(raters), "--seed", str(seed), "--out", str(target),
                                        "--manifest", str(manifest), "--image-size", "32", *extra])
    return target, result


@pytest.fixture
def made(tmp_path: Path) -> Path:
    target, result = _make(tmp_path)
    assert result.exit_code == 0, result.output
    return target


def test_forms_show_questions_and_reveal_nothing(made: Path) -> None:
    forms = sorted(made.glob("rater-*.html"))
    assert [f.name for f in forms] == ["rater-01.html", "rater-02.html", "rater-03.html"]
    key = read_key_rows(made / "key.csv")
    for form in forms:
        html = form.read_text()
        for q in QUESTIONS:
            assert q.text in html
        assert "1. Which image more accurately represents the original concept?" in html
        srcs = re.findall(r'<img src="([^"]*)"', html)
        assert len(srcs) == 3 * len(key) and all(s.startswith("data:image/") for s in srcs)
        text = DATA_URI.sub("", html)  # base64 may spell anything by chance; the rest must not
        assert "http" not in text and "<link" not in text and "url(" not in text
        for method in METHODS:
            assert method not in text
        for row in key:
            assert Path(row["file_a"]).name not in text and Path(row["file_b"]).name not in text
            assert f'data-trial="{row["trial_id"]}"' in html
        assert EVIL_CLASS not in html and "&lt;script&gt;x&lt;/script&gt;" in html
        assert "<b>" not in text and "&lt;b&gt;" in text  # a template with markup is shown as text
        assert text.count('type="radio"') == 2 * len(QUESTIONS) * len(key)
        assert "tie" not in text.lower().replace("no tie option", "")


def test_key_maps_every_trial_and_is_reproducible(made: Path, tmp_path: Path) -> None:
    key = read_key_rows(made / "key.csv")
    assert len(key) == 12 and len({r["trial_id"] for r in key}) == 12
    for pair in ("alpha-a:beta-b", "alpha-a:gamma-c"):
        rows = [r for r in key if r["pair"] == pair]
        assert len({(r["concept"], r["template"]) for r in rows}) == 6  # unique concept-prompt pairs
        assert Counter(r["left"] == r["method_a"] for r in rows) == {True: 3, False: 3}  # balanced sides
    for r in key:
        assert {r["left"], r["right"]} == {r["method_a"], r["method_b"]}
        assert r["seed_a"] == r["seed_b"] and r["image_index_a"] == r["image_index_b"]
        assert r["file_a"].startswith(f'{r["method_a"]}/{r["concept"]}/')
        assert "V*" in r["prompt"] and "{0}" not in r["prompt"] and r["study_seed"] == "0"
    # each rater sees every trial, in an order of their own
    orders = [re.findall(r'data-trial="([^"]+)"', (made / f"rater-0{i}.html").read_text()) for i in (1, 2, 3)]
    assert all(sorted(o) == sorted(r["trial_id"] for r in key) for o in orders)
    assert orders[0] != orders[1] or orders[1] != orders[2]
    again, result = _make(tmp_path, out="again")
    assert result.exit_code == 0, result.output
    assert (again / "key.csv").read_text() == (made / "key.csv").read_text()
    assert (again / "rater-02.html").read_text() == (made / "rater-02.html").read_text()
    other, result = _make(tmp_path, seed=1, out="other")
    assert (other / "key.csv").read_text() != (made / "key.csv").read_text()


def test_sides_are_balanced_over_many_trials(tmp_path: Path) -> None:
    target, result = _make(tmp_path, pairs="alpha-a:beta-b", n=7, raters=1)
    assert result.exit_code == 0, result.output
    lefts = [r["left"] == r["method_a"] for r in read_key_rows(target / "key.csv")]
    assert sum(lefts) in (3, 4)


@pytest.mark.parametrize(("pairs", "n", "message"), [
    ("alpha-a:beta-b", 9, "pair alpha-a:beta-b has only 8 unique (concept, template) pairs"),
    ("alpha-a:delta-d", 2, "unknown method label"),
    ("alpha-a", 2, "is not METHOD_A:METHOD_B"),
    ("alpha-a:alpha-a", 2, "compares a method with itself"),
])
def test_make_errors_are_one_line(tmp_path: Path, pairs: str, n: int, message: str) -> None:
    _, result = _make(tmp_path, pairs=pairs, n=n)
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1, result.output


def test_a_study_with_forms_out_is_never_replaced_by_another(made: Path, tmp_path: Path) -> None:
    key = (made / "key.csv").read_bytes()
    for (_, result), message in ((_make(tmp_path, seed=5), "with other seed"),
                                 (_make(tmp_path, raters=1), "with other raters")):
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1, result.output
    assert (made / "key.csv").read_bytes() == key and (made / "rater-03.html").is_file()
    _, result = _make(tmp_path)  # the same settings remake the same files
    assert result.exit_code == 0 and (made / "key.csv").read_bytes() == key


@pytest.mark.parametrize("size", ["0", "-5", "8"])
def test_image_size_too_small_is_one_line(tmp_path: Path, size: str) -> None:
    target, result = _make(tmp_path, "--image-size", size)
    assert result.exit_code == 1 and "--image-size must be at least 16" in result.output, result.output
    assert not target.exists()


def test_run_folder_images_subfolder_is_used(tmp_path: Path) -> None:
    make_manifest(tmp_path)
    make_images(tmp_path / "run" / "images")
    result = CliRunner().invoke(study, ["make", str(tmp_path / "run"), "--pairs", "alpha-a:beta-b", "--n", "2",
                                        "--raters", "1", "--manifest", str(tmp_path / "tiny.toml")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "study" / "rater-01.html").is_file()


# ---- statistics -------------------------------------------------------------------------------------------


def test_wilson_and_binomial_hand_example() -> None:
    low, high = wilson_interval(7, 10)
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)
    assert binomial_p(7, 10) == pytest.approx(0.34375)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    # exactly 0 and 1 at every n: a bound 1e-17 past the rate once made the plot's error bars negative
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 200))


def test_bradley_terry_order_and_fitters_agree() -> None:
    comparisons = [(0, 1)] * 8 + [(1, 0)] * 2 + [(1, 2)] * 8 + [(2, 1)] * 2 + [(0, 2)] * 9 + [(2, 0)]
    strengths, fitter = bradley_terry(3, comparisons)
    assert strengths[0] > strengths[1] > strengths[2]
    builtin, name = bradley_terry(3, comparisons, use_choix=False)
    assert name == "mm"
    np.testing.assert_allclose(builtin, mm_fit(win_matrix(3, comparisons)))
    np.testing.assert_allclose(strengths, builtin, atol=1e-5)  # choix (when installed) is the same estimator
    assert fitter in ("choix.mm_pairwise", "mm")


# ---- analyze ----------------------------------------------------------------------------------------------


def _answers_for(key: list[dict[str, str]], rater: str, prefer: dict[str, int]) -> list[tuple[str, str, int, str]]:
    """Answers where the method with the higher `prefer` score wins every question."""
    rows = []
    for r in key:
        best = max((r["method_a"], r["method_b"]), key=lambda m: prefer[m])
        side = "left" if r["left"] == best else "right"
        rows += [(rater, r["trial_id"], q.number, side) for q in QUESTIONS]
    return rows


def test_analyze_win_rates_and_bradley_terry(made: Path, tmp_path: Path) -> None:
    key = read_key_rows(made / "key.csv")
    prefer = {"alpha-a": 3, "beta-b": 2, "gamma-c": 1}
    study_id = key[0]["study_id"]
    files = [write_answers(tmp_path / f"r{i}.csv", _answers_for(key, f"rater-0{i}", prefer), study_id)
             for i in (1, 2)]
    # a third rater prefers beta-b over alpha-a, so the first pair is not unanimous
    files.append(write_answers(tmp_path / "r3.csv", _answers_for(key, "rater-03",
                                                                 {"alpha-a": 2, "beta-b": 3, "gamma-c": 1}), study_id))
    out = tmp_path / "analysis"
    result = CliRunner().invoke(study, ["analyze", *map(str, files), "--key", str(made / "key.csv"),
                                        "--out", str(out), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "analysis.csv")
    assert len(table) == 6 and set(table["question"]) == {1, 2, 3}
    ab = table[(table["pair"] == "alpha-a:beta-b") & (table["question"] == 1)].iloc[0]
    assert (ab["n"], ab["wins_a"]) == (18, 12)
    assert ab["win_rate_a"] == pytest.approx(12 / 18)
    assert (ab["ci_low"], ab["ci_high"]) == pytest.approx(wilson_interval(12, 18))
    assert ab["p_value"] == pytest.approx(binomial_p(12, 18))
    ac = table[table["pair"] == "alpha-a:gamma-c"]
    assert (ac["wins_a"] == 18).all() and (ac["ci_high"] == 1.0).all()
    bt = pd.read_csv(out / "bradley_terry.csv")
    for q in QUESTIONS:
        ranked = bt[bt["question"] == q.number].sort_values("rank")["method"].tolist()
        assert ranked == ["alpha-a", "beta-b", "gamma-c"]
    assert (bt["ci_low"] <= bt["strength"] + 1e-9).all() and (bt["strength"] <= bt["ci_high"] + 1e-9).all()
    assert (out / "win_rates.png").stat().st_size > 1000


def test_analyze_hand_example_seven_of_ten(tmp_path: Path) -> None:
    """One pair, ten trials, one rater: 7 wins of 10 on every question."""
    target, result = _make(tmp_path, pairs="alpha-a:beta-b", n=8, raters=1)
    assert result.exit_code == 0, result.output
    key = read_key_rows(target / "key.csv")
    rows = []
    for i, r in enumerate(key):  # 6 wins of 8 for alpha-a, plus 1 of 2 from a second rater on two trials
        side_a = "left" if r["left"] == "alpha-a" else "right"
        side_b = "right" if side_a == "left" else "left"
        rows += [("rater-01", r["trial_id"], q.number, side_a if i < 6 else side_b) for q in QUESTIONS]
    rows += [("rater-02", key[0]["trial_id"], q.number, "left" if key[0]["left"] == "alpha-a" else "right")
             for q in QUESTIONS]
    rows += [("rater-02", key[1]["trial_id"], q.number, "right" if key[1]["left"] == "alpha-a" else "left")
             for q in QUESTIONS]
    path = write_answers(tmp_path / "answers.csv", rows, key[0]["study_id"])
    result = CliRunner().invoke(study, ["analyze", str(path), "--key", str(target / "key.csv")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(target / "analysis.csv")
    assert list(table["n"]) == [10] * 3 and list(table["wins_a"]) == [7] * 3
    assert list(table["win_rate_a"]) == [0.7] * 3
    assert list(table["ci_low"].round(4)) == [0.3968] * 3 and list(table["ci_high"].round(4)) == [0.8922] * 3
    assert list(table["p_value"]) == pytest.approx([0.34375] * 3)
    assert not (target / "bradley_terry.csv").exists()  # two methods: win rates say it all


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda rows: rows.__setitem__(2, ("rater-01", "t-nope", 1, "left")), "row 3: trial id 't-nope' is not"),
    (lambda rows: rows.append(rows[0]), "row 7: rater 'rater-01' answered question 1 of trial"),
    (lambda rows: rows.__delitem__(4), "row 4: rater 'rater-01' answered trial"),
    (lambda rows: rows.__setitem__(1, (*rows[1][:3], "tie")), "row 2: answer must be 'left' or 'right'"),
    (lambda rows: rows.__setitem__(0, (*rows[0][:2], 4, "left")), "row 1: question must be one of [1, 2, 3]"),
])
def test_bad_answers_are_one_line_errors(made: Path, tmp_path: Path, mutate, message: str) -> None:
    key = read_key_rows(made / "key.csv")
    rows = [("rater-01", r["trial_id"], q.number, "left") for r in key[:2] for q in QUESTIONS]
    mutate(rows)
    path = write_answers(tmp_path / "bad.csv", rows, key[0]["study_id"])
    result = CliRunner().invoke(study, ["analyze", str(path), "--key", str(made / "key.csv")])
    assert result.exit_code == 1
    assert f"{path} {message}" in result.output and result.output.count("\n") == 1, result.output


def test_bad_answer_file_header(made: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("study_id,rater,trial,question,answer\ns,x,y,1,left\n")
    result = CliRunner().invoke(study, ["analyze", str(path), "--key", str(made / "key.csv")])
    assert result.exit_code == 1 and "missing column 'trial_id'" in result.output


def test_answer_and_key_files_read_alike(made: Path, tmp_path: Path) -> None:
    """One checked CSV reader: a key saved with a byte-order mark (a spreadsheet) still reads; an oversized field
    is one line naming the file."""
    key = tmp_path / "key-bom.csv"
    key.write_text("\ufeff" + (made / "key.csv").read_text(), encoding="utf-8")
    rows = [("rater-01", r["trial_id"], q.number, "left") for r in read_key_rows(made / "key.csv")[:1]
            for q in QUESTIONS]
    answers = write_answers(tmp_path / "answers.csv", rows, read_key_rows(made / "key.csv")[0]["study_id"])
    result = CliRunner().invoke(study, ["analyze", str(answers), "--key", str(key), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    huge = tmp_path / "huge.csv"
    huge.write_text("study_id,rater,trial_id,question,answer\ns,x," + "y" * 200_000 + ",1,left\n")
    result = CliRunner().invoke(study, ["analyze", str(huge), "--key", str(made / "key.csv")])
    assert result.exit_code == 1 and f"cannot read an answer file '{huge}'" in result.output
    assert result.output.count("\n") == 1, result.output


# ---- agreement, tied ranks, degenerate intervals (docs/study.md) --------------------------------------------


def _analyze(made: Path, tmp_path: Path, raters: dict[str, dict[str, int]], keep=lambda row: True):
    """Analyze answers of raters (name -> preference scores) on the key's trials that `keep` accepts."""
    key = [r for r in read_key_rows(made / "key.csv") if keep(r)]
    files = [write_answers(tmp_path / f"{name}.csv", _answers_for(key, name, prefer), key[0]["study_id"])
             for name, prefer in raters.items()]
    out = tmp_path / "analysis"
    result = CliRunner().invoke(study, ["analyze", *map(str, files), "--key", str(made / "key.csv"),
                                        "--out", str(out), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_agreement_in_every_output(made: Path, tmp_path: Path) -> None:
    """Two raters prefer alpha-a over beta-b, a third the reverse; everyone prefers alpha-a over gamma-c."""
    prefer = {"alpha-a": 3, "beta-b": 2, "gamma-c": 1}
    out, output = _analyze(made, tmp_path, {"rater-01": prefer, "rater-02": prefer,
                                            "rater-03": {"alpha-a": 2, "beta-b": 3, "gamma-c": 1}})
    table = pd.read_csv(out / "analysis.csv")
    # alpha-a:beta-b: 6 units of (2 x alpha-a, 1 x beta-b): n = 18, 6 matching pairs, 1 - 17 * 12 / 144
    ab = table[table["pair"] == "alpha-a:beta-b"]
    assert ab["krippendorff_alpha"].tolist() == pytest.approx([1 - 17 * 12 / 144] * 3)
    assert ab["alpha_units"].tolist() == [6] * 3 and ab["alpha_raters"].tolist() == [3] * 3
    ac = table[table["pair"] == "alpha-a:gamma-c"]  # unanimous on one method: nothing to tell from chance
    assert ac["krippendorff_alpha"].isna().all() and ac["alpha_note"].str.contains("same category").all()
    agreement = pd.read_csv(out / "agreement.csv")
    overall = agreement[agreement["pair"] == "all"]
    # all pairs: 12 units, n = 36, 24 matching pairs, categories 30 alpha-a, 6 beta-b: 1 - 35 * 12 / 360
    assert overall["krippendorff_alpha"].tolist() == pytest.approx([1 - 35 * 12 / 360] * 3)
    assert overall["alpha_units"].tolist() == [12] * 3 and overall["fleiss_kappa"].notna().all()
    bt = pd.read_csv(out / "bradley_terry.csv")
    assert bt["krippendorff_alpha"].tolist() == pytest.approx([1 - 35 * 12 / 360] * 9)
    assert "Krippendorff's alpha -0.17 (12 trial-questions, 3 raters)" in output
    from tlora_bench.study.plot import plot_title

    title = plot_title(table, agreement[agreement["pair"] == "all"].drop(columns="pair"))
    assert "1. concept preservation: Krippendorff's alpha -0.17 (12 trial-questions, 3 raters)" in title
    assert "degenerate" not in title


def test_one_rater_has_no_agreement(made: Path, tmp_path: Path) -> None:
    out, output = _analyze(made, tmp_path, {"rater-01": {"alpha-a": 3, "beta-b": 2, "gamma-c": 1}})
    table = pd.read_csv(out / "analysis.csv")
    assert table["krippendorff_alpha"].isna().all() and (table["alpha_units"] == 0).all()
    assert table["alpha_note"].str.contains("two or more raters").all()
    assert "alpha n/a: no question of a trial was answered by two or more raters" in output


def test_identical_records_share_a_rank(made: Path, tmp_path: Path) -> None:
    """beta-b and gamma-c each beat alpha-a on every trial (the same record): ranks 1, 1, 3."""
    out, _ = _analyze(made, tmp_path, {"rater-01": {"alpha-a": 1, "beta-b": 3, "gamma-c": 3}})
    bt = pd.read_csv(out / "bradley_terry.csv")
    for q in QUESTIONS:
        rows = bt[bt["question"] == q.number].set_index("method")
        assert rows["rank"].to_dict() == {"alpha-a": 3, "beta-b": 1, "gamma-c": 1}
        assert rows.loc["beta-b", "strength"] == pytest.approx(rows.loc["gamma-c", "strength"], abs=1e-6)


def test_one_concept_intervals_are_flagged_degenerate(made: Path, tmp_path: Path) -> None:
    prefer = {"alpha-a": 3, "beta-b": 2, "gamma-c": 1}
    out, output = _analyze(made, tmp_path, {"rater-01": prefer, "rater-02": prefer})
    assert not pd.read_csv(out / "analysis.csv")["interval_degenerate"].any()  # two concepts
    assert not pd.read_csv(out / "bradley_terry.csv")["interval_degenerate"].any()
    assert "interval_degenerate" not in output
    out, output = _analyze(made, tmp_path, {"rater-01": prefer, "rater-02": prefer},
                           keep=lambda row: row["concept"] == "rex")
    table = pd.read_csv(out / "analysis.csv")
    assert (table["concepts"] == 1).all() and table["interval_degenerate"].all()
    assert table["interval_note"].str.contains("says nothing about concept-to-concept variation").all()
    assert "* interval_degenerate: one concept: the interval says nothing about concept-to-concept" in output
    bt = pd.read_csv(out / "bradley_terry.csv")
    assert bt["interval_degenerate"].all() and (bt["concepts"] == 1).all()


def test_one_trial_bootstrap_interval_is_a_point_and_flagged(made: Path, tmp_path: Path) -> None:
    first = read_key_rows(made / "key.csv")[0]["trial_id"]
    out, output = _analyze(made, tmp_path, {"rater-01": {"alpha-a": 3, "beta-b": 2, "gamma-c": 1}},
                           keep=lambda row: row["trial_id"] == first)
    bt = pd.read_csv(out / "bradley_terry.csv")
    answered = bt[bt["comparisons"] > 0]
    assert (answered["ci_low"] == answered["ci_high"]).all() and answered["interval_degenerate"].all()
    assert answered["interval_note"].str.startswith("one trial").all()
    unanswered = bt[bt["comparisons"] == 0]
    assert len(unanswered) == 3 and unanswered["interval_note"].str.startswith("no answers").all()
    assert "* interval_degenerate: one trial: every bootstrap replicate resamples it" in output
