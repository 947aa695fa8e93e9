"""The plan stage: a RunConfig becomes a typed `Plan`, the one place where config names meet the registries.

    config -> backend spec, precision, concepts, variants (method spec, recipe with an int size), jobs

Every name and value is checked here, sizes on the model's layer table (no weights, no torch), so a run never
fails mid-way on something its config already said. `methods` names method labels ("tlora", "lora-64",
"oft-32") or variants declared in the config's `variants` table; a rank-sized method without a "-N" size runs
once per rank in `ranks` ("tlora" with ranks 4, 8 -> "tlora-4", "tlora-8"); any other sized method gets its
default size in its label ("oft" -> "oft-32").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tlora_bench.adapters import MethodSpec, parse_method
from tlora_bench.concepts.manifest import (
    Concept,
    Manifest,
    is_safe_name,
    manifest_path_of,
    refuse_data_dir_with_manifest,
    select_concepts,
)
from tlora_bench.config import MAX_BATCH, MAX_STEPS, RunConfig
from tlora_bench.errors import TloraBenchError, did_you_mean, unknown_name_error
from tlora_bench.layout import job_folder
from tlora_bench.limits import check_bootstrap
from tlora_bench.models import BackendSpec, backend_spec
from tlora_bench.planner.sizes import check_size
from tlora_bench.specs import Recipe, SampleOptions, TrainSpec, resolve_recipe

# Variant keys that are training options; every other key is an adapter option (r_min, gamma, svd_source, ...).
TRAIN_KEYS = ("steps", "lr", "weight_decay", "optimizer", "batch_size", "max_grad_norm", "timestep_range",
              "train_images")


@dataclass(frozen=True)
class ImportSpec:
    """Adapter files trained elsewhere, scored instead of trained: `template` names one file (or folder) per
    concept through "{concept}"; `format` as `tlora-bench adapter import` takes it (None: detected)."""

    template: str
    format: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # what the files do not record

    def path(self, concept: str) -> Path:
        return Path(self.template.replace("{concept}", concept))

    def to_dict(self) -> dict[str, Any]:
        return {"adapter": self.template, "format": self.format, "options": dict(self.options)}


@dataclass(frozen=True)
class Variant:
    """One method variant of a run: the label that names its results and the recipe it trains with."""

    label: str  # e.g. "tlora-64", "lora-late"
    method: MethodSpec
    train: Mapping[str, Any]  # TrainSpec options
    adapter: Mapping[str, Any]  # adapter options
    recipe: Recipe  # resolved on the run's model (first base seed): the adapter config with its int size, steps
    steps: int | None  # the steps its jobs ask for (None: the recipe's default)
    imported: ImportSpec | None = None  # scored from existing adapter files, not trained

    @property
    def method_label(self) -> str:
        """The method with its size, e.g. "lora-64", "oft-32", "svdiff" (what a job's TrainSpec trains)."""
        return self.recipe.label

    @property
    def rank(self) -> int | None:
        return self.recipe.rank


@dataclass(frozen=True)
class Job:
    """Train one variant on one concept with one base seed, then sample it: the unit of work."""

    label: str
    concept: str
    seed: int
    train: TrainSpec
    sample: SampleOptions
    image_label: str  # the method folder of its images: the label, plus ".seed<N>" when a run has several seeds
    recipe: Recipe  # the plan's resolution of `train`: jobs never resolve again (not part of the key: derived)
    imported: ImportSpec | None = None  # import this adapter file instead of training

    @property
    def id(self) -> str:
        return f"{self.label}/{self.concept}/seed-{self.seed}"

    @property
    def folder(self) -> PurePosixPath:
        return job_folder(self.label, self.concept, self.seed)

    def to_dict(self) -> dict[str, Any]:
        record = {"label": self.label, "concept": self.concept, "seed": self.seed, "image_label": self.image_label,
                  "train": self.train.to_dict(), "sample": dataclasses.asdict(self.sample)}
        if self.imported is not None:  # only then: the keys of trained jobs stay what they were
            record["import"] = {**self.imported.to_dict(), "file": str(self.imported.path(self.concept))}
        return record

    @property
    def key(self) -> str:
        """A content hash of everything that decides the job's results."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """Everything a run does, resolved and checked: what `config`, `run --dry-run` and `run` show and execute."""

    config: RunConfig
    backend: BackendSpec
    precision: str  # the config's, else the backend's default
    manifest: Manifest
    manifest_path: str | None  # a user manifest (absolute); None: the bundled one
    concepts: tuple[Concept, ...]
    variants: tuple[Variant, ...]
    jobs: tuple[Job, ...]

    def data_root(self) -> Path | None:
        """The bundled manifest's image folder (a user manifest's images sit beside it: None)."""
        from tlora_bench.concepts import resolve_data_root

        return None if self.manifest_path else resolve_data_root(self.config.data_dir, self.manifest.name)

    def resolved(self) -> dict[str, dict[str, Any]]:
        """What each variant trains with once the method's and the model's defaults are applied (`tlora-bench
        config` shows it): the values a reader of config.json alone would have to look up."""
        resolved = {}
        for variant in self.variants:
            recipe = variant.recipe
            entry = {"method": recipe.label, "steps": recipe.steps, "optimizer": recipe.optimizer, "lr": recipe.lr,
                     "weight_decay": recipe.weight_decay}
            if getattr(recipe.adapter_config, "mask", False):  # T-LoRA's rank schedule
                entry["r_min"] = recipe.adapter_config.r_min
            resolved[variant.label] = entry
        return resolved


def make_plan(config: RunConfig) -> Plan:
    """The plan of `config`; any bad name or value is one line naming the config key and the fix."""
    backend = _named("model", lambda: backend_spec(config.model))
    precision = config.precision or backend.default_precision
    manifest, concepts = _named("concepts", lambda: select_concepts(config.concepts))
    manifest_path = manifest_path_of(config.concepts)
    _named("data_dir", lambda: refuse_data_dir_with_manifest(manifest_path, config.data_dir))
    check_bootstrap(config.bootstrap, "config key 'bootstrap'", len(concepts))
    _check_evaluation(config)
    path = str(Path(manifest_path).resolve()) if manifest_path else None
    variants = tuple(_variants(config, precision, concepts))
    _check_step_keys(config, variants)
    jobs = tuple(_job(config, variant, concept, seed, precision, path)
                 for variant in variants for concept in concepts for seed in config.seeds)
    _check_reference(config, jobs)
    return Plan(config, backend, precision, manifest, path, tuple(concepts), variants, jobs)


def _named(key: str, build):
    """`build()`, its error prefixed with the config key it is about (unless it names one already)."""
    try:
        return build()
    except TloraBenchError as e:
        if str(e).startswith("config key "):
            raise
        raise TloraBenchError(f"config key '{key}': {e}") from None


def _check_evaluation(config: RunConfig) -> None:
    """The scoring choices, checked now so a run never trains everything and then fails to score."""
    from tlora_bench.metrics.names import dino_names, segmenter_names

    if config.segmenter not in segmenter_names():
        raise unknown_name_error("segmenter (key 'segmenter')", config.segmenter, segmenter_names())
    if config.dino not in dino_names():
        raise unknown_name_error("DINO model (key 'dino')", config.dino, dino_names())


def _variants(config: RunConfig, precision: str, concepts: list[Concept]) -> list[Variant]:
    """Every variant the config runs, in `methods` order; labels are checked to be distinct folder names."""
    variants: list[Variant] = []
    for name in config.methods:
        if name in config.variants:
            raw = dict(config.variants[name])
            if not isinstance(raw.get("method"), str) and "adapter" not in raw:
                raise TloraBenchError(f"config key 'variants.{name}' needs method = \"<method label>\"")
            if not is_safe_name(name):
                raise TloraBenchError(f"variant name '{name}' must use letters, digits, '_', '-', '.'")
            if "adapter" in raw:
                variants.append(_imported(config, precision, name, raw, concepts))
                continue
            variants += _expand(config, precision, name, raw.pop("method"), raw, concepts)
        else:
            variants += _named("methods", lambda name=name: _expand(config, precision, name, name, {}, concepts))
    labels = [v.label for v in variants]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise TloraBenchError(f"config key 'methods' gives the label '{twice[0]}' twice; rename a variant")
    unused = sorted(set(config.variants) - set(config.methods))
    if unused:
        raise TloraBenchError(f"variant '{unused[0]}' is declared but not listed in methods")
    return variants


def _expand(config: RunConfig, precision: str, label: str, method_text: str, raw: Mapping[str, Any],
            concepts: list[Concept]) -> list[Variant]:
    """One variant, or one per rank of `ranks` for a rank-sized method given without a size."""
    spec, size = parse_method(method_text)
    raw = dict(raw)
    rank = raw.pop("rank", None)
    train = {k: raw.pop(k) for k in TRAIN_KEYS if k in raw}
    if "timestep_range" in train:
        train["timestep_range"] = tuple(train["timestep_range"])
    adapter = raw
    if config.r_min is not None and spec.fixed.get("mask") and "r_min" not in adapter:
        adapter["r_min"] = config.r_min
    if rank is not None and (size is not None or spec.size_field != "r"):
        raise TloraBenchError(f"variant '{label}': 'rank' needs a rank-sized method without a size, got "
                              f"'{method_text}'")
    if size is not None or spec.size_field != "r":
        sized = [(label if label != method_text or size is not None else None, size or spec.size_default)]
    elif rank is not None:
        sized = [(label, rank)]
    else:
        sized = [(f"{label}-{r}" if label != method_text else None, r) for r in config.ranks]
    return [_variant(config, precision, variant_label, spec, variant_size, train, adapter, concepts)
            for variant_label, variant_size in sized]


def _variant(config: RunConfig, precision: str, label: str | None, spec: MethodSpec, size: int | None,
             train: Mapping[str, Any], adapter: Mapping[str, Any], concepts: list[Concept]) -> Variant:
    """A variant resolved and checked as its jobs will train it: every training and adapter option, its size on
    the model's layers and the number of training images of every concept (`label` None: the method label)."""
    method_label = spec.name if size is None else f"{spec.name}-{size}"
    label = label or method_label
    try:
        options = {k: v for k, v in train.items() if k != "steps"}
        steps = _steps(config, train, (label, method_label, spec.name))
        trial = TrainSpec(method=method_label, concept="-", model=config.model, adapter=adapter, precision=precision,
                          steps=steps, seed=config.seeds[0], token=config.token,
                          checkpoint_every=config.checkpoint_every, **options)
        recipe = resolve_recipe(trial)
        for key, high in (("steps", MAX_STEPS), ("batch_size", MAX_BATCH)):
            value = train.get(key)
            if value is not None and not 1 <= value <= high:  # TrainSpec checked the type and the low end
                raise TloraBenchError(f"{key} must be from 1 to {high:,}, got {value:,}")
    except TloraBenchError as e:
        raise TloraBenchError(f"variant '{label}': {e}") from None
    try:
        check_size(trial, recipe)
    except TloraBenchError as e:  # a named variant is named too (its recipe label is the method's)
        named = f"variant '{label}': " if label != recipe.label else ""
        raise TloraBenchError(f"config key 'methods': {named}{e}") from None
    short = next((c for c in concepts if len(c.images) < trial.train_images), None)
    if short is not None:
        raise TloraBenchError(f"variant '{label}': train_images = {trial.train_images}, but concept '{short.id}' has "
                              f"{len(short.images)} images; use at most {min(len(c.images) for c in concepts)}")
    return Variant(label, spec, dict(train), dict(adapter), recipe, steps)


