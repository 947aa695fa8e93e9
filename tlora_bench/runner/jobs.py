"""The job function: train, then sample, in the job's own folder, with a done or failed marker written last.

The same function runs in every executor (in-process, one process per GPU, a Ray task). It is idempotent:
a finished job returns its marker; an unfinished one continues from its training checkpoint and its
finished images; a failed one is skipped until the run is asked to retry it.
"""

from __future__ import annotations

import errno
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import WriteFailed, atomic_write_text, write_error
from tlora_bench.layout import COST_KEY, DONE_FILE, FAILED_FILE, IMAGES_DIR, JOB_FILE, TRAIN_DIR
from tlora_bench.planner import Job
from tlora_bench.runner.integrity import FILES_KEY, changed_files, distrust, record_files

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # an OSError of the disk, not of the job

_BACKENDS: dict[tuple, Any] = {}  # one loaded model per worker process, reused by its jobs


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str  # "done", "failed", or "lost" (a scheduler ended it unfinished: the next run resumes it)
    seconds: float
    error: str | None = None
    skipped: bool = False  # finished (or failed) before this run started
    note: str | None = None  # what was redone: a finished job whose files changed since

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job_id, "status": self.status, "seconds": round(self.seconds, 3), "error": self.error,
                "skipped": self.skipped, **({"note": self.note} if self.note else {})}


def read_marker(path: Path) -> dict[str, Any] | None:
    """A job's marker, or None when it is absent, cut short by a crash or not a JSON object: not finished."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return marker if isinstance(marker, dict) else None


def check_job_files(jobs: list[Job], run_dir: Path) -> None:
    """A folder where a job writes a file (done.json, failed.json, job.json) would fail that job at its end:
    refused before any work, naming it."""
    for job in jobs:
        for name in (DONE_FILE, FAILED_FILE, JOB_FILE):
            path = run_dir / job.folder / name
            if path.is_dir():
                raise TloraBenchError(f"'{path}' is a folder, where job {job.id} keeps its {name} file; remove "
                                      "that folder (the job then runs again), and re-run")


def _backend(job: Job, device: str):
    from tlora_bench.models import load_backend

    spec = job.train
    key = (spec.model, spec.model_path, spec.vae_path, spec.revision, spec.precision, device)
    if key not in _BACKENDS:
        _BACKENDS.clear()  # one model in memory at a time
        _BACKENDS[key] = load_backend(spec.model, source=spec.model_path, revision=spec.revision,
                                      vae_source=spec.vae_path, precision=spec.precision, device=device)
    return _BACKENDS[key]


def one_line(error: BaseException) -> str:
    """A failure as one line: the user-facing message, or the exception type and message for anything else."""
    import torch

    if isinstance(error, TloraBenchError):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):
        return "out of GPU memory; use --precision bf16, --set gradient_checkpointing=true or a larger GPU"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_job(job: Job, run_dir: str | Path, device: str = "auto", retry_failed: bool = False,
            progress: bool = False) -> JobOutcome:
    """Train and sample one job inside run_dir; failures are recorded, never raised (except interrupts)."""
    from tlora_bench.layout import ADAPTER_FILE
    from tlora_bench.sample import generate, generate_base_drift
    from tlora_bench.train import train

    run_dir = Path(run_dir)
    earlier = earlier_outcome(job, run_dir, retry_failed)
    if earlier is not None:
        return earlier
    folder = run_dir / job.folder
    done, failed = read_marker(folder / DONE_FILE), folder / FAILED_FILE
    note = None
    if done is not None:
        changed = changed_files(run_dir, done)
        note = distrust(changed, folder / TRAIN_DIR / ADAPTER_FILE) if changed else \
            "its imported adapter file changed since it was scored; importing and sampling it again"
        _say(f"{job.id}: {note}")
        try:
            (folder / DONE_FILE).unlink()
        except OSError as e:
            raise write_error(folder / DONE_FILE, e) from None
    if failed.is_file():  # to be retried (earlier_outcome returned it otherwise)
        failed.unlink()
    started = time.perf_counter()
    reset_peak_memory()
    record = {**job.to_dict(), "key": job.key, "method": job.recipe.identity()}
    atomic_write_text(folder / JOB_FILE, json.dumps(record, indent=2) + "\n")
    try:
        backend = _backend(job, device)
        if job.imported is not None:
            trained = import_job_adapter(job, folder / TRAIN_DIR / ADAPTER_FILE)
        else:
            trained = train(job.train, folder / TRAIN_DIR, recipe=job.recipe, backend=backend, progress=progress)
        sampled = generate(trained.adapter_path, run_dir / IMAGES_DIR, options=job.sample, backend=backend,
                           label=job.image_label, progress=progress)
        if job.sample.drift_images:  # the base model's drift images, made by the first job that gets here
            generate_base_drift(backend, run_dir / IMAGES_DIR, base_seed=job.seed, options=job.sample,
                                model=job.train.model)
    except (KeyboardInterrupt, SystemExit, WriteFailed):  # a full disk or read-only folder ends the run
        raise
    except Exception as error:  # one job's failure must not end the run: record it, go on
        if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
            raise write_error(error.filename or folder, error) from None
        message = one_line(error)
        details = "".join(traceback.format_exception(error))
        atomic_write_text(failed, json.dumps({"job": job.id, "key": job.key, "error": message,
                                              "traceback": details}, indent=2) + "\n")
        return JobOutcome(job.id, "failed", time.perf_counter() - started, message)
    seconds = time.perf_counter() - started
    marker = {"job": job.id, "key": job.key, "seconds": seconds, "train_seconds": trained.seconds,
              "train_steps": trained.steps, "resumed_from_step": trained.resumed_from,
              "sample_seconds": sampled.seconds, "images": sampled.n_images, "images_generated": sampled.n_generated,
              "images_kept": sampled.n_kept, "device": str(backend.device),
              COST_KEY: job_cost(trained.adapter_path, sampled, (done or {}).get(COST_KEY)),
              "adapter": str(trained.adapter_path.relative_to(run_dir)),
              "images_folder": str(sampled.folder.relative_to(run_dir)),
              **getattr(trained, "provenance", {}),
              FILES_KEY: record_files(run_dir, trained.adapter_path, sampled.folder)}  # checked on resume
    atomic_write_text(folder / DONE_FILE, json.dumps(marker, indent=2) + "\n")  # last: the job is finished
    return JobOutcome(job.id, "done", seconds, note=note)


def earlier_outcome(job: Job, run_dir: Path, retry_failed: bool = False) -> JobOutcome | None:
    """The outcome of a job finished before this run (done, with every file it vouches for unchanged, or failed
    and not to be retried), or None: the job is to run. Reads only."""
    folder = run_dir / job.folder
    done = read_marker(folder / DONE_FILE)
    if done is not None:
        source_changed = job.imported is not None and _source_digest(job) != done.get("source_sha256")
        if not changed_files(run_dir, done) and not source_changed:
            return JobOutcome(job.id, "done", done.get("seconds", 0.0), skipped=True)
        return None
    if (folder / FAILED_FILE).is_file() and not retry_failed:
        marker = read_marker(folder / FAILED_FILE) or {}
        return JobOutcome(job.id, "failed", 0.0, marker.get("error", "failed"), skipped=True)
    return None


@dataclass(frozen=True)
class ImportedAdapter:
    """What importing an adapter file gives a job, in the place of a training result."""

    adapter_path: Path
    seconds: float
    provenance: dict[str, Any]
    steps: int = 0
    resumed_from: int = 0


def import_job_adapter(job: Job, out: Path) -> ImportedAdapter:
    """The job's adapter file from elsewhere, imported (and checked against the model) as the job's adapter;
    a missing file, or one of another method, fails this job only."""
    from tlora_bench.adapters.formats import import_adapter

    started = time.perf_counter()
    spec, source = job.imported, job.imported.path(job.concept)
    if not source.exists():
        raise TloraBenchError(f"no adapter file for concept '{job.concept}' of variant '{job.label}': '{source}' "
                              "does not exist")
    data = import_adapter(source, out, format=spec.format, model=job.train.model, options=dict(spec.options),
                          metadata={"label": job.label, "train_spec": json.dumps(job.train.to_dict())})
    expected = job.recipe.adapter_config.method
    if data.config.method != expected:
        out.unlink(missing_ok=True)
        raise TloraBenchError(f"'{source}' holds a '{data.config.method}' adapter, but variant '{job.label}' is "
                              f"'{job.recipe.label}'; give the variant method = \"{data.config.method}-...\"")
    provenance = {k: data.metadata[k] for k in ("imported_from", "source_file", "source_sha256")}
    return ImportedAdapter(out, time.perf_counter() - started, provenance)


def _source_digest(job: Job) -> str | None:
    from tlora_bench.adapters.formats import FORMATS
    from tlora_bench.adapters.formats.base import source_file
    from tlora_bench.fileio import sha256_file

    try:
        fmt = FORMATS.get(job.imported.format) if job.imported.format else None
        return sha256_file(source_file(job.imported.path(job.concept), fmt))
    except (OSError, TloraBenchError):
        return None


def _say(line: str) -> None:
    """A line on stderr that leaves a progress bar intact."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)




