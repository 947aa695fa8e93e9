"""The exact judges as a run's metrics (docs/synthetic.md, "Judged metrics"): what a generated image of a
synthetic concept shows, read back from its pixels and compared with the concept's training scene and with what
its prompt asked for. Each is 1.0 or 0.0 per image, NaN where it has no value; the registry
(tlora_bench/metrics/registry.py) aggregates them as every metric, so a method's value is a share of images with
a bootstrap interval over concepts.

- judged_fidelity: the image shows the concept (its shape, colour and pattern), on every concept prompt.
- judged_background_leakage: the training background, where the prompt asked for another.
- judged_position_copying: the training position, where the prompt asked for another.
- judged_context: both the background and the position the prompt asked for.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from tlora_bench.synthetic.concepts import CLASS_WORD, concept_scene
from tlora_bench.synthetic.judges import Judged, judge
from tlora_bench.synthetic.scenes import BACKGROUNDS, POSITIONS, RESOLUTION, Scene

if TYPE_CHECKING:
    from tlora_bench.concepts.manifest import Concept
    from tlora_bench.metrics.registry import MetricInput


def applies(concept: Concept) -> bool:
    """A synthetic concept: one of tlora_bench/synthetic/concepts.py's, by id and class word."""
    return concept.class_word == CLASS_WORD and concept_scene(concept.id) is not None


def asked_context(template: str) -> tuple[str | None, str | None]:
    """The background and the position a prompt template names ("a {0} on the left, sky background"), each
    None when it names none."""
    words = template.replace(",", " ").split()
    background = next((w for w, after in itertools.pairwise(words) if after == "background" and w in BACKGROUNDS), None)
    position = next((w for w in words if w in POSITIONS), None)
    return background, position


def _judged(item: MetricInput) -> tuple[Scene, Judged]:
    """The concept's training scene and the image's judgement (each image is judged once for all four)."""
    image = item.image.convert("RGB")
    if image.size != (RESOLUTION, RESOLUTION):  # the judges read the model's own resolution
        image = image.resize((RESOLUTION, RESOLUTION))
    return concept_scene(item.concept.id), _judge_pixels(image.tobytes())


@functools.lru_cache(maxsize=16)
def _judge_pixels(pixels: bytes) -> Judged:
    return judge(np.frombuffer(pixels, dtype=np.uint8).reshape(RESOLUTION, RESOLUTION, 3))


def judged_fidelity(item: MetricInput) -> float:
    scene, seen = _judged(item)
    return float((seen.shape, seen.color, seen.pattern) == (scene.shape, scene.color, scene.pattern))


def judged_background_leakage(item: MetricInput) -> float:
    asked, _ = asked_context(item.template)
    scene, seen = _judged(item)
    return math.nan if asked in (None, scene.background) else float(seen.background == scene.background)


def judged_position_copying(item: MetricInput) -> float:
    _, asked = asked_context(item.template)
    scene, seen = _judged(item)
    return math.nan if asked in (None, scene.position) else float(seen.position == scene.position)


def judged_context(item: MetricInput) -> float:
    background, position = asked_context(item.template)
    if background is None or position is None:
        return math.nan
    _, seen = _judged(item)
    return float(seen.background == background and seen.position == position)
