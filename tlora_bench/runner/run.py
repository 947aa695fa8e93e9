"""`tlora-bench run`: plan -> (train -> sample) per job -> score -> summary and leaderboard, resumable.

The run folder, written one way:

    config.json            the resolved RunConfig (a re-run with another config is refused)
    provenance.json        software, device and protocol decisions, one entry per invocation
    jobs/<label>/<concept>/seed-<s>/   job.json, train/ (adapter, log), done.json or failed.json (last)
    images/<label>/<concept>/          PNGs and images.jsonl, the layout `tlora-bench evaluate` reads
    evaluation/            per-image scores and aggregates (features cached: re-runs score only what is new)
    leaderboard.csv        one row per method variant, incomplete ones marked
    summary.json           every job's status, time and error
    report/                leaderboard beside the paper, plots, report.html (`tlora-bench report`)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tlora_bench.config import RunConfig
from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.fileio import (
    atomic_write_text,
    differing_keys,
    ensure_writable,
    read_json,
    remove_stale_temporaries,
)
from tlora_bench.runner.jobs import IMAGES_DIR, JobOutcome, check_job_files
from tlora_bench.runner.plan import Job, plan_jobs

EVALUATION_DIR = "evaluation"
# Config keys that only choose how images are scored: no job's content hash holds them, so a run folder may be
# scored again under other values without --force-new (the feature cache keys on the extractor and the mask).
EVALUATION_KEYS = ("segmenter", "dino", "bootstrap", "tiny_extractors")
RESCORE_HINT = (f"the finished jobs are kept: fix the cause and re-run the same command to score them "
                f"({', '.join(EVALUATION_KEYS)} may change without --force-new)")
PROTOCOL = {  # REFERENCE.md decisions every result depends on (sections 1-5)
    "rank_schedule": "r(t) = floor(((T - t) / T)^gamma (r - r_min)) + r_min, clamped; one mask per sample",
    "ortho_init": "thin SVD of R ~ N(0, 1/r^2), last r components, correctly paired",
    "adapter_scale": "1 (no alpha / r)",
    "oft": "PEFT OFTConfig(r=N, oft_block_size=0, coft=False, use_cayley_neumann=False): input side",
    "train_image": "center crop to square, LANCZOS resize, no flips",
    "train_prompt": "a photo of {token} {class}",
    "grad_clip": "max grad norm 1.0 (diffusers DreamBooth scripts)",
    "seed_rule": "sum(ord(c) for c in template) + image index + base seed, one CPU generator per image",
    "mask_fill": "black background, no crop", "ts_headline": "prompt with the token and class removed",
    "gsoft_bias": "the bias is rotated and scaled with the output (authors' code): diag(s) G_out (W G_in x + b)",
    "svd_middle_start": "middle components start at ceil((k - r) / 2) (authors' code)",
}


@dataclass
class RunResult:
    run_dir: Path
    outcomes: list[JobOutcome]
    leaderboard: pd.DataFrame | None
    evaluation_error: str | None = None
    failures: list[JobOutcome] = field(default_factory=list)
    report: Path | None = None

    @property
    def complete(self) -> bool:
        return not self.failures and self.evaluation_error is None


def default_run_dir(config: RunConfig) -> Path:
    return Path(config.output_dir) / config.name


def check_run_folder(run_dir: Path, config: RunConfig, force_new: bool) -> list[str]:
    """A folder holds one config: a different one is refused, naming the first difference, or (force_new)
    the old run is moved aside, never deleted. Returns the evaluation keys that changed when only those did:
    the run is then scored again under the new values."""
    path = run_dir / "config.json"
    if not path.exists():
        return []
    try:
        saved = read_json(path, "remove it, or pass --force-new to move the run aside and start anew there")
    except TloraBenchError:
        if not force_new:
            raise
        saved = None  # unreadable: differs from every config, so it is moved aside below
    ours = config.to_dict()
    differing = differing_keys(saved if isinstance(saved, dict) else {}, ours)
    if not differing:
        return []
    if isinstance(saved, dict) and all(key in EVALUATION_KEYS for key in differing):
        return differing
    differing.sort(key=lambda key: key in EVALUATION_KEYS)  # name a key that blocks the re-run first
    if not force_new:
        key, saved = differing[0], saved if isinstance(saved, dict) else {}
        raise TloraBenchError(f"'{run_dir}' holds a run with {key}={saved.get(key)!r}, not {ours.get(key)!r}"
                              f"{f' (and {len(differing) - 1} more differences)' if len(differing) > 1 else ''}; "
                              "use another --out, or --force-new to move the old run aside")
    aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(aside)
    return []


def _write_provenance(run_dir: Path, config: RunConfig, device: str) -> None:
    from tlora_bench.models import backend_spec
    from tlora_bench.provenance import provenance

    path = run_dir / "provenance.json"
    sessions = []
    if path.is_file():
        try:
            sessions = json.loads(path.read_text(encoding="utf-8")).get("sessions", [])
        except (OSError, ValueError, AttributeError):
            sessions = []
    spec = backend_spec(config.model)
    entry = provenance(None if device in ("auto", "cpu") else device, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       precision=config.precision, backend=spec.name,
                       model_id=config.model_path or spec.hub_id or "tiny (built locally)",
                       model_revision=config.revision or spec.revision, vae_id=config.vae_path or spec.vae_id)
    atomic_write_text(path, json.dumps({"protocol": PROTOCOL, "sessions": [*sessions, entry]}, indent=2) + "\n")


def _check_cache(config: RunConfig) -> None:
    """A tiny model is built into the cache on first use: its cache is checked before anything is written, so
    an unusable cache is one line, not every job failing."""
    from tlora_bench.models import backend_spec
    from tlora_bench.models.tiny import TINY_BUILDERS, check_tiny_cache

    spec = backend_spec(config.model)
    if spec.hub_id is None and not config.model_path and spec.name in TINY_BUILDERS:
        check_tiny_cache(spec.name)


def data_root(config: RunConfig) -> Path | None:
    from tlora_bench.concepts import bundled_manifest, resolve_data_root

    if config.concepts.endswith(".toml"):
        return None
    return resolve_data_root(config.data_dir, bundled_manifest().name)


def run(config: RunConfig, run_dir: str | Path | None = None, *, executor: str = "local",
        devices: tuple[str, ...] = ("auto",), address: str | None = None, force_new: bool = False,
        retry_failed: bool = False, progress: bool = True, echo: Callable[[str], None] = print) -> RunResult:
    """Run every job of `config` into run_dir (default: <output_dir>/<name>), then score and summarise."""
    from tqdm.auto import tqdm

    from tlora_bench.runner.executors import EXECUTORS, execute

    if executor not in EXECUTORS:
        raise unknown_name_error("executor", executor, EXECUTORS)
    jobs = plan_jobs(config)  # every name and value checked before anything is written
    data_root(config)
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    _check_cache(config)
    rescore = check_run_folder(run_dir, config, force_new)  # --force-new moves the old run aside here
    check_job_files(jobs, run_dir)
    ensure_writable(run_dir)
    remove_stale_temporaries(run_dir)  # left by writes that a crash interrupted
    if rescore:
        echo(f"scoring '{run_dir}' again with {', '.join(f'{k}={getattr(config, k)!r}' for k in rescore)}")
    if rescore or not (run_dir / "config.json").is_file():  # config.json names the settings the scores used
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    _write_provenance(run_dir, config, devices[0])
    echo(f"run '{config.name}': {len(jobs)} jobs in {run_dir}")
    bar = tqdm(total=len(jobs), disable=None if progress else True, desc="jobs", unit="job")

    def on_outcome(outcome: JobOutcome) -> None:
        bar.update(1)
        if outcome.status == "failed" and not outcome.skipped:
            bar.write(f"failed: {outcome.job_id}: {outcome.error}")

    outcomes = execute(jobs, run_dir, executor=executor, devices=devices, address=address,
                       retry_failed=retry_failed, progress=progress and executor == "local" and len(devices) == 1,
                       on_outcome=on_outcome)
    bar.close()
    result = RunResult(run_dir, outcomes, None, failures=[o for o in outcomes if o.status == "failed"])
    if any(o.status == "done" for o in outcomes):
        _score(config, jobs, run_dir, result, echo)
    write_summary(config, jobs, result)
    if result.leaderboard is not None:
        _report(run_dir, result, echo)
    return result


def _report(run_dir: Path, result: RunResult, echo: Callable[[str], None]) -> None:
    from tlora_bench.report import make_report

    try:
        folder = make_report(run_dir, echo=lambda message: None)
    except TloraBenchError as e:  # the results stand without their report; `tlora-bench report` can re-make it
        echo(f"warning: the report could not be made: {e}")
        return
    result.report = folder / "report.html"


def _score(config: RunConfig, jobs: list[Job], run_dir: Path, result: RunResult,
           echo: Callable[[str], None]) -> None:
    from tlora_bench.concepts import load_manifest
    from tlora_bench.concepts.manifest import bundled_manifest
    from tlora_bench.metrics.evaluate import EvalOptions, evaluate_folder

    manifest = load_manifest(config.concepts) if config.concepts.endswith(".toml") else bundled_manifest()
    options = EvalOptions(segmenter=config.segmenter, dino=config.dino, tiny_models=config.tiny_extractors,
                          bootstrap=config.bootstrap)
    try:
        evaluation = evaluate_folder(run_dir / IMAGES_DIR, manifest=manifest, data_root=data_root(config),
                                     out_dir=run_dir / EVALUATION_DIR, options=options,
                                     on_problem=lambda message: echo(f"warning: {message}"))
    except TloraBenchError as e:  # e.g. evaluation weights missing offline: jobs stay done, scoring can re-run
        result.evaluation_error = f"{e}; {RESCORE_HINT}"  # the caller reports it (the CLI: on stderr)
        return
    result.leaderboard = leaderboard(evaluation.per_method, jobs, result.outcomes)
    atomic_write_text(run_dir / "leaderboard.csv", result.leaderboard.to_csv(index=False))


def leaderboard(per_method: pd.DataFrame, jobs: list[Job], outcomes: list[JobOutcome]) -> pd.DataFrame:
    """One row per method variant: each metric's mean and interval, concepts scored of those planned."""
    failed = {o.job_id for o in outcomes if o.status == "failed"}
    rows = []
    for label in dict.fromkeys(job.image_label for job in jobs):
        planned = [job for job in jobs if job.image_label == label]
        table = per_method[per_method["method_label"] == label]
        row: dict[str, Any] = {"method_label": label, "method": planned[0].train.method,
                               "rank": job_rank(planned[0])}
        for _, metric in table.iterrows():
            for column in ("mean", "ci_low", "ci_high"):
                row[f"{metric['metric']}_{column}"] = metric[column]
        row["concepts_scored"] = int(table["n_concepts"].max()) if len(table) else 0
        row["concepts_planned"] = len({job.concept for job in planned})
        row["failed_jobs"] = sum(job.id in failed for job in planned)
        row["complete"] = row["failed_jobs"] == 0 and row["concepts_scored"] == row["concepts_planned"]
        rows.append(row)
    return pd.DataFrame(rows)


