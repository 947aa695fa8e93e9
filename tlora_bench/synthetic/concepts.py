"""The synthetic concepts: dotted diamonds, one per colour, each seen once on its training background at its
training position (docs/synthetic.md). Pretraining never shows a dotted diamond (`pretrain.held_out`), so the
base model can draw every part of a concept but does not tie it to the token.

The images are rendered, not shipped: `concepts_manifest()` writes a user manifest (`synthetic.toml`) and one
folder per concept into the cache on first use, the same files on every machine (fixed jitter seeds), and every
command reads it as it reads any user manifest.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlora_bench.synthetic.scenes import BACKGROUNDS, POSITIONS, RESOLUTION, Scene, coverage, draw, geometry

MANIFEST_NAME = "synthetic.toml"
CLASS_WORD = "diamond"
REFERENCE_VIEWS = 4  # renders beside the training image: the real set that IS and DINO-IS compare with


@dataclass(frozen=True)
class SyntheticConcept:
    id: str
    scene: Scene  # the training image's scene: the concept on its training background, at its training position

    def views(self) -> list[Scene]:
        """The training scene, then REFERENCE_VIEWS of the same object on other backgrounds and positions."""
        backgrounds = [b for b in BACKGROUNDS if b != self.scene.background]
        positions = [p for p in POSITIONS if p != self.scene.position]
        s = self.scene
        return [s] + [Scene(backgrounds[i], s.shape, s.color, positions[i % len(positions)], s.size, s.pattern)
                      for i in range(REFERENCE_VIEWS)]


CONCEPTS = tuple(
    SyntheticConcept(f"{color}-dotted-diamond", Scene(background, "diamond", color, position, pattern="dotted"))
    for color, background, position in (("red", "sky", "left"), ("blue", "sand", "right"),
                                        ("yellow", "night", "center"), ("purple", "gray", "left")))


def concept_scene(concept_id: str) -> Scene | None:
    """The training scene of a synthetic concept, or None for any other concept id."""
    return next((c.scene for c in CONCEPTS if c.id == concept_id), None)


def image_name(index: int) -> str:
    return f"{index:02d}.png"


def manifest_text() -> str:
    """The manifest: every concept's views as its images, the first (its training scene) the training image."""
    lines = ["# Written by tlora-bench (tlora_bench/synthetic/concepts.py); docs/synthetic.md.", "[dataset]",
             'name = "synthetic"', 'description = "dotted diamonds on flat backgrounds, rendered by tlora-bench"']
    for concept in CONCEPTS:
        images = ", ".join(f'"{image_name(i)}"' for i in range(len(concept.views())))
        s = concept.scene
        lines += ["", "[[concepts]]", f'id = "{concept.id}"', f'class_word = "{CLASS_WORD}"',
                  f'train_image = "{image_name(0)}"', f"images = [{images}]",
                  f'source = "rendered: {s.color} dotted diamond on the {s.position}, {s.background} background"',
                  'prompts = "synthetic"']
    return "\n".join(lines) + "\n"


@functools.cache  # a pure function of the code: rendered once per process, however often a manifest is asked for
def rendered_files() -> dict[str, bytes]:
    """Every file of the synthetic manifest's folder by relative path: the manifest, and each concept's views
    (jittered, seeded by concept and view) with their exact masks, as PNG bytes."""
    import io

    from PIL import Image

    from tlora_bench.concepts.manifest import MASK_SUFFIX

    def png(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    files = {MANIFEST_NAME: manifest_text().encode()}
    for c, concept in enumerate(CONCEPTS):
        for v, scene in enumerate(concept.views()):
            cx, cy, r = geometry(scene, np.random.default_rng([c, v]))
            mask = coverage(scene.shape, cx * RESOLUTION, cy * RESOLUTION, r * RESOLUTION, RESOLUTION) >= 0.5
            files[f"{concept.id}/{image_name(v)}"] = png(draw(scene, cx, cy, r))
            files[f"{concept.id}/{Path(image_name(v)).stem}{MASK_SUFFIX}"] = png((mask * 255).astype(np.uint8))
    return files


def concepts_manifest() -> Path:
    """The synthetic manifest's path in the cache, its folder written on first use: one folder per content (the
    SHA-256 of its files), so a changed renderer never reads an old folder."""
    from tlora_bench.cache import cache_dir
    from tlora_bench.fileio import replaced_folder

    files = rendered_files()
    folder = cache_dir() / "synthetic" / f"concepts-{_digest()[:12]}"
    if not (folder / MANIFEST_NAME).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with replaced_folder(folder) as tmp:
            for name, data in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
    return folder / MANIFEST_NAME


@functools.cache
def _digest() -> str:
    files = rendered_files()
    return hashlib.sha256(b"".join(name.encode() + data for name, data in sorted(files.items()))).hexdigest()
