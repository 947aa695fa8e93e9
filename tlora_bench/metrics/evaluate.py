"""`tlora-bench evaluate DIR`: score a folder of generated images and write per-image rows and aggregates.

Protocol: docs/decisions.md section 5 and docs/evaluation.md. Flow: find DIR/<method>/<concept>/images.jsonl ->
embed the concept's real images and the generated ones (cached) -> one row per generated image -> aggregate
per prompt, concept and method -> write Parquet/CSV files and evaluation.json (last, atomically).
"""

from __future__ import annotations

import functools
import io
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from tlora_bench.concepts.manifest import Concept, Manifest
from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.fileio import atomic_write_bytes, atomic_write_text, check_writable
from tlora_bench.layout import (
    BASE_MODEL_DIR,
    EVALUATION_DIR,
    EVALUATION_FILE,
    PER_METHOD_FILE,
    SCORES_FILE,
    ImageRecord,
    IndexedFolder,
    find_base_images,
    find_indexed_folders,
)
from tlora_bench.limits import check_bootstrap, check_seed
from tlora_bench.metrics import aggregate
from tlora_bench.metrics.cache import CACHE_DIRNAME, FeatureCache
from tlora_bench.metrics.extractors import EXTRACTORS, load_extractor, resolve_device, resolve_dtype
from tlora_bench.metrics.features import FeatureBank, ImageRef, read_image
from tlora_bench.metrics.names import CLIP_EXTRACTOR, DEFAULT_DINO, DEFAULT_SEGMENTER, DINO_EXTRACTORS
from tlora_bench.metrics.overfitting import GRID, background_copy, diversity, drift, layout_copy
from tlora_bench.metrics.registry import (
    MetricInput,
    applying_metrics,
    hook_metrics,
    metric_names,
    metric_scope,
    metrics,
)
from tlora_bench.metrics.scores import (
    TS_HEADLINE,
    TS_VARIANTS,
    clipscore_scale,
    per_image_similarity,
    text_similarity,
    ts_texts,
)
from tlora_bench.metrics.segmenters import (
    MASK_FILL_NAME,
    SEGMENTERS,
    load_segmenter,
    sibling_mask_file,
)
from tlora_bench.prompts import base_template, format_prompt, subject_phrase
from tlora_bench.provenance import device_info, package_version, software

REAL_SETS = ("all", "train")
SEGMENTER_WEIGHTS = ("grounding-dino", "sam")
OUTPUT_FILES = ("scores.parquet", SCORES_FILE, "per_prompt.csv", "per_concept.csv", PER_METHOD_FILE, EVALUATION_FILE)
OVERFITTING_METRICS = ("background_copy", "layout_iou", "layout_shift", "layout_area", "diversity", "drift")
# The built-in TS metrics and the text variant each scores (docs/decisions.md section 5.4).
TS_METRIC_VARIANTS = {"ts": TS_HEADLINE, "ts_class_kept": "class_kept"}


@dataclass(frozen=True)
class EvalOptions:
    """Every choice that changes the numbers; all of them are recorded in each result row."""

    segmenter: str = DEFAULT_SEGMENTER  # masks for masked IS / DINO-IS (grabcut: the offline default)
    dino: str = DEFAULT_DINO  # DINO v1 ViT-S/16 (docs/decisions.md section 5, Decision) or dinov2-vits14
    real_set: str = "all"  # every image of the concept (Decision), or "train": the training image only
    device: str = "auto"
    dtype: str = "fp32"
    batch_size: int = 16
    bootstrap: int = 1000  # resamples of the interval over concepts
    seed: int = 0  # bootstrap seed
    tiny_models: bool = False  # random tiny extractors: smoke runs and tests only, numbers are meaningless
    weights: Mapping[str, str] = field(default_factory=dict)  # extractor or segmenter model -> local copy

    def check(self) -> None:
        SEGMENTERS.get(self.segmenter)
        if self.dino not in DINO_EXTRACTORS and (self.dino not in EXTRACTORS or self.dino == CLIP_EXTRACTOR):
            raise unknown_name_error("DINO extractor", self.dino, DINO_EXTRACTORS)  # or one a plugin registers
        if self.real_set not in REAL_SETS:
            raise unknown_name_error("real set", self.real_set, REAL_SETS)
        if self.batch_size < 1 or self.bootstrap < 1:
            raise TloraBenchError("--batch-size and --bootstrap must be at least 1")
        check_bootstrap(self.bootstrap, "--bootstrap")
        check_seed(self.seed, "--seed")  # checked now: the bootstrap runs only after every image is scored
        resolve_dtype(self.dtype)
        for name in self.weights:
            if name not in EXTRACTORS and name not in SEGMENTER_WEIGHTS:
                raise unknown_name_error("model for --weights", name, [*EXTRACTORS, *SEGMENTER_WEIGHTS])


