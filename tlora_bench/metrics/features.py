"""Image files -> embeddings, masked or not, batched and cached; unreadable files are reported, not fatal."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlora_bench.concepts.images import load_mask, to_rgb
from tlora_bench.concepts.manifest import check_inside
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import sha256_file
from tlora_bench.metrics.cache import CachedFeature, FeatureCache, feature_key
from tlora_bench.metrics.extractors import Extractor
from tlora_bench.metrics.overfitting import GRID, mask_grid, pack_grid, unpack_grid
from tlora_bench.metrics.segmenters import Segmenter, apply_mask


def read_image(path: Path) -> Image.Image | str:
    """The image as RGB, or the reason it cannot be read (a generated file may be truncated or missing)."""
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:  # animated GIF or WebP: the first frame
                image.seek(0)
            image.load()
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__


@dataclass(frozen=True)
class ImageRef:
    """An image to embed: its file, the class word that prompts a segmenter, and its mask file if provided."""

    path: Path
    class_word: str
    mask_file: Path | None = None  # a provided ground-truth mask (white = object); beats any segmenter
    folder: Path | None = None  # the folder it must lie in, symlinks resolved (default: the one it is named in)


class FeatureBank:
    """Computes and caches embeddings of image files for several extractors, with one segmenter for masks.

    A file that cannot be read gets a NaN row and one problem line (reported once, through `on_problem`).
    """

    def __init__(self, cache: FeatureCache, segmenter: Segmenter, batch_size: int = 16,
                 on_problem: Callable[[str], None] | None = None) -> None:
        if batch_size < 1:
            raise TloraBenchError(f"--batch-size must be at least 1, got {batch_size}")
        self.cache, self.segmenter, self.batch_size = cache, segmenter, batch_size
        self.on_problem = on_problem or (lambda message: None)
        self.problems: dict[Path, str] = {}  # unreadable file -> its one-line message
        self._sha: dict[Path, str] = {}
        self._masks: dict[tuple[str, str], np.ndarray] = {}

    def forget_masks(self) -> None:
        """Drop masks kept for reuse between extractors (the caller decides when they are no longer needed)."""
        self._masks.clear()

    def _problem(self, path: Path, message: str) -> None:
        if path not in self.problems:
            self.problems[path] = message
            self.on_problem(message)

    def inside(self, ref: ImageRef) -> bool:
        """Whether the image lies inside its folder, symlinks resolved; if not, it is refused (one problem line)."""
        try:
            check_inside(ref.path, ref.folder)
        except TloraBenchError as e:
            self._problem(ref.path, f"{e}; it was not scored")
            return False
        return True

    def file_sha256(self, path: Path) -> str | None:
        if path not in self._sha:
            try:
                self._sha[path] = sha256_file(path)
            except OSError as e:
                self._problem(path, f"cannot read image '{path}' ({e.strerror or e}); it was not scored")
                return None
        return self._sha[path]

    def mask_identity(self, ref: ImageRef) -> str:
        """What decides the image's mask: the provided file's content, or the segmenter and the class word."""
        if ref.mask_file is not None:
            try:
                return f"provided:{sha256_file(check_inside(ref.mask_file, ref.folder))}"
            except (OSError, TloraBenchError):
                return f"provided:unreadable:{ref.mask_file}"  # loading it fails and is reported below
        return f"{self.segmenter.identity}|class={ref.class_word}"

    def _mask(self, ref: ImageRef, image: Image.Image, mask_id: str, sha: str) -> np.ndarray:
        key = (sha, mask_id)
        if key not in self._masks:
            if ref.mask_file is not None:
                self._masks[key] = load_mask(ref.mask_file, image.size, folder=ref.folder)
            else:
                self._masks[key] = np.asarray(self.segmenter.segment(image, ref.class_word), dtype=bool)
        return self._masks[key]

    def _prepare(self, ref: ImageRef, masked: bool, mask_id: str, sha: str,
                 background: bool = False) -> tuple[Image.Image, bool] | None:
        """Load (and mask) one image; None when it cannot be read. The flag says the mask came back empty.
        `background`: keep the background and fill the object black instead."""
        image = read_image(ref.path)
        if isinstance(image, str):
            self._problem(ref.path, f"cannot read image '{ref.path}' ({image}); it was not scored")
            return None
        if not masked:
            return image, False
        try:
            mask = self._mask(ref, image, mask_id, sha)
        except TloraBenchError as e:  # an unreadable provided mask: score the image unmasked, say so
            self._problem(ref.mask_file or ref.path, f"{e}; the image was scored unmasked")
            return image, True
        if not mask.any():  # nothing found: score the whole image rather than an all-black one, and count it
            return image, True
        return apply_mask(image, ~mask if background else mask), False

    def mask_grids(self, refs: Sequence[ImageRef]) -> list[np.ndarray | None]:
        """Each image's object mask on the square grid of overfitting.mask_grid (None: unreadable), cached like
        a feature (its bits packed)."""
        out: list[np.ndarray | None] = [None] * len(refs)
        for i, ref in enumerate(refs):
            sha = self.file_sha256(ref.path) if self.inside(ref) else None
            if sha is None:
                continue
            mask_id = self.mask_identity(ref)
            key = feature_key(f"mask-grid{GRID}", mask_id, sha)
            entry = self.cache.get(key)
            if entry is None:
                image = read_image(ref.path)
                if isinstance(image, str):
                    self._problem(ref.path, f"cannot read image '{ref.path}' ({image}); it was not scored")
                    continue
                try:
                    grid = mask_grid(self._mask(ref, image, mask_id, sha))
                except TloraBenchError as e:  # an unreadable provided mask: no layout for this image
                    self._problem(ref.mask_file or ref.path, f"{e}; its layout was not scored")
                    continue
                entry = CachedFeature(pack_grid(grid), not grid.any())
                self.cache.put(key, entry)
            out[i] = unpack_grid(entry.features)
        return out

    def features(self, extractor: Extractor, refs: Sequence[ImageRef], masked: bool,
                 background: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) embeddings (NaN rows for unreadable files) and (n,) flags: mask empty, unmasked image used.
        `background` (with `masked`): embed each image's background, its object filled black."""
        rows: list[np.ndarray | None] = [None] * len(refs)
        fallback = np.zeros(len(refs), dtype=bool)
        todo: list[tuple[int, str, str, str]] = []  # (row, cache key, mask identity, file sha256)
        for i, ref in enumerate(refs):
            sha = self.file_sha256(ref.path) if self.inside(ref) else None
            if sha is None:
                continue
            mask_id = self.mask_identity(ref) if masked else "unmasked"
            key = feature_key(extractor.identity, f"background|{mask_id}" if background else mask_id, sha)
            entry = self.cache.get(key)
            if entry is None:
                todo.append((i, key, mask_id, sha))
            else:
                rows[i], fallback[i] = entry.features, entry.mask_fallback
        for start in range(0, len(todo), self.batch_size):
            chunk, images = [], []
            for i, key, mask_id, sha in todo[start:start + self.batch_size]:
                prepared = self._prepare(refs[i], masked, mask_id, sha, background)
                if prepared is not None:
                    chunk.append((i, key, prepared[1]))
                    images.append(prepared[0])
            if not images:
                continue
            for (i, key, empty), vector in zip(chunk, extractor.encode_images(images), strict=True):
                rows[i], fallback[i] = vector, empty
                self.cache.put(key, CachedFeature(vector, empty))
        dim = next((row.shape[0] for row in rows if row is not None), 1)
        out = np.full((len(refs), dim), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            if row is not None:
                out[i] = row
        return out, fallback
