"""The Slurm executor (`--executor slurm`, through submitit): every pending job of a plan is one element of a
Slurm job array, running the same `run_job` as every executor into the shared run folder.

What the run folder holds for it (docs/cluster.md):

    slurm/                                 submitit's files: the pickled calls, their results, its own logs
    jobs/<label>/<concept>/seed-<s>/scheduler.json     the array element the job was last submitted as
    jobs/<label>/<concept>/seed-<s>/slurm-<id>.log     the job's stdout and stderr (appended across requeues)

The submitting `tlora-bench run` asks `squeue` for the elements' states (never `sacct`: a cluster without
accounting has none) and, once an element has left Slurm's queue, reads the job's marker: done.json, failed.json,
or neither (lost: cancelled, or killed before it could record anything; the next run submits it again). An
element that Slurm requeues (preemption, or submitit's requeue shortly before the time limit) resumes from the
job's training checkpoint and finished images, as every resumed job does.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tlora_bench.errors import TloraBenchError, did_you_mean
from tlora_bench.fileio import atomic_write_text
from tlora_bench.layout import DONE_FILE, FAILED_FILE
from tlora_bench.planner import Job
from tlora_bench.runner.jobs import JobOutcome, earlier_outcome, read_marker, run_job
from tlora_bench.runner.progress import jobs_phrase

SCHEDULER_FILE = "scheduler.json"  # in a job folder: where the job was last submitted (Slurm or Ray)
SUBMITIT_DIR = "slurm"  # in a run folder
LOG_TAIL_LINES = 20  # of a failed job's log, kept in its failed.json
POLL_SECONDS = 5.0
DEFAULT_HOURS = 24  # --time when neither the user nor the partition gives one
# Element states in which Slurm may still run (or is running) the job: it is not submitted again.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                           "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
                           "SPECIAL_EXIT", "RESV_DEL_HOLD"})
# Element states that end a job whose marker is missing as failed (not lost): running it again unchanged would
# end the same way, so the next run retries it only with --retry-failed.
FAILING_STATES = {"OUT_OF_MEMORY": "raise --mem", "TIMEOUT": "raise --time", "FAILED": "see its log",
                  "BOOT_FAIL": "see its log", "DEADLINE": "raise --time"}


@dataclass(frozen=True)
class SlurmOptions:
    """What each array element asks Slurm for (`run --partition ...` or a preset's [executor] table)."""

    partition: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    mem: str | None = None  # Slurm's --mem: 32G, 16000M, 16000 (megabytes)
    time: str | None = None  # Slurm's --time: 90, 4:00:00, 1-12:00:00 (default: the partition's)
    account: str | None = None
    qos: str | None = None
    max_concurrent: int | None = None  # the array's %N throttle
    slurm_options: Mapping[str, Any] = field(default_factory=dict)  # any other sbatch option, KEY=VALUE

    def __post_init__(self) -> None:
        for name in ("gpus_per_job", "cpus_per_job", "max_concurrent"):
            value, low = getattr(self, name), 0 if name == "gpus_per_job" else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise TloraBenchError(f"--{name.replace('_', '-')} {value}: give a whole number of at least {low}")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", str(self.mem).strip().upper()):
            raise TloraBenchError(f"--mem {self.mem}: give Slurm's form, a number of megabytes or one with K, M, G "
                                  "or T, e.g. 32G")
        if self.time is not None:
            parse_time(self.time)
        bad = next((key for key in self.slurm_options if not re.fullmatch(r"[a-z][a-z0-9_-]*", key)), None)
        if bad is not None:
            raise TloraBenchError(f"--slurm-option {bad}=...: '{bad}' is not an sbatch option name; give it "
                                  "without dashes, e.g. --slurm-option constraint=a100")


OPTION_KEYS = tuple(f.name for f in fields(SlurmOptions))


def parse_time(text: str) -> int:
    """Slurm's --time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as whole minutes, rounded up."""
    value = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match or value.endswith(":"):
        raise TloraBenchError(f"--time {text}: not a Slurm time; give minutes (90), H:MM:SS (4:00:00) or "
                              "D-HH:MM:SS (1-12:00:00)")
    days, first, second, third = match.groups()
    numbers = [int(first), *(int(n) for n in (second, third) if n is not None)]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = [*numbers, 0, 0][:3]
        total = ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    elif len(numbers) == 3:
        total = (numbers[0] * 60 + numbers[1]) * 60 + numbers[2]
    else:  # M or M:S
        total = numbers[0] * 60 + (numbers[1] if len(numbers) == 2 else 0)
    if total <= 0:
        raise TloraBenchError(f"--time {text}: give a time limit above zero")
    return math.ceil(total / 60)


def _limit_minutes(text: str) -> int | None:
    """A partition's limit as sinfo prints it (2:00:00, 1-00:00:00, infinite, n/a): minutes, or None."""
    try:
        return parse_time(text)
    except TloraBenchError:
        return None


# ---- checks before anything is submitted -----------------------------------------------------------------


def _command(args: list[str], timeout: float = 30.0) -> str:
    """A Slurm client command's stdout; a missing command or an unreachable controller is one line."""
    if shutil.which(args[0]) is None:
        raise TloraBenchError(f"--executor slurm: no Slurm here ('{args[0]}' is not on PATH); run on a machine "
                              "that submits to Slurm (a login node), or use --executor local or ray")
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TloraBenchError(f"--executor slurm: '{' '.join(args)}' did not answer in {timeout:g} s; is the "
                              "Slurm controller up?") from None
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if line.strip()), f"exit {done.returncode}")
        raise TloraBenchError(f"--executor slurm: cannot reach Slurm ({args[0]}: {first.strip()}); check that "
                              "the controller is up and this machine may submit to it")
    return done.stdout