@dataclass
class EvalResult:
    out_dir: Path
    scores: pd.DataFrame
    per_prompt: pd.DataFrame
    per_concept: pd.DataFrame
    per_method: pd.DataFrame
    problems: list[str]  # every line reported through on_problem
    unavailable: dict[str, str]  # metric -> why it has no value at all (its cells are empty)
    unreadable_files: list[str]  # generated or real image files that could not be read, left out
    provenance: dict[str, Any]
    cache_hits: int = 0
    cache_misses: int = 0
    n_listed: int = 0  # generated images the images.jsonl files list; those not in `scores` were not scored
    n_real_listed: int = 0  # real images the scored concepts list (per --real-set)
    n_real_unreadable: int = 0

    @property
    def n_unscored(self) -> int:
        return self.n_listed - len(self.scores)

    @property
    def complete(self) -> bool:
        """Every listed generated image and every real image was read and scored."""
        return self.n_unscored == 0 and self.n_real_unreadable == 0


@dataclass
class _RealSet:
    """A concept's real-image embeddings (unreadable images dropped) and how many masks fell back."""

    features: dict[str, np.ndarray]  # "is", "is_masked", "dino_is", "dino_is_masked" -> (n_real, d)
    n_real: int
    mask_fallbacks: int
    n_listed: int = 0  # real images asked for; n_listed - n_real could not be read
    images: tuple[Image.Image, ...] = ()  # the readable ones, RGB, read only when a metric has a score hook
    train_background: np.ndarray | None = None  # (d,) DINO embedding of the training image's background
    train_grid: np.ndarray | None = None  # its subject mask on the layout grid (None: no mask to compare)


