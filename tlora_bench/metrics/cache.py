"""On-disk feature cache: one small .npz per (extractor identity, mask identity, image content hash).

Re-scoring a folder (another --bootstrap, a new method beside old ones) recomputes nothing already seen. The
key holds everything that changes a feature, and the sha256 of the image file's bytes, so an edited file
gets a new key: stale features are never returned. Entries are written atomically; an unreadable or
mismatching entry is treated as a miss and overwritten.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlora_bench.fileio import atomic_write_bytes

CACHE_DIRNAME = ".feature_cache"


@dataclass(frozen=True)
class CachedFeature:
    features: np.ndarray  # (d,) float32, L2-normalised
    mask_fallback: bool  # the segmenter found no object, so the unmasked image was used


def feature_key(extractor_identity: str, mask_identity: str, file_sha256: str) -> str:
    """The full key; its own sha256 names the file."""
    return f"v1|{extractor_identity}|mask={mask_identity}|file={file_sha256}"


class FeatureCache:
    """Features stored under `root` (usually OUT/.feature_cache); counts hits and misses for reports and tests."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / f"{digest}.npz"

    def get(self, key: str) -> CachedFeature | None:
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != key:  # a hash collision or a foreign file: do not trust it
                    raise ValueError("key mismatch")
                entry = CachedFeature(np.array(data["features"], dtype=np.float32), bool(data["mask_fallback"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, entry: CachedFeature) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, key=np.array(key), features=np.asarray(entry.features, dtype=np.float32),
                 mask_fallback=np.array(entry.mask_fallback))
        atomic_write_bytes(self._path(key), buffer.getvalue())