def _imported(config: RunConfig, precision: str, label: str, raw: dict[str, Any],
              concepts: list[Concept]) -> Variant:
    """A variant scored from adapter files trained elsewhere: `adapter` (a path template with "{concept}"),
    optional `format` and `method` (default: read from the first file found), and import options."""
    import os

    template, fmt, method = raw.pop("adapter"), raw.pop("format", None), raw.pop("method", None)
    where = f"variant '{label}'"
    if not isinstance(template, str) or not template:
        raise TloraBenchError(f"{where}: adapter must be a path, e.g. \"DIR/{{concept}}/adapter.safetensors\"")
    if "{concept}" not in template and len(concepts) > 1:
        raise TloraBenchError(f"{where}: adapter '{template}' names one file for {len(concepts)} concepts; put "
                              "{concept} in the path where each concept's file differs")
    bad = [k for k in raw if k in TRAIN_KEYS]
    if bad:
        raise TloraBenchError(f"{where}: '{bad[0]}' is a training option, and this variant trains nothing")
    if fmt is not None:
        from tlora_bench.adapters.formats import FORMATS

        FORMATS.get(fmt)  # an unknown format: one line with the known ones
    spec = ImportSpec(os.path.abspath(os.path.expanduser(template)), fmt, dict(raw))
    method = method or _method_of_files(spec, config.model, concepts, where)
    parsed, size = parse_method(method)
    variant = _variant(config, precision, label, parsed, size, {}, {}, concepts)
    return dataclasses.replace(variant, imported=spec)


