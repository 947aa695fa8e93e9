"""Checks that a data folder holds what a manifest promises: folders, decodable images, matching masks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tlora_bench.concepts.images import load_image, load_mask
from tlora_bench.concepts.manifest import Concept, contained
from tlora_bench.errors import TloraBenchError


def _inside_paths(concept: Concept, folder: Path, problems: list[str]) -> list[Path]:
    """The concept's image paths; one that resolves outside the folder (a symlink) is a problem, not a path."""
    paths = []
    for name in concept.images:
        try:
            paths.append(contained(folder, name))
        except TloraBenchError as e:
            problems.append(f"{concept.id}: {e}")
    return paths


def missing_files(concepts: Iterable[Concept], data_root: Path | None) -> list[str]:
    """Every concept folder or listed image that does not exist or lies outside its folder (fast: no decoding)."""
    missing: list[str] = []
    for concept in concepts:
        folder = concept.dir(data_root)
        if not folder.is_dir():
            missing.append(f"{concept.id}: folder '{folder}' is missing")
            continue
        missing += [f"{concept.id}: image '{p}' is missing" for p in _inside_paths(concept, folder, missing)
                    if not p.is_file()]
    return missing


def check_concepts(concepts: Iterable[Concept], data_root: Path | None) -> list[str]:
    """Every problem found, one line each: missing files, undecodable images, masks of the wrong size."""
    concepts = list(concepts)
    problems = missing_files(concepts, data_root)
    for concept in concepts:
        folder = concept.dir(data_root)
        for path in _inside_paths(concept, folder, []):  # links out of the folder: reported above
            if not path.is_file():
                continue
            try:
                image = load_image(path, folder)
                mask_path = concept.mask_path(data_root, path.name)
                if mask_path is not None:
                    mask = load_mask(mask_path, folder=folder)
                    if mask.shape != (image.height, image.width):
                        problems.append(f"{concept.id}: mask '{mask_path}' is {mask.shape[1]}x{mask.shape[0]}"
                                        f" but its image is {image.width}x{image.height}")
                    elif not mask.any():
                        problems.append(f"{concept.id}: mask '{mask_path}' is empty (no white pixels)")
            except TloraBenchError as e:
                problems.append(f"{concept.id}: {e}")
    return problems
