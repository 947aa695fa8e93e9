"""The repository layout: bundled data at the top (concepts/, prompts/, results/paper/), read through one loader,
and a package list that covers the source tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tlora_bench.concepts import bundled_manifest, resolve_data_root
from tlora_bench.prompts import load_prompt_set
from tlora_bench.resources import bundled, bundled_concept_images

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_bundled_files_come_from_the_top_level_folders():
    assert Path(str(bundled("concepts"))).resolve() == ROOT / "concepts"
    assert Path(str(bundled("prompts"))).resolve() == ROOT / "prompts"
    assert Path(str(bundled("paper"))).resolve() == ROOT / "results" / "paper"
    assert bundled_manifest().path.resolve() == ROOT / "concepts" / "dreambooth.toml"
    assert load_prompt_set("live")[0] == (ROOT / "prompts" / "live.txt").read_text().splitlines()[0]


def test_the_checkout_copy_is_the_data_root_after_the_flag_and_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("TLORA_BENCH_DATA", raising=False)
    assert bundled_concept_images() == ROOT / "concepts"
    assert resolve_data_root(None) == ROOT / "concepts"
    monkeypatch.setenv("TLORA_BENCH_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    assert resolve_data_root(str(ROOT / "concepts")) == ROOT / "concepts"
    assert resolve_data_root(None, dataset="other") == tmp_path


def test_every_manifest_subject_is_bundled_with_its_training_image_and_licenses():
    manifest = bundled_manifest()
    for concept in manifest.concepts.values():
        assert concept.train_image_path(ROOT / "concepts").is_file(), concept.id
    for name in ("LICENSE.md", "PROVENANCE.md", "references_and_licenses.txt", "README.md"):
        assert (ROOT / "concepts" / name).is_file()


def test_the_package_list_covers_the_source_tree():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "tlora_bench").rglob("*")
             if p.is_dir() and p.name != "__pycache__" and any(p.iterdir())}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"
    assert set(config["package-dir"]) <= listed


def test_git_keeps_the_paper_results_and_ignores_run_folders():
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/smoke/x.csv"], cwd=ROOT).returncode == 0
    kept = subprocess.run(["git", "check-ignore", "-q", "results/paper/paper_tables.csv"], cwd=ROOT).returncode != 0
    assert ignored and kept


def test_config_without_the_images_warns_and_still_prints_the_config(monkeypatch):
    """An installed wheel has the manifest but not the images: `config` still works, a run would stop."""
    import json

    from click.testing import CliRunner

    import tlora_bench.concepts.data_root as data_root
    from tlora_bench.cli import main

    monkeypatch.delenv("TLORA_BENCH_DATA", raising=False)
    monkeypatch.setattr(data_root, "bundled_concept_images", lambda: None)
    result = CliRunner().invoke(main, ["config", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: data folder") and "concepts download" in result.stderr
    assert json.loads(result.stdout)["name"] == "smoke"