def _method_of_files(spec: ImportSpec, model: str, concepts: list[Concept], where: str) -> str:
    """The method label ("tlora-64") of the first concept's file that exists."""
    from tlora_bench.adapters import METHODS
    from tlora_bench.adapters.formats import FORMATS, detect_format
    from tlora_bench.adapters.formats.base import source_file

    for concept in concepts:
        path = spec.path(concept.id)
        if path.exists():
            fmt = FORMATS.get(spec.format) if spec.format else detect_format(path)
            config = fmt.read(source_file(path, fmt), dict(spec.options), model).config
            size = METHODS.get(config.method).size_field
            return f"{config.method}-{getattr(config, size)}" if size else config.method
    raise TloraBenchError(f"{where}: no adapter file found for any concept (first: '{spec.path(concepts[0].id)}'); "
                          "check the path, or give method = \"<label>\" to plan without the files")


def _check_step_keys(config: RunConfig, variants: tuple[Variant, ...]) -> None:
    names = {"all", *config.methods, *(v.label for v in variants), *(v.method.name for v in variants),
             *(v.method_label for v in variants)}
    for key in config.steps:
        if key not in names:
            raise TloraBenchError(f"config key 'steps' names '{key}', which is no method of this run"
                                  f"{did_you_mean(key, names)} (methods: {', '.join(config.methods)})")