@dataclass(frozen=True)
class Partition:
    name: str
    max_minutes: int | None  # None: no limit
    default_minutes: int | None
    cpus: int  # the most any of its nodes has
    memory_mb: int
    gpus: int


def _gpu_count(gres: str) -> int:
    """sinfo's GRES column (gpu:a100:8(S:0-1),gpu:4 or (null)): the GPUs of one node."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def read_partition(name: str | None) -> Partition:
    """The partition's limits from sinfo (the default partition when `name` is None)."""
    lines = [line.split("|") for line in _command(["sinfo", "-h", "-o", "%P|%l|%L|%c|%m|%G"]).splitlines()
             if line.count("|") == 5]
    known = list(dict.fromkeys(fields_[0].rstrip("*") for fields_ in lines))
    if name is None:
        default = next((f[0].rstrip("*") for f in lines if f[0].endswith("*")), None)
        if default is None:
            raise TloraBenchError("--executor slurm: this cluster has no default partition; name one with "
                                  f"--partition (partitions: {', '.join(known) or 'none'})")
        name = default
    rows = [f for f in lines if f[0].rstrip("*") == name]
    if not rows:
        raise TloraBenchError(f"--partition {name}: no such Slurm partition{did_you_mean(name, known)} "
                              f"(partitions: {', '.join(known) or 'none'})")

    def number(text: str) -> int:
        return int(re.sub(r"\D", "", text) or 0)

    return Partition(name, _limit_minutes(rows[0][1]), _limit_minutes(rows[0][2]),
                     max(number(f[3]) for f in rows), max(number(f[4]) for f in rows),
                     max(_gpu_count(f[5]) for f in rows))


def _megabytes(mem: str) -> int:
    value = str(mem).strip().upper()
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}.get(value[-1], 1)
    return math.ceil(int(value.rstrip("KMGT")) * scale)


