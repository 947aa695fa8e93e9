"""The `tlora-bench` command line: parse, call the library, print. User errors print one line and exit 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click

from tlora_bench import __version__
from tlora_bench.adapters.registry import method_choices
from tlora_bench.cli_common import ErrorLineGroup, data_dir_option, manifest_option
from tlora_bench.devices import PRECISIONS
from tlora_bench.errors import TloraBenchError
from tlora_bench.metrics.names import DEFAULT_DINO, DEFAULT_SEGMENTER, dino_names, segmenter_names
from tlora_bench.models import backend_names, backend_spec
from tlora_bench.prompts import DEFAULT_TOKEN, IMAGES_PER_BASE_PROMPT, IMAGES_PER_PROMPT
from tlora_bench.runner.executors import EXECUTORS
from tlora_bench.specs import DEFAULT_MODEL, OPTIMIZERS


@click.group(cls=ErrorLineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tlora-bench")
def main() -> None:
    """tlora-bench: train, sample and score single-image personalization adapters (T-LoRA and baselines)."""


# ---- concepts -------------------------------------------------------------------------------------------


@main.group()
def concepts() -> None:
    """The concept dataset: list, show, validate, download."""


def _manifest(manifest_path: str | None):
    from tlora_bench.concepts.manifest import manifest_for

    return manifest_for(manifest_path)


@concepts.command("list")
@click.option("--concepts", "spec", default=None, help="A set name or comma-separated ids (default: all).")
@manifest_option
def concepts_list(spec: str | None, manifest_path: str | None) -> None:
    """List concepts: id, class word, live or object, training image, number of images."""
    manifest = _manifest(manifest_path)
    chosen = manifest.select(spec) if spec else list(manifest.concepts.values())
    click.echo(f"{'id':<20} {'class':<16} {'kind':<7} {'train':<9} images")
    for c in chosen:
        kind = "live" if c.live else "object"
        click.echo(f"{c.id:<20} {c.class_word:<16} {kind:<7} {c.train_image:<9} {len(c.images)}")
    sets = ", ".join(f"{name} ({len(ids)})" for name, ids in manifest.sets.items())
    click.echo(f"\n{len(chosen)} concepts; sets: {sets}; default set: {manifest.default_set}")


@concepts.command("show")
@click.argument("concept_id")
@manifest_option
@data_dir_option
def concepts_show(concept_id: str, manifest_path: str | None, data_dir: str | None) -> None:
    """Show one concept, with its files when the data folder is available."""
    from tlora_bench.concepts import resolve_data_root
    from tlora_bench.concepts.manifest import refuse_data_dir_with_manifest

    refuse_data_dir_with_manifest(manifest_path, data_dir)
    manifest = _manifest(manifest_path)
    concept = manifest.get(concept_id)
    for key in ("id", "class_word", "live", "train_image", "images", "source", "license"):
        value = getattr(concept, key)
        click.echo(f"{key:<12} {', '.join(value) if isinstance(value, tuple) else value}")
    try:
        root = None if manifest_path else resolve_data_root(data_dir, manifest.name)
    except TloraBenchError as e:
        click.echo(f"{'folder':<12} (not available: {e})")
        return
    click.echo(f"{'folder':<12} {concept.dir(root)}")
    mask = concept.mask_path(root)
    click.echo(f"{'mask':<12} {mask if mask else '(none: masks come from a segmenter)'}")


@concepts.command("validate")
@click.option("--concepts", "spec", default=None, help="A set name or comma-separated ids (default: all).")
@manifest_option
@data_dir_option
def concepts_validate(spec: str | None, manifest_path: str | None, data_dir: str | None) -> None:
    """Check that every listed image exists and decodes, and that masks match their images."""
    from tlora_bench.concepts import check_concepts, resolve_data_root
    from tlora_bench.concepts.manifest import refuse_data_dir_with_manifest

    refuse_data_dir_with_manifest(manifest_path, data_dir)
    manifest = _manifest(manifest_path)
    chosen = manifest.select(spec) if spec else list(manifest.concepts.values())
    root = None if manifest_path else resolve_data_root(data_dir, manifest.name)
    problems = check_concepts(chosen, root)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    n_images = sum(len(c.images) for c in chosen)
    if problems:
        raise TloraBenchError(f"{len(problems)} problems in {len(chosen)} concepts; fix or replace the files")
    click.echo(f"ok: {len(chosen)} concepts, {n_images} images" + (f" in {root}" if root else ""))


@concepts.command("download")
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help="Where to unpack (default: the per-user cache folder).")
@click.option("--url", default=None, help="Archive URL (default: the manifest's pinned archive).")
@click.option("--sha256", default=None, help="Expected sha256 of the archive.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Network timeout in seconds.")
@click.option("--force", is_flag=True, help="Download again even if a complete copy is present.")
def concepts_download(dest: str | None, url: str | None, sha256: str | None, timeout: float, force: bool) -> None:
    """Download the public DreamBooth dataset, verify it and unpack it into the cache."""
    from tlora_bench.concepts import bundled_manifest, download_dataset

    manifest = bundled_manifest()
    path = download_dataset(manifest, dest=dest, url=url, sha256=sha256, timeout=timeout, force=force)
    if not (sha256 or manifest.dataset.get("archive_sha256")):
        from tlora_bench.concepts.download import PROVENANCE_FILE
        from tlora_bench.fileio import read_json

        actual = read_json(path / PROVENANCE_FILE, "run the download again with --force").get("sha256")
        click.echo(f"warning: the manifest pins no archive sha256, so the archive's content could not be verified "
                   f"(only that every listed file is present); its sha256 is {actual}: pin it as archive_sha256 "
                   "in concepts/dreambooth.toml", err=True)
    click.echo(f"ok: dataset ready in {path}")


# ---- prompts --------------------------------------------------------------------------------------------


@main.command("prompts")
@click.option("--concept", "concept_id", required=True, help="Concept id, e.g. dog6.")
@manifest_option
@click.option("--token", default=DEFAULT_TOKEN, show_default=True, help="The rare token that stands for V*.")
@click.option("--base-seed", type=int, default=0, show_default=True, help="Base seed of the seed rule.")
def prompts_cmd(concept_id: str, manifest_path: str | None, token: str, base_seed: int) -> None:
    """Print every (template, prompt, image index, seed) generated for a concept."""
    from tlora_bench.prompts import prompt_items

    items = prompt_items(_manifest(manifest_path).get(concept_id), token=token, base_seed=base_seed)
    click.echo("seed\timage\tprompt")
    for item in items:
        click.echo(f"{item.seed}\t{item.image_index}\t{item.prompt}")
    click.echo(f"\n{len(items)} images from {len({i.template for i in items})} prompt templates", err=True)


# ---- config ---------------------------------------------------------------------------------------------


def run_config_options(command):
    """The flags that override preset values; shared by every command that builds a RunConfig. Help texts are the
    fields' own (RunConfig), lists of names come from the registries, defaults from RunConfig."""
    from tlora_bench.config import RunConfig, field_help, preset_names

    defaults = RunConfig()

    def flag(name: str, choices: list[str] | None = None, default: object = None) -> Callable:
        shown = default if default is not None else getattr(defaults, name)
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        listed = f" One of {', '.join(choices)}." if choices else ""
        suffix = f" Default: {shown}." if shown not in (None, "", {}) else ""
        return click.option(f"--{name.replace('_', '-')}", default=None, help=f"{field_help(name)}.{listed}{suffix}")

    options = [
        click.option("--preset", default=None, help=f"A bundled preset ({', '.join(preset_names())}) or a .toml file."),
        flag("methods", method_choices()), flag("ranks"), flag("concepts"), flag("model", backend_names()),
        flag("name", default="the --out folder's name, else the preset's"), flag("precision", list(PRECISIONS)),
        flag("steps"), flag("output_dir"), flag("reference"),
        data_dir_option,
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key (repeatable)."),
        click.option("--score-adapters", "imported", multiple=True, metavar="LABEL=PATH",
                     help="Also score adapter files trained elsewhere, one per concept: PATH holds {concept}, "
                          "e.g. theirs=ckpts/{concept}/pytorch_lora_weights.safetensors (format detected; "
                          "repeatable)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_config(preset: str | None, assignments: tuple[str, ...], run_dir: str | None = None, **flags):
    """The RunConfig of a preset, then --set, then flags; a run in `--out DIR` is named DIR unless a name is
    given (flag or --set)."""
    from pathlib import Path

    from tlora_bench.concepts.manifest import is_safe_name
    from tlora_bench.config import load_config, parse_assignments

    imported = _pairs(flags.pop("imported", ()) or (), "--score-adapters")
    given = {key: value for key, value in flags.items() if value is not None}  # flags beat --set
    overrides = {**parse_assignments(assignments), **given}
    folder = Path(run_dir).name if run_dir else None
    if folder and "name" not in overrides and is_safe_name(folder):
        overrides["name"] = folder
    config = load_config(preset, overrides)
    if not imported:
        return config
    from dataclasses import replace

    variants = {**{k: dict(v) for k, v in config.variants.items()}, **{k: {"adapter": v} for k, v in imported.items()}}
    return replace(config, methods=(*config.methods, *[k for k in imported if k not in config.methods]),
                   variants=variants)


def build_plan(preset: str | None, assignments: tuple[str, ...], run_dir: str | None = None, **flags):
    from tlora_bench.planner import make_plan

    return make_plan(build_config(preset, assignments, run_dir, **flags))


@main.command("config")
@run_config_options
def config_cmd(preset: str | None, assignments: tuple[str, ...], **flags) -> None:
    """Print the resolved run configuration (preset values, then flags) as JSON; its "resolved" key shows what
    each variant trains with after the method's and the model's defaults (steps, optimizer, lr, r_min)."""
    plan = build_plan(preset, assignments, **flags)
    try:
        plan.data_root()  # a run would stop on this before any work; the config itself is still valid
    except TloraBenchError as e:
        click.echo(f"warning: {e}", err=True)
    click.echo(json.dumps({**plan.config.to_dict(), "resolved": plan.resolved()}, indent=2))


# ---- run ------------------------------------------------------------------------------------------------


SLURM_FLAGS = ("partition", "gpus_per_job", "cpus_per_job", "mem", "time", "account", "qos", "max_concurrent",
               "slurm_options")


@main.command("run")
@run_config_options
@click.option("--out", "run_dir", type=click.Path(file_okay=False), default=None,
              help="The run folder (default: <output_dir>/<name>, e.g. results/smoke). Re-running resumes it.")
@click.option("--dry-run", is_flag=True, help="Print the jobs, steps, images and a device-hour estimate; run nothing.")
@click.option("--executor", default=None,
              help=f"One of {', '.join(EXECUTORS)} (default: the preset's [executor] name, else local; ray: pip "
                   "install 'tlora-bench[ray]'; slurm: pip install 'tlora-bench[slurm]').")
@click.option("--devices", default=None, help="local: GPUs to use, one worker each, e.g. 0,1,2,3 (default: one).")
@click.option("--address", default=None, help="ray: the cluster, auto or HOST:PORT (default: a local Ray instance).")
@click.option("--partition", default=None, help="slurm: the partition (default: the cluster's default one).")
@click.option("--gpus-per-job", type=int, default=None, help="slurm: GPUs per job (default: 1; 0 runs on CPUs).")
@click.option("--cpus-per-job", type=int, default=None, help="slurm: CPUs per job (default: Slurm's).")
@click.option("--mem", default=None, help="slurm: memory per job, e.g. 64G (default: Slurm's).")
@click.option("--time", default=None, help="slurm: time limit per job, e.g. 4:00:00 (default: the partition's; "
                                           "a job near its limit is requeued and resumes).")
@click.option("--account", default=None, help="slurm: the account to charge.")
@click.option("--qos", default=None, help="slurm: the quality of service.")
@click.option("--max-concurrent", type=int, default=None, help="slurm: at most this many jobs at once (the "
                                                               "array's %N).")
@click.option("--slurm-option", "slurm_options", multiple=True, metavar="KEY=VALUE",
              help="slurm: any other sbatch option, e.g. constraint=a100 (repeatable).")
@click.option("--detach", is_flag=True, help="slurm: submit and return; a later run or `tlora-bench status` "
                                             "picks the run up.")
@click.option("--force-new", is_flag=True, help="Start anew in a folder that holds a run of another config "
                                                "(the old run is moved aside, not deleted).")
@click.option("--retry-failed", is_flag=True, help="Run the jobs that failed before again.")
def run_cmd(preset: str | None, assignments: tuple[str, ...], run_dir: str | None, dry_run: bool,
            executor: str | None, devices: str | None, address: str | None, detach: bool, force_new: bool,
            retry_failed: bool, **flags) -> None:
    """Train, sample and score every job of a preset or of the flags; resumes after any crash."""
    from pathlib import Path

    from tlora_bench.config import preset_executor
    from tlora_bench.errors import EXIT_INCOMPLETE
    from tlora_bench.layout import REPORT_MARKDOWN
    from tlora_bench.runner import format_outcomes, format_plan, run
    from tlora_bench.runner.executors import parse_devices
    from tlora_bench.runner.run import default_run_dir
    from tlora_bench.runner.slurm import parse_slurm_option, resolve_executor

    slurm = {key: flags.pop(key) for key in SLURM_FLAGS}
    slurm["slurm_options"] = dict(parse_slurm_option(item) for item in slurm["slurm_options"])
    name, where = resolve_executor(preset_executor(preset), {"name": executor, "devices": devices,
                                                              "address": address, **slurm})
    gpus = tuple(parse_devices(where.get("devices")))  # first: a --dry-run checks it too
    plan = build_plan(preset, assignments, run_dir, **flags)
    folder = Path(run_dir) if run_dir else default_run_dir(plan.config)
    if dry_run:
        click.echo(format_plan(plan, folder))
        return
    result = run(plan, folder, executor=name, devices=gpus, address=where.get("address"), slurm=where.get("slurm"),
                 detach=detach, force_new=force_new, retry_failed=retry_failed, echo=click.echo)
    if result.detached:
        click.echo(f"the jobs run on Slurm; watch them with `tlora-bench status {folder}`, and re-run the same "
                   "command to wait for them and score")
        return
    click.echo(format_outcomes(result))
    if result.evaluation_error is not None:  # the jobs stand; the output above says what was done
        click.echo(f"error: scoring failed: {result.evaluation_error}", err=True)
    if result.report is not None:  # the short table with intervals and the paper's numbers, as in the report
        click.echo(result.report.with_name(REPORT_MARKDOWN).read_text())
    if not result.complete:
        sys.exit(EXIT_INCOMPLETE)


@main.command("status")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path())
@click.option("--watch", is_flag=True, help="Refresh until no job runs or waits (Ctrl-C stops watching).")
@click.option("--interval", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="--watch: seconds between refreshes.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and every job's state as JSON.")
def status_cmd(run_dir: str, watch: bool, interval: float, as_json: bool) -> None:
    """Where a run's jobs stand: done, failed, running, pending, lost, per variant; device time, throughput
    and time left; the failed jobs' errors; Slurm and Ray job ids. Reads the folder only (a run may be going)."""
    import time
    from pathlib import Path

    from tlora_bench.runner.status import format_status, job_statuses, run_jobs, summary

    folder = Path(run_dir)
    jobs = run_jobs(folder)
    while True:
        statuses = job_statuses(folder, jobs)
        if watch and sys.stdout.isatty():
            click.clear()
        click.echo(json.dumps(summary(folder, statuses), indent=2) if as_json else format_status(folder, statuses))
        if not watch or not any(s.state in ("running", "pending") for s in statuses):
            return
        time.sleep(interval)
        if not as_json and not sys.stdout.isatty():
            click.echo("")


@main.command("presets")
def presets_cmd() -> None:
    """List the bundled presets with their number of jobs."""
    from tlora_bench.config import load_config, preset_names
    from tlora_bench.planner import make_plan

    names = preset_names()
    width = max(len(name) for name in names) + 1
    click.echo(f"{'preset':<{width}} {'model':<10} {'jobs':>5}  methods")
    for name in names:
        plan = make_plan(load_config(name))
        methods = ", ".join(v.label for v in plan.variants)
        click.echo(f"{name:<{width}} {plan.config.model:<10} {len(plan.jobs):>5}  {methods}")


# ---- adapter files --------------------------------------------------------------------------------------


@main.group()
def adapter() -> None:
    """Inspect adapter files: config and provenance, effective rank."""


@adapter.command("info")
@click.argument("path", type=click.Path())  # a folder: the checked reader says so
def adapter_info(path: str) -> None:
    """Print an adapter file's method, config, provenance and tensor sizes."""
    from tlora_bench.adapters.io import read_adapter_config, read_adapter_metadata, read_adapter_tensors

    read_adapter_config(path)  # the same checks as loading: method, config JSON and every config value
    tensors = read_adapter_tensors(path)
    metadata = read_adapter_metadata(path)
    for key, value in metadata.items():
        click.echo(f"{key:<20} {value}")
    click.echo(f"{'tensors':<20} {len(tensors)} ({sum(t.numel() for t in tensors.values()):,} values)")


@adapter.command("rank")
@click.argument("path", type=click.Path())  # a folder: the checked reader says so
@click.option("--energy", type=float, default=0.95, show_default=True,
              help="Share of the sum of singular values the effective rank must reach.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also save a figure (.png, .svg or .pdf): effective rank per layer and singular value decay.")
def adapter_rank(path: str, energy: float, plot_path: str | None) -> None:
    """Effective rank of each layer's B matrix (paper Figures 4 and 9)."""
    from tlora_bench.adapters.rank_analysis import adapter_ranks, check_plot_path, format_rank_table, plot_ranks

    if plot_path:
        check_plot_path(plot_path)
    rows = adapter_ranks(path, energy)
    click.echo(format_rank_table(rows, energy))
    if plot_path:
        click.echo(f"plot: {plot_ranks(rows, plot_path, title=path)}")


@adapter.command("formats")
def adapter_formats() -> None:
    """List the adapter formats of other tools that import and export convert, and what each holds."""
    from tlora_bench.adapters.formats import FORMATS

    for name in FORMATS.names():
        fmt = FORMATS.get(name)
        click.echo(f"{name:<15} {fmt.summary}\n{'':<15} holds: {fmt.holds}")


@adapter.command("import")
@click.argument("source", type=click.Path())
@click.option("--format", "format_name", default=None,
              help="The source's format (see `tlora-bench adapter formats`). Default: detected from its keys.")
@click.option("--model", default=None,
              help="Check the adapter fits this model's layers (and resolve flattened layer names): sdxl, flux, ...")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A config value the file does not record (repeatable), e.g. r_min=32, method=ortho-lora.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The tlora-bench adapter file to write (.safetensors).")
def adapter_import(source: str, format_name: str | None, model: str | None, options: tuple[str, ...],
                   out_path: str) -> None:
    """Convert another tool's adapter file (or its folder) into a tlora-bench adapter file."""
    from tlora_bench.adapters.formats import import_adapter

    values = {key: _parse_option_value(value) for key, value in _pairs(options, "--option").items()}
    data = import_adapter(source, out_path, format=format_name, model=model, options=values)
    config = data.config.to_dict()
    click.echo(f"{out_path}: {config['method']} from {data.metadata['imported_from']} "
               f"({len(data.layers())} layers), config {json.dumps(config)}")


@adapter.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "format_name", required=True, help="The format to write (see `tlora-bench adapter formats`).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The folder to write into.")
def adapter_export(path: str, format_name: str, out_dir: str) -> None:
    """Write a tlora-bench adapter file in another tool's format."""
    from tlora_bench.adapters.formats import export_adapter

    for written in export_adapter(path, format_name, out_dir):
        click.echo(f"wrote {written}")