class _Scorer:
    """Holds the loaded models and the feature bank for one evaluation run."""

    def __init__(self, options: EvalOptions, out_dir: Path, on_problem: Callable[[str], None]) -> None:
        self.options = options
        device = str(resolve_device(options.device))
        weights = dict(options.weights)
        self.clip = load_extractor(CLIP_EXTRACTOR, device=device, dtype=options.dtype,
                                   weights=weights.get(CLIP_EXTRACTOR), tiny=options.tiny_models)
        self.dino = load_extractor(options.dino, device=device, dtype=options.dtype,
                                   weights=weights.get(options.dino), tiny=options.tiny_models)
        self.segmenter = load_segmenter(options.segmenter, weights=weights, device=device, dtype=options.dtype)
        self.bank = FeatureBank(FeatureCache(out_dir / CACHE_DIRNAME), self.segmenter, options.batch_size,
                                on_problem)
        self.device = device
        self._texts: dict[str, np.ndarray] = {}
        self.base_images: dict[tuple[str, int | None], Path] = {}  # drift: (prompt, seed) -> base model image
        self.base_folder: Path | None = None

    @property
    def masks(self) -> bool:
        """Whether images get subject masks (the `none` segmenter gives none: no layout or background copy)."""
        return self.options.segmenter != "none"

    def _mask_file(self, provided: Path | None) -> Path | None:
        # A provided mask beats the segmenter, except with `none`, which masks nothing (docs/evaluation.md).
        return None if self.options.segmenter == "none" else provided

    def _embed_all(self, refs: list[ImageRef], clip: np.ndarray | None = None) -> tuple[dict[str, np.ndarray],
                                                                                         np.ndarray]:
        """The four IS embeddings of the same images (`clip`: unmasked CLIP ones already computed), and the
        masked-fallback flags."""
        out = {"is": clip if clip is not None else self.bank.features(self.clip, refs, masked=False)[0],
               "dino_is": self.bank.features(self.dino, refs, masked=False)[0]}
        if self.options.segmenter == "none":  # nothing is masked: masked features are the unmasked ones
            out["is_masked"], out["dino_is_masked"] = out["is"], out["dino_is"]
            return out, np.zeros(len(refs), dtype=bool)
        out["is_masked"], fallback = self.bank.features(self.clip, refs, masked=True)
        out["dino_is_masked"] = self.bank.features(self.dino, refs, masked=True)[0]
        self.bank.forget_masks()  # a mask serves both extractors, then goes: memory stays bounded
        return out, fallback

    def real_set(self, concept: Concept, data_root: Path | None) -> _RealSet:
        # Real images are read only from inside the concept folder: a symlink out of it is a one-line error.
        paths = [concept.train_image_path(data_root)] if self.options.real_set == "train" \
            else concept.image_paths(data_root)
        folder = concept.dir(data_root)
        refs = [ImageRef(path, concept.class_word, self._mask_file(concept.mask_path(data_root, path.name)),
                         folder=folder)
                for path in paths]
        features, fallback = self._embed_all(refs)
        ok = ~np.isnan(features["is"]).any(axis=1)
        # Read once per concept, not per generated image; only score hooks need the pixels.
        images = _read_images([ref.path for ref, good in zip(refs, ok, strict=True) if good]) \
            if hook_metrics() else ()
        background, grid = self._train_layout(concept, data_root)
        return _RealSet({k: v[ok] for k, v in features.items()}, int(ok.sum()), int(fallback[ok].sum()),
                        len(refs), images, background, grid)

    def _train_layout(self, concept: Concept, data_root: Path | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The training image's background embedding and subject mask grid, what copying is measured against;
        (None, None) without masks, or when its subject cannot be found or the image read (one problem line)."""
        if not self.masks:
            return None, None
        path = concept.train_image_path(data_root)
        ref = ImageRef(path, concept.class_word, self._mask_file(concept.mask_path(data_root, path.name)),
                       folder=concept.dir(data_root))
        grid = self.bank.mask_grids([ref])[0]
        background = self.bank.features(self.dino, [ref], masked=True, background=True)[0][0]
        self.bank.forget_masks()
        if grid is None or np.isnan(background).any():
            return None, None
        if not grid.any():
            self.bank.on_problem(f"concept '{concept.id}': no subject found in the mask of its training image "
                                 f"'{path.name}', so its layout and background copy are empty")
            return None, None
        return background, grid

    def text_features(self, texts: list[str]) -> dict[str, np.ndarray]:
        missing = sorted({t for t in texts if t not in self._texts})
        for start in range(0, len(missing), self.options.batch_size):
            chunk = missing[start:start + self.options.batch_size]
            self._texts.update(zip(chunk, self.clip.encode_texts(chunk), strict=True))
        return {t: self._texts[t] for t in texts}

    def score_folder(self, indexed: IndexedFolder, concept: Concept, real: _RealSet, images_dir: Path) -> list[dict]:
        """One row per readable generated image of one DIR/<method>/<concept> folder."""
        records = indexed.records
        refs = [ImageRef(indexed.folder / r.file, concept.class_word,
                         self._mask_file(sibling_mask_file(indexed.folder / r.file)), folder=indexed.folder)
                for r in records]
        clip_all = self.bank.features(self.clip, refs, masked=False)[0]
        readable = ~np.isnan(clip_all).any(axis=1)
        similarity, fallback = self._image_similarity(records, refs, clip_all, readable, real)
        overfitting = self._overfitting(records, refs, readable, real)
        variants = {r.template: ts_texts(r.template, concept.class_word) for r in records}
        texts = self.text_features([v[name] for v in variants.values() for name in TS_VARIANTS])
        rows = []
        for i, record in enumerate(records):
            if not readable[i]:
                continue  # unreadable: already reported by the feature bank
            ts = {metric: float(text_similarity(texts[variants[record.template][name]], clip_all[i:i + 1])[0])
                  if record.kind == "concept" else float("nan") for metric, name in TS_METRIC_VARIANTS.items()}
            ts["ts_clipscore"] = float(clipscore_scale(ts["ts"]))  # the same text, image and model as TS
            builtin = {**{metric: float(values[i]) for metric, values in {**similarity, **overfitting}.items()},
                       **ts}
            rows.append({
                "concept": concept.id, "class_word": concept.class_word, "method_label": indexed.method_label,
                "method": record.method or indexed.method_label, "rank": record.rank, "template": record.template,
                "prompt_kind": _prompt_kind(record),
                "image_index": record.image_index, "seed": record.seed,
                "file": (indexed.folder / record.file).relative_to(images_dir).as_posix(),
                "file_sha256": self.bank.file_sha256(refs[i].path),
                **_metric_scores(builtin, functools.partial(_hook_input, refs[i].path, record, concept, real)),
                "ts_text": variants[record.template][TS_HEADLINE],
                "ts_text_class_kept": variants[record.template]["class_kept"],
                "gen_mask_fallback": bool(fallback[i]), "n_real": real.n_real,
                "real_mask_fallbacks": real.mask_fallbacks,
            })
        return rows

    def _overfitting(self, records: tuple[ImageRecord, ...], refs: list[ImageRef], readable: np.ndarray,
                     real: _RealSet) -> dict[str, np.ndarray]:
        """Each overfitting metric of every record (overfitting.py), NaN where it has no value."""
        n = len(records)
        out = {name: np.full(n, np.nan) for name in OVERFITTING_METRICS}
        dino_all = self.bank.features(self.dino, refs, masked=False)[0]
        by_template: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            if readable[i] and record.kind == "concept":
                by_template.setdefault(record.template, []).append(i)
        for rows in by_template.values():
            out["diversity"][rows] = diversity(dino_all[rows])
        contextual = [i for t, rows in by_template.items() if t != base_template() for i in rows]
        if contextual and real.train_grid is not None:
            grids = self.bank.mask_grids([refs[i] for i in contextual])
            for i, grid in zip(contextual, grids, strict=True):
                if grid is not None:
                    out["layout_iou"][i], out["layout_shift"][i], out["layout_area"][i] = layout_copy(
                        grid, real.train_grid)
            backgrounds = self.bank.features(self.dino, [refs[i] for i in contextual], masked=True, background=True)[0]
            self.bank.forget_masks()
            out["background_copy"][contextual] = background_copy(real.train_background, backgrounds)
        pairs = [(i, self.base_images.get((r.template, r.seed))) for i, r in enumerate(records)
                 if readable[i] and r.kind == "drift"]
        pairs = [(i, path) for i, path in pairs if path is not None]
        if pairs:
            base = self.bank.features(self.dino, [ImageRef(path, "", folder=self.base_folder) for _, path in pairs],
                                      masked=False)[0]
            rows = [i for i, _ in pairs]
            out["drift"][rows] = drift(base, dino_all[rows])
        return out

    def _image_similarity(self, records: tuple[ImageRecord, ...], refs: list[ImageRef], clip_all: np.ndarray,
                          readable: np.ndarray, real: _RealSet) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each image metric of every record (NaN but for readable base-prompt images), and mask fallbacks."""
        base = base_template()
        base_rows = [i for i, r in enumerate(records) if r.template == base and readable[i]]
        similarity = {name: np.full(len(records), np.nan) for name in real.features}
        fallback = np.zeros(len(records), dtype=bool)
        if base_rows and real.n_real:
            generated, flags = self._embed_all([refs[i] for i in base_rows], clip_all[base_rows])
            fallback[base_rows] = flags
            for name in similarity:
                similarity[name][base_rows] = per_image_similarity(real.features[name], generated[name])
        return similarity, fallback

    def provenance(self, manifest: Manifest) -> dict[str, Any]:
        segmenter = self.options.segmenter
        hooks = hook_metrics()
        return {
            **software(), "opencv_version": package_version("opencv-python-headless", "opencv-python"),
            **device_info(self.device), "dtype": self.options.dtype,
            "clip_extractor": self.clip.name, "clip_weights": self.clip.weights,
            "clip_architecture": self.clip.architecture, "clip_preprocess": self.clip.preprocess_id,
            "dino_extractor": self.dino.name, "dino_weights": self.dino.weights,
            "dino_architecture": self.dino.architecture, "dino_preprocess": self.dino.preprocess_id,
            "tiny_models": self.options.tiny_models,
            "segmenter": segmenter, "segmenter_identity": self.segmenter.identity,
            "real_masks": "none" if segmenter == "none" else f"provided mask files, else {segmenter}",
            "mask_fill": MASK_FILL_NAME, "real_set": self.options.real_set,
            "ts_headline": TS_HEADLINE, "ts_variants": ",".join(TS_VARIANTS),
            "overfitting_features": self.dino.name, "layout_grid": f"{GRID}x{GRID}, centre-cropped square",
            "training_image": "the concept's first training image, its mask as for the real images",
            "manifest": manifest.name, "base_template": base_template(),
            # Only with score hooks, so the columns of a built-in evaluation stay as they were.
            **({"metric_hooks": ",".join(f"{m.name}={m.hook_name}" for m in hooks)} if hooks else {}),
        }


def _prompt_kind(record: ImageRecord) -> str:
    if record.kind == "drift":
        return "drift"
    return "base" if record.template == base_template() else "contextual"


def _unavailable(scores: pd.DataFrame, scorer: _Scorer) -> dict[str, str]:
    """Why each metric without a single value has none: its cells are empty, never zero."""
    kinds = set(scores["prompt_kind"])
    masks = "segmenter 'none' makes no masks (choose grabcut, provided or grounded-sam)" if not scorer.masks \
        else "no subject was found in any training image's mask"
    reasons = {
        "background_copy": "no contextual-prompt image" if "contextual" not in kinds else masks,
        "diversity": "every prompt has one image: diversity needs two or more images of a prompt",
        "drift": "no base-model image of the drift prompts (DIR/_base_model/seed-<s>/images.jsonl; `run` makes "
                 "them unless drift_images = 0)" if "drift" in kinds else
                 "no drift images (images.jsonl lines of kind 'drift'; `run` makes them unless drift_images = 0)",
    }
    for name in ("layout_iou", "layout_shift", "layout_area"):
        reasons[name] = reasons["background_copy"]
    if scores["layout_iou"].notna().any():
        reasons["layout_shift"] = "no generated image's mask holds a subject, so there is no centroid to compare"
    found = {}
    for metric in metrics():
        if metric.name in scores and scores[metric.name].notna().any():
            continue
        fallback = "no image of the prompts it is computed on" if metric.builtin else "its score hook gave no value"
        found[metric.name] = reasons.get(metric.name, fallback)
    return found


def _read_images(paths: list[Path]) -> tuple[Image.Image, ...]:
    """The images that can be read (the feature bank has already reported those that cannot)."""
    return tuple(image for image in map(read_image, paths) if not isinstance(image, str))


def _hook_input(path: Path, record: ImageRecord, concept: Concept, real: _RealSet) -> MetricInput:
    image = read_image(path)
    if isinstance(image, str):  # its features came from the cache, but the file no longer decodes
        raise TloraBenchError(f"cannot read image '{path}' ({image}) for the metrics with a score hook; "
                              "restore it and evaluate again")
    prompt = record.prompt or format_prompt(record.template, subject_phrase(concept))
    return MetricInput(image, path, prompt, record.template, concept, real.images)


def _metric_scores(builtin: Mapping[str, float], item: Callable[[], MetricInput]) -> dict[str, float]:
    """Every registered metric's score of one image, in registry order: built-ins from `builtin`, the others
    from their score hook (the image is read once, and only if a hook needs it)."""
    given = item() if hook_metrics() else None
    return {m.name: builtin[m.name] if m.builtin or given is None else m.compute(given) for m in metrics()}


def _write_outputs(result: EvalResult, images_dir: Path) -> None:
    out = result.out_dir
    buffer = io.BytesIO()
    result.scores.to_parquet(buffer, index=False)
    atomic_write_bytes(out / "scores.parquet", buffer.getvalue())
    for name, table in (("scores", result.scores), ("per_prompt", result.per_prompt),
                        ("per_concept", result.per_concept), ("per_method", result.per_method)):
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    summary = {"images_dir": str(images_dir), "n_scored": len(result.scores), "complete": result.complete,
               "n_listed": result.n_listed, "n_unscored": result.n_unscored,
               "n_real_listed": result.n_real_listed, "n_real_unreadable": result.n_real_unreadable,
               "problems": result.problems, "unavailable": result.unavailable,
               "unreadable_files": result.unreadable_files,
               "provenance": result.provenance, "files": list(OUTPUT_FILES)}
    atomic_write_text(out / EVALUATION_FILE, json.dumps(summary, indent=2) + "\n")  # last: the done marker


def _with_provenance(table: pd.DataFrame, provenance: dict[str, Any]) -> pd.DataFrame:
    return table.assign(**provenance)


def _checked_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """Provenance columns go into every table: a metric of the same name would be overwritten by one."""
    clash = [name for name in metric_names() if name in provenance]
    if clash:
        raise TloraBenchError(f"metric '{clash[0]}' has the name of a provenance column; register it under "
                              "another name")
    return provenance


def evaluate_folder(images_dir: str | Path, *, manifest: Manifest, data_root: Path | None,
                    out_dir: str | Path | None = None, options: EvalOptions | None = None,
                    on_problem: Callable[[str], None] | None = None) -> EvalResult:
    """Score every DIR/<method>/<concept>/images.jsonl against the manifest's real images.

    Unreadable images are reported through `on_problem` (one line each) and left out; if nothing at all can
    be scored, a TloraBenchError says so. Outputs go to `out_dir` (default DIR/evaluation). The metrics with
    `applies_to` are those that apply to a concept of the manifest (`metric_scope`).
    """
    with metric_scope(applying_metrics(manifest.concepts.values())):
        return _evaluate_folder(Path(images_dir), manifest, data_root, out_dir, options, on_problem)


def _evaluate_folder(images_dir: Path, manifest: Manifest, data_root: Path | None, out_dir: str | Path | None,
                     options: EvalOptions | None, on_problem: Callable[[str], None] | None) -> EvalResult:
    from tlora_bench.threads import adapt_cpu_threads

    options = options or EvalOptions()
    options.check()
    for metric in hook_metrics():
        metric.scorer()  # a hook that cannot be imported fails now, before any model loads
    adapt_cpu_threads(small=options.tiny_models)  # one thread for tiny extractors (tlora_bench/threads.py)
    out_dir = Path(out_dir) if out_dir else images_dir / EVALUATION_DIR
    folders = find_indexed_folders(images_dir, skip=[out_dir])
    # Each resample draws one value per concept of a method: their number bounds how many fit in memory.
    check_bootstrap(options.bootstrap, "--bootstrap", max(Counter(f.method_label for f in folders).values(), default=1))
    check_writable(out_dir / CACHE_DIRNAME)  # before any model loads, and before the old results are let go
    # Old results must not look finished if this run stops half-way: evaluation.json is the done marker.
    (out_dir / EVALUATION_FILE).unlink(missing_ok=True)
    concepts = {f.concept_id: manifest.get(f.concept_id) for f in folders}
    problems: list[str] = []

    def report(message: str) -> None:
        problems.append(message)
        if on_problem:
            on_problem(message)

    scorer = _Scorer(options, out_dir, report)
    scorer.base_images, scorer.base_folder = find_base_images(images_dir), images_dir / BASE_MODEL_DIR
    provenance = _checked_provenance(scorer.provenance(manifest))
    rows: list[dict] = []
    n_real_listed = n_real_read = 0
    for concept_id in sorted(concepts):
        concept = concepts[concept_id]
        real = scorer.real_set(concept, data_root)
        n_real_listed, n_real_read = n_real_listed + real.n_listed, n_real_read + real.n_real
        if real.n_real == 0:
            report(f"concept '{concept_id}': no readable real image, so IS and DINO-IS are empty for it")
        for indexed in (f for f in folders if f.concept_id == concept_id):
            rows += scorer.score_folder(indexed, concept, real, images_dir)
    if not rows:
        first = f" (first problem: {problems[0]})" if problems else ""
        raise TloraBenchError(f"no generated image under '{images_dir}' could be scored{first}")
    scores = pd.DataFrame(rows)
    scores["rank"] = scores["rank"].astype("Int64")
    scores["seed"] = scores["seed"].astype("Int64")
    prompts = aggregate.per_prompt(scores)
    concepts_table = aggregate.per_concept(prompts)
    methods = aggregate.per_method(concepts_table, options.bootstrap, options.seed)
    tables = [_with_provenance(t, provenance) for t in (scores, prompts, concepts_table, methods)]
    unreadable = [str(path) for path in scorer.bank.problems]
    unavailable = _unavailable(scores, scorer)
    result = EvalResult(out_dir, *tables, problems, unavailable, unreadable, provenance, scorer.bank.cache.hits,
                        scorer.bank.cache.misses, n_listed=sum(len(f.records) for f in folders),
                        n_real_listed=n_real_listed, n_real_unreadable=n_real_listed - n_real_read)
    _write_outputs(result, images_dir)
    return result


def parse_weights(assignments: tuple[str, ...] | list[str]) -> dict[str, str]:
    """--weights NAME=PATH values as a mapping; the names are checked by EvalOptions.check."""
    weights = {}
    for item in assignments:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise TloraBenchError(f"--weights expects NAME=PATH, e.g. clip-vit-b-32=/models/clip, got {item!r}")
        weights[name.strip()] = path.strip()
    return weights


def format_done(result: EvalResult) -> str:
    """The closing lines: how many images were scored, how many were left out, where the files are."""
    skipped = len(result.unreadable_files)
    note = f"; {skipped} unreadable files (listed above and in evaluation.json)" if skipped else ""
    return (f"scored {len(result.scores)} images of {result.scores['method_label'].nunique()} methods and "
            f"{result.scores['concept'].nunique()} concepts{note}\n"
            f"image features: {result.cache_misses} computed, {result.cache_hits} from the cache\n"
            f"wrote {', '.join(OUTPUT_FILES)} to {result.out_dir}")


def incomplete_message(result: EvalResult) -> str | None:
    """One line for an evaluation that left images out (exit status EXIT_INCOMPLETE), or None when complete."""
    if result.complete:
        return None
    parts = []
    if result.n_unscored:
        parts.append(f"{result.n_unscored} of {result.n_listed} listed images are missing or unreadable")
    if result.n_real_unreadable:
        parts.append(f"{result.n_real_unreadable} of {result.n_real_listed} real images are missing or unreadable")
    return f"{' and '.join(parts)}; scored the rest; see {result.out_dir / 'evaluation.json'}"


def _format_cell(row: pd.Series) -> str:
    if np.isnan(row["mean"]):
        return "-"
    return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def format_summary(result: EvalResult) -> str:
    """A plain-text table of per-method means with their intervals, for the terminal."""
    table = result.per_method
    lines = []
    names = list(dict.fromkeys(table["metric"]))  # the evaluation's metrics, in registry order
    header = f"{'method':<24} {'rank':>5}  " + "  ".join(f"{m:<22}" for m in names) + "  concepts"
    lines.append(header)
    for keys, group in table.groupby(aggregate.METHOD_KEYS, dropna=False, sort=True):
        label, _, rank = keys
        cells = {row["metric"]: _format_cell(row) for _, row in group.iterrows()}
        n = int(group["n_concepts"].max())
        rank_text = "-" if pd.isna(rank) else str(int(rank))
        lines.append(f"{label:<24} {rank_text:>5}  " + "  ".join(f"{cells[m]:<22}" for m in names)
                     + f"  {n}")
    level = round(float(table["ci_level"].iloc[0]) * 100)
    lines.append(f"mean [{level}% bootstrap interval over concepts]; headline TS: prompt without the class word")
    if result.provenance["tiny_models"]:
        lines.append("tiny random extractors (--tiny-models): these numbers only show that the pipeline runs")
    return "\n".join(lines)
