"""Bad inputs to `run` (and the cache of train and generate) that a probe found: each is one `error:` line,
exit 1, no traceback and nothing written; none of these tests trains except the re-scoring one."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_one_line_error
from tests.runner_helpers import preset_file, reduced_config
from tlora_bench.cli import main
from tlora_bench.errors import EXIT_INCOMPLETE, TloraBenchError
from tlora_bench.planner import make_plan
from tlora_bench.runner.jobs import DONE_FILE, read_marker
from tlora_bench.runner.run import check_run_folder


def _jobs(config):
    return list(make_plan(config).jobs)


def _variants(config):
    return list(make_plan(config).variants)


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


# ---- 1. evaluation keys checked when the config is built; a failed scoring says how to re-score ----------------


@pytest.mark.parametrize(("assignment", "fragments"), [
    ("segmenter=grabcat", ("segmenter", "'grabcat'", "did you mean 'grabcut'")),
    ("dino=dinov2-vits1", ("'dino'", "did you mean 'dinov2-vits14'")),
    ("concepts=", ("'concepts' must not be empty",)),
    ("name=../../escape", ("'name'", "not a safe folder name")),
    ("name=/abs", ("'name'", "not a safe folder name")),
])
def test_bad_config_values_are_one_line_and_write_nothing(tmp_path, assignment, fragments):
    assert_one_line_error(_cli("config", "--preset", "smoke", "--set", assignment), *fragments)
    out = tmp_path / "out"
    assert_one_line_error(_cli("run", "--preset", "smoke", "--set", assignment, "--out", str(out)), *fragments)
    assert not out.exists()


def test_only_evaluation_keys_changed_rescore_the_folder_other_keys_are_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(reduced_config(tmp_path).to_dict()))
    rescored = reduced_config(tmp_path, segmenter="grabcut", bootstrap="10")
    assert check_run_folder(run_dir, rescored, force_new=False) == ["bootstrap", "segmenter"]
    with pytest.raises(TloraBenchError, match=r"holds a run with seeds=\[0\], not \[3\] \(and 1 more"):
        check_run_folder(run_dir, reduced_config(tmp_path, segmenter="grabcut", seeds="3"), force_new=False)


def test_a_failed_scoring_is_an_error_line_on_stderr_and_a_rescore_needs_no_force_new(tmp_path, monkeypatch):
    import tlora_bench.metrics.evaluate as evaluate

    path, out = preset_file(tmp_path, methods="lora"), tmp_path / "run"
    real = evaluate.evaluate_folder

    def fail(*args, **kwargs):
        raise TloraBenchError("the segmenter weights are missing")

    monkeypatch.setattr(evaluate, "evaluate_folder", fail)
    result = _cli("run", "--preset", str(path), "--out", str(out))
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: scoring failed: the segmenter weights are missing")
    assert "re-run the same command" in errors[0] and "Traceback" not in result.output
    monkeypatch.setattr(evaluate, "evaluate_folder", real)
    result = _cli("run", "--preset", str(path), "--out", str(out), "--set", "bootstrap=20")
    assert result.exit_code == 0, result.output
    assert "again with bootstrap=20" in result.stdout
    assert json.loads((out / "config.json").read_text())["bootstrap"] == 20


# ---- 2. --devices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("devices", "gpus", "fragment"), [
    ("0", 0, "--devices 0: no CUDA GPU is visible on this machine; leave --devices out"),
    ("99", 2, "there is no GPU 99 (this machine has 2"),
    ("0,0", 2, "GPU 0 is listed twice"),
    ("0,,1", 2, "an empty item"),
    ("", 2, "an empty item"),
    ("-1", 2, "'-1' is not a GPU number"),
    ("all", 2, "'all' is not a GPU number"),
    ("1.5", 2, "'1.5' is not a GPU number"),
    ("cpu", 2, "'cpu' is not a GPU number"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_bad_devices_are_one_line_before_anything(tmp_path, monkeypatch, devices, gpus, fragment, dry_run):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    out = tmp_path / "out"
    args = ["run", "--preset", "smoke", "--devices", devices, "--out", str(out), *(["--dry-run"] if dry_run else [])]
    assert_one_line_error(_cli(*args), fragment)
    assert not out.exists()


def test_devices_that_exist_pass_a_dry_run(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    result = _cli("run", "--preset", "smoke", "--devices", "1,0", "--dry-run", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output


# ---- 3. a file or folder named like a preset does not shadow it -------------------------------------------


def test_a_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()
    (tmp_path / "paper-fig2").write_text("not toml [")
    for preset in ("smoke", "paper-fig2"):
        result = _cli("config", "--preset", preset)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["name"] == preset
    assert_one_line_error(_cli("config", "--preset", "./smoke"), "'smoke' is a folder")


# ---- 4. an unusable cache ----------------------------------------------------------------------------------


def test_an_unusable_cache_is_one_line_before_any_work_in_run_train_and_generate(tmp_path, monkeypatch):
    adapter = tmp_path / "adapter"  # a real adapter (trained with the usable cache): generate must load its model
    assert _cli("train", "--method", "lora", "--rank", "4", "--concept", "dog6", "--model", "tiny", "--steps", "1",
                "--out", str(adapter)).exit_code == 0
    blocked = tmp_path / "afile"
    blocked.write_text("a file, not a folder")
    monkeypatch.setenv("TLORA_BENCH_CACHE", str(blocked / "cache"))
    fragments = (str(blocked / "cache"), "$TLORA_BENCH_CACHE")
    out = tmp_path / "out"
    assert_one_line_error(_cli("run", "--preset", str(preset_file(tmp_path)), "--out", str(out)), *fragments)
    assert_one_line_error(_cli("train", "--method", "lora", "--concept", "dog6", "--model", "tiny",
                               "--out", str(out)), *fragments)
    assert_one_line_error(_cli("generate", str(adapter), "--out", str(out)), *fragments)
    assert not out.exists()


# ---- 5. malformed markers and config files on resume -------------------------------------------------------


def test_a_done_marker_that_is_no_object_means_not_done(tmp_path):
    for text in ("[1]", "1", '"done"', "", "{"):
        (tmp_path / DONE_FILE).write_text(text)
        assert read_marker(tmp_path / DONE_FILE) is None, text


def test_a_marker_or_config_that_is_a_folder_is_one_line(tmp_path):
    path = preset_file(tmp_path, methods="lora")
    out = tmp_path / "run"
    job = _jobs(reduced_config(tmp_path, methods="lora"))[0]
    (out / job.folder / DONE_FILE).mkdir(parents=True)
    assert_one_line_error(_cli("run", "--preset", str(path), "--out", str(out)), DONE_FILE, "is a folder",
                          "remove that folder")
    (out / "config.json").mkdir()
    assert_one_line_error(_cli("run", "--preset", str(path), "--out", str(out)), "config.json' is a folder",
                          "--force-new")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "jobs"]  # nothing written


# ---- 7. the data folder is a file ---------------------------------------------------------------------------


def test_a_data_folder_that_is_a_file_says_so(tmp_path, monkeypatch):
    data = tmp_path / "data.txt"
    data.write_text("a file")
    monkeypatch.setenv("TLORA_BENCH_DATA", str(data))
    out = tmp_path / "out"
    assert_one_line_error(_cli("run", "--preset", "smoke", "--out", str(out)), "is a file, not a folder",
                          "$TLORA_BENCH_DATA")
    assert not out.exists()


# ---- 8. usage mistakes exit 1 like every other error ------------------------------------------------------


def test_usage_mistakes_exit_1_and_a_bare_command_prints_its_help():
    assert_one_line_error(_cli("run", "--no-such-option"), "No such option")
    assert_one_line_error(_cli("run", "--devices"), "--devices")
    result = _cli()
    assert result.exit_code == 0 and result.stdout.startswith("Usage:")