# ---- evaluate -------------------------------------------------------------------------------------------


@main.command("evaluate")
@click.argument("images_dir", metavar="DIR", type=click.Path(file_okay=False))
@manifest_option
@data_dir_option
@click.option("--segmenter", default=DEFAULT_SEGMENTER, show_default=True,
              help=f"Masks for masked IS / DINO-IS: {', '.join(segmenter_names())} (grounded-sam: GPU runs).")
@click.option("--dino", default=DEFAULT_DINO, show_default=True, help=f"DINO-IS model: {', '.join(dino_names())}.")
@click.option("--real-set", default="all", show_default=True,
              help="Real images: all images of the concept, or train (the training image only).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--dtype", default="fp32", show_default=True, help="fp32, bf16 or fp16.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Images per forward pass.")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples over concepts.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where results and the feature cache go. Default: DIR/evaluation.")
@click.option("--weights", "weights", multiple=True, metavar="NAME=PATH",
              help="A local copy of a model's weights (repeatable): clip-vit-b-32, dino-vits16, dinov2-vits14, "
                   "grounding-dino, sam.")
@click.option("--tiny-models", is_flag=True, help="Tiny random extractors: smoke runs and tests, meaningless numbers.")
@click.option("--allow-missing", is_flag=True,
              help="Exit 0 even if some listed or real images are missing or unreadable (default: exit 3).")
