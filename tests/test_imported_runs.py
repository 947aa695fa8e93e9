"""Run variants that score adapter files trained elsewhere (docs/interop.md): imported, checked against the model,
sampled with the same seeds and scored by the same protocol; a missing file fails its job only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.runner_helpers import reduced_config
from tlora_bench.adapters.formats import export_adapter
from tlora_bench.config import load_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.planner import make_plan
from tlora_bench.runner import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A reduced run of tlora-4, and its adapters exported in the authors' SD-XL layout, one folder per concept."""
    root = tmp_path_factory.mktemp("imported")
    config = reduced_config(root, methods="tlora", ranks="4")
    result = run(config, root / "trained", progress=False, echo=lambda line: None)
    exported = root / "theirs"
    for adapter in sorted((root / "trained").glob("jobs/tlora-4/*/seed-0/train/adapter.safetensors")):
        export_adapter(adapter, "official-sdxl", exported / adapter.parts[-4] / "checkpoint-3")
    return root, config, result


def _images(run_dir: Path, label: str) -> dict[str, np.ndarray]:
    folder = run_dir / "images" / label
    return {str(p.relative_to(folder)): np.asarray(Image.open(p)) for p in sorted(folder.glob("*/*.png"))}


@pytest.mark.slow
def test_imported_adapters_give_the_trained_runs_images_and_a_marked_row(trained, tmp_path):
    root, config, _ = trained
    template = str(root / "theirs" / "{concept}" / "checkpoint-3" / "pytorch_lora_weights.safetensors")
    values = {**config.to_dict(), "methods": ["theirs"], "variants": {"theirs": {"adapter": template}}}
    result = run(load_config(None, values), tmp_path / "scored", progress=False, echo=lambda line: None)
    assert result.complete
    row = result.leaderboard.iloc[0]
    assert (row["method_label"], row["method"], bool(row["imported"])) == ("theirs", "tlora-4", True)
    ours, theirs = _images(root / "trained", "tlora-4"), _images(tmp_path / "scored", "theirs")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    trained_board = pd.read_csv(root / "trained" / "leaderboard.csv")
    assert row["is_mean"] == pytest.approx(trained_board.iloc[0]["is_mean"], abs=1e-9)
    done = json.loads(next((tmp_path / "scored").glob("jobs/theirs/*/seed-0/done.json")).read_text())
    assert done["imported_from"] == "official-sdxl" and len(done["source_sha256"]) == 64 and done["train_steps"] == 0
    from tlora_bench.layout import REPORT_MARKDOWN

    assert "imported adapters" in result.report.with_name(REPORT_MARKDOWN).read_text()


@pytest.mark.slow
def test_a_missing_file_fails_that_concepts_job_only(trained, tmp_path):
    root, config, _ = trained
    copy = tmp_path / "theirs"
    shutil.copytree(root / "theirs", copy)
    concepts = sorted(p.name for p in copy.iterdir())
    shutil.rmtree(copy / concepts[-1])
    template = str(copy / "{concept}" / "checkpoint-3")
    values = {**config.to_dict(), "methods": ["theirs"], "variants": {"theirs": {"adapter": template}}}
    result = run(load_config(None, values), tmp_path / "scored", progress=False, echo=lambda line: None)
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert [o.job_id for o in failed] == [f"theirs/{concepts[-1]}/seed-0"]
    assert "does not exist" in failed[0].error and "\n" not in failed[0].error
    assert not result.complete and result.leaderboard.iloc[0]["concepts_scored"] == len(concepts) - 1
    shutil.copytree(root / "theirs" / concepts[-1], copy / concepts[-1])  # the file arrives: retry that job
    again = run(load_config(None, values), tmp_path / "scored", retry_failed=True, progress=False,
                echo=lambda line: None)
    assert again.complete and sum(not o.skipped for o in again.outcomes) == 1


def test_an_imported_variant_plans_its_method_from_the_files_and_trains_nothing(trained, tmp_path):
    root, config, _ = trained
    template = str(root / "theirs" / "{concept}" / "checkpoint-3")
    plan = make_plan(load_config(None, {**config.to_dict(), "methods": ["theirs"],
                                        "variants": {"theirs": {"adapter": template, "format": "official-sdxl"}}}))
    assert {job.recipe.label for job in plan.jobs} == {"tlora-4"} and all(job.imported for job in plan.jobs)
    assert "import" in plan.jobs[0].to_dict()
    for variant, message in (({"adapter": "x.safetensors"}, "names one file for"),
                             ({"adapter": template, "steps": 5}, "trains nothing"),
                             ({"adapter": template, "format": "oficial-sdxl"}, "did you mean"),
                             ({"adapter": str(tmp_path / "{concept}.pt")}, "no adapter file found")):
        with pytest.raises(TloraBenchError, match=message):
            make_plan(load_config(None, {**config.to_dict(), "methods": ["theirs"], "variants": {"theirs": variant}}))


def test_the_cli_form_adds_an_imported_variant(trained):
    from tlora_bench.cli import build_config

    root, config, _ = trained
    template = str(root / "theirs" / "{concept}" / "checkpoint-3")
    built = build_config(None, (), None, concepts=config.concepts, model="tiny", methods="tlora",
                         imported=(f"theirs={template}",))
    assert built.methods == ("tlora", "theirs") and built.variants["theirs"]["adapter"] == template
