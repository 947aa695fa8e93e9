"""Image grids per concept: the training image, then each method's images for a few prompts, as 128 px
thumbnails embedded as base64 PNG data URIs (the report opens from disk with no network)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tlora_bench.report.inputs import RunFolder

THUMBNAIL = 128
IMAGES_PER_PROMPT = 4
CONTEXTUAL_PROMPTS = 2


@dataclass
class Thumb:
    uri: str
    caption: str


@dataclass
class PromptRow:
    method_label: str
    images: list[Thumb | None]


@dataclass
class PromptGrid:
    template: str
    rows: list[PromptRow]


@dataclass
class ConceptGrid:
    concept: str
    class_word: str
    training_image: Thumb | None
    prompts: list[PromptGrid] = field(default_factory=list)


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def thumbnail(path: Path, size: int = THUMBNAIL) -> str | None:
    """A PNG data URI of the image shrunk to fit size x size, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return png_uri(buffer.getvalue())


def _base_template(run: RunFolder) -> str:
    provenance = (run.evaluation or {}).get("provenance") or {}
    if provenance.get("base_template"):
        return str(provenance["base_template"])
    from tlora_bench.prompts import base_template

    return base_template()


def _manifest(run: RunFolder):
    """The run's concept manifest, or None when it cannot be found."""
    from tlora_bench.concepts.manifest import manifest_for, manifest_path_of
    from tlora_bench.errors import TloraBenchError

    path = manifest_path_of(str((run.config or {}).get("concepts") or ""))
    try:
        manifest = manifest_for(path)
        if path:
            return manifest
        name = ((run.evaluation or {}).get("provenance") or {}).get("manifest")
        return manifest if run.config is not None or name in (None, manifest.name) else None
    except (TloraBenchError, OSError):
        return None


def training_images(run: RunFolder, concepts: list[str]) -> dict[str, tuple[str, Thumb | None]]:
    """concept -> (class word, thumbnail of its training image); the thumbnail is None when unavailable."""
    from tlora_bench.concepts import resolve_data_root
    from tlora_bench.errors import TloraBenchError

    manifest = _manifest(run)
    root = None
    if manifest is not None:
        try:
            root = resolve_data_root((run.config or {}).get("data_dir"), manifest.name)
        except TloraBenchError:
            root = None
    found = {}
    for concept_id in concepts:
        concept = manifest.concepts.get(concept_id) if manifest is not None else None
        if concept is None:
            found[concept_id] = ("", None)
            continue
        try:
            uri = thumbnail(concept.train_image_path(root))
        except TloraBenchError:
            uri = None
        found[concept_id] = (concept.class_word, Thumb(uri, concept.train_image) if uri else None)
    return found


def chosen_templates(records: list[list[dict]], base: str) -> list[str]:
    """The base prompt and the first contextual templates present, in index order."""
    present = list(dict.fromkeys(r["template"] for group in records for r in group))
    contextual = [t for t in present if t != base][:CONTEXTUAL_PROMPTS]
    return ([base] if base in present else []) + contextual


def concept_grids(run: RunFolder, method_labels: list[str],
                  on_unreadable: Callable[[Path], None] = lambda path: None) -> list[ConceptGrid]:
    """One grid per concept: for each chosen prompt, one row per method, image indexes side by side; a listed
    image that cannot be read is an empty cell, passed to `on_unreadable`."""
    concepts = sorted({concept for _, concept in run.indexes})
    base = _base_template(run)
    trained = training_images(run, concepts)
    grids = []
    for concept in concepts:
        by_label = {label: run.indexes[(label, concept)] for label in method_labels if (label, concept) in run.indexes}
        class_word, training = trained[concept]
        grid = ConceptGrid(concept, class_word, training)
        for template in chosen_templates(list(by_label.values()), base):
            indexes = sorted({r.get("image_index", 0) for records in by_label.values() for r in records
                              if r["template"] == template})[:IMAGES_PER_PROMPT]
            rows = []
            for label, records in by_label.items():
                at = {r.get("image_index", 0): r for r in records if r["template"] == template}
                cells = []
                for index in indexes:
                    record = at.get(index)
                    path = run.images_dir / label / concept / record["file"] if record else None
                    uri = thumbnail(path) if path else None
                    if path and not uri:
                        on_unreadable(path)
                    cells.append(Thumb(uri, f"seed {record.get('seed', '?')}") if uri and record else None)
                rows.append(PromptRow(label, cells))
            grid.prompts.append(PromptGrid(template, rows))
        grids.append(grid)
    return grids
