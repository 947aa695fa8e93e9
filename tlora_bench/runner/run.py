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

import hashlib
import json
import statistics
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
from tlora_bench.layout import (
    CONFIG_FILE,
    COST_COLUMNS,
    COST_KEY,
    EVALUATION_DIR,
    JOBS_DIR,
    LEADERBOARD_FILE,
    PROVENANCE_FILE,
    REPORT_DIR,
    REPORT_MARKDOWN,
    REPORT_PAGE,
    SCORED_FILE,
    SUMMARY_FILE,
)
from tlora_bench.planner import Job, Plan, job_images, make_plan
from tlora_bench.runner.jobs import (
    DONE_FILE,
    FAILED_FILE,
    IMAGES_DIR,
    JobOutcome,
    check_job_files,
    earlier_outcome,
    read_marker,
)
from tlora_bench.runner.lock import holds_run_locks, lock_run_folder, run_folder_lock
from tlora_bench.runner.slurm import SlurmOptions
from tlora_bench.threads import cpu_threads

# Config keys that only choose how images are scored: no job's content hash holds them, so a run folder may be
# scored again under other values without --force-new (the feature cache keys on the extractor and the mask).
EVALUATION_KEYS = ("segmenter", "dino", "bootstrap", "tiny_extractors")
REPORT_KEYS = ("reference",)  # only choose how the report shows the scores: changing one re-makes the report
RESCORE_HINT = (f"the finished jobs are kept: fix the cause and re-run the same command to score them "
                f"({', '.join(EVALUATION_KEYS)} may change without --force-new)")
