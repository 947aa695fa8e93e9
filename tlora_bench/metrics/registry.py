"""The metrics a benchmark reports, in one registry: every list of metric names, labels and columns reads it.

The first six built-ins follow docs/decisions.md section 5 (IS, masked IS, DINO-IS, masked DINO-IS, TS, TS class
kept), the seventh is TS at torchmetrics' CLIPScore scale (docs/evaluation.md, "Published protocols, side by
side"); the overfitting ones (background copy, layout copy, diversity, drift) docs/evaluation.md, "Overfitting";
aggregation per concept follows section 5.5 and docs/evaluation.md. Adding a metric is one call:

    register_metric(Metric("sharpness", "sharpness", scale="variance of the Laplacian, 0..",
                           score="my_package.metrics:sharpness"))

Its per-image column, its per_prompt / per_concept / per_method rows, the leaderboard columns
`<name>_mean`, `<name>_ci_low`, `<name>_ci_high`, the report tables and the HTML page follow from that call.
Importing this module loads neither torch nor PIL (the evaluator and the report are not needed to list metrics).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.registry import Registry, resolve_object

if TYPE_CHECKING:
    from PIL import Image

    from tlora_bench.concepts.manifest import Concept

AGGREGATIONS = ("base", "contextual", "all", "drift")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Columns the tables already hold: a metric named like one would overwrite it.
RESERVED_NAMES = frozenset({
    "concept", "class_word", "method_label", "method", "rank", "template", "prompt_kind", "image_index", "seed",
    "file", "file_sha256", "ts_text", "ts_text_class_kept", "gen_mask_fallback", "n_real", "real_mask_fallbacks",
    "n_images", "gen_mask_fallbacks", "n_base_images", "n_ts_prompts", "metric", "mean", "ci_low", "ci_high",
    "n_concepts", "ci_level", "bootstrap_resamples", "bootstrap_seed", "size", "train_images", "model",
    "incomplete", "incomplete_reason", "paper_table",
})


@dataclass(frozen=True)
class MetricInput:
    """What a score hook sees for one generated image."""

    image: Image.Image  # the generated image, RGB
    path: Path  # its file
    prompt: str  # the text the model was given (images.jsonl `prompt`; else the template with "sks <class word>")
    template: str  # the prompt template with {0}, as images.jsonl holds it
    concept: Concept
    real_images: tuple[Image.Image, ...]  # the concept's readable real images (per --real-set), RGB


@dataclass(frozen=True)
class PaperColumn:
    """The column of the paper's tables (`paper_tables.csv`, docs/decisions.md section 8) a metric sits beside."""

    column: str  # e.g. "is": the report writes paper_is and is_minus_paper
    label: str  # what a reader sees, e.g. "IS"


ScoreHook = Callable[[MetricInput], float]
AppliesTo = Callable[["Concept"], bool]


