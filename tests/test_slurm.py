"""The Slurm executor on a real Slurm (CI starts a one-node cluster with `.ci/slurm-up`): a run through Slurm
equals the local executor's, even when one array element was cancelled (the only job a re-run runs again) and
one requeued (it resumes from its checkpoint); bad Slurm settings are one line before anything is submitted or written.

Without a reachable Slurm the cluster tests skip, naming why; CI sets TLORA_BENCH_REQUIRE_SLURM=1, which makes
that a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_one_line_error
from tests.runner_helpers import assert_same_results, results
from tlora_bench.cli import main
from tlora_bench.errors import TloraBenchError
from tlora_bench.runner import slurm
from tlora_bench.runner.slurm import SlurmOptions, parse_time, resolve_executor

# Two jobs of the smoke preset, long enough to be caught running: cancelled, or requeued after a checkpoint.
RUN = ("--preset", "smoke", "--methods", "tlora,lora", "--concepts", "dog6", "--steps", "all=30",
       "--set", "checkpoint_every=5")
ON_SLURM = ("--executor", "slurm", "--gpus-per-job", "0")
pytestmark = pytest.mark.xdist_group("slurm")  # one worker: the cluster's two CPUs run one test's jobs at a time


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def cluster() -> None:
    """A Slurm that answers; else skipped (a laptop) or failed (CI requires it)."""
    reason = None
    if shutil.which("sinfo") is None:
        reason = "no Slurm here (sinfo is not on PATH); `.ci/slurm-up` starts a one-node cluster as root"
    else:
        answer = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
        if answer.returncode != 0 or not answer.stdout.strip():
            reason = f"Slurm does not answer ({answer.stderr.strip() or 'no partitions'}); run `.ci/slurm-up`"
    if reason is not None:
        if os.environ.get("TLORA_BENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"{reason}; this run requires Slurm")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, data_root) -> Path:
    """The same run on the local executor: what every Slurm run must equal."""
    out = tmp_path_factory.mktemp("local") / "run"
    with pytest.MonkeyPatch.context() as patch:  # the per-test isolation does not reach a module's fixture
        patch.setenv("TLORA_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        result = cli("run", *RUN, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch):
    monkeypatch.setattr(slurm, "POLL_SECONDS", 0.5)


def _element(run_dir: Path, label: str) -> str:
    record = json.loads((run_dir / f"jobs/{label}/dog6/seed-0/scheduler.json").read_text())
    assert record["executor"] == "slurm"
    return record["job_id"]


def _state(element: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", element.split("_")[0], "-o", "%i %T"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines()).get(element, "GONE")


def _wait(condition, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _status(run_dir: Path) -> dict:
    result = cli("status", run_dir, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_run_through_slurm_equals_the_local_run_after_a_cancel_and_a_requeue(cluster, local_run, tmp_path):
    """Detached, picked up without resubmitting, one element cancelled, one requeued mid-training: the re-run
    submits only the cancelled job, and the results equal the local executor's."""
    out = tmp_path / "run"
    result = cli("run", *RUN, *ON_SLURM, "--max-concurrent", "1", "--detach", "--out", out)
    assert result.exit_code == 0 and "tlora-bench status" in result.output, result.output
    again = cli("run", *RUN, *ON_SLURM, "--max-concurrent", "1", "--detach", "--out", out)
    assert "2 jobs still queued or running" in again.output and "submitted" not in again.output, again.output
    # Another executor would run the same jobs beside Slurm's (and a picked-up run sweeps no temporaries).
    assert_one_line_error(cli("run", *RUN, "--out", out), "still wait or run on Slurm", "--executor slurm")

    cancelled, requeued = _element(out, "tlora-4"), _element(out, "lora-4")
    _wait(lambda: _state(cancelled) == "RUNNING", f"{cancelled} to run")
    subprocess.run(["scancel", cancelled], check=True)
    checkpoint = out / "jobs/lora-4/dog6/seed-0/train/checkpoint.pt"
    _wait(checkpoint.is_file, "the second job's first checkpoint")
    subprocess.run(["scontrol", "requeue", requeued], check=True)  # what preemption with requeue does
    _wait(lambda: _state(requeued) == "PENDING", f"{requeued} to be requeued")
    # Slurm holds a requeued job for two minutes; an administrator's StartTime=now releases it at once.
    subprocess.run(["scontrol", "update", f"JobId={requeued}", "StartTime=now"], check=True)
    # One status for both counts: two would straddle the requeued element's step from pending to running.
    _wait(lambda: (now := _status(out))["running"] + now["pending"] == 0, "the array to end")

    status = _status(out)
    states = [(job["job"], job["state"], job["error"], job["scheduler"]) for job in status["jobs"]]
    logs = {p.name: p.read_text()[-600:] for p in sorted(out.glob("jobs/**/slurm-*.log"))}
    assert (status["done"], status["lost"]) == (1, 1), (states, logs)
    lost = next(job for job in status["jobs"] if job["state"] == "lost")
    assert lost["job"] == "tlora-4/dog6/seed-0" and cancelled in lost["scheduler"]
    done = json.loads((out / "jobs/lora-4/dog6/seed-0/done.json").read_text())
    assert done["resumed_from_step"] > 0  # the requeued element went on from its checkpoint

    rerun = cli("run", *RUN, *ON_SLURM, "--out", out)
    assert rerun.exit_code == 0, rerun.output
    assert "slurm: submitted 1 job as array" in rerun.output
    summary = json.loads((out / "summary.json").read_text())
    ran = [o["job"] for o in summary["outcomes"] if not o["skipped"]]
    assert ran == ["tlora-4/dog6/seed-0"]
    assert_same_results(results(out), results(local_run), cache_differs=True)
    for label in ("tlora-4", "lora-4"):  # each job's output beside it, under its last element's id
        assert (out / f"jobs/{label}/dog6/seed-0/slurm-{_element(out, label)}.log").is_file()
    assert (_status(out)["done"], _status(out)["total"]) == (2, 2)