def evaluate_cmd(images_dir: str, manifest_path: str | None, data_dir: str | None, weights: tuple[str, ...],
                 allow_missing: bool, **options) -> None:
    """Score generated images in DIR/<method>/<concept>/images.jsonl: IS, DINO-IS (masked too) and TS."""
    from tlora_bench.concepts import resolve_data_root
    from tlora_bench.concepts.manifest import refuse_data_dir_with_manifest
    from tlora_bench.errors import EXIT_INCOMPLETE
    from tlora_bench.layout import find_indexed_folders
    from tlora_bench.metrics.evaluate import (
        EvalOptions,
        evaluate_folder,
        format_done,
        format_summary,
        incomplete_message,
        parse_weights,
    )

    refuse_data_dir_with_manifest(manifest_path, data_dir)
    out_dir = options.pop("out_dir")
    eval_options = EvalOptions(**options, weights=parse_weights(weights))
    eval_options.check()
    find_indexed_folders(images_dir)  # a wrong DIR is the first thing to report, before the data folder
    manifest = _manifest(manifest_path)
    root = None if manifest_path else resolve_data_root(data_dir, manifest.name)
    result = evaluate_folder(images_dir, manifest=manifest, data_root=root, out_dir=out_dir, options=eval_options,
                             on_problem=lambda message: click.echo(f"warning: {message}", err=True))
    click.echo(format_summary(result))
    click.echo(format_done(result))
    incomplete = incomplete_message(result)
    if incomplete and not allow_missing:  # outputs are written; automation still learns the run is incomplete
        click.echo(f"incomplete: {incomplete}", err=True)
        sys.exit(EXIT_INCOMPLETE)


