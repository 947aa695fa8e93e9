"""`tlora-bench evaluate` exits EXIT_INCOMPLETE (3) when listed or real images were left out, after
writing its outputs; --allow-missing keeps exit 0; nothing scorable stays exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.metrics_helpers import BASE, JUNGLE, make_concepts, write_generated
from tlora_bench.cli import main
from tlora_bench.errors import EXIT_ERROR, EXIT_INCOMPLETE
from tlora_bench.layout import ImageRecord, write_images_index


def _evaluate(manifest: Path, gen: Path, *extra: str):
    args = ["evaluate", str(gen), "--manifest", str(manifest), "--tiny-models", "--device", "cpu",
            "--segmenter", "none", "--bootstrap", "50", *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    manifest = make_concepts(tmp_path)
    gen = tmp_path / "gen"
    write_generated(gen, "lora", "rex", {BASE: 3, JUNGLE: 2})
    write_generated(gen, "lora", "mug", {BASE: 2}, seed=1)
    return manifest, gen


def _summary(gen: Path) -> dict:
    return json.loads((gen / "evaluation" / "evaluation.json").read_text())


def test_a_complete_evaluation_exits_0(project):
    manifest, gen = project
    result = _evaluate(manifest, gen)
    assert result.exit_code == 0, result.output
    assert "incomplete" not in result.stderr
    summary = _summary(gen)
    assert summary["complete"] and summary["n_listed"] == 7 and summary["n_unscored"] == 0


def test_missing_and_unreadable_listed_images_exit_3_after_writing_outputs(project):
    manifest, gen = project
    (gen / "lora" / "rex" / "prompt00" / "00.png").unlink()
    (gen / "lora" / "mug" / "prompt00" / "01.png").write_bytes(b"not an image")
    result = _evaluate(manifest, gen)
    assert result.exit_code == EXIT_INCOMPLETE == 3, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("incomplete: ")]
    assert len(lines) == 1
    assert "2 of 7 listed images are missing or unreadable; scored the rest; see " in lines[0]
    assert lines[0].endswith("evaluation.json")
    assert "scored 5 images" in result.stdout
    summary = _summary(gen)  # the outputs are written before the exit status says "incomplete"
    assert not summary["complete"] and summary["n_unscored"] == 2 and len(summary["unreadable_files"]) == 2
    assert (gen / "evaluation" / "scores.parquet").is_file()


def test_allow_missing_keeps_exit_0(project):
    manifest, gen = project
    (gen / "lora" / "rex" / "prompt01" / "01.png").unlink()
    result = _evaluate(manifest, gen, "--allow-missing")
    assert result.exit_code == 0, result.output
    assert "1 unreadable files" in result.stdout and "incomplete: " not in result.stderr
    assert not _summary(gen)["complete"]


def test_an_unreadable_real_image_is_incomplete_too(project):
    manifest, gen = project
    (manifest.parent / "data" / "mug" / "02.png").write_bytes(b"broken")
    result = _evaluate(manifest, gen)
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    assert "1 of 5 real images are missing or unreadable; scored the rest" in result.stderr
    summary = _summary(gen)
    assert summary["n_unscored"] == 0 and summary["n_real_unreadable"] == 1 and summary["n_real_listed"] == 5


def test_nothing_scorable_is_still_an_error(tmp_path: Path):
    manifest = make_concepts(tmp_path)
    folder = tmp_path / "gen" / "lora" / "rex"
    folder.mkdir(parents=True)
    write_images_index(folder, [ImageRecord("a.png", BASE, 0)])
    result = _evaluate(manifest, tmp_path / "gen")
    assert result.exit_code == EXIT_ERROR
    assert not (tmp_path / "gen" / "evaluation" / "evaluation.json").exists()
