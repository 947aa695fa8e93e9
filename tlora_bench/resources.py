"""The bundled files (concept manifests, prompt sets, presets, the paper's tables), read through one small set
of functions.

From a checkout they are the repository's top-level `concepts/`, `prompts/` and `results/paper/` folders
(pyproject.toml maps them into the package) and `tlora_bench/presets/`; from an installed wheel, the same names
inside the package.
Concept images are in a checkout's `concepts/` only: a wheel carries the manifest, not the images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from tlora_bench.errors import unknown_name_error

PACKAGES = {"concepts": "tlora_bench.bundled_concepts", "prompts": "tlora_bench.bundled_prompts",
            "presets": "tlora_bench.presets", "paper": "tlora_bench.paper_results"}


def bundled(kind: str) -> Traversable:
    """The folder of one kind of bundled file: 'concepts', 'prompts', 'presets' or 'paper'."""
    if kind not in PACKAGES:
        raise unknown_name_error("bundled file kind", kind, PACKAGES)
    return resources.files(PACKAGES[kind])


def bundled_names(kind: str, suffix: str) -> list[str]:
    """Names (without `suffix`) of the bundled files of a kind, sorted."""
    return sorted(p.name[:-len(suffix)] for p in bundled(kind).iterdir() if p.name.endswith(suffix))


def read_bundled_text(kind: str, name: str) -> str:
    return (bundled(kind) / name).read_text(encoding="utf-8")


@contextlib.contextmanager
def bundled_path(kind: str, name: str) -> Iterator[Path]:
    """A real file path for a bundled file (what file-based readers and error messages need)."""
    with resources.as_file(bundled(kind) / name) as path:
        yield Path(path)


def bundled_concept_images() -> Path | None:
    """The checkout's `concepts/` folder when it holds the images (one folder per subject), else None."""
    folder = bundled("concepts")
    if not isinstance(folder, Path) or not folder.is_dir():
        return None
    has_subjects = any(p.is_dir() and not p.name.startswith(("_", ".")) for p in folder.iterdir())
    return folder if has_subjects else None