# ---- models ---------------------------------------------------------------------------------------------


@main.group()
def models() -> None:
    """Model backends: list them with their weights' cache state, pre-fetch weights."""


@models.command("list")
def models_list() -> None:
    """Each backend: hub id, revision, sampling defaults, and whether its weights are cached."""
    from tlora_bench.models import backend_names, backend_spec
    from tlora_bench.models.download import cache_status

    for name in backend_names():
        spec = backend_spec(name)
        aliases = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
        click.echo(f"{name}{aliases}: {spec.summary}")
        click.echo(f"  {spec.resolution}px, {spec.num_inference_steps} steps, guidance {spec.guidance_scale}, "
                   f"optimizer {spec.optimizer}")
        for row in cache_status(spec):
            state = "cached" if row.cached else "not cached: run `tlora-bench models download --model " + name + "`"
            click.echo(f"  {row.repo} @ {row.revision or 'main'}: {state}")
        if spec.shipped_weights and (spec.shipped_folder() / "model_index.json").is_file():
            click.echo(f"  shipped with tlora-bench: {spec.shipped_folder()}")
        elif spec.shipped_weights:
            click.echo(f"  its shipped weights are missing from {spec.shipped_folder()}: reinstall tlora-bench, or "
                       "make them with `tlora-bench synthetic pretrain --out DIR` and pass --model-path DIR")
        elif spec.hub_id is None:
            click.echo("  random weights, built into the tlora-bench cache on first use")