PROTOCOL = {  # docs/decisions.md: the decisions every result depends on (sections 1-5)
    "rank_schedule": "r(t) = floor(((T - t) / T)^gamma (r - r_min)) + r_min, clamped; one mask per sample",
    "ortho_init": "thin SVD of R ~ N(0, 1/r^2), last r components, correctly paired",
    "adapter_scale": "1 (no alpha / r)",
    "oft": "PEFT OFTConfig(r=N, oft_block_size=0, coft=False, use_cayley_neumann=False): input side",
    "train_image": "center crop to square, LANCZOS resize, no flips",
    "train_prompt": "a photo of {token} {class}",
    "grad_clip": "max grad norm 1.0 (diffusers DreamBooth scripts)",
    "seed_rule": "sum(ord(c) for c in template) + image index + base seed, one CPU generator per image",
    "mask_fill": "black background, no crop", "ts_headline": "prompt with the token and class removed",
    "gsoft_bias": "per projection (authors' processors): q/k/v diag(s) G_out (W G_in x + b); "
                  "to_out.0 diag(s) G_out W G_in x + b",
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
    detached: bool = False  # submitted to Slurm, not waited for: nothing scored yet

    @property
    def complete(self) -> bool:
        return not self.failures and self.evaluation_error is None and not self.detached


def default_run_dir(config: RunConfig) -> Path:
    return Path(config.output_dir) / config.name


def check_run_folder(run_dir: Path, config: RunConfig, force_new: bool) -> list[str]:
    """A folder holds one config: a different one is refused, naming the first difference, or (force_new)
    the old run is moved aside, never deleted. Returns the evaluation and report keys that changed when only
    those did: the run is then scored again (or only its report re-made) under the new values."""
    path = run_dir / CONFIG_FILE
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
    if isinstance(saved, dict) and all(key in EVALUATION_KEYS + REPORT_KEYS for key in differing):
        return differing
    differing.sort(key=lambda key: key in EVALUATION_KEYS + REPORT_KEYS)  # name a key that blocks the re-run first
    if not force_new:
        key, saved = differing[0], saved if isinstance(saved, dict) else {}
        raise TloraBenchError(f"'{run_dir}' holds a run with {key}={saved.get(key)!r}, not {ours.get(key)!r}"
                              f"{f' (and {len(differing) - 1} more differences)' if len(differing) > 1 else ''}; "
                              "use another --out, or --force-new to move the old run aside")
    aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    with run_folder_lock(run_dir):  # never move a run away from under the process running it
        run_dir.rename(aside)
    return []


def _write_provenance(run_dir: Path, plan: Plan, device: str) -> None:
    from tlora_bench.provenance import provenance

    path = run_dir / PROVENANCE_FILE
    sessions = []
    if path.is_file():
        try:
            sessions = json.loads(path.read_text(encoding="utf-8")).get("sessions", [])
        except (OSError, ValueError, AttributeError):
            sessions = []
    config, spec = plan.config, plan.backend
    entry = provenance(None if device in ("auto", "cpu") else device, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       precision=plan.precision, backend=spec.name,
                       model_id=(config.model_path or spec.hub_id
                                 or str(spec.shipped_folder() or "tiny (built locally)")),
                       model_revision=config.revision or spec.revision or (None if config.model_path else
                                                                          spec.shipped_revision()),
                       vae_id=config.vae_path or spec.vae_id)
    atomic_write_text(path, json.dumps({"protocol": PROTOCOL, "sessions": [*sessions, entry]}, indent=2) + "\n")


def check_weights(config: RunConfig, train: bool, score: bool) -> None:
    """The model's weights (when a job will train or sample) and the evaluation models' (when the run will
    score) must be loadable: checked once before any work, so a missing model is one line, not a failure per
    job (a tiny model's cache is checked the same way)."""
    from tlora_bench.metrics.extractors import CLIP_EXTRACTOR
    from tlora_bench.metrics.weights import check_evaluation_weights
    from tlora_bench.models.download import check_model_available

    if train:
        check_model_available(config.model, config.model_path, config.revision, config.vae_path,
                              flag="--set model_path=DIR")
    if score and not config.tiny_extractors:
        segmenter = ["grounded-sam"] if config.segmenter == "grounded-sam" else []
        check_evaluation_weights([CLIP_EXTRACTOR, config.dino, *segmenter])


@holds_run_locks
def run(config: RunConfig | Plan, run_dir: str | Path | None = None, *, executor: str = "local",
        devices: tuple[str, ...] = ("auto",), address: str | None = None, slurm: SlurmOptions | None = None,
        detach: bool = False, force_new: bool = False, retry_failed: bool = False, progress: bool = True,
        echo: Callable[[str], None] = print) -> RunResult:
    """Run every job of `config` (or of its plan, when the caller made it) into run_dir (default:
    <output_dir>/<name>), then score and summarise; `detach` (slurm) submits the jobs and returns."""
    from tlora_bench.runner.executors import EXECUTORS, execute
    from tlora_bench.runner.progress import Progress, count_images, jobs_phrase
    from tlora_bench.runner.slurm import active_elements, check_slurm

    if executor not in EXECUTORS:
        raise unknown_name_error("executor", executor, EXECUTORS)
    if detach and executor != "slurm":
        raise TloraBenchError(f"--detach is for --executor slurm (the jobs then run on without this process), not "
                              f"{executor}")
    plan = config if isinstance(config, Plan) else make_plan(config)  # every name and value checked first
    config, jobs = plan.config, list(plan.jobs)
    plan.data_root()
    cpu_threads()  # a bad TLORA_BENCH_THREADS is one line now, not a failure per job
    if executor == "slurm":  # submitit, the cluster, the partition and its limits, before anything is written
        check_slurm(slurm or SlurmOptions())
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    on_slurm = active_elements(jobs, run_dir)
    if on_slurm and executor != "slurm":  # the same job would run twice at once, in two places
        raise TloraBenchError(f"{jobs_phrase(len(on_slurm))} of this run still wait or run on Slurm "
                              f"({', '.join(list(on_slurm)[:3])}{', ...' if len(on_slurm) > 3 else ''}); re-run with "
                              "--executor slurm to wait for them, or scancel them first")
    changed = check_run_folder(run_dir, config, force_new)  # --force-new moves the old run aside here
    rescore = [key for key in changed if key in EVALUATION_KEYS]
    check_job_files(jobs, run_dir)
    to_run = pending_jobs(jobs, run_dir, retry_failed)
    check_weights(config, train=bool(to_run), score=bool(to_run) or not _scored(run_dir, config))
    ensure_writable(run_dir)
    lock_run_folder(run_dir)  # held until run() returns: a second run on this folder is refused
    if not on_slurm:  # Slurm jobs still write there: their temporaries are not stale
        remove_stale_temporaries(run_dir)  # left by writes that a crash interrupted
    if rescore:
        echo(f"scoring '{run_dir}' again with {', '.join(f'{k}={getattr(config, k)!r}' for k in rescore)}")
    if changed or not (run_dir / CONFIG_FILE).is_file():  # config.json names the settings the scores used
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    _write_provenance(run_dir, plan, devices[0])
    echo(f"run '{config.name}': {len(jobs)} jobs in {run_dir}" + (f", {len(to_run)} to run" if to_run else
                                                                   ", all finished before"))
    in_process = executor == "local" and len(devices) == 1  # the sampler's own bar shows its images
    by_id = {concept.id: concept for concept in plan.concepts}
    watch = Progress(len(jobs), echo, enabled=progress,
                     images=0 if in_process else sum(job_images(job, by_id[job.concept]) for job in jobs))
    outcomes = execute(jobs, run_dir, executor=executor, devices=devices, address=address, slurm=slurm,
                       detach=detach, name=config.name, retry_failed=retry_failed, echo=echo,
                       progress=progress and in_process and watch.terminal, on_outcome=watch,
                       on_tick=lambda: watch.images(count_images(run_dir)) if watch.shows_images else None)
    watch.close()
    result = RunResult(run_dir, outcomes, None, failures=[o for o in outcomes if o.status != "done"],
                       detached=detach)
    if detach:  # the jobs run on Slurm without this process; a later run (or status) picks them up
        return result
    if any(o.status == "done" for o in outcomes):
        _score_unless_current(plan, run_dir, result, echo)
    write_summary(config, jobs, result)
    if result.leaderboard is not None and result.report is None:
        _report(run_dir, result, echo)
    return result


def pending_jobs(jobs: list[Job], run_dir: Path, retry_failed: bool) -> list[Job]:
    """The jobs that will train or sample: not finished, and not failed unless they are to be retried."""
    return [job for job in jobs if earlier_outcome(job, run_dir, retry_failed) is None]


def scoring_inputs(config: RunConfig, run_dir: Path) -> str:
    """A digest of what the scores and the leaderboard are computed from: the scoring keys, the code, every
    job's marker and every file of images/ (by name, size and modification time: a stat, no reading, so a
    re-run of a finished run of 29,750 images is seconds)."""
    from tlora_bench import __version__

    digest = hashlib.sha256(json.dumps([__version__, {k: getattr(config, k) for k in EVALUATION_KEYS}],
                                       sort_keys=True).encode())
    for folder in (run_dir / JOBS_DIR, run_dir / IMAGES_DIR):
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file() and (folder.name == IMAGES_DIR or path.name in (DONE_FILE, FAILED_FILE)):
                stat = path.stat()
                digest.update(f"{path.relative_to(run_dir)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _scored(run_dir: Path, config: RunConfig, inputs: str | None = None) -> bool:
    """Whether the scores and the leaderboard were made from exactly what the folder holds now (`inputs`: its
    scoring_inputs, when the caller has them already)."""
    saved = read_marker(run_dir / EVALUATION_DIR / SCORED_FILE) or {}
    return (saved.get("inputs") == (inputs or scoring_inputs(config, run_dir))
            and (run_dir / LEADERBOARD_FILE).is_file())


def _scores_current(run_dir: Path, config: RunConfig, inputs: str | None = None) -> bool:
    """Whether the report is current too: made, with the report keys the config has now."""
    saved = read_marker(run_dir / EVALUATION_DIR / SCORED_FILE) or {}
    made = [run_dir / REPORT_DIR / REPORT_PAGE, run_dir / REPORT_DIR / REPORT_MARKDOWN]
    return (_scored(run_dir, config, inputs) and all(saved.get(key) == getattr(config, key) for key in REPORT_KEYS)
            and all(path.is_file() for path in made))


def _score_unless_current(plan: Plan, run_dir: Path, result: RunResult, echo: Callable[[str], None]) -> None:
    """Score, unless nothing the scores depend on changed since the last scoring: then read them back (and
    re-make the report alone when only a report key changed)."""
    inputs = scoring_inputs(plan.config, run_dir)
    try:
        result.leaderboard = pd.read_csv(run_dir / LEADERBOARD_FILE) if _scored(run_dir, plan.config, inputs) else None
    except (OSError, ValueError):  # unreadable: score again
        result.leaderboard = None
    if result.leaderboard is not None and _scores_current(run_dir, plan.config, inputs):
        result.report = run_dir / REPORT_DIR / REPORT_PAGE
        return
    if result.leaderboard is None:
        _score(plan, run_dir, result, echo)
    if result.leaderboard is not None and _report(run_dir, result, echo):
        marker = {"inputs": inputs, **{key: getattr(plan.config, key) for key in REPORT_KEYS}}
        atomic_write_text(run_dir / EVALUATION_DIR / SCORED_FILE, json.dumps(marker) + "\n")


def _report(run_dir: Path, result: RunResult, echo: Callable[[str], None]) -> bool:
    """Make the report; False (with a warning) when it could not be made."""
    from tlora_bench.report import make_report

    try:
        folder = make_report(run_dir, echo=lambda message: None)
    except TloraBenchError as e:  # the results stand without their report; `tlora-bench report` can re-make it
        echo(f"warning: the report could not be made: {e}")
        return False
    result.report = folder / REPORT_PAGE
    return True


def _score(plan: Plan, run_dir: Path, result: RunResult, echo: Callable[[str], None]) -> None:
    from tlora_bench.metrics.evaluate import EvalOptions, evaluate_folder

    config = plan.config
    options = EvalOptions(segmenter=config.segmenter, dino=config.dino, tiny_models=config.tiny_extractors,
                          bootstrap=config.bootstrap)
    try:
        evaluation = evaluate_folder(run_dir / IMAGES_DIR, manifest=plan.manifest, data_root=plan.data_root(),
                                     out_dir=run_dir / EVALUATION_DIR, options=options,
                                     on_problem=lambda message: echo(f"warning: {message}"))
    except TloraBenchError as e:  # e.g. evaluation weights missing offline: jobs stay done, scoring can re-run
        result.evaluation_error = f"{e}; {RESCORE_HINT}"  # the caller reports it (the CLI: on stderr)
        return
    from tlora_bench.report.pareto import mark_fronts
    from tlora_bench.report.tables import random_weights_reason

    costs = job_costs(run_dir, list(plan.jobs))
    board = leaderboard(evaluation.per_method, list(plan.jobs), result.outcomes, costs)
    reason = random_weights_reason(config.model, config.tiny_extractors)
    result.leaderboard = mark_fronts(board.assign(random_weights=bool(reason), random_weights_reason=reason))
    atomic_write_text(run_dir / LEADERBOARD_FILE, result.leaderboard.to_csv(index=False))


def job_costs(run_dir: Path, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """Each finished job's cost (its done.json), by job id."""
    costs = {}
    for job in jobs:
        marker = read_marker(run_dir / job.folder / DONE_FILE) or {}
        if isinstance(marker.get(COST_KEY), dict):
            costs[job.id] = marker[COST_KEY]
    return costs


def _median_cost(costs: list[dict[str, Any]], column: str) -> float | None:
    values = sorted(float(c[column]) for c in costs if isinstance(c.get(column), (int, float)))
    return float(statistics.median(values)) if values else None


def leaderboard(per_method: pd.DataFrame, jobs: list[Job], outcomes: list[JobOutcome],
                costs: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per method variant: each metric's mean and interval, concepts scored of those planned, and the
    median cost of its jobs."""
    failed = {o.job_id for o in outcomes if o.status != "done"}
    rows = []
    for label in dict.fromkeys(job.image_label for job in jobs):
        planned = [job for job in jobs if job.image_label == label]
        table = per_method[per_method["method_label"] == label]
        recipe = planned[0].recipe
        row: dict[str, Any] = {"method_label": label, "method": recipe.label, "rank": recipe.rank}
        for _, metric in table.iterrows():
            for column in ("mean", "ci_low", "ci_high"):
                row[f"{metric['metric']}_{column}"] = metric[column]
        row["concepts_scored"] = int(table["n_concepts"].max()) if len(table) else 0
        row["concepts_planned"] = len({job.concept for job in planned})
        row["failed_jobs"] = sum(job.id in failed for job in planned)
        row["complete"] = row["failed_jobs"] == 0 and row["concepts_scored"] == row["concepts_planned"]
        row["imported"] = planned[0].imported is not None  # scored from adapter files trained elsewhere
        mine = [costs[job.id] for job in planned if job.id in (costs or {})]
        row.update({column: _median_cost(mine, column) for column in COST_COLUMNS})
        kinds = {c.get("peak_memory_kind") for c in mine} - {None}
        row["peak_memory_kind"] = ",".join(sorted(kinds)) or None
        rows.append(row)
    board = pd.DataFrame(rows)
    board["rank"] = board["rank"].astype("Int64")  # integers, empty for methods without a rank (never 4.0)
    return board


def format_plan(plan: Plan, run_dir: Path) -> str:
    """`--dry-run`: the jobs as a table, the training steps and images, and a device-hour estimate."""
    from tlora_bench.prompts import drift_items
    from tlora_bench.runner.estimate import estimate

    config, jobs, concepts = plan.config, plan.jobs, plan.concepts
    by_id = {c.id: c for c in concepts}
    lines = [f"{'variant':<24} {'method':<18} {'jobs':>5} {'steps/job':>10} {'images/job':>11}"]
    total_steps = total_images = 0
    for label in dict.fromkeys(job.label for job in jobs):
        group = [job for job in jobs if job.label == label]
        steps = 0 if group[0].imported else group[0].recipe.steps  # an imported adapter trains nothing
        images = [job_images(job, by_id[job.concept]) for job in group]
        total_steps += steps * len(group)
        total_images += sum(images)
        per_job = str(images[0]) if len(set(images)) == 1 else f"{min(images)}-{max(images)}"
        lines.append(f"{label:<24} {group[0].train.method:<18} {len(group):>5} {steps:>10} {per_job:>11}")
    # The base model's drift images, once per base seed (docs/evaluation.md, "Overfitting").
    total_images += sum(len(drift_items(seed, config.drift_images, config.drift_prompts, plan.backend.drift_prompts))
                        for seed in config.seeds)
    lines.append(f"{len(jobs)} jobs ({len(concepts)} concepts x {len(config.seeds)} seeds per variant): "
                 f"{total_steps:,} training steps, {total_images:,} images on {config.model} ({plan.precision})")
    guess = estimate(plan.backend.name, plan.precision, total_steps, total_images, run_dir)  # "tiny": tiny-sdxl
    if guess is None:
        lines.append(f"no throughput figure for {config.model} / {plan.precision}: no hour estimate")
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
               "outcomes": [o.to_dict() for o in result.outcomes],
               "costs": job_costs(result.run_dir, jobs)}
    atomic_write_text(result.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def format_outcomes(result: RunResult) -> str:
    """The final table: every job, its status and time, then the failures and where the results are."""
    lines = [f"{'job':<48} {'status':<8} {'seconds':>8}"]
    for outcome in result.outcomes:
        status = outcome.status + (" (earlier)" if outcome.skipped else "")
        lines.append(f"{outcome.job_id:<48} {status:<8} {outcome.seconds:>8.1f}")
    for outcome in result.failures:
        lines.append(f"{outcome.status}: {outcome.job_id}: {outcome.error}")
    done = sum(o.status == "done" for o in result.outcomes)
    lines.append(f"{done} of {len(result.outcomes)} jobs done, {len(result.failures)} failed")
    if result.leaderboard is not None:
        lines.append(f"leaderboard: {result.run_dir / LEADERBOARD_FILE}")
    if result.report is not None:
        lines.append(f"report: {result.report}")
    if not result.complete:
        failed = any(o.status == "failed" for o in result.failures)
        hint = " (fix the cause, then re-run with --retry-failed)" if failed else " (re-run to resume it)" \
            if result.failures else ""
        lines.append(f"the run is incomplete{hint}")
    return "\n".join(lines)