@dataclass(frozen=True)
class Metric:
    """One reported metric.

    `name` is the column stem (per-image column, `metric` value in per_method.csv, leaderboard `<name>_mean`);
    `label` what a reader sees; `scale` its unit and range, in words; `higher_is_better` its direction (None: a
    diagnostic with none, such as an area ratio). `aggregation` says how a concept's score comes from its
    prompts' (each a mean over its images): "base", the base prompt's value (as IS); "contextual", the mean
    over the contextual prompts, each weighted once (as TS); "all", the mean over every prompt of the concept
    that has a value (as diversity); "drift", the mean over the drift prompts (prompts/drift.txt).
    A method's score is the mean over concepts with a bootstrap interval, for every
    metric alike. `paper`: the paper's column it is compared with, if any (at most one metric per column).
    `headline`: a column of leaderboard.md.

    `score` is None for the built-ins, which the evaluator computes from CLIP and DINO embeddings and masks. Any other
    metric needs it: a callable, or a lazy "module:attr" string imported on first use, called as
    `score(item: MetricInput) -> float` once for every readable generated image (every prompt: `aggregation`
    decides which prompts count). NaN means "no value" and is left out of the means. An exception raised by
    the hook stops the evaluation with a one-line TloraBenchError naming the metric and the image.

    `applies_to` (a callable or "module:attr", `applies_to(concept) -> bool`) limits a hook metric to the concepts
    it can score, such as the synthetic concepts' exact judges: its other concepts get no value, and a run none
    of whose concepts it applies to has no column of it at all (`metric_scope`). None: every concept.
    """

    name: str
    label: str
    higher_is_better: bool | None = True
    scale: str = ""
    aggregation: str = "base"
    paper: PaperColumn | None = None
    headline: bool = True
    score: ScoreHook | str | None = None
    applies_to: AppliesTo | str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name in RESERVED_NAMES:
            raise TloraBenchError(f"metric name {self.name!r} must be lower-case letters, digits and '_', starting "
                                  "with a letter, and not a column the tables already hold")
        if self.aggregation not in AGGREGATIONS:
            raise unknown_name_error(f"aggregation of metric '{self.name}'", self.aggregation, AGGREGATIONS)
        if isinstance(self.score, str) and ":" not in self.score:
            raise TloraBenchError(f"score hook of metric '{self.name}' must be 'module:attr', got {self.score!r}")
        if isinstance(self.applies_to, str) and ":" not in self.applies_to:
            raise TloraBenchError(f"applies_to of metric '{self.name}' must be 'module:attr', got {self.applies_to!r}")
        if self.applies_to is not None and self.builtin:
            raise TloraBenchError(f"metric '{self.name}': only a metric with a score hook can have applies_to")

    @property
    def builtin(self) -> bool:
        """Computed by the evaluator itself (no score hook)."""
        return self.score is None

    def scorer(self) -> ScoreHook:
        """The score hook, imported now if it was given as "module:attr"; a one-line error if it cannot be."""
        if self.score is None:
            raise TloraBenchError(f"metric '{self.name}' is built in: it has no score hook")
        return _load_hook(self.name, self.score) if isinstance(self.score, str) else self.score

    def applies(self, concept: Concept) -> bool:
        """Whether the metric scores this concept's images (`applies_to`; every concept without one)."""
        if self.applies_to is None:
            return True
        check = _load_hook(self.name, self.applies_to, "applies_to") if isinstance(self.applies_to, str) \
            else self.applies_to
        return bool(check(concept))

    def compute(self, item: MetricInput) -> float:
        """The hook's score of one image, as a float (NaN for a concept it does not apply to); any failure is
        one line naming the metric and the image."""
        if not self.applies(item.concept):
            return math.nan
        hook = self.scorer()
        try:
            return float(hook(item))
        except Exception as e:  # a plugin's bug must not become a traceback in the middle of an evaluation
            raise TloraBenchError(f"metric '{self.name}' failed on '{item.path}' ({_one_line(e)}); fix its score "
                                  "hook or leave the metric out") from None

    @property
    def hook_name(self) -> str:
        """Where the hook lives, for provenance: "module:attr" ('' for the built-ins)."""
        if self.score is None or isinstance(self.score, str):
            return self.score or ""
        return f"{getattr(self.score, '__module__', '?')}:{getattr(self.score, '__qualname__', repr(self.score))}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@functools.cache
def _load_hook(name: str, spec: str, what: str = "score hook") -> Callable:
    try:
        hook = resolve_object(spec, f"metric '{name}': its {what}")
    except TloraBenchError:
        raise
    except Exception as e:  # the plugin module's own import-time failure
        raise TloraBenchError(f"metric '{name}': cannot load its {what} '{spec}' ({_one_line(e)})") from None
    if not callable(hook):
        raise TloraBenchError(f"metric '{name}': its {what} '{spec}' is not callable")
    return hook


METRICS: Registry[Metric] = Registry("metric", entry_points="tlora_bench.metrics", item_type=Metric)
_BUILTINS: list[Metric] = []  # filled below; only these may come without a score hook
# The metrics with `applies_to` that the current evaluation or report holds (outside one: none of them).
_SCOPE: ContextVar[frozenset[str] | None] = ContextVar("metric_scope", default=None)


def register_metric(metric: Metric) -> Metric:
    """Add a metric after those registered so far (tables and reports list metrics in registration order)."""
    if metric.builtin and metric not in _BUILTINS:
        raise TloraBenchError(f"metric '{metric.name}' has no score hook: only the built-in metrics "
                              f"({', '.join(m.name for m in _BUILTINS)}) are computed without one")
    if metric.paper is not None and any(m.paper and m.paper.column == metric.paper.column for m in metrics()):
        raise TloraBenchError(f"metric '{metric.name}': another metric already sits beside the paper's "
                              f"'{metric.paper.column}' column")
    return METRICS.register(metric.name, metric)


def metrics(aggregation: str | None = None) -> list[Metric]:
    """The registered metrics in order, or only those aggregated as `aggregation` ("base" or "contextual"); a
    metric with `applies_to` only inside a `metric_scope` that names it."""
    scope = _SCOPE.get() or frozenset()
    every = [m for m in map(METRICS.get, METRICS.names()) if m.applies_to is None or m.name in scope]
    return every if aggregation is None else [m for m in every if m.aggregation == aggregation]


def applying_metrics(concepts: Iterable[Concept]) -> frozenset[str]:
    """The names of the metrics with `applies_to` that apply to at least one of `concepts`."""
    concepts = list(concepts)
    return frozenset(m.name for m in map(METRICS.get, METRICS.names())
                     if m.applies_to is not None and any(map(m.applies, concepts)))


