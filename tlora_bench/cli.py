"""The `tlora-bench` command line: parse, call the library, print. User errors print one line and exit 1."""

from __future__ import annotations

import json
import sys

import click

from tlora_bench import __version__
from tlora_bench.errors import TloraBenchError


class _Group(click.Group):
    """A click group that turns TloraBenchError into `error: ...` on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TloraBenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="Folder with one sub-folder per concept. Default: $TLORA_BENCH_DATA, then the download cache.")
manifest_option = click.option(
    "--manifest", "manifest_path", type=click.Path(dir_okay=False), default=None,
    help="A user concept manifest (.toml). Default: the bundled DreamBooth manifest.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tlora-bench")
def main() -> None:
    """tlora-bench: train, sample and score single-image personalization adapters (T-LoRA and baselines)."""


# ---- concepts -------------------------------------------------------------------------------------------


@main.group()
def concepts() -> None:
    """The concept dataset: list, show, validate, download."""


def _manifest(manifest_path: str | None):
    from tlora_bench.concepts import bundled_manifest, load_manifest

    return load_manifest(manifest_path) if manifest_path else bundled_manifest()


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

    path = download_dataset(bundled_manifest(), dest=dest, url=url, sha256=sha256, timeout=timeout, force=force)
    click.echo(f"ok: dataset ready in {path}")


# ---- prompts --------------------------------------------------------------------------------------------


@main.command("prompts")
@click.option("--concept", "concept_id", required=True, help="Concept id, e.g. dog6.")
@manifest_option
@click.option("--token", default="sks", show_default=True, help="The rare token that stands for V*.")
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
    """The flags that override preset values; shared by every command that builds a RunConfig."""
    options = [
        click.option("--preset", default=None, help="Bundled preset name or a .toml file."),
        click.option("--methods", default=None, help="Comma-separated methods, e.g. tlora,lora,oft-32."),
        click.option("--ranks", default=None, help="Comma-separated ranks, e.g. 4,8,64."),
        click.option("--concepts", default=None, help="Set name, comma-separated ids, or a manifest .toml."),
        click.option("--model", default=None, help="Model backend."),
        click.option("--precision", default=None, help="fp32, bf16 or fp16."),
        click.option("--steps", default=None, help="Step overrides, e.g. all=100 or tlora=800,lora=500."),
        click.option("--output-dir", default=None, help="Where results go."),
        data_dir_option,
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key (repeatable)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_config(preset: str | None, assignments: tuple[str, ...], **flags):
    from tlora_bench.config import load_config, parse_assignments

    given = {key: value for key, value in flags.items() if value is not None}  # flags beat --set
    return load_config(preset, {**parse_assignments(assignments), **given})


@main.command("config")
@run_config_options
def config_cmd(preset: str | None, assignments: tuple[str, ...], **flags) -> None:
    """Print the resolved run configuration (preset values, then flags) as JSON."""
    config = build_config(preset, assignments, **flags)
    click.echo(json.dumps(config.to_dict(), indent=2))


# ---- adapter files --------------------------------------------------------------------------------------


@main.group()
def adapter() -> None:
    """Inspect adapter files: config and provenance, effective rank."""


@adapter.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
def adapter_info(path: str) -> None:
    """Print an adapter file's method, config, provenance and tensor sizes."""
    from safetensors.torch import load_file

    from tlora_bench.adapters.io import read_adapter_metadata

    metadata = read_adapter_metadata(path)
    for key, value in metadata.items():
        click.echo(f"{key:<20} {value}")
    tensors = load_file(path)
    click.echo(f"{'tensors':<20} {len(tensors)} ({sum(t.numel() for t in tensors.values()):,} values)")


@adapter.command("rank")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--energy", type=float, default=0.95, show_default=True,
              help="Share of the sum of singular values the effective rank must reach.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also save a figure (PNG): effective rank per layer and singular value decay.")
def adapter_rank(path: str, energy: float, plot_path: str | None) -> None:
    """Effective rank of each layer's B matrix (paper Figures 4 and 9)."""
    from tlora_bench.adapters.rank_analysis import adapter_ranks, format_rank_table, plot_ranks

    rows = adapter_ranks(path, energy)
    click.echo(format_rank_table(rows, energy))
    if plot_path:
        click.echo(f"plot: {plot_ranks(rows, plot_path, title=path)}")


# ---- evaluate -------------------------------------------------------------------------------------------


@main.command("evaluate")
@click.argument("images_dir", metavar="DIR", type=click.Path(file_okay=False))
@manifest_option
@data_dir_option
@click.option("--segmenter", default="grabcut", show_default=True,
              help="Masks for masked IS / DINO-IS: grabcut, provided, grounded-sam (GPU runs) or none.")
@click.option("--dino", default="dino-vits16", show_default=True, help="DINO-IS model: dino-vits16 or dinov2-vits14.")
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
def evaluate_cmd(images_dir: str, manifest_path: str | None, data_dir: str | None, weights: tuple[str, ...],
                 **options) -> None:
    """Score generated images in DIR/<method>/<concept>/images.jsonl: IS, DINO-IS (masked too) and TS."""
    from tlora_bench.concepts import resolve_data_root
    from tlora_bench.metrics.evaluate import EvalOptions, evaluate_folder, format_done, format_summary, parse_weights
    from tlora_bench.metrics.layout import find_indexed_folders

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


# ---- methods --------------------------------------------------------------------------------------------


@main.command("methods")
@click.option("--model", "model_name", type=click.Choice(["sdxl", "tiny"]), default="sdxl", show_default=True,
              help="Model whose trainable parameters are counted (sdxl: on the meta device, no weights).")
@click.option("--rank", type=int, default=64, show_default=True,
              help="Rank r of the rank-sized methods; block-sized methods use their default block count.")
def methods_cmd(model_name: str, rank: int) -> None:
    """List every adapter method: training defaults and trainable parameters on a model."""
    from tlora_bench.adapters.catalog import method_rows

    rows = method_rows(model_name, rank)
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


if __name__ == "__main__":  # pragma: no cover
    main()