@models.command("download")
@click.option("--model", "names", multiple=True, default=(DEFAULT_MODEL,), show_default=True,
              help=f"Backend whose weights to fetch (repeatable): {', '.join(backend_names())}.")
@click.option("--evaluation", is_flag=True, help="Also fetch the CLIP, DINO and segmenter weights of evaluate.")
def models_download(names: tuple[str, ...], evaluation: bool) -> None:
    """Fetch every weight a run needs into the Hugging Face cache (for machines without internet)."""
    from tlora_bench.metrics.weights import fetch_evaluation_weights
    from tlora_bench.models import backend_spec
    from tlora_bench.models.download import download_model

    for name in names:
        backend_spec(name)  # every name checked before the first download
    for name in names:
        download_model(name, on_done=lambda line: click.echo(f"ok: {line}"))
    if evaluation:
        fetch_evaluation_weights(on_done=lambda line: click.echo(f"ok: {line}"))


# ---- train and generate ---------------------------------------------------------------------------------


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TloraBenchError(f"{flag} takes KEY=VALUE, got '{item}'")
        pairs[key.strip()] = value.strip()
    return pairs


def _parse_option_value(value: str):
    """'16' -> 16, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else stays a string."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _timestep_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.split(",")
    try:
        low, high = (int(p) for p in parts)
    except ValueError:
        raise TloraBenchError(f"--timestep-range takes low,high, e.g. 800,1000; got '{value}'") from None
    return low, high


@main.command("train")
@click.option("--method", required=True, help=f"Method, with an optional -N size (lora-64, oft-32): one of "
              f"{', '.join(method_choices())}.")
@click.option("--rank", type=int, default=None, help="Rank r for rank-sized methods (default: the label's or 64).")
@click.option("--r-min", type=int, default=None, help="r_min of T-LoRA's rank schedule (default: r // 2).")
@click.option("--concept", required=True, help="Concept id, e.g. dog6.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help=f"Model backend: one of {', '.join(backend_names())}.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the adapter, checkpoint and training log; re-running resumes.")
@manifest_option
@data_dir_option
@click.option("--model-path", default=None, help="A hub id or local diffusers folder instead of the model's default.")
@click.option("--vae-path", default=None, help="A hub id or local folder for the VAE (SD-XL: the fp16-fix VAE).")
@click.option("--revision", default=None, help="Hub revision of the model.")
@click.option("--precision", default=None, help=f"{', '.join(PRECISIONS)} (bf16, fp16: base model in half precision, "
              "adapter and optimizer in fp32); default: the backend's (fp32, the authors'; FLUX bf16).")
@click.option("--steps", type=int, default=None, help="Training steps (default: the method's, e.g. T-LoRA 800).")
@click.option("--optimizer", default=None, help=f"{' or '.join(OPTIMIZERS)} (default: the model's; FLUX uses prodigy).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the method's).")
@click.option("--weight-decay", type=float, default=None, help="Weight decay (default: the method's).")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Samples per step.")
@click.option("--max-grad-norm", type=float, default=1.0, show_default=True, help="Gradient clipping; 0: none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the adapter init and the loop.")
@click.option("--timestep-range", default=None, help="Train on t in [low, high) only, e.g. 800,1000 (Figure 2).")
@click.option("--images", "train_images", type=int, default=1, show_default=True,
              help="Train on the first N images of the concept, the training image first (Table 4).")
@click.option("--token", default=DEFAULT_TOKEN, show_default=True, help="The rare token that stands for V*.")
@click.option("--checkpoint-every", type=int, default=100, show_default=True,
              help="Steps between checkpoints (0: only at the end).")
@click.option("--gradient-checkpointing", is_flag=True, help="Trade compute for memory in the denoiser.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="An adapter option (repeatable), e.g. svd_source=W, svd_components=top, gamma=2, alpha=64.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
def train_cmd(out_dir: str, options: tuple[str, ...], device: str, r_min: int | None, manifest_path: str | None,
              timestep_range: str | None, max_grad_norm: float, **values) -> None:
    """Train one adapter on one concept; resumes from the folder's last checkpoint."""
    from tlora_bench.specs import TrainSpec
    from tlora_bench.train import train

    adapter = {key: _parse_option_value(value) for key, value in _pairs(options, "--option").items()}
    if r_min is not None:
        adapter["r_min"] = r_min
    values["precision"] = values["precision"] or backend_spec(values["model"]).default_precision
    spec = TrainSpec(**values, adapter=adapter, manifest=manifest_path, max_grad_norm=max_grad_norm or None,
                     timestep_range=_timestep_range(timestep_range))
    result = train(spec, out_dir, device=device)
    if result.already_done:
        click.echo(f"already trained: {result.adapter_path}")
        return
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    click.echo(f"trained {result.steps} steps in {result.seconds:.1f}s{resumed}: {result.adapter_path}")


