"""Procedural scenes: one object (shape, colour, pattern, size) at one of three positions on a flat background.

Flat backgrounds and saturated object colours keep every attribute readable from pixels, so a generated image
can be judged exactly (`judges.py`); the palettes are far apart in RGB (at least 100 between any object colour,
the spot colour and any background). A render is drawn at four times its resolution and box-downsampled, so
edges are soft as a diffusion model's are, and jittered (object centre and radius) so that pretraining sees
each attribute in many exact forms.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

RESOLUTION = 32
SUPERSAMPLE = 4
BACKGROUNDS = {"sky": (150, 200, 240), "grass": (80, 160, 70), "sand": (225, 200, 150), "night": (25, 25, 55),
               "gray": (128, 128, 128), "rose": (240, 165, 190)}
COLORS = {"red": (215, 35, 35), "blue": (35, 60, 215), "yellow": (245, 215, 30), "purple": (145, 40, 175)}
SPOT = (250, 250, 250)  # a dotted object has a white disk at its centroid
SHAPES = ("circle", "square", "triangle", "diamond")
PATTERNS = ("plain", "dotted")
SPOT_RADIUS = 0.55  # of the shape's radius: at 32 pixels finer patterns (stripes) blur into another colour
POSITIONS = {"left": 0.22, "center": 0.5, "right": 0.78}  # the object centre's x, as a fraction of the width
SIZES = {"small": 0.12, "large": 0.19}  # the shape's radius, as a fraction of the width
JITTER = {"center": 0.03, "radius": 0.1}  # uniform: +-3% of the width; +-10% of the radius
# Each shape's area in units of its radius r squared (what the judges invert).
AREA = {"circle": np.pi, "square": 1.7 ** 2, "triangle": 2.0, "diamond": 2 * 1.15 ** 2}


@dataclass(frozen=True)
class Scene:
    background: str
    shape: str
    color: str
    position: str
    size: str = "large"
    pattern: str = "plain"

    def __post_init__(self) -> None:
        for name, allowed in (("background", BACKGROUNDS), ("shape", SHAPES), ("color", COLORS),
                              ("position", POSITIONS), ("size", SIZES), ("pattern", PATTERNS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r} (known: {', '.join(allowed)})")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def caption(scene: Scene, omit: frozenset[str] = frozenset(), subject: str | None = None) -> str:
    """'a small dotted red triangle on the left, sky background'; plain and large are left unsaid, so are the
    attributes in `omit` (pretraining drops some, so that a prompt may leave them open). `subject` replaces the
    object's words (a concept's 'sks diamond')."""
    said = {name: getattr(scene, name) for name in ("size", "pattern", "color", "shape", "position", "background")
            if name not in omit and getattr(scene, name) not in ("large", "plain")}
    words = [said[name] for name in ("size", "pattern", "color", "shape") if name in said]
    text = f"a {subject or ' '.join(words)}"
    if "position" in said:
        text += " in the center" if said["position"] == "center" else f" on the {said['position']}"
    return f"{text}, {said['background']} background" if "background" in said else text


def all_scenes() -> list[Scene]:
    """Every combination of the vocabulary."""
    return [Scene(*values) for values in itertools.product(BACKGROUNDS, SHAPES, COLORS, POSITIONS, SIZES, PATTERNS)]


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Whether each pixel centre of a size x size grid lies in the shape (centre and radius in pixels)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up, base 2r wide at cy + r
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {shape!r}")


def coverage(shape: str, cx: float, cy: float, r: float, resolution: int) -> np.ndarray:
    """The share of each pixel that the shape covers (centre and radius in pixels), as `render` draws it."""
    big = shape_mask(shape, cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE, resolution * SUPERSAMPLE)
    return big.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE).mean(axis=(1, 3))


def geometry(scene: Scene, rng: np.random.Generator | None = None) -> tuple[float, float, float]:
    """The object's centre x, y and radius as fractions of the width; `rng` jitters them (None: exact)."""
    jitter = (lambda spread: rng.uniform(-spread, spread)) if rng is not None else (lambda spread: 0.0)
    cx = POSITIONS[scene.position] + jitter(JITTER["center"])
    cy = 0.5 + jitter(JITTER["center"])
    return cx, cy, SIZES[scene.size] * (1 + jitter(JITTER["radius"]))


def render(scene: Scene, rng: np.random.Generator | None = None, resolution: int = RESOLUTION) -> np.ndarray:
    """The scene as an RGB uint8 array (resolution x resolution x 3); `rng` jitters the centre and radius
    (None: the exact, unjittered scene)."""
    return draw(scene, *geometry(scene, rng), resolution=resolution)


def draw(scene: Scene, cx: float, cy: float, r: float, resolution: int = RESOLUTION) -> np.ndarray:
    """The scene with its object at centre (cx, cy) and radius r (fractions of the width)."""
    big = resolution * SUPERSAMPLE
    cx, cy, r = cx * big, cy * big, r * big
    canvas = np.empty((big, big, 3), dtype=np.float64)
    canvas[:] = BACKGROUNDS[scene.background]
    inside = shape_mask(scene.shape, cx, cy, r, big)
    fill = np.empty_like(canvas)
    fill[:] = COLORS[scene.color]
    if scene.pattern == "dotted":  # at the centroid: a triangle's lies a third of the way up from its base
        spot_y = cy + r / 3 if scene.shape == "triangle" else cy
        fill[shape_mask("circle", cx, spot_y, SPOT_RADIUS * r, big)] = SPOT
    canvas[inside] = fill[inside]
    small = canvas.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)
