"""`tlora-bench status RUN_DIR`: the counts by state and variant on a finished, a half-finished (killed), a
failed and a running run, the failed jobs' errors, and one line on a folder that is not a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_one_line_error
from tlora_bench.cli import main
from tlora_bench.config import load_config
from tlora_bench.planner import make_plan
from tlora_bench.runner.lock import run_folder_lock

JOBS = ("lora-4/dog6/seed-0", "lora-4/backpack/seed-0")
SECONDS = (12.0, 18.0)


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def run_dir(tmp_path, data_root) -> Path:
    """A finished run's folder as `run` leaves it (config.json, each job's job.json and done.json), without the
    adapters and images that status never reads (a real run's status is tested on Slurm, tests/test_slurm.py)."""
    config = load_config("smoke", {"methods": "lora", "concepts": "dog6,backpack"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    jobs = make_plan(config).jobs
    assert tuple(job.id for job in jobs) == JOBS
    for job, seconds in zip(jobs, SECONDS, strict=True):
        folder = run_dir / job.folder
        folder.mkdir(parents=True)
        (folder / "job.json").write_text(json.dumps(job.to_dict()))
        (folder / "done.json").write_text(json.dumps({"job": job.id, "seconds": seconds}))
    return run_dir


def status(run_dir: Path) -> dict:
    result = cli("status", run_dir, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def counts(data: dict) -> tuple[int, ...]:
    return tuple(data[state] for state in ("done", "failed", "running", "pending", "lost"))


def test_a_finished_run_counts_every_job_done_with_its_device_time(run_dir):
    data = status(run_dir)
    assert counts(data) == (2, 0, 0, 0, 0) and data["total"] == 2
    assert data["variants"] == {"lora-4": {"done": 2, "failed": 0, "running": 0, "pending": 0, "lost": 0}}
    assert (data["device_seconds"], data["seconds_per_job"], data["seconds_left"]) == (30.0, 15.0, 0.0)
    text = cli("status", run_dir).output
    assert "2 done, 0 failed, 0 running, 0 pending, 0 lost" in text
    assert "device time: 30 s over 2 jobs done (15 s a job, 240.0 jobs per device hour)" in text
    assert cli("status", run_dir, "--watch", "--interval", "1").exit_code == 0  # nothing runs: it returns


def test_a_killed_run_counts_the_started_job_lost_and_the_unstarted_one_pending(run_dir):
    (run_dir / "jobs" / JOBS[0] / "done.json").unlink()  # killed mid-way: job.json, no marker
    data = status(run_dir)
    assert counts(data) == (1, 0, 0, 0, 1)
    assert data["seconds_left"] == SECONDS[1]  # one job left, at the finished one's rate
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
