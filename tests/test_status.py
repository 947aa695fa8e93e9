"""`tlora-bench status RUN_DIR`: the counts by state and variant on a finished, a half-finished (killed), a
failed and a running run, the failed jobs' errors, and one line on a folder that is not a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_one_line_error
from tests.runner_helpers import preset_file
from tlora_bench.cli import main
from tlora_bench.runner.lock import run_folder_lock

JOBS = ("lora-4/rex/seed-0", "lora-4/mug/seed-0")


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("status")
    with pytest.MonkeyPatch.context() as patch:  # the per-test isolation does not reach a module's fixture
        patch.setenv("TLORA_BENCH_CACHE", str(root / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        result = cli("run", "--preset", preset_file(root, methods="lora"), "--out", root / "run")
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture
def run_dir(finished, tmp_path) -> Path:
    """A copy of the finished run, to take apart."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def status(run_dir: Path) -> dict:
    result = cli("status", run_dir, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def counts(data: dict) -> tuple[int, ...]:
    return tuple(data[state] for state in ("done", "failed", "running", "pending", "lost"))


def test_a_finished_run_counts_every_job_done_with_its_device_time(finished):
    data = status(finished)
    assert counts(data) == (2, 0, 0, 0, 0) and data["total"] == 2
    assert data["variants"] == {"lora-4": {"done": 2, "failed": 0, "running": 0, "pending": 0, "lost": 0}}
    assert data["device_seconds"] > 0 and data["seconds_left"] == 0
    text = cli("status", finished).output
    assert "2 done, 0 failed, 0 running, 0 pending, 0 lost" in text and "jobs per device hour" in text
    assert cli("status", finished, "--watch", "--interval", "1").exit_code == 0  # nothing runs: it returns


def test_a_killed_run_counts_the_started_job_lost_and_the_unstarted_one_pending(run_dir):
    (run_dir / "jobs" / JOBS[0] / "done.json").unlink()  # killed mid-way: job.json, no marker
    data = status(run_dir)
    assert counts(data) == (1, 0, 0, 0, 1)
    assert data["seconds_left"] == pytest.approx(data["seconds_per_job"])
    assert f"lost: {JOBS[0]}: re-run to resume it" in cli("status", run_dir).output
    shutil.rmtree(run_dir / "jobs" / JOBS[1])  # never started
    assert counts(status(run_dir)) == (0, 0, 0, 1, 1)


def test_a_failed_job_is_counted_with_its_one_line_error(run_dir):
    folder = run_dir / "jobs" / JOBS[1]
    (folder / "done.json").unlink()
    (folder / "failed.json").write_text(json.dumps({"job": JOBS[1], "error": "out of GPU memory; use bf16",
                                                    "slurm_job_id": "41_1", "node": "gpu7"}))
    assert counts(status(run_dir)) == (1, 1, 0, 0, 0)
    assert f"failed: {JOBS[1]} [slurm 41_1 on gpu7]: out of GPU memory; use bf16" in cli("status", run_dir).output


def test_a_started_job_of_a_run_going_on_is_running(run_dir):
    (run_dir / "jobs" / JOBS[0] / "done.json").unlink()
    with run_folder_lock(run_dir):  # what `tlora-bench run` holds while it runs
        assert counts(status(run_dir)) == (1, 0, 1, 0, 0)
    assert counts(status(run_dir)) == (1, 0, 0, 0, 1)


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    assert_one_line_error(cli("status", tmp_path), "is not a run folder", "config.json")
    assert_one_line_error(cli("status", tmp_path / "missing"), "is not a run folder")
    (tmp_path / "config.json").write_text("[1, 2")
    assert_one_line_error(cli("status", tmp_path), "config.json")