def job_rank(job: Job) -> int | None:
    """The rank r of a job's method, or None for methods sized otherwise (OFT, GSOFT blocks) or not at all."""
    from tlora_bench.adapters import parse_method

    spec, size = parse_method(job.train.method)
    return size if spec.size_field == "r" else None


def format_plan(config: RunConfig, run_dir: Path) -> str:
    """`--dry-run`: the jobs as a table, the training steps and images, and a device-hour estimate."""
    from tlora_bench.concepts import select_concepts
    from tlora_bench.runner.estimate import estimate
    from tlora_bench.runner.plan import job_images
    from tlora_bench.train import resolve_recipe

    jobs = plan_jobs(config)
    _, concepts = select_concepts(config.concepts)
    by_id = {c.id: c for c in concepts}
    lines = [f"{'variant':<24} {'method':<18} {'jobs':>5} {'steps/job':>10} {'images/job':>11}"]
    total_steps = total_images = 0
    for label in dict.fromkeys(job.label for job in jobs):
        group = [job for job in jobs if job.label == label]
        steps = resolve_recipe(group[0].train).steps
        images = [job_images(job, by_id[job.concept]) for job in group]
        total_steps += steps * len(group)
        total_images += sum(images)
        per_job = str(images[0]) if len(set(images)) == 1 else f"{min(images)}-{max(images)}"
        lines.append(f"{label:<24} {group[0].train.method:<18} {len(group):>5} {steps:>10} {per_job:>11}")
    lines.append(f"{len(jobs)} jobs ({len(concepts)} concepts x {len(config.seeds)} seeds per variant): "
                 f"{total_steps:,} training steps, {total_images:,} images on {config.model} ({config.precision})")
    guess = estimate(config.model, config.precision, total_steps, total_images, run_dir)
    if guess is None:
        lines.append(f"no throughput figure for {config.model} / {config.precision}: no hour estimate")
    else:
        hours, figures = guess
        lines.append(f"estimate: {hours:,.1f} device hours ({figures.seconds_per_step:g} s/step, "
                     f"{figures.seconds_per_image:g} s/image; source: {figures.source})")
    lines.append(f"run folder: {run_dir}")
    return "\n".join(lines)