def test_slurm_settings_it_cannot_meet_are_one_line_before_anything_is_written(cluster, tmp_path):
    out = tmp_path / "run"
    cases = [(("--partition", "nosuch"), "no such Slurm partition"),
             (("--time", "30-00:00:00"), "allows at most"),
             (("--mem", "100000T"), "have at most"),
             (("--cpus-per-job", "100000"), "have at most")]
    for flags, fragment in cases:
        assert_one_line_error(cli("run", *RUN, *ON_SLURM, *flags, "--out", out), fragment)
    if not any(slurm._gpu_count(line) for line in subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True,
                                                                   text=True).stdout.splitlines()):
        assert_one_line_error(cli("run", *RUN, "--executor", "slurm", "--out", out), "no GPUs", "--gpus-per-job 0")
    assert not out.exists()


# ---- without a cluster ----------------------------------------------------------------------------------


def test_no_submitit_and_no_slurm_are_one_line_before_anything_is_written(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    assert_one_line_error(cli("run", *RUN, *ON_SLURM, "--out", out), "pip install 'tlora-bench[slurm]'")
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert_one_line_error(cli("run", *RUN, *ON_SLURM, "--out", out), "no Slurm here", "sinfo")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sinfo").write_text("#!/bin/sh\necho 'sinfo: error: Unable to contact slurm controller' >&2\nexit 1\n")
    (fake / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert_one_line_error(cli("run", *RUN, *ON_SLURM, "--out", out), "cannot reach Slurm",
                          "Unable to contact slurm controller")
    assert not out.exists()


def test_slurm_flags_belong_to_the_slurm_executor(tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(cli("run", *RUN, "--partition", "gpu", "--out", out), "--partition is for --executor slurm")
    assert_one_line_error(cli("run", *RUN, "--detach", "--out", out), "--detach is for --executor slurm")
    assert_one_line_error(cli("run", *RUN, *ON_SLURM, "--time", "4h", "--out", out), "--time 4h", "H:MM:SS")
    assert_one_line_error(cli("run", *RUN, *ON_SLURM, "--mem", "lots", "--out", out), "--mem lots", "32G")
    assert_one_line_error(cli("run", *RUN, *ON_SLURM, "--max-concurrent", "0", "--out", out), "--max-concurrent 0")
    assert not out.exists()


def test_a_preset_executor_table_sets_the_executor_and_its_unknown_keys_are_refused(tmp_path):
    preset = tmp_path / "cluster.toml"
    preset.write_text('name = "cluster"\nmethods = ["tlora"]\n[executor]\nname = "slurm"\npartition = "gpu"\n'
                      'gpus_per_job = 2\ntime = 90\nslurm_options = { constraint = "a100" }\n')
    assert cli("config", "--preset", preset).exit_code == 0  # the table is not part of the run's config
    from tlora_bench.config import preset_executor

    name, where = resolve_executor(preset_executor(str(preset)), {"name": None, "partition": "other"})
    assert name == "slurm"
    assert where["slurm"] == SlurmOptions(partition="other", gpus_per_job=2, time="90",
                                          slurm_options={"constraint": "a100"})
    preset.write_text('name = "cluster"\n[executor]\nname = "slurm"\npartiton = "gpu"\n')
    assert_one_line_error(cli("run", "--preset", preset, "--out", tmp_path / "run"), "partiton",
                          "did you mean 'partition'")


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("30:30", 31), ("4:00:00", 240), ("1-12", 2160),
                                               ("1-0:30", 1470), ("2-00:00:01", 2881)])
def test_slurm_times_read_as_minutes(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["4h", "1:2:3:4", "0", "", "1-", "12:"])
def test_a_bad_slurm_time_is_refused(text):
    with pytest.raises(TloraBenchError, match="--time"):
        parse_time(text)


@pytest.mark.parametrize(("gres", "gpus"), [("(null)", 0), ("gpu:8", 8), ("gpu:a100:4(S:0-1)", 4),
                                            ("gpu:a100:4,gpu:v100:2", 6), ("mps:100,gpu:2", 2)])
def test_gpus_per_node_read_from_sinfo(gres, gpus):
    assert slurm._gpu_count(gres) == gpus


def test_an_element_that_slurm_ended_without_a_marker_is_failed_with_its_details_or_lost(tmp_path, data_root):
    from tlora_bench.config import load_config
    from tlora_bench.planner import make_plan

    job = make_plan(load_config("smoke", {"methods": "lora", "concepts": "dog6"})).jobs[0]
    folder = tmp_path / job.folder
    folder.mkdir(parents=True)
    (folder / "slurm-7_0.log").write_text("".join(f"line {i}\n" for i in range(30)))
    outcome = slurm._ended(job, tmp_path, "7_0", "OUT_OF_MEMORY", "node3")
    assert outcome.status == "failed" and "OUT_OF_MEMORY on node3" in outcome.error and "--mem" in outcome.error
    marker = json.loads((folder / "failed.json").read_text())
    assert (marker["slurm_job_id"], marker["node"], marker["error"]) == ("7_0", "node3", outcome.error)
    assert marker["log_tail"] == [f"line {i}" for i in range(10, 30)]
    (folder / "failed.json").unlink()
    for state in ("CANCELLED", "PREEMPTED", "NODE_FAIL", None):  # submitted again by the next run
        assert slurm._ended(job, tmp_path, "7_0", state, "node3").status == "lost"
    assert not (folder / "failed.json").exists()