@main.command("generate")
@click.argument("adapter_dir", metavar="DIR", type=click.Path())
@click.option("--prompts", type=int, default=None, help="Only the first N prompt templates (the base prompt first).")
@click.option("--batch-size", type=int, default=5, show_default=True, help="Images of one prompt per batch.")
@click.option("--images-per-prompt", type=int, default=IMAGES_PER_PROMPT, show_default=True,
              help="Images per contextual prompt.")
@click.option("--base-images", type=int, default=IMAGES_PER_BASE_PROMPT, show_default=True,
              help="Images of the base prompt.")
@click.option("--base-seed", type=int, default=None, help="Base seed of the seed rule (default: the training seed).")
@click.option("--drift-images", type=int, default=0, show_default=True,
              help="Images of each drift prompt (prompts/drift.txt) by the adapted model and, in OUT/_base_model/, "
                   "by the base model, for `evaluate`'s drift score (`run` makes 1); 0: none.")
@click.option("--drift-prompts", type=int, default=None, help="Only the first N drift prompts (default: all ten).")
@click.option("--out", "images_root", type=click.Path(file_okay=False), default=None,
              help="Root of the images layout (default: DIR/images); images go to OUT/<method>/<concept>/.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
def generate_cmd(adapter_dir: str, images_root: str | None, device: str, prompts: int | None, batch_size: int,
                 images_per_prompt: int, base_images: int, base_seed: int | None, drift_images: int,
                 drift_prompts: int | None) -> None:
    """Generate every prompt's images for the adapter in DIR (a `train --out` folder or an adapter file)."""
    from pathlib import Path

    from tlora_bench.layout import ADAPTER_FILE, IMAGES_DIR
    from tlora_bench.sample import adapter_backend, generate, generate_base_drift, read_adapter_info
    from tlora_bench.specs import SampleOptions

    path = Path(adapter_dir)
    adapter = path / ADAPTER_FILE if path.is_dir() else path
    if not adapter.is_file():
        raise TloraBenchError(f"no adapter at '{adapter}'; pass a folder written by `tlora-bench train` "
                              "(it finishes with adapter.safetensors) or the adapter file")
    options = SampleOptions(prompts=prompts, images_per_prompt=images_per_prompt, base_images=base_images,
                            batch_size=batch_size, base_seed=base_seed, drift_images=drift_images,
                            drift_prompts=drift_prompts)
    root = Path(images_root) if images_root else adapter.parent / IMAGES_DIR
    backend = adapter_backend(adapter, device)  # one load for the adapted and the base model's images
    results = [generate(adapter, root, options=options, backend=backend)]
    if drift_images:
        spec = read_adapter_info(adapter).spec
        results.append(generate_base_drift(backend, root, options=options, model=spec.model,
                                           base_seed=spec.seed if base_seed is None else base_seed))
    for result in results:
        click.echo(f"{result.n_generated} images generated, {result.n_kept} kept from an earlier run, "
                   f"in {result.seconds:.1f}s: {result.folder}")
    click.echo(f"score them: {evaluate_command(adapter, root)}")


def evaluate_command(adapter, root) -> str:
    """The `evaluate` command line that scores what `generate` just wrote: the adapter's own concept source,
    and tiny extractors for a tiny model (whose images real extractors would score as noise anyway)."""
    import shlex

    from tlora_bench.models import is_tiny
    from tlora_bench.sample import read_adapter_info

    spec = read_adapter_info(adapter).spec
    words = ["tlora-bench", "evaluate", str(root)]
    if spec.manifest:
        words += ["--manifest", spec.manifest]
    if spec.data_dir:
        words += ["--data-dir", spec.data_dir]
    if is_tiny(spec.model):
        words.append("--tiny-models")
    return shlex.join(words)


# ---- methods --------------------------------------------------------------------------------------------


@main.command("methods")
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True,
              help="Model backend whose trainable parameters are counted, on its weightless skeleton (`tlora-bench "
                   "models list`).")
