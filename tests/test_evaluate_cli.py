"""`tlora-bench evaluate DIR` end to end with tiny extractors: outputs, cache reuse, bad files, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.cli_helpers import assert_one_line_error as _one_line_error
from tests.metrics_helpers import (
    BASE,
    JUNGLE,
    make_concepts,
    make_project,
    save_tiny_grounded_sam,
)
from tlora_bench.cli import main
from tlora_bench.errors import EXIT_INCOMPLETE
from tlora_bench.layout import ImageRecord, write_images_index
from tlora_bench.metrics import image_similarity, load_extractor
from tlora_bench.metrics.registry import Metric, metric_names, registered_metric

SCORE_COLUMNS = set(metric_names())
PROVENANCE = {"tlora_bench_version", "torch_version", "open_clip_version", "timm_version", "transformers_version",
              "device", "dtype", "clip_extractor", "clip_weights", "clip_architecture", "clip_preprocess",
              "dino_extractor", "dino_weights", "dino_architecture", "dino_preprocess", "segmenter",
              "real_set", "ts_headline", "ts_variants", "mask_fill", "tiny_models"}


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)



@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    return make_project(tmp_path)


def _evaluate(manifest: Path, gen: Path, *extra: str):
    return run("evaluate", str(gen), "--manifest", str(manifest), "--tiny-models", "--device", "cpu", *extra)


def test_evaluate_writes_every_table_with_provenance_and_reuses_features(project):
    manifest, gen = project
    result = _evaluate(manifest, gen)
    assert result.exit_code == 0, result.output
    out = gen / "evaluation"
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 14 and len(pd.read_csv(out / "scores.csv")) == 14
    assert set(scores.columns) >= SCORE_COLUMNS | PROVENANCE
    row = scores.query("method_label == 'tlora-64' and concept == 'rex' and template == @JUNGLE").iloc[0]
    assert row["method"] == "tlora" and row["rank"] == 64 and row["ts_text"] == "a in the jungle"
    assert row["ts_text_class_kept"] == "a dog in the jungle" and np.isnan(row["is"])
    assert row["mask_fill"] == "black" and row["dino_extractor"] == "dino-vits16" and bool(row["tiny_models"])
    assert row["seed"] == sum(map(ord, JUNGLE)) + row["image_index"]
    on_base = [*metric_names("base"), *metric_names("all"), "ts", "ts_class_kept"]  # the others: contextual, drift
    assert scores[scores["template"] == BASE][on_base].notna().all().all()
    per_method = pd.read_csv(out / "per_method.csv")
    assert len(per_method) == 2 * len(SCORE_COLUMNS) and set(per_method.columns) >= PROVENANCE
    known = per_method.dropna(subset=["mean"])  # a metric without a value (drift here) has none of the three
    assert (known["ci_low"] <= known["mean"]).all() and (known["mean"] <= known["ci_high"]).all()
    assert len(pd.read_csv(out / "per_concept.csv")) == 3 and len(pd.read_csv(out / "per_prompt.csv")) == 7
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["n_scored"] == 14 and summary["problems"] == []
    # Which CLIP and which DINO scored the folder, in evaluation.json too (docs/evaluation.md, "Outputs").
    models = {key: summary["provenance"][key] for key in PROVENANCE if key.startswith(("clip_", "dino_"))}
    assert models == {"clip_extractor": "clip-vit-b-32", "clip_weights": "tiny-random(seed 0)",
                      "clip_architecture": "open_clip ViT-B-32, tiny (width 32, depth 2), random (seeded)",
                      "clip_preprocess": load_extractor("clip-vit-b-32", tiny=True).preprocess_id,
                      "dino_extractor": "dino-vits16", "dino_weights": "tiny-random(seed 0)",
                      "dino_architecture": "timm vit_small_patch16_224.dino, tiny (width 32, depth 2), random (seeded)",
                      "dino_preprocess": "dino:resize256-bicubic,crop224,imagenet-mean-std"}
    # TS at the CLIPScore scale is the headline TS of the same image, scaled and clipped (docs/evaluation.md)
    assert (scores["ts_clipscore"] == 100 * scores["ts"].clip(lower=0)).all()
    assert "tiny random extractors" in result.stdout and "scored 14 images of 2 methods and 2 concepts" in result.stdout
    again = _evaluate(manifest, gen, "--bootstrap", "200", "--seed", "3")
    assert again.exit_code == 0 and "image features: 0 computed" in again.stdout
    assert pd.read_csv(out / "per_method.csv")["bootstrap_resamples"].eq(200).all()
    assert pd.read_parquet(out / "scores.parquet")[list(SCORE_COLUMNS)].equals(scores[list(SCORE_COLUMNS)])


def test_a_feature_cache_that_is_a_file_keeps_the_old_results(project):
    manifest, gen = project
    assert _evaluate(manifest, gen, "--bootstrap", "10").exit_code == 0
    out = gen / "evaluation"
    marker = (out / "evaluation.json").read_bytes()
    shutil.rmtree(out / ".feature_cache")
    (out / ".feature_cache").write_text("x")
    result = CliRunner().invoke(main, ["evaluate", str(gen), "--manifest", str(manifest), "--tiny-models"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert ".feature_cache' is not a writable folder" in result.stderr
    assert (out / "evaluation.json").read_bytes() == marker  # the previous results still count as finished


def test_is_through_the_pipeline_is_the_mean_of_the_real_by_generated_matrix(tmp_path: Path):
    manifest = make_concepts(tmp_path)
    gen = tmp_path / "gen"
    folder = gen / "copies" / "mug"
    folder.mkdir(parents=True)
    real = sorted((tmp_path / "data" / "mug").glob("*.png"))
    for path in real:
        shutil.copy(path, folder / path.name)
    write_images_index(folder, [ImageRecord(p.name, BASE, i) for i, p in enumerate(real)])
    out = tmp_path / "out"
    assert _evaluate(manifest, gen, "--out", str(out), "--segmenter", "none").exit_code == 0
    concept = pd.read_csv(out / "per_concept.csv").iloc[0]
    images = [Image.open(p).convert("RGB") for p in real]
    for metric, name in (("is", "clip-vit-b-32"), ("dino_is", "dino-vits16")):
        features = load_extractor(name, tiny=True).encode_images(images)
        assert concept[metric] == pytest.approx(image_similarity(features, features), abs=1e-6)
        assert concept[f"{metric}_masked"] == pytest.approx(concept[metric], abs=1e-6)  # segmenter none
    assert concept["n_real"] == 3 and concept["n_base_images"] == 3 and np.isnan(concept["ts"])


def test_a_corrupt_image_is_reported_and_the_rest_is_scored(project):
    manifest, gen = project
    bad = gen / "lora" / "rex" / "prompt00" / "01.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = _evaluate(manifest, gen)
    assert result.exit_code == EXIT_INCOMPLETE, result.output  # outputs written, and the exit code says so
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(bad) in warnings[0]
    assert "scored 13 images" in result.stdout and "1 unreadable files" in result.stdout
    summary = json.loads((gen / "evaluation" / "evaluation.json").read_text())
    assert summary["unreadable_files"] == [str(bad)]


def test_nothing_scorable_is_a_one_line_error(tmp_path: Path):
    manifest = make_concepts(tmp_path)
    folder = tmp_path / "gen" / "lora" / "rex"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"not an image")
    write_images_index(folder, [ImageRecord("a.png", BASE, 0)])
    result = _evaluate(manifest, tmp_path / "gen")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could be scored" in errors[0] and "a.png" in errors[0]


def test_provided_masks_on_the_real_training_image(data_root: Path, tmp_path: Path):
    # Real set = dog6's training image with its ground-truth mask; generated: an exact copy with the same mask
    # beside it (masked IS of that image is exactly 1), and a flat image without a mask (counted as unmasked).
    folder = tmp_path / "gen" / "copy" / "dog6"
    folder.mkdir(parents=True)
    shutil.copy(data_root / "dog6" / "02.jpg", folder / "same.jpg")
    shutil.copy(data_root / "dog6" / "02_mask.png", folder / "same_mask.png")
    Image.new("RGB", (64, 64), (128, 128, 128)).save(folder / "flat.png")
    write_images_index(folder, [ImageRecord("same.jpg", BASE, 0), ImageRecord("flat.png", BASE, 1)])
    result = run("evaluate", str(tmp_path / "gen"), "--data-dir", str(data_root), "--tiny-models", "--device",
                 "cpu", "--segmenter", "provided", "--real-set", "train")
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "gen" / "evaluation" / "scores.parquet").set_index("file")
    same, flat = scores.loc["copy/dog6/same.jpg"], scores.loc["copy/dog6/flat.png"]
    assert same["is_masked"] == pytest.approx(1.0, abs=1e-5) and same["dino_is_masked"] == pytest.approx(1.0, abs=1e-5)
    assert same["is"] == pytest.approx(1.0, abs=1e-5) and not same["gen_mask_fallback"]
    assert flat["gen_mask_fallback"] and same["real_mask_fallbacks"] == 0 and same["n_real"] == 1
    assert same["real_masks"] == "provided mask files, else provided" and same["class_word"] == "dog"


def test_grounded_sam_runs_from_local_folders(project, tmp_path: Path):
    manifest, gen = project
    detector, sam = save_tiny_grounded_sam(tmp_path / "models")
    result = _evaluate(manifest, gen, "--segmenter", "grounded-sam", "--weights", f"grounding-dino={detector}",
                       "--weights", f"sam={sam}", "--dino", "dinov2-vits14", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(gen / "evaluation" / "scores.parquet")
    assert set(scores["segmenter"]) == {"grounded-sam"} and set(scores["dino_extractor"]) == {"dinov2-vits14"}
    assert str(detector) in scores["segmenter_identity"].iloc[0]
    provenance = json.loads((gen / "evaluation" / "evaluation.json").read_text())["provenance"]
    assert provenance["dino_extractor"] == "dinov2-vits14"  # the DINO variant that ran, and its model
    assert provenance["dino_architecture"].startswith("timm vit_small_patch14_dinov2.lvd142m, tiny")


@pytest.mark.parametrize(("args", "fragments"), [
    (("--dino", "dinov2"), ("unknown DINO extractor 'dinov2'", "did you mean 'dinov2-vits14'")),
    (("--segmenter", "grounded_sam"), ("unknown segmenter", "did you mean 'grounded-sam'")),
    (("--real-set", "training"), ("unknown real set 'training'", "did you mean 'train'")),
    (("--weights", "clip=/x"), ("unknown model for --weights 'clip'",)),
    (("--weights", "nothing"), ("--weights expects NAME=PATH",)),
    (("--bootstrap", "0"), ("at least 1",)),
    (("--dtype", "fp64"), ("unknown dtype 'fp64'",)),
])
def test_bad_options_are_one_line_errors(project, args, fragments):
    manifest, gen = project
    _one_line_error(_evaluate(manifest, gen, *args), *fragments)


def test_layout_errors_are_one_line(project, tmp_path: Path):
    manifest, gen = project
    missing_weights = run("evaluate", str(gen), "--manifest", str(manifest), "--device", "cpu")
    _one_line_error(missing_weights, "clip-vit-b-32", "--tiny-models")
    _one_line_error(_evaluate(manifest, tmp_path / "nothing-here"), "does not exist")
    shutil.move(gen / "lora" / "rex", gen / "lora" / "rexx")
    _one_line_error(_evaluate(manifest, gen), "unknown concept 'rexx'", "did you mean 'rex'")


def _failing_hook(item) -> float:
    raise ValueError(f"cannot score {item.path.name}")


def test_a_failing_score_hook_is_a_one_line_error_naming_the_metric(project):
    manifest, gen = project
    with registered_metric(Metric("fragile", "fragile", score=_failing_hook)):
        result = _evaluate(manifest, gen)
    _one_line_error(result, "metric 'fragile' failed on '", "ValueError: cannot score")
    with registered_metric(Metric("missing", "missing", score="tests.no_such_module:score")):
        result = _evaluate(manifest, gen)
    _one_line_error(result, "metric 'missing': its score hook names 'tests.no_such_module:score', which cannot be")