def _check_reference(config: RunConfig, jobs: tuple[Job, ...]) -> None:
    """The paired comparisons' reference is one of the run's labels (a variant's, or a seed's image label)."""
    labels = list(dict.fromkeys(name for job in jobs for name in (job.label, job.image_label)))
    if config.reference is not None and config.reference not in labels:
        raise TloraBenchError(f"config key 'reference' names '{config.reference}', which is no method of this run"
                              f"{did_you_mean(config.reference, labels)} (methods: {', '.join(labels)})")


def _steps(config: RunConfig, train: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    """The variant's own steps, else the config's for its label, method label or method name, else "all"."""
    if "steps" in train:
        return int(train["steps"])
    return next((config.steps[key] for key in (*names, "all") if key in config.steps), None)


def _job(config: RunConfig, variant: Variant, concept: Concept, seed: int, precision: str,
         manifest: str | None) -> Job:
    options = {k: v for k, v in variant.train.items() if k != "steps"}
    train = TrainSpec(
        method=variant.method_label, concept=concept.id, model=config.model, adapter=variant.adapter,
        manifest=manifest, data_dir=config.data_dir, model_path=config.model_path, vae_path=config.vae_path,
        revision=config.revision, precision=precision, steps=variant.steps, seed=seed, token=config.token,
        checkpoint_every=config.checkpoint_every, gradient_checkpointing=config.gradient_checkpointing, **options)
    sample = SampleOptions(prompts=config.prompts, images_per_prompt=config.images_per_prompt,
                           base_images=config.base_images, batch_size=config.sample_batch_size, base_seed=seed,
                           drift_images=config.drift_images, drift_prompts=config.drift_prompts)
    image_label = variant.label if len(config.seeds) == 1 else f"{variant.label}.seed{seed}"
    # The recipe depends on the seed (the adapter init's) and on nothing else a job adds to its variant.
    recipe = variant.recipe if seed == config.seeds[0] else resolve_recipe(train)
    return Job(variant.label, concept.id, seed, train, sample, image_label, recipe, variant.imported)


def job_images(job: Job, concept: Concept) -> int:
    """How many images a job generates (the prompt plan of its concept)."""
    from tlora_bench.prompts import drift_prompts, load_prompt_set, prompt_set_for

    contextual = len(load_prompt_set(prompt_set_for(concept)))
    kept = contextual + 1 if job.sample.prompts is None else min(job.sample.prompts, contextual + 1)
    drift_set = backend_spec(job.train.model).drift_prompts
    drift = job.sample.drift_images * len(drift_prompts(drift_set)[:job.sample.drift_prompts])
    return job.sample.base_images + (kept - 1) * job.sample.images_per_prompt + drift
