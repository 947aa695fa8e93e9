"""Plugins: an installed distribution adds a method, a backend and a metric through entry points, and `tlora-bench run`
trains, samples and scores with them; a broken plugin is one line and the bundled names keep working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

PLUGINS = Path(__file__).parent / "plugins"  # example_tlora_plugin and its .dist-info (docs/extending.md)
CLI = [sys.executable, "-m", "tlora_bench.cli"]


def _cli(*args: str, path: Path = PLUGINS) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=600)


def _broken_plugin(tmp_path: Path, value: str) -> Path:
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tlora_bench.methods]\nbroken = {value}\n")
    return tmp_path


@pytest.mark.slow
def test_a_plugin_method_backend_and_metric_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = _cli("run", "--preset", "smoke", "--methods", "ia3,lora-4", "--model", "tiny-plugin",
                  "--concepts", "dog6", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["method_label"]) == ["ia3", "lora-4"]
    assert board["colorfulness_mean"].notna().all() and (board["colorfulness_mean"] >= 0).all()
    assert board["complete"].all()
    assert "colorfulness" in (out / "report" / "report.html").read_text()
    assert (out / "jobs" / "ia3" / "dog6" / "seed-0" / "train" / "adapter.safetensors").is_file()


def test_plugin_names_are_listed_beside_the_bundled_ones():
    result = _cli("methods", "--model", "tiny")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ia3" in result.stdout and "tlora" in result.stdout
    listed = _cli("models", "list")
    assert "tiny-plugin" in listed.stdout


@pytest.mark.parametrize("value, why", [("no_such_module:METHOD", "ModuleNotFoundError"),
                                        ("tlora_bench.adapters.tlora.config:_FAMILY", "a dict, not a MethodSpec")])
def test_a_broken_plugin_is_one_line_and_the_bundled_methods_keep_working(tmp_path, value, why):
    result = _cli("config", "--preset", "smoke", path=_broken_plugin(tmp_path, value))
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "plugin 'broken'" in line]
    assert len(warnings) == 1 and why in warnings[0], result.stderr


def test_a_plugin_whose_name_is_taken_is_skipped_with_one_line(tmp_path):
    folder = _broken_plugin(tmp_path, "clash_plugin:METHOD")
    (folder / "clash_plugin.py").write_text("from dataclasses import replace\nfrom tlora_bench import METHODS\n"
                                            "METHOD = replace(METHODS.get('lora'), summary='another lora')\n")
    result = _cli("config", "--preset", "smoke", path=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "plugin 'broken'" in line]
    assert len(warnings) == 1 and "'lora' is registered twice" in warnings[0], result.stderr


def test_the_extension_guide_shows_the_files_the_tests_run():
    guide = (Path(__file__).parents[1] / "docs" / "extending.md").read_text()
    for path in sorted((PLUGINS / "example_tlora_plugin").glob("*.py")):
        if path.name != "__init__.py":
            assert f"# example_tlora_plugin/{path.name}\n{path.read_text()}```" in guide, path.name
    for line in (PLUGINS / "example_tlora_plugin-1.0.dist-info" / "entry_points.txt").read_text().splitlines():
        if "=" in line:
            name, value = (part.strip() for part in line.split("="))
            assert f'{name} = "{value}"' in guide, line
