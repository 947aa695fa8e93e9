"""Executors: where jobs run. The same `run_job` everywhere; results go to the shared run folder.

- local, one device: jobs one after another in this process (the loaded model is reused between jobs);
- local, several devices (`--devices 0,1,2,3`): one worker process per device, each taking the next job;
- ray (`--executor ray`): one Ray task per job with one GPU (none on a CPU cluster); Ray retries a task whose
  worker was lost, and the job resumes from its checkpoint and images;
- slurm (`--executor slurm`): one element of a Slurm job array per pending job, through submitit
  (runner/slurm.py).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.planner import Job
from tlora_bench.runner.jobs import JobOutcome, earlier_outcome, run_job
from tlora_bench.runner.slurm import SlurmOptions, execute_slurm, write_submission

EXECUTORS = ("local", "ray", "slurm")
OnOutcome = Callable[[JobOutcome], None]
TICK_SECONDS = 5.0  # how often a run waiting on other processes shows their progress


def parse_devices(value: str | None) -> list[str]:
    """`--devices 0,1` -> ['cuda:0', 'cuda:1']; None -> ['auto']. Every item must be a GPU number that exists,
    listed once: checked before any work, so a run never stops on it mid-way or leaves a folder behind."""
    if value is None:
        return ["auto"]
    items = [item.strip() for item in value.split(",")]
    where = f"--devices {value!r}" if not value.isprintable() or not value.strip() else f"--devices {value}"
    if not all(items):
        raise TloraBenchError(f"{where}: an empty item; list GPU numbers separated by commas, e.g. 0,1")
    bad = next((item for item in items if not (item.isascii() and item.isdigit())), None)
    if bad is not None:
        raise TloraBenchError(f"{where}: '{bad}' is not a GPU number; list GPU numbers, e.g. 0,1, or leave "
                              "--devices out to run on one device (the GPU if there is one, else the CPU)")
    numbers = [int(item) for item in items]
    twice = next((n for n in numbers if numbers.count(n) > 1), None)
    if twice is not None:
        raise TloraBenchError(f"{where}: GPU {twice} is listed twice; list each GPU once")
    _check_gpus_exist(where, numbers)
    return [f"cuda:{n}" for n in numbers]


def _check_gpus_exist(where: str, numbers: list[int]) -> None:
    import torch

    count = torch.cuda.device_count()  # 0 without a driver; honours CUDA_VISIBLE_DEVICES
    if count == 0:
        raise TloraBenchError(f"{where}: no CUDA GPU is visible on this machine; leave --devices out to run on "
                              "the CPU")
    missing = next((n for n in numbers if n >= count), None)
    if missing is not None:
        raise TloraBenchError(f"{where}: there is no GPU {missing} (this machine has {count}, numbered 0 to "
                              f"{count - 1}); list GPUs that exist")


def execute(jobs: Sequence[Job], run_dir: Path, *, executor: str = "local", devices: Sequence[str] = ("auto",),
            address: str | None = None, slurm: SlurmOptions | None = None, detach: bool = False,
            name: str = "run", retry_failed: bool = False, progress: bool = True,
            on_outcome: OnOutcome | None = None, on_tick: Callable[[], None] | None = None,
            echo: Callable[[str], None] = print) -> list[JobOutcome]:
    """Run the jobs where `executor` says; `detach` (slurm only) submits and returns the outcomes of the jobs
    that had finished before. While jobs run in other processes, `on_tick` is called every few seconds."""
    if executor not in EXECUTORS:
        raise unknown_name_error("executor", executor, EXECUTORS)
    report, tick = on_outcome or (lambda outcome: None), on_tick or (lambda: None)
    if executor == "slurm":
        return execute_slurm(jobs, run_dir, slurm or SlurmOptions(), name=name, retry_failed=retry_failed,
                             detach=detach, report=report, tick=tick, echo=echo)
    if executor == "ray":
        return _ray(jobs, run_dir, address, retry_failed, report, tick)
    if len(devices) == 1:
        outcomes = []
        for job in jobs:
            outcomes.append(run_job(job, run_dir, devices[0], retry_failed, progress))
            report(outcomes[-1])
        return outcomes
    return _pool(jobs, run_dir, list(devices), retry_failed, report, tick)


# ---- one process per device -----------------------------------------------------------------------------

_DEVICE = "auto"


def _init_worker(queue) -> None:
    global _DEVICE
    _DEVICE = queue.get()


def _worker(job: Job, run_dir: Path, retry_failed: bool) -> JobOutcome:
    return run_job(job, run_dir, _DEVICE, retry_failed)


def _pool(jobs: Sequence[Job], run_dir: Path, devices: list[str], retry_failed: bool, report: OnOutcome,
          tick: Callable[[], None]) -> list[JobOutcome]:
    """Workers pinned to one device each. When a worker dies the pool breaks: its unfinished jobs run again in
    a fresh pool (they resume), and a job that breaks a pool twice is recorded as failed."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    pending, outcomes, breaks = list(jobs), [], dict.fromkeys((job.id for job in jobs), 0)
    while pending:
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        with ProcessPoolExecutor(len(devices), mp_context=context, initializer=_init_worker,
                                 initargs=(queue,)) as pool:
            futures = {pool.submit(_worker, job, run_dir, retry_failed): job for job in pending}
            pending = []
            for future in _as_completed(futures, tick):
                job = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    breaks[job.id] += 1
                    if breaks[job.id] < 2:
                        pending.append(job)
                        continue
                    outcome = JobOutcome(job.id, "lost", 0.0, "its worker process died twice (killed, or out of "
                                         "memory); re-run to resume it")
                outcomes.append(outcome)
                report(outcome)
    return outcomes


def _as_completed(futures, tick: Callable[[], None]):
    remaining = set(futures)
    while remaining:
        finished, remaining = wait(remaining, timeout=TICK_SECONDS, return_when=FIRST_COMPLETED)
        tick()
        yield from finished


# ---- Ray ------------------------------------------------------------------------------------------------


def _ray_job(job: Job, run_dir: str, retry_failed: bool, device: str) -> JobOutcome:
    return run_job(job, Path(run_dir), device, retry_failed)


def _ray(jobs: Sequence[Job], run_dir: Path, address: str | None, retry_failed: bool, report: OnOutcome,
         tick: Callable[[], None]) -> list[JobOutcome]:
    try:
        import ray
    except ImportError:
        raise TloraBenchError("--executor ray needs Ray: pip install 'tlora-bench[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise TloraBenchError(f"cannot reach the Ray cluster at '{address}' ({e}); start it with "
                                  "`ray start --head` or pass --address HOST:PORT") from None
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=2)(_ray_job)  # lost workers are retried
    device = "cuda" if gpus else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    refs = {task.remote(job, str(run_dir.resolve()), retry_failed, device): job for job in jobs}
    for ref, job in refs.items():  # for `tlora-bench status`: the jobs that will run, not those that ran before
        if earlier_outcome(job, run_dir, retry_failed) is None:
            write_submission(run_dir, job, "ray", ref.task_id().hex())
    outcomes = []
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=TICK_SECONDS)
        tick()
        if not ready:
            continue
        job = refs.pop(ready[0])
        try:
            outcome = ray.get(ready[0])
        except ray.exceptions.RayError as e:  # the worker died on every retry
            outcome = JobOutcome(job.id, "lost", 0.0, f"Ray task failed: {type(e).__name__}; re-run to resume it")
        outcomes.append(outcome)
        report(outcome)
    return outcomes