def check_slurm(options: SlurmOptions) -> tuple[Partition, int]:
    """Everything that would make Slurm refuse or never start the array, before anything is written: submitit
    installed, Slurm reachable, the partition known, and a time, CPUs, memory and GPUs its nodes can give.
    Returns the partition and the time limit in minutes."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise TloraBenchError("--executor slurm needs submitit: pip install 'tlora-bench[slurm]'") from None
    partition = read_partition(options.partition)
    where = f"partition '{partition.name}'"
    minutes = parse_time(options.time) if options.time else (partition.default_minutes or partition.max_minutes
                                                             or DEFAULT_HOURS * 60)
    if partition.max_minutes is not None and minutes > partition.max_minutes:
        raise TloraBenchError(f"--time {options.time}: {where} allows at most {partition.max_minutes} minutes per "
                              "job; ask for less, or choose another --partition")
    if options.cpus_per_job and options.cpus_per_job > partition.cpus:
        raise TloraBenchError(f"--cpus-per-job {options.cpus_per_job}: the nodes of {where} have at most "
                              f"{partition.cpus} CPUs")
    if options.mem and partition.memory_mb and _megabytes(options.mem) > partition.memory_mb:
        raise TloraBenchError(f"--mem {options.mem}: the nodes of {where} have at most {partition.memory_mb} MB")
    if options.gpus_per_job > partition.gpus:
        have = f"at most {partition.gpus} GPUs" if partition.gpus else "no GPUs"
        raise TloraBenchError(f"--gpus-per-job {options.gpus_per_job}: the nodes of {where} have {have}; "
                              f"{'pass --gpus-per-job 0 to run on their CPUs, or ' if not partition.gpus else ''}"
                              "choose another --partition")
    return partition, minutes


# ---- the job, on a Slurm node ---------------------------------------------------------------------------


def _task_class():
    """SlurmTask, made when submitit is importable: a Checkpointable is requeued by submitit shortly before its
    time limit (and when preempted), and calls the same `run_job` again, which resumes."""
    import submitit

    class SlurmTask(submitit.helpers.Checkpointable):
        def __call__(self, job: Job, run_dir: str, retry_failed: bool) -> JobOutcome:
            return run_slurm_job(job, Path(run_dir), retry_failed)

    return SlurmTask


def run_slurm_job(job: Job, run_dir: Path, retry_failed: bool) -> JobOutcome:
    """One array element: the job's output to its log beside it, then `run_job`; a failure's marker gains the
    Slurm job id, the node and the log's last lines. SIGTERM (scancel, preemption) stops at a safe point."""
    from tlora_bench.interrupts import Interrupted, stop_on_signals

    slurm_id = _element_id()
    log = run_dir / job.folder / f"slurm-{slurm_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab", buffering=0) as stream:  # appended: a requeued element continues its log
        for fd in (1, 2):
            os.dup2(stream.fileno(), fd)
    try:
        with stop_on_signals():
            outcome = run_job(job, run_dir, "auto", retry_failed)
    except Interrupted as stop:  # cancelled, preempted or requeued: what is on disk is safe to resume from
        print(f"tlora-bench: {job.id} stopped by {stop} at a safe point; it resumes when it runs again",
              flush=True)
        sys.exit(stop.exit_status)
    if outcome.status == "failed" and not outcome.skipped:
        _add_slurm_details(run_dir / job.folder / FAILED_FILE, slurm_id, socket.gethostname(), log)
    return outcome


def _element_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "unknown")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _add_slurm_details(failed: Path, slurm_id: str, node: str, log: Path, error: str | None = None) -> None:
    """failed.json with the Slurm job id, the node and the last lines of the job's log (written when missing)."""
    marker = read_marker(failed) or {"error": error}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    marker.update({"slurm_job_id": slurm_id, "node": node, "log": log.name, "log_tail": log_tail(log)})
    atomic_write_text(failed, json.dumps(marker, indent=2) + "\n")


# ---- submitting and waiting -----------------------------------------------------------------------------


