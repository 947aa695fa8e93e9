"""Foreground segmenters for masked IS and DINO-IS, pluggable by name, and the black-fill masking itself.

docs/decisions.md section 5, Decision: the background is filled with black, no crop, same resolution; masks come
from a segmenter prompted with the class word, or from mask files provided beside real images. A segmenter
maps (RGB image, class word) to a boolean (H, W) mask, True = object; an empty mask means "found nothing".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from tlora_bench.concepts.manifest import MASK_SUFFIX
from tlora_bench.metrics.names import SEGMENTERS
from tlora_bench.registry import resolve_object

MASK_FILL = (0, 0, 0)  # black (docs/decisions.md section 5, Decision)
MASK_FILL_NAME = "black"


class Segmenter(Protocol):
    name: str

    @property
    def identity(self) -> str:
        """Everything that changes its masks (method, parameters, model weights): part of feature cache keys."""

    def segment(self, image: Image.Image, class_word: str) -> np.ndarray: ...


def apply_mask(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The image with every background pixel (mask False) set to black; object pixels are untouched."""
    pixels = np.asarray(image.convert("RGB"))
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"mask of shape {mask.shape} does not match image of shape {pixels.shape[:2]}")
    out = pixels.copy()
    out[~mask] = MASK_FILL
    return Image.fromarray(out, mode="RGB")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree perfectly (1.0)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def sibling_mask_file(image_path: Path) -> Path | None:
    """The `provided` convention: '<stem>_mask.png' beside the image (white = object), as for real images."""
    path = image_path.with_name(f"{image_path.stem}{MASK_SUFFIX}")
    return path if path.is_file() else None


class NoneSegmenter:
    """No masking: the whole image is the object, so masked scores equal unmasked ones."""

    name = "none"
    identity = "none"

    def segment(self, image: Image.Image, class_word: str) -> np.ndarray:
        return np.ones((image.height, image.width), dtype=bool)


class ProvidedSegmenter:
    """Mask files only. The evaluator reads '<stem>_mask.png' beside an image before calling a segmenter, so
    this is only called for images without one: it finds nothing, and such an image is scored unmasked."""

    name = "provided"
    identity = "provided"

    def segment(self, image: Image.Image, class_word: str) -> np.ndarray:
        return np.zeros((image.height, image.width), dtype=bool)


class GrabCutSegmenter:
    """OpenCV GrabCut from a rectangle inset by `margin` on each side: no weights, no class word, CPU only.

    It assumes the object is roughly centered and does not fill the whole frame, as in a "photo of a {0}".
    The image is downscaled so that its longer side is `max_side` (GrabCut's cost grows with pixels), and the
    mask is scaled back with linear interpolation, thresholded at one half.
    """

    name = "grabcut"

    def __init__(self, max_side: int = 256, margin: float = 0.05, iterations: int = 5) -> None:
        self.max_side, self.margin, self.iterations = max_side, margin, iterations

    @property
    def identity(self) -> str:
        import cv2

        return (f"grabcut(max_side={self.max_side},margin={self.margin},iterations={self.iterations},"
                f"opencv={cv2.__version__})")

    def segment(self, image: Image.Image, class_word: str) -> np.ndarray:
        import cv2

        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = rgb if scale == 1.0 else cv2.resize(
            rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        mx, my = max(1, round(sw * self.margin)), max(1, round(sh * self.margin))
        if sw - 2 * mx < 2 or sh - 2 * my < 2:
            return np.zeros((height, width), dtype=bool)  # too small to hold a rectangle: found nothing
        labels = np.zeros((sh, sw), dtype=np.uint8)
        background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut seeds its colour models with k-means: fix it so masks are reproducible
        try:
            cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), labels, (mx, my, sw - 2 * mx, sh - 2 * my),
                        background, foreground, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error:  # e.g. a single-colour image: no colour model can be fitted
            return np.zeros((height, width), dtype=bool)
        object_pixels = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
        if (sh, sw) != (height, width):
            object_pixels = cv2.resize(object_pixels, (width, height), interpolation=cv2.INTER_LINEAR)
        return object_pixels >= 128


def _grounded_sam(weights: Mapping[str, str], device, dtype) -> Segmenter:
    from tlora_bench.metrics.grounded_sam import GroundedSamSegmenter

    return GroundedSamSegmenter.load(detector=weights.get("grounding-dino"), sam=weights.get("sam"),
                                     device=device, dtype=dtype)


def _grabcut(weights: Mapping[str, str], device, dtype) -> Segmenter:
    return GrabCutSegmenter()


def _provided(weights: Mapping[str, str], device, dtype) -> Segmenter:
    return ProvidedSegmenter()


def _none(weights: Mapping[str, str], device, dtype) -> Segmenter:
    return NoneSegmenter()


def load_segmenter(name: str, *, weights: Mapping[str, str] | None = None, device: str = "cpu",
                   dtype: str = "fp32") -> Segmenter:
    """Build a registered segmenter (`SEGMENTERS`, tlora_bench/metrics/names.py); unknown names get a did-you-mean
    error."""
    factory = resolve_object(SEGMENTERS.get(name), f"segmenter '{name}'")
    return factory(dict(weights or {}), device, dtype)
