"""The per-user cache folder: downloaded datasets, tiny models built on first use, evaluation features."""

from __future__ import annotations

import os
from pathlib import Path

from tlora_bench.fileio import ensure_writable

CACHE_ENV = "TLORA_BENCH_CACHE"


def cache_dir() -> Path:
    """$TLORA_BENCH_CACHE, else $XDG_CACHE_HOME/tlora-bench, else ~/.cache/tlora-bench."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tlora-bench"


def writable_cache_dir() -> Path:
    """The cache folder, created and proven writable (tiny models are built into it): checked before any work,
    so an unusable cache is one line naming it, never a failure mid-way."""
    return ensure_writable(cache_dir(), flag=f"cache folder: set ${CACHE_ENV} to a writable folder")
