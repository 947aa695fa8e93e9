"""The fidelity-against-leakage figure (docs/report.md, "Figures"): which labels are one recipe at several training
lengths, a line through them in step order, and no figure without the judged metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tlora_bench.report.inputs import JobInfo
from tlora_bench.report.leakage import fidelity_vs_leakage, recipe_lengths

JUDGED = ("judged_fidelity", "judged_background_leakage", "judged_position_copying")


def job(label: str, method: str, steps: int, concept: str = "red-dotted-diamond", seed: int = 0, **train) -> JobInfo:
    spec = {"method": method, "concept": concept, "seed": seed, "steps": steps, "lr": 1e-3, **train}
    return JobInfo(label, label, concept, seed, method, 1, {}, "done", Path("."), train=spec)


def board(labels: list[str], fidelity: list[float], leakage: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame({"method_label": labels})
    for name, values in zip(JUDGED, (fidelity, leakage, leakage), strict=True):
        frame[f"{name}_mean"] = values
        frame[f"{name}_ci_low"] = [v - 0.05 for v in values]
        frame[f"{name}_ci_high"] = [v + 0.05 for v in values]
    return frame


def test_labels_that_differ_only_in_steps_are_one_recipe_named_by_its_method():
    jobs = [job("lora-200", "lora-4", 200), job("lora-600", "lora-4", 600),
            job("lora-600", "lora-4", 600, concept="blue-dotted-diamond", seed=1),
            job("tlora-600", "tlora-4", 600)]
    assert recipe_lengths(jobs) == {"lora-200": ("lora-4", 200), "lora-600": ("lora-4", 600),
                                    "tlora-600": ("tlora-4", 600)}


def test_two_recipes_of_one_method_are_named_by_their_first_label_and_mixed_lengths_are_left_out():
    jobs = [job("slow", "lora-4", 200), job("slow-long", "lora-4", 600), job("fast", "lora-4", 200, lr=1e-2),
            job("odd", "lora-16", 100), job("odd", "lora-16", 300, seed=1)]
    assert recipe_lengths(jobs) == {"slow": ("slow", 200), "slow-long": ("slow", 600), "fast": ("fast", 200)}


def per_concept(values: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    """label -> one (fidelity, leakage) per concept, as per_concept.csv holds them."""
    rows = [{"method_label": label, "concept": f"c{i}", "judged_fidelity": f, "judged_background_leakage": x,
             "judged_position_copying": x} for label, pairs in values.items() for i, (f, x) in enumerate(pairs)]
    return pd.DataFrame(rows)


def test_seeds_are_averaged_within_a_concept_and_lengths_pooled_into_one_recipe():
    from tlora_bench.report.leakage import pooled_lengths

    jobs = [job("lora.seed0", "lora-4", 200), job("lora.seed1", "lora-4", 200, seed=1), job("long", "lora-4", 600)]
    table = pooled_lengths(per_concept({"lora.seed0": [(1.0, 0.0), (0.0, 0.0)], "lora.seed1": [(0.0, 1.0), (0.0, 0.0)],
                                        "long": [(1.0, 1.0), (1.0, 0.5)]}), jobs)
    rows = zip(table["recipe"], table["steps"], table["n_concepts"], strict=True)
    assert list(rows) == [("lora-4", 200, 2), ("lora-4", 600, 2)]
    assert list(table["judged_fidelity_mean"]) == [0.25, 1.0]  # concept 0: (1 + 0) / 2, concept 1: 0
    assert list(table["judged_background_leakage_mean"]) == [0.25, 0.75]
    assert (table["judged_fidelity_ci_low"] <= table["judged_fidelity_mean"]).all()


def test_one_line_per_recipe_through_its_lengths_in_step_order():
    jobs = [job("lora-600", "lora-4", 600), job("lora-200", "lora-4", 200), job("tlora-600", "tlora-4", 600)]
    figure = fidelity_vs_leakage(per_concept({"lora-600": [(0.9, 0.5)], "lora-200": [(0.4, 0.1)],
                                              "tlora-600": [(0.8, 0.2)]}), jobs,
                                 order=["lora-600", "lora-200", "tlora-600"])
    left = figure.axes[0]
    curves = [(list(line.get_xdata()), list(line.get_ydata())) for line in left.get_lines()
              if line.get_linestyle() == "-"]  # not the points' markers or the intervals' caps
    assert sorted(curves) == [([0.1, 0.5], [0.4, 0.9]), ([0.2], [0.8])]  # lora-4: 200 steps, then 600
    assert {text.get_text() for text in left.texts} == {"200", "600"}
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["lora-4", "tlora-4"]


def test_no_figure_without_the_judged_metrics():
    plain = per_concept({"lora": [(0.5, 0.5)]}).drop(columns=["judged_fidelity"])
    assert fidelity_vs_leakage(plain, [job("lora", "lora-4", 200)]) is None


def test_the_feature_metrics_against_the_judges_are_rank_correlations_across_labels():
    from tlora_bench.report.judge_agreement import agreement_markdown, judge_agreement

    frame = board(["a", "b", "c", "d"], [0.1, 0.5, 0.7, 0.9], [0.4, 0.3, 0.2, 0.1])
    frame["is_masked_mean"] = [0.60, 0.65, 0.70, 0.90]  # rises with fidelity, falls with leakage: rho +1 and -1
    frame["ts_mean"] = [0.3, float("nan"), 0.2, 0.1]
    table = judge_agreement(frame).set_index(["feature_metric", "judged_metric"])
    assert table.loc[("is_masked", "judged_fidelity"), "spearman_rho"] == 1.0
    assert table.loc[("is_masked", "judged_background_leakage"), "spearman_rho"] == -1.0
    assert table.loc[("ts", "judged_fidelity"), "n_labels"] == 3  # a label without a value is left out
    assert "+1.00" in agreement_markdown(judge_agreement(frame), random_weights=False)
    assert "mean nothing" in agreement_markdown(judge_agreement(frame), random_weights=True)
    assert judge_agreement(frame.drop(columns=[c for c in frame if c.startswith("judged_")])) is None
    assert judge_agreement(frame.iloc[:2]) is None  # two labels always correlate perfectly