@contextlib.contextmanager
def metric_scope(names: Iterable[str]) -> Iterator[None]:
    """Within the block, the metrics with `applies_to` are those in `names` only: an evaluation scopes to the
    ones that apply to its concepts, a report to those its tables hold, so a DreamBooth run's tables have no
    column for the synthetic concepts' judges."""
    token = _SCOPE.set(frozenset(names))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def metric_names(aggregation: str | None = None) -> list[str]:
    """The registered metric names (column stems) in order, optionally only one aggregation's."""
    return [m.name for m in metrics(aggregation)]


def get_metric(name: str) -> Metric:
    """A registered metric; an unknown name gets a did-you-mean error."""
    return METRICS.get(name)


def paper_metrics() -> list[Metric]:
    """The metrics set beside one of the paper's columns, in order."""
    return [m for m in metrics() if m.paper is not None]


def headline_metrics() -> list[Metric]:
    """The metrics of the short markdown leaderboard, in order."""
    return [m for m in metrics() if m.headline]


def hook_metrics() -> list[Metric]:
    """The metrics computed by a score hook, in order."""
    return [m for m in metrics() if not m.builtin]


@contextlib.contextmanager
def registered_metric(metric: Metric) -> Iterator[Metric]:
    """Register `metric` for the duration of the block only (tests): outside it, the registry is as before."""
    registered = register_metric(metric)
    try:
        yield registered
    finally:
        METRICS.unregister(metric.name)


_COSINE = "cosine similarity, -1..1"


METRICS.register_plugin = register_metric


def _builtin(metric: Metric) -> None:
    _BUILTINS.append(metric)
    register_metric(metric)


_builtin(Metric("is", "CLIP-IS", scale=_COSINE, headline=False))
_builtin(Metric("is_masked", "CLIP-IS (masked)", scale=_COSINE, paper=PaperColumn("is", "IS")))
_builtin(Metric("dino_is", "DINO-IS", scale=_COSINE, headline=False))
_builtin(Metric("dino_is_masked", "DINO-IS (masked)", scale=_COSINE, paper=PaperColumn("dino_is", "DINO-IS")))
_builtin(Metric("ts", "TS", scale=_COSINE, aggregation="contextual", paper=PaperColumn("ts", "TS")))
_builtin(Metric("ts_class_kept", "TS (class kept)", scale=_COSINE, aggregation="contextual", headline=False))
# The headline TS at torchmetrics' CLIPScore scale, for comparing with numbers reported on it (docs/evaluation.md,
# "Published protocols, side by side").
_builtin(Metric("ts_clipscore", "TS (CLIPScore scale)", scale="100 * max(cos, 0), 0..100", aggregation="contextual",
                headline=False))
# Overfitting itself (docs/evaluation.md, "Overfitting"; tlora_bench/metrics/overfitting.py).
_builtin(Metric("background_copy", "Background copy", higher_is_better=False, aggregation="contextual",
                scale="cosine similarity (DINO) of the backgrounds, -1..1"))
_builtin(Metric("layout_iou", "Layout copy (IoU)", higher_is_better=False, aggregation="contextual",
                scale="IoU of the subject masks, 0..1"))
_builtin(Metric("layout_shift", "Centroid shift", aggregation="contextual", headline=False,
                scale="distance of the mask centroids, a fraction of the image side, 0..1.41"))
_builtin(Metric("layout_area", "Area ratio", higher_is_better=None, aggregation="contextual", headline=False,
                scale="generated subject area / training subject area, 0.."))
_builtin(Metric("diversity", "Diversity", aggregation="all", scale="mean pairwise 1 - cosine (DINO), 0..2"))
_builtin(Metric("drift", "Drift", higher_is_better=False, aggregation="drift",
                scale="1 - cosine (DINO) to the base model's image, 0..2"))
# The synthetic concepts' exact judges (docs/synthetic.md, "Judged metrics"): scored only where a run holds a
# synthetic concept, so every other run's tables are as they were.
_JUDGED = "tlora_bench.metrics.judged"
_SHARE = "share of images, 0..1"
JUDGED_METRICS = ("judged_fidelity", "judged_background_leakage", "judged_position_copying", "judged_context")
for _name, _label, _better, _aggregation in zip(JUDGED_METRICS, (
        "Fidelity (judged)", "Background leakage (judged)", "Position copying (judged)", "Context followed (judged)"),
        (True, False, False, True), ("all", "contextual", "contextual", "contextual"), strict=True):
    register_metric(Metric(_name, _label, higher_is_better=_better, scale=_SHARE, aggregation=_aggregation,
                           score=f"{_JUDGED}:{_name}", applies_to=f"{_JUDGED}:applies"))
