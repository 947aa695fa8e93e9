"""From a RunConfig to jobs: method variants x concepts x base seeds, each a frozen spec with a content hash.

A variant is a label plus training and adapter options. `methods` names method labels ("tlora", "lora-64",
"oft-32") or variants declared in the config's `variants` table; a rank-sized method without a "-N" size
runs once per rank in `ranks` ("tlora" with ranks 4, 8 -> "tlora-4", "tlora-8").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tlora_bench.errors import TloraBenchError
from tlora_bench.sample import SampleOptions
from tlora_bench.train import TrainSpec

# Variant keys that are training options; every other key is an adapter option (r_min, gamma, svd_source, ...).
TRAIN_KEYS = ("steps", "lr", "weight_decay", "optimizer", "batch_size", "max_grad_norm", "timestep_range",
              "train_images")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


@dataclass(frozen=True)
class Variant:
    """One method variant of a run: the label that names its results, the method label it trains."""

    label: str  # e.g. "tlora-64", "lora-late"
    method: str  # the method label with its size, e.g. "lora-64"
    method_name: str  # the registry name, e.g. "lora"
    train: Mapping[str, Any]  # TrainSpec options
    adapter: Mapping[str, Any]  # adapter options


def _variant(config, label: str, method: str, raw: Mapping[str, Any]) -> list[Variant]:
    from tlora_bench.adapters import make_config, parse_method

    spec, size = parse_method(method)
    raw = dict(raw)
    rank = raw.pop("rank", None)
    train = {k: raw.pop(k) for k in TRAIN_KEYS if k in raw}
    if "timestep_range" in train:
        train["timestep_range"] = tuple(train["timestep_range"])
    adapter = raw
    if config.r_min is not None and spec.fixed.get("mask") and "r_min" not in adapter:
        adapter["r_min"] = config.r_min
    if rank is not None and (size is not None or spec.size_field != "r"):
        raise TloraBenchError(f"variant '{label}': 'rank' needs a rank-sized method without a size, got '{method}'")
    if size is not None or spec.size_field != "r":
        sized = [(label, method)]
    elif rank is not None:
        sized = [(label, f"{spec.name}-{rank}")]
    else:
        sized = [(f"{label}-{r}", f"{spec.name}-{r}") for r in config.ranks]
    variants = []
    for variant_label, variant_method in sized:
        try:
            make_config(variant_method, **adapter)  # every adapter option checked now, not mid-run
        except TloraBenchError as e:
            raise TloraBenchError(f"variant '{variant_label}': {e}") from None
        variants.append(Variant(variant_label, variant_method, spec.name, train, adapter))
    return variants


def expand_variants(config) -> list[Variant]:
    """Every variant the config runs, in `methods` order; labels are checked to be distinct folder names."""
    variants: list[Variant] = []
    for name in config.methods:
        if name in config.variants:
            raw = dict(config.variants[name])
            if not isinstance(raw.get("method"), str):
                raise TloraBenchError(f"config key 'variants.{name}' needs method = \"<method label>\"")
            if not _LABEL.fullmatch(name):
                raise TloraBenchError(f"variant name '{name}' must use letters, digits, '_', '-', '.'")
            variants += _variant(config, name, raw.pop("method"), raw)
        else:
            try:
                variants += _variant(config, name, name, {})
            except TloraBenchError as e:
                raise TloraBenchError(f"config key 'methods': {e}") from None
    labels = [v.label for v in variants]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise TloraBenchError(f"config key 'methods' gives the label '{twice[0]}' twice; rename a variant")
    unused = sorted(set(config.variants) - set(config.methods))
    if unused:
        raise TloraBenchError(f"variant '{unused[0]}' is declared but not listed in methods")
    return variants


@dataclass(frozen=True)
class Job:
    """Train one variant on one concept with one base seed, then sample it: the unit of work."""

    label: str
    concept: str
    seed: int
    train: TrainSpec
    sample: SampleOptions
    image_label: str  # the method folder of its images: the label, plus ".seed<N>" when a run has several seeds

    @property
    def id(self) -> str:
        return f"{self.label}/{self.concept}/seed-{self.seed}"

    @property
    def folder(self) -> PurePosixPath:
        return PurePosixPath("jobs", self.label, self.concept, f"seed-{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "concept": self.concept, "seed": self.seed, "image_label": self.image_label,
                "train": self.train.to_dict(), "sample": dataclasses.asdict(self.sample)}

    @property
    def key(self) -> str:
        """A content hash of everything that decides the job's results."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _steps(config, variant: Variant) -> int | None:
    if "steps" in variant.train:
        return int(variant.train["steps"])
    for key in (variant.label, variant.method, variant.method_name, "all"):
        if key in config.steps:
            return config.steps[key]
    return None


def plan_jobs(config) -> list[Job]:
    """One job per (variant, concept, base seed), variant-major."""
    from tlora_bench.concepts import select_concepts

    _, concepts = select_concepts(config.concepts)
    manifest_path = config.concepts if config.concepts.endswith(".toml") else None
    jobs = []
    for variant in expand_variants(config):
        options = {k: v for k, v in variant.train.items() if k != "steps"}
        for concept in concepts:
            for seed in config.seeds:
                train = TrainSpec(
                    method=variant.method, concept=concept.id, model=config.model, adapter=variant.adapter,
                    manifest=str(Path(manifest_path).resolve()) if manifest_path else None, data_dir=config.data_dir,
                    model_path=config.model_path, vae_path=config.vae_path, revision=config.revision,
                    precision=config.precision, steps=_steps(config, variant), seed=seed, token=config.token,
                    checkpoint_every=config.checkpoint_every, gradient_checkpointing=config.gradient_checkpointing,
                    **options)
                sample = SampleOptions(prompts=config.prompts, images_per_prompt=config.images_per_prompt,
                                       base_images=config.base_images, batch_size=config.sample_batch_size,
                                       base_seed=seed)
                image_label = variant.label if len(config.seeds) == 1 else f"{variant.label}.seed{seed}"
                jobs.append(Job(variant.label, concept.id, seed, train, sample, image_label))
    return jobs


def resolved_variants(config) -> dict[str, dict[str, Any]]:
    """What each variant trains with once the method's and the model's defaults are applied (`tlora-bench
    config` shows it): the values a reader of config.json alone would have to look up."""
    from tlora_bench.train import resolve_recipe

    resolved: dict[str, dict[str, Any]] = {}
    for job in plan_jobs(config):
        if job.label in resolved:
            continue
        recipe = resolve_recipe(job.train)
        entry = {"method": recipe.label, "steps": recipe.steps, "optimizer": recipe.optimizer, "lr": recipe.lr,
                 "weight_decay": recipe.weight_decay}
        if getattr(recipe.adapter_config, "mask", False):  # T-LoRA's rank schedule
            entry["r_min"] = recipe.adapter_config.r_min
        resolved[job.label] = entry
    return resolved


def job_images(job: Job, concept) -> int:
    """How many images a job generates (the prompt plan of its concept)."""
    from tlora_bench.prompts import load_prompt_set, prompt_set_for

    contextual = len(load_prompt_set(prompt_set_for(concept)))
    kept = contextual + 1 if job.sample.prompts is None else min(job.sample.prompts, contextual + 1)
    return job.sample.base_images + (kept - 1) * job.sample.images_per_prompt