def queue_states(ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """{element id: (state, node)} for the elements Slurm still knows (finished ones for a few minutes), or None
    when squeue cannot answer now (the caller asks again later)."""
    if not ids:
        return {}
    arrays = sorted({element.split("_")[0] for element in ids})
    try:
        out = _command(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-o", "%i|%T|%N"])
    except TloraBenchError:
        return None
    states = {}
    for line in out.splitlines():
        element, _, rest = line.strip().partition("|")
        state, _, node = rest.partition("|")
        states[element] = (state.split()[0] if state else "UNKNOWN", node)
    return states


def read_submission(run_dir: Path, job: Job) -> dict[str, Any] | None:
    record = read_marker(run_dir / job.folder / SCHEDULER_FILE)
    return record if record and isinstance(record.get("job_id"), str) else None


def write_submission(run_dir: Path, job: Job, executor: str, job_id: str, **extra: Any) -> None:
    record = {"executor": executor, "job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    atomic_write_text(run_dir / job.folder / SCHEDULER_FILE, json.dumps(record, indent=2) + "\n")


def active_elements(jobs: Sequence[Job], run_dir: Path) -> dict[str, Job]:
    """{element id: job} of the jobs whose last Slurm submission is still queued or running (none when no job
    was submitted to Slurm, or squeue cannot say)."""
    records = {job.id: read_submission(run_dir, job) for job in jobs}
    submitted = {r["job_id"]: job for job in jobs if (r := records[job.id]) and r.get("executor") == "slurm"}
    states = (queue_states(list(submitted)) or {}) if submitted else {}
    return {element: job for element, job in submitted.items()
            if states.get(element, ("",))[0] in ACTIVE_STATES}


def _submit(jobs: Sequence[Job], run_dir: Path, options: SlurmOptions, minutes: int, name: str,
            retry_failed: bool) -> dict[str, Job]:
    """The jobs as one array; {element id: job}, each recorded in its folder's scheduler.json."""
    import submitit

    executor = submitit.SlurmExecutor(folder=run_dir / SUBMITIT_DIR, max_num_timeout=3)
    parameters: dict[str, Any] = {"time": minutes, "job_name": f"tlora-{name}", "stderr_to_stdout": True,
                                  "array_parallelism": options.max_concurrent or len(jobs),
                                  "additional_parameters": dict(options.slurm_options)}
    chosen = {"partition": options.partition, "cpus_per_task": options.cpus_per_job, "mem": options.mem,
              "account": options.account, "qos": options.qos,
              "gpus_per_node": options.gpus_per_job or None}
    parameters.update({key: value for key, value in chosen.items() if value is not None})
    executor.update_parameters(**parameters)
    for job in jobs:  # a job to run again records nothing stale that the waiting loop would read as its end
        if retry_failed:
            (run_dir / job.folder / FAILED_FILE).unlink(missing_ok=True)
    task = _task_class()()
    try:
        with executor.batch():
            submitted = [executor.submit(task, job, str(run_dir.resolve()), retry_failed) for job in jobs]
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as e:
        text = " ".join(str(getattr(e, "stderr", b"") or e).split())
        raise TloraBenchError(f"--executor slurm: sbatch refused the array ({text[:300]}); check the "
                              "--partition, --account, --qos and --slurm-option values") from None
    elements = {}
    for job, handle in zip(jobs, submitted, strict=True):
        write_submission(run_dir, job, "slurm", str(handle.job_id), log=f"slurm-{handle.job_id}.log")
        elements[str(handle.job_id)] = job
    return elements


def marker_outcome(job: Job, run_dir: Path) -> JobOutcome | None:
    """The outcome a job's marker records, or None without one."""
    folder = run_dir / job.folder
    done = read_marker(folder / DONE_FILE)
    if done is not None:
        return JobOutcome(job.id, "done", float(done.get("seconds", 0.0)))
    failed = read_marker(folder / FAILED_FILE)
    if failed is not None:
        return JobOutcome(job.id, "failed", 0.0, failed.get("error", "failed"))
    return None


def _ended(job: Job, run_dir: Path, element: str, state: str | None, node: str) -> JobOutcome:
    """A job whose element left the queue: its marker, else failed (a failing state) or lost."""
    outcome = marker_outcome(job, run_dir)
    if outcome is not None:
        return outcome
    if state in FAILING_STATES:
        error = (f"Slurm ended job {element} with {state}{f' on {node}' if node else ''}; {FAILING_STATES[state]}, "
                 "then re-run with --retry-failed")
        _add_slurm_details(run_dir / job.folder / FAILED_FILE, element, node, run_dir / job.folder /
                           f"slurm-{element}.log", error)
        return JobOutcome(job.id, "failed", 0.0, error)
    how = f"it ended {state}" if state else "Slurm no longer knows it"
    return JobOutcome(job.id, "lost", 0.0, f"Slurm job {element} left the queue unfinished ({how}); "
                                            "re-run to submit it again (it resumes)")


def execute_slurm(jobs: Sequence[Job], run_dir: Path, options: SlurmOptions, *, name: str, retry_failed: bool,
                  detach: bool, report: Callable[[JobOutcome], None], tick: Callable[[], None],
                  echo: Callable[[str], None]) -> list[JobOutcome]:
    """Submit the jobs that are neither finished nor still queued from an earlier submission, then (unless
    `detach`) wait for every element and report each job's outcome as it ends."""
    _, minutes = check_slurm(options)
    outcomes, to_submit, queued = [], [], {}
    active = {job.id: element for element, job in active_elements(jobs, run_dir).items()}
    for job in jobs:
        earlier = earlier_outcome(job, run_dir, retry_failed)
        if earlier is not None:
            outcomes.append(earlier)
            report(earlier)
        elif job.id in active:  # still queued or running: picked up, not resubmitted
            queued[active[job.id]] = job
        else:
            to_submit.append(job)
    if queued:
        echo(f"slurm: {jobs_phrase(len(queued))} still queued or running from an earlier submission: picked up")
    if to_submit:
        submitted = _submit(to_submit, run_dir, options, minutes, name, retry_failed)
        arrays = sorted({element.split("_")[0] for element in submitted})
        echo(f"slurm: submitted {jobs_phrase(len(submitted))} as array {', '.join(arrays)} "
             "(logs: jobs/.../slurm-<id>.log)")
        queued.update(submitted)
    if detach:
        return outcomes
    return outcomes + wait_for(queued, run_dir, report, tick)


def wait_for(queued: dict[str, Job], run_dir: Path, report: Callable[[JobOutcome], None],
             tick: Callable[[], None]) -> list[JobOutcome]:
    """Poll squeue until every element has left the queue; each job's outcome is reported as it ends."""
    outcomes, waiting = [], dict(queued)
    while waiting:
        states = queue_states(list(waiting))
        if states is not None:  # squeue did not answer: ask again next time
            for element, job in list(waiting.items()):
                state, node = states.get(element, (None, ""))
                if state in ACTIVE_STATES:
                    continue
                del waiting[element]
                outcomes.append(_ended(job, run_dir, element, state, node))
                report(outcomes[-1])
        if waiting:
            tick()
            time.sleep(POLL_SECONDS)
    return outcomes


GENERAL_KEYS = ("name", "devices", "address")  # of a preset's [executor] table, beside the Slurm keys


def parse_slurm_option(item: str) -> tuple[str, Any]:
    """`--slurm-option constraint=a100` -> ('constraint', 'a100'); a bare flag (`exclusive`) -> True."""
    key, sep, value = item.partition("=")
    return key.strip().lstrip("-"), value.strip() if sep else True


def resolve_executor(table: Mapping[str, Any], flags: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The executor's name and settings: the flags given, then the preset's [executor] table, then defaults.
    Slurm settings for another executor, and unknown keys, are refused."""
    known = (*GENERAL_KEYS, *OPTION_KEYS)
    unknown = next((key for key in table if key not in known), None)
    if unknown is not None:
        raise TloraBenchError(f"[executor] {unknown}: unknown key{did_you_mean(unknown, known)} "
                              f"(known: {', '.join(known)})")
    values = {**table, **{key: value for key, value in flags.items() if value not in (None, (), {})}}
    name = str(values.pop("name", "local"))
    slurm = {key: values.pop(key) for key in OPTION_KEYS if key in values}
    if slurm and name != "slurm":
        flag = next(iter(slurm)).replace("_", "-")
        raise TloraBenchError(f"--{flag} is for --executor slurm, not {name}")
    if name == "slurm":
        for key in ("time", "mem"):  # a preset may give numbers: 90 minutes, 16000 megabytes
            if key in slurm:
                slurm[key] = str(slurm[key])
        values["slurm"] = SlurmOptions(**slurm)
    return name, values