def reset_peak_memory() -> None:
    """Start a job's CUDA peak from what is allocated now (the model), so each job's peak is its own."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> tuple[int, str]:
    """(bytes, what they measure): the CUDA peak allocated since reset_peak_memory on a GPU; on a CPU the
    process's peak resident set size (since the process started: an upper bound for the job)."""
    import resource
    import sys

    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_peak_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "cpu_peak_rss"


def median_step_seconds(log: Path) -> float | None:
    """The median seconds of a training step after warm-up (the first tenth of the steps, at least one, are
    left out when there are two or more); None without a log (an imported adapter)."""
    import statistics

    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    seconds = []
    for line in lines:
        try:
            seconds.append(float(json.loads(line)["seconds"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash
    warm = seconds[max(1, len(seconds) // 10):] if len(seconds) >= 2 else seconds
    return statistics.median(warm) if warm else None


def job_cost(adapter: Path, sampled, before: dict | None = None) -> dict[str, Any]:
    """What a job cost (docs/evaluation.md, "Cost"): trainable parameters, adapter file bytes, the median
    training step, peak memory, seconds per sampled image. When every image was kept from before, the seconds
    per image are the ones measured when they were made (`before`: the job's earlier cost), else None."""
    from tlora_bench.adapters.io import read_adapter_metadata
    from tlora_bench.layout import LOG_FILE

    trainable = read_adapter_metadata(adapter).get("trainable_parameters")
    memory, kind = peak_memory()
    return {"trainable_parameters": int(trainable) if trainable and trainable.isdigit() else None,
            "adapter_bytes": adapter.stat().st_size,
            "train_seconds_per_step": median_step_seconds(adapter.parent / LOG_FILE),
            "peak_memory_bytes": memory, "peak_memory_kind": kind,
            "sample_seconds_per_image": sampled.seconds / sampled.n_generated if sampled.n_generated
            else (before or {}).get("sample_seconds_per_image")}
