"""Judges: every attribute of a scene read back from an image's pixels, by the rules its renderer follows.

- background: the median colour of the outer ring of pixels, nearest palette background;
- the object: the pixels farther than OBJECT_DISTANCE from that background colour (none: no object);
- colour: the palette colour that most of the object's pixels (other than the white spot's) lie near;
- pattern: dotted when at least SPOT_SHARE of the object's pixels are near white;
- shape: the shape whose coverage, drawn at the object's centroid with its area, is nearest the image's
  coverage (how far each pixel is from the background colour towards the object's);
- position: the nearest of the three centres to the object's centroid;
- size: the radius that the object's area gives for its judged shape, nearest palette size.

Validated on held-out renders (jittered, and with Gaussian pixel noise) by `judge_accuracy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tlora_bench.synthetic.scenes import (
    AREA,
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPOT,
    Scene,
    coverage,
)

RING = 2  # pixels of the border that show the background (objects keep clear of it at the left and right)
OBJECT_DISTANCE = 60.0  # RGB distance from the background colour beyond which a pixel is the object's
SPOT_DISTANCE = 60.0
COLOR_DISTANCE = 70.0  # a pixel this near a palette colour counts as that colour's
SPOT_SHARE = 0.08  # a spot covers about a fifth of a circle, a tenth of a triangle, less when blurred
ATTRIBUTES = ("background", "shape", "color", "position", "size", "pattern")


@dataclass(frozen=True)
class Judged:
    background: str
    shape: str | None  # None: no object found
    color: str | None
    position: str | None
    size: str | None
    pattern: str | None

    def agrees(self, scene: Scene) -> dict[str, bool]:
        return {name: getattr(self, name) == getattr(scene, name) for name in ATTRIBUTES}


def _nearest(color: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = np.linalg.norm(np.asarray([palette[n] for n in names], dtype=float) - color, axis=1)
    return names[int(np.argmin(distances))]


def judge(image: np.ndarray) -> Judged:
    """Judge an RGB image (H x W x 3, uint8 or float in 0..255)."""
    pixels = np.asarray(image, dtype=np.float64)[..., :3]
    size = pixels.shape[0]
    ring = np.ones(pixels.shape[:2], dtype=bool)
    ring[RING:-RING, RING:-RING] = False
    background_color = np.median(pixels[ring], axis=0)
    background = _nearest(background_color, BACKGROUNDS)
    mask = np.linalg.norm(pixels - np.asarray(BACKGROUNDS[background], dtype=float), axis=-1) > OBJECT_DISTANCE
    if mask.sum() < 3:
        return Judged(background, None, None, None, None, None)
    object_pixels = pixels[mask]
    white = np.linalg.norm(object_pixels - np.asarray(SPOT, dtype=float), axis=-1) < SPOT_DISTANCE
    pattern = "dotted" if white.mean() >= SPOT_SHARE else "plain"
    color = _dominant_color(object_pixels[~white] if (~white).any() else object_pixels)
    alpha = _alpha(pixels, BACKGROUNDS[background], COLORS[color])
    alpha[~_grow(mask)] = 0.0  # noise far from the object is background
    total = alpha.sum()
    y, x = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = (alpha * x).sum() / total, (alpha * y).sum() / total
    errors = {name: _template_error(alpha, name, cx, cy, total, size) for name in SHAPES}
    shape = min(errors, key=errors.get)
    position = min(POSITIONS, key=lambda name: abs(POSITIONS[name] * size - cx))
    radius = np.sqrt(total / AREA[shape]) / size
    judged_size = min(SIZES, key=lambda name: abs(SIZES[name] - radius))
    return Judged(background, shape, color, position, judged_size, pattern)


def _dominant_color(pixels: np.ndarray) -> str:
    """The palette colour that most pixels lie near (edge pixels blended with the background or the white spot
    lie near none); the nearest to their median when none is near."""
    palette = np.asarray(list(COLORS.values()), dtype=float)
    distances = np.linalg.norm(pixels[:, None, :] - palette[None], axis=-1)
    near = (distances < COLOR_DISTANCE).sum(axis=0)
    if near.max() == 0:
        return _nearest(np.median(pixels, axis=0), COLORS)
    return list(COLORS)[int(np.argmax(near))]


def _alpha(pixels: np.ndarray, background: tuple, color: tuple) -> np.ndarray:
    """How much of each pixel the object covers: its distance from the background colour over the distance
    from the background to the nearer of the object's colours (its colour, the white spot), at most 1."""
    bg = np.asarray(background, dtype=float)
    reach = min(np.linalg.norm(np.asarray(color, dtype=float) - bg), np.linalg.norm(np.asarray(SPOT, dtype=float) - bg))
    return np.clip(np.linalg.norm(pixels - bg, axis=-1) / reach, 0.0, 1.0)


def _grow(mask: np.ndarray) -> np.ndarray:
    """The mask and its 8 neighbours (the object's soft edge lies just outside the thresholded mask)."""
    grown = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return grown


def _template_error(alpha: np.ndarray, shape: str, cx: float, cy: float, area: float, size: int) -> float:
    """The squared difference between the coverage and the shape's, drawn with the object's area and centroid."""
    r = np.sqrt(area / AREA[shape])
    if shape == "triangle":  # its centroid lies a third of the way up from its base, below its centre
        cy -= r / 3
    return float(((alpha - coverage(shape, cx, cy, r, size)) ** 2).sum())


def judge_accuracy(scenes: list[Scene], images: list[np.ndarray]) -> dict[str, float]:
    """The share of images whose judged attribute equals the scene's, per attribute."""
    agreements = [judge(image).agrees(scene) for scene, image in zip(scenes, images, strict=True)]
    return {name: float(np.mean([a[name] for a in agreements])) for name in ATTRIBUTES}