@click.option("--rank", type=int, default=64, show_default=True,
              help="Rank r of the rank-sized methods; block-sized methods use their default block count.")
@click.option("--providers/--no-providers", default=True, show_default=True,
              help="Also list the methods of the installed PEFT and LyCORIS (peft:<tuner>, lycoris:<algo>).")
def methods_cmd(model_name: str, rank: int, providers: bool) -> None:
    """List every adapter method: training defaults and trainable parameters on a model."""
    from tlora_bench.planner.catalog import method_rows, provider_notes

    rows = method_rows(model_name, rank, providers=providers)
    click.echo(f"{'label':<18} {'steps':>5} {'lr':>7} {'wd':>7} {'merge':<5} {'trainable':>12}  summary")
    for row in rows:
        count = "n/a" if row.trainable is None else f"{row.trainable:,}"
        click.echo(f"{row.label:<18} {row.steps:>5} {row.lr:>7.0e} {row.weight_decay:>7.0e} "
                   f"{'yes' if row.mergeable else 'no':<5} {count:>12}  {row.summary}")
    click.echo(f"\ntrainable parameters on the {model_name} UNet; label suffix -N:")
    for meaning in dict.fromkeys(row.size_meaning for row in rows if row.size_meaning):
        names = ", ".join(row.method for row in rows if row.size_meaning == meaning)
        click.echo(f"  {names}: {meaning}")
    for row in rows:
        if row.note:
            click.echo(f"n/a {row.label}: {row.note}")
    for line in provider_notes() if providers else []:
        click.echo(line)


# ---- reports and the user study (their own modules; click is all they import up front) ------------------

from tlora_bench.report.commands import report_cmd  # noqa: E402
from tlora_bench.study.commands import study  # noqa: E402
from tlora_bench.synthetic.commands import synthetic  # noqa: E402

main.add_command(report_cmd)
main.add_command(study)
main.add_command(synthetic)


if __name__ == "__main__":  # pragma: no cover
    main()
