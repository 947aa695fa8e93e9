"""`tlora-bench status RUN_DIR`: where every job of a run stands, read from the run folder (and squeue for jobs
submitted to Slurm), without taking the run's lock: it may watch a run that another process drives.

A job is
- done: its done.json is there; failed: its failed.json is there (the error is one line);
- running: Slurm runs its array element, or a `tlora-bench run` holds the folder and the job has started;
- pending: queued on Slurm, or not started yet;
- lost: it started (or was submitted) and ended without a marker: killed, cancelled, or its run stopped. A
  re-run resumes it from its checkpoint and finished images.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlora_bench.errors import TloraBenchError
from tlora_bench.layout import CONFIG_FILE, DONE_FILE, FAILED_FILE, JOB_FILE
from tlora_bench.planner import Job
from tlora_bench.runner.jobs import read_marker
from tlora_bench.runner.lock import run_folder_busy
from tlora_bench.runner.progress import format_duration, jobs_phrase
from tlora_bench.runner.slurm import ACTIVE_STATES, queue_states, read_submission

STATES = ("done", "failed", "running", "pending", "lost")


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str  # one of STATES
    seconds: float | None = None  # a done job's time
    error: str | None = None
    scheduler: str | None = None  # "slurm 123_4 on node7", "ray <task id>"


def run_jobs(run_dir: Path) -> list[Job]:
    """The jobs of the run in `run_dir`, planned again from its config.json."""
    from tlora_bench.config import load_config
    from tlora_bench.fileio import read_json
    from tlora_bench.planner import make_plan

    if not (run_dir / CONFIG_FILE).is_file():
        raise TloraBenchError(f"'{run_dir}' is not a run folder (it has no {CONFIG_FILE}); give a folder that "
                              "`tlora-bench run` wrote, e.g. results/smoke")
    saved = read_json(run_dir / CONFIG_FILE, "re-run the run's command to write it again")
    if not isinstance(saved, dict):
        raise TloraBenchError(f"'{run_dir / CONFIG_FILE}' is not a run configuration (a JSON object); re-run the "
                              "run's command to write it again")
    return list(make_plan(load_config(overrides=saved)).jobs)


def job_statuses(run_dir: Path, jobs: list[Job]) -> list[JobStatus]:
    """Every job's state (one squeue call for all the jobs submitted to Slurm)."""
    records = {job.id: read_submission(run_dir, job) for job in jobs}
    slurm_ids = [r["job_id"] for r in records.values() if r and r.get("executor") == "slurm"]
    queue = queue_states(slurm_ids) if slurm_ids else {}  # None: squeue did not answer
    busy = run_folder_busy(run_dir)
    return [_status(job, run_dir, records[job.id], queue, busy) for job in jobs]


def _status(job: Job, run_dir: Path, record: dict[str, Any] | None, queue: dict[str, tuple[str, str]] | None,
            busy: bool) -> JobStatus:
    folder = run_dir / job.folder
    done = read_marker(folder / DONE_FILE)
    if done is not None:
        return JobStatus(job, "done", float(done.get("seconds") or 0.0))
    failed = read_marker(folder / FAILED_FILE)
    if failed is not None:
        where = f"slurm {failed['slurm_job_id']} on {failed.get('node') or '?'}" if failed.get("slurm_job_id") else None
        return JobStatus(job, "failed", error=str(failed.get("error", "failed")), scheduler=where)
    if record is not None and record.get("executor") == "slurm" and queue is None:  # a guess from the folder
        started = (folder / JOB_FILE).is_file()
        return JobStatus(job, "running" if started else "pending",
                         scheduler=f"slurm {record['job_id']} (squeue did not answer: a guess from the folder)")
    if record is not None and record.get("executor") == "slurm":
        element = record["job_id"]
        state, node = queue.get(element, (None, ""))
        where = f"slurm {element}" + (f" on {node}" if node else "")
        if state == "RUNNING":
            return JobStatus(job, "running", scheduler=where)
        if state in ACTIVE_STATES:
            return JobStatus(job, "pending", scheduler=f"{where} ({state.lower()})")
        return JobStatus(job, "lost", scheduler=f"{where} ({state.lower() if state else 'gone from the queue'})")
    where = f"ray task {record['job_id']}" if record is not None else None
    if not (folder / JOB_FILE).is_file():
        return JobStatus(job, "running" if busy and record is not None else "pending", scheduler=where)
    return JobStatus(job, "running" if busy else "lost", scheduler=where)


def counts(statuses: list[JobStatus]) -> dict[str, int]:
    return {state: sum(s.state == state for s in statuses) for state in STATES}


def summary(run_dir: Path, statuses: list[JobStatus]) -> dict[str, Any]:
    """The numbers `status` prints, as a dict (its --json)."""
    done = [s.seconds or 0.0 for s in statuses if s.state == "done"]
    left = sum(s.state in ("running", "pending", "lost") for s in statuses)
    per_job = statistics.mean(done) if done else None
    variants: dict[str, dict[str, int]] = {}
    for status in statuses:
        variants.setdefault(status.job.label, dict.fromkeys(STATES, 0))[status.state] += 1
    return {"run_dir": str(run_dir), "total": len(statuses), **counts(statuses), "variants": variants,
            "device_seconds": sum(done), "seconds_per_job": per_job,
            "seconds_left": per_job * left if per_job is not None else None,
            "jobs": [{"job": s.job.id, "state": s.state, "seconds": s.seconds, "error": s.error,
                      "scheduler": s.scheduler} for s in statuses]}


def format_status(run_dir: Path, statuses: list[JobStatus]) -> str:
    """The table by variant and state, device time, throughput and time left, then the jobs that need a look."""
    data = summary(run_dir, statuses)
    lines = [f"run in {run_dir}: {jobs_phrase(len(statuses))}; " + ", ".join(f"{data[s]} {s}" for s in STATES)]
    width = max([len("variant"), *(len(label) for label in data["variants"])])
    lines.append(f"{'variant':<{width}} " + " ".join(f"{state:>7}" for state in STATES))
    for label, row in data["variants"].items():
        lines.append(f"{label:<{width}} " + " ".join(f"{row[state]:>7}" for state in STATES))
    if data["seconds_per_job"] is not None:
        per_hour = 3600 / data["seconds_per_job"] if data["seconds_per_job"] > 0 else float("inf")
        line = (f"device time: {format_duration(data['device_seconds'])} over {jobs_phrase(data['done'])} done "
                f"({format_duration(data['seconds_per_job'])} a job, {per_hour:,.1f} jobs per device hour)")
        left = len(statuses) - data["done"] - data["failed"]
        if left:
            line += f"; about {format_duration(data['seconds_left'])} of device time left for {jobs_phrase(left)}"
        lines.append(line)
    for status in statuses:
        if status.state in ("failed", "running", "lost") or (status.state == "pending" and status.scheduler):
            where = f" [{status.scheduler}]" if status.scheduler else ""
            error = f": {status.error}" if status.error else ""
            hint = ": re-run to resume it" if status.state == "lost" else ""
            lines.append(f"{status.state}: {status.job.id}{where}{error}{hint}")
    return "\n".join(lines)