def write_summary(config: RunConfig, jobs: list[Job], result: RunResult) -> None:
    summary = {"name": config.name, "complete": result.complete, "jobs": len(jobs),
               "done": sum(o.status == "done" for o in result.outcomes), "failed": len(result.failures),
               "failures": [{"job": o.job_id, "error": o.error} for o in result.failures],
               "evaluation_error": result.evaluation_error,
               "outcomes": [o.to_dict() for o in result.outcomes]}
    atomic_write_text(result.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def format_outcomes(result: RunResult) -> str:
    """The final table: every job, its status and time, then the failures and where the results are."""
    lines = [f"{'job':<48} {'status':<8} {'seconds':>8}"]
    for outcome in result.outcomes:
        status = outcome.status + (" (earlier)" if outcome.skipped else "")
        lines.append(f"{outcome.job_id:<48} {status:<8} {outcome.seconds:>8.1f}")
    for outcome in result.failures:
        lines.append(f"failed: {outcome.job_id}: {outcome.error}")
    done = sum(o.status == "done" for o in result.outcomes)
    lines.append(f"{done} of {len(result.outcomes)} jobs done, {len(result.failures)} failed")
    if result.leaderboard is not None:
        lines.append(f"leaderboard: {result.run_dir / 'leaderboard.csv'}")
    if result.report is not None:
        lines.append(f"report: {result.report}")
    if not result.complete:
        hint = " (fix the cause, then re-run with --retry-failed)" if result.failures else ""
        lines.append(f"the run is incomplete{hint}")
    return "\n".join(lines)
