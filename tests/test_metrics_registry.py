"""The metric registry: the built-ins, cheap imports, and a registered metric with a score hook flowing from
evaluate_folder through every aggregate to the report's leaderboard and HTML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.metrics_helpers import BASE, brightness, make_project
from tlora_bench.concepts.manifest import load_manifest
from tlora_bench.errors import TloraBenchError
from tlora_bench.metrics import aggregate, bootstrap_ci
from tlora_bench.metrics.registry import (
    Metric,
    MetricInput,
    PaperColumn,
    get_metric,
    headline_metrics,
    metric_names,
    metric_scope,
    paper_metrics,
    register_metric,
    registered_metric,
)

BUILTINS = ["is", "is_masked", "dino_is", "dino_is_masked", "ts", "ts_class_kept", "ts_clipscore", "background_copy",
            "layout_iou", "layout_shift", "layout_area", "diversity", "drift"]
ROOT = Path(__file__).parent.parent


def _file_brightness(path: Path) -> float:
    return float(np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).mean() / 255.0)


JUDGED = ["judged_fidelity", "judged_background_leakage", "judged_position_copying", "judged_context"]


def test_the_builtins_in_order_with_their_aggregation_and_paper_columns() -> None:
    with metric_scope(JUDGED):  # a run of synthetic concepts: the judges after the built-ins
        assert metric_names() == BUILTINS + JUDGED
    assert metric_names() == BUILTINS  # outside a run, or in a run none of whose concepts the judges apply to
    assert metric_names("base") == BUILTINS[:4] and metric_names("contextual") == BUILTINS[4:11]
    assert metric_names("all") == ["diversity"] and metric_names("drift") == ["drift"]
    assert (tuple(BUILTINS[:4]), tuple(BUILTINS[4:11])) == (aggregate.IS_METRICS, aggregate.TS_METRICS)
    assert tuple(BUILTINS) == aggregate.METRICS
    assert [get_metric(name).aggregation for name in BUILTINS] == ["base"] * 4 + ["contextual"] * 7 + ["all", "drift"]
    # The paper's IS and DINO-IS were computed on masked images: they sit beside our masked scores.
    assert [(m.paper.column, m.name) for m in paper_metrics()] == [("is", "is_masked"), ("dino_is", "dino_is_masked"),
                                                                  ("ts", "ts")]
    assert [m.label for m in headline_metrics()] == ["CLIP-IS (masked)", "DINO-IS (masked)", "TS", "Background copy",
                                                     "Layout copy (IoU)", "Diversity", "Drift"]
    assert all(get_metric(name).builtin for name in BUILTINS)
    directions = {name: get_metric(name).higher_is_better for name in BUILTINS}
    assert [n for n, up in directions.items() if up is False] == ["background_copy", "layout_iou", "drift"]
    assert directions["layout_area"] is None  # a diagnostic: 1 is the training size, neither way is better
    # TS at torchmetrics' CLIPScore scale: a companion of TS for comparisons, not a headline or paper column.
    clipscore = get_metric("ts_clipscore")
    assert (clipscore.label, clipscore.scale) == ("TS (CLIPScore scale)", "100 * max(cos, 0), 0..100")
    assert clipscore.higher_is_better and not clipscore.headline and clipscore.paper is None


def test_importing_the_registry_and_the_names_loads_no_torch() -> None:
    code = ("import sys, tlora_bench.metrics, tlora_bench.metrics.registry as r, tlora_bench.metrics.names as n; "
            "assert n.segmenter_names() == ['grabcut', 'provided', 'grounded-sam', 'none'], n.segmenter_names(); "
            "assert n.dino_names() == ['dino-vits16', 'dinov2-vits14'] and n.CLIP_EXTRACTOR == 'clip-vit-b-32'; "
            "assert r.metric_names()[0] == 'is'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_names_are_those_the_model_registries_hold() -> None:
    from tlora_bench.metrics import EXTRACTORS, SEGMENTERS, evaluate_folder  # the lazy names still import
    from tlora_bench.metrics.extractors import DINO_EXTRACTORS
    from tlora_bench.metrics.names import CLIP_EXTRACTOR, dino_names, segmenter_names

    assert callable(evaluate_folder) and SEGMENTERS.names() == segmenter_names()
    assert EXTRACTORS.names() == [CLIP_EXTRACTOR, *dino_names()] and list(DINO_EXTRACTORS) == dino_names()
    with pytest.raises(AttributeError):
        import tlora_bench.metrics as package

        _ = package.no_such_name


def test_a_registered_metric_is_there_inside_the_block_only() -> None:
    before = metric_names()
    with registered_metric(Metric("brightness", "brightness", score=brightness)) as metric:
        assert metric_names() == [*before, "brightness"] and aggregate.METRICS[-1] == "brightness"
        assert get_metric("brightness") is metric and not metric.builtin
    assert metric_names() == before
    with pytest.raises(TloraBenchError, match="unknown metric 'brightness'"):
        get_metric("brightness")


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: Metric("Bright", "b", score=brightness), "lower-case letters"),
    (lambda: Metric("n_real", "b", score=brightness), "a column the tables already hold"),
    (lambda: Metric("b", "b", aggregation="every", score=brightness), "unknown aggregation of metric 'b'"),
    (lambda: Metric("b", "b", score="no_colon"), "must be 'module:attr'"),
    (lambda: register_metric(Metric("b", "b")), "has no score hook"),
    (lambda: register_metric(Metric("b", "b", paper=PaperColumn("ts", "TS"), score=brightness)),
     "already sits beside the paper's 'ts' column"),
])
def test_bad_metric_definitions_are_one_line_errors(make, fragment: str) -> None:
    before = metric_names()
    with pytest.raises(TloraBenchError, match=fragment):
        make()
    assert metric_names() == before


def test_a_lazy_hook_resolves_and_a_bad_one_is_one_line_naming_the_metric(tmp_path: Path) -> None:
    assert Metric("b", "b", score="tests.metrics_helpers:brightness").scorer() is brightness
    with pytest.raises(TloraBenchError, match=r"^metric 'b': its score hook names 'nowhere:x', which cannot be"):
        Metric("b", "b", score="nowhere:x").scorer()
    item = MetricInput(Image.new("RGB", (4, 4)), tmp_path / "a.png", "a photo of a sks dog", BASE, None, ())

    def broken(item: MetricInput) -> float:
        raise RuntimeError("boom\non two lines")

    with pytest.raises(TloraBenchError) as error:
        Metric("b", "b", score=broken).compute(item)
    message = str(error.value)
    assert "\n" not in message and message.startswith("metric 'b' failed on '") and "RuntimeError: boom on" in message


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    return make_project(tmp_path)


def _evaluate(manifest: Path, gen: Path):
    from tlora_bench.metrics import EvalOptions, evaluate_folder

    return evaluate_folder(gen, manifest=load_manifest(manifest), data_root=None,
                           options=EvalOptions(tiny_models=True, device="cpu", bootstrap=200))


def _expected_per_method(scores: pd.DataFrame, metric: str, kind: str) -> pd.DataFrame:
    """By hand: the prompt means, the concept's value from its base prompt or its contextual prompts' mean."""
    prompts = scores.groupby(["method_label", "concept", "template", "prompt_kind"])[metric].mean().reset_index()
    concepts = prompts[prompts["prompt_kind"] == kind].groupby(["method_label", "concept"])[metric].mean()
    return concepts.reset_index()


def test_a_hook_metric_flows_from_evaluate_folder_to_the_report(project) -> None:
    from tlora_bench.report import make_report

    manifest, gen = project
    seen: list[MetricInput] = []

    def sharp(item: MetricInput) -> float:
        seen.append(item)
        return brightness(item)

    base_metric = Metric("sharp", "sharpness (test)", scale="0..1", score=sharp)
    contextual = Metric("bright", "brightness (test)", aggregation="contextual",
                        score="tests.metrics_helpers:brightness")
    with registered_metric(base_metric), registered_metric(contextual):
        result = _evaluate(manifest, gen)
        report = make_report(gen)
    scores = result.scores
    assert list(scores.columns[11:26]) == [*BUILTINS, "sharp", "bright"]  # after file_sha256, before ts_text
    assert len(seen) == len(scores) == 14  # every readable image, every prompt
    for _, row in scores.iterrows():
        assert row["sharp"] == row["bright"] == pytest.approx(_file_brightness(gen / row["file"]))
    item = next(i for i in seen if i.concept.id == "mug")
    assert len(item.real_images) == 3 and item.image.mode == "RGB" and item.concept.class_word == "mug"
    assert item.prompt == item.template.format("sks mug") and item.path.is_file()
    hooks = scores["metric_hooks"].iloc[0]
    assert hooks.startswith("sharp=") and hooks.endswith(".<locals>.sharp,bright=tests.metrics_helpers:brightness")
    board = pd.read_csv(report / "leaderboard.csv").set_index("method_label")
    for metric, kind in (("sharp", "base"), ("bright", "contextual")):
        expected = _expected_per_method(scores, metric, kind)
        concepts = result.per_concept.set_index(["method_label", "concept"])[metric]
        assert concepts.to_numpy() == pytest.approx(expected[metric].to_numpy())
        for label, group in expected.groupby("method_label"):
            row = result.per_method.query("method_label == @label and metric == @metric").iloc[0]
            low, high = bootstrap_ci(group.sort_values("concept")[metric].to_numpy(), 200, 0)
            assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((group[metric].mean(), low, high))
            assert board.loc[label, f"{metric}_mean"] == pytest.approx(row["mean"])
            assert board.loc[label, f"{metric}_ci_high"] == pytest.approx(high)
    html = (report / "report.html").read_text()
    markdown = (report / "leaderboard.md").read_text()
    assert "sharpness (test)" in html and "brightness (test)" in html and "| sharpness (test) |" in markdown
    assert "sharp" in set(pd.read_csv(report / "per_concept.csv").columns)


def test_a_failing_hook_stops_the_evaluation_in_one_line(project) -> None:
    manifest, gen = project

    def broken(item: MetricInput) -> float:
        raise ZeroDivisionError("division by zero")

    with registered_metric(Metric("broken", "broken", score=broken)), \
            pytest.raises(TloraBenchError) as error:
        _evaluate(manifest, gen)
    message = str(error.value)
    assert "\n" not in message and message.startswith("metric 'broken' failed on '")
    assert "ZeroDivisionError: division by zero" in message
    assert not (gen / "evaluation" / "evaluation.json").exists()
