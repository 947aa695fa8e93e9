"""The names of the feature extractors and segmenters, readable without torch (config checks, help texts).

docs/decisions.md section 5: CLIP ViT-B/32 for IS and TS, DINO v1 ViT-S/16 (the default) or DINOv2 ViT-S/14 for
DINO-IS. extractors.py registers its models under these names; the segmenter names are those segmenters.py
registers (numpy and PIL, no torch).
"""

from __future__ import annotations

from tlora_bench.registry import Registry

CLIP_EXTRACTOR = "clip-vit-b-32"
DINO_EXTRACTORS = ("dino-vits16", "dinov2-vits14")
DEFAULT_DINO = "dino-vits16"
DEFAULT_SEGMENTER = "grabcut"  # every run; choose grounded-sam (GPU runs, hub weights) with --segmenter


def dino_names() -> list[str]:
    """The DINO extractors `--dino` (and a run's `dino` key) accept."""
    return list(DINO_EXTRACTORS)


# name -> "module:factory", factory(weights, device, dtype) imported when a segmenter is built; weights maps
# "grounding-dino" / "sam" to a local copy or hub id.
SEGMENTERS: Registry[str] = Registry("segmenter")
SEGMENTERS.register("grabcut", "tlora_bench.metrics.segmenters:_grabcut")
SEGMENTERS.register("provided", "tlora_bench.metrics.segmenters:_provided")
SEGMENTERS.register("grounded-sam", "tlora_bench.metrics.segmenters:_grounded_sam")
SEGMENTERS.register("none", "tlora_bench.metrics.segmenters:_none")


def segmenter_names() -> list[str]:
    """The segmenters `--segmenter` (and a run's `segmenter` key) accept, in registration order."""
    return SEGMENTERS.names()


__all__ = ["CLIP_EXTRACTOR", "DEFAULT_DINO", "DEFAULT_SEGMENTER", "DINO_EXTRACTORS", "SEGMENTERS", "dino_names",
           "segmenter_names"]
