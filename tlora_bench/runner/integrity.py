"""What a finished job's done.json vouches for, checked again when a run resumes.

done.json records the sha256, size and modification time of every file the job made: its adapter, its
images and their images.jsonl. A resumed run trusts a finished job only while those files are as recorded;
one deleted, truncated or altered since makes the job unfinished again, and only what changed is made again:
a changed adapter is trained again (the seed makes it the same), changed or missing images are generated
again (the seed rule makes them the same pixels), and the scores follow. A file whose size and modification
time are unchanged is trusted without being read, so a resume of a large run stays fast.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tlora_bench.fileio import sha256_file
from tlora_bench.layout import INDEX_FILE, read_images_index

FILES_KEY = "files"


def fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"sha256": sha256_file(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_files(run_dir: Path, adapter: Path, images_folder: Path) -> dict[str, dict[str, Any]]:
    """done.json's "files": every output of the job, by its path relative to run_dir."""
    index = images_folder / INDEX_FILE
    paths = [adapter, index, *(images_folder / record.file for record in read_images_index(index))]
    return {path.relative_to(run_dir).as_posix(): fingerprint(path) for path in paths}


def _unchanged(path: Path, recorded: Any) -> bool:
    try:
        stat = path.stat()
        if not isinstance(recorded, dict) or stat.st_size != recorded.get("size"):
            return False
        return stat.st_mtime_ns == recorded.get("mtime_ns") or sha256_file(path) == recorded.get("sha256")
    except OSError:  # missing or unreadable
        return False


def changed_files(run_dir: Path, marker: dict[str, Any]) -> list[Path]:
    """The files a done.json vouches for that are missing or changed (none for a marker that records none)."""
    files = marker.get(FILES_KEY)
    if not isinstance(files, dict):
        return []
    return [run_dir / name for name, recorded in files.items() if not _unchanged(run_dir / name, recorded)]


def distrust(changed: list[Path], adapter: Path) -> str:
    """Remove the changed outputs, so that the job makes them again (a decodable image that was altered would
    otherwise be kept), and say what will be redone."""
    for path in changed:
        if path.name != INDEX_FILE:  # the sampler writes the index again once every image exists
            with contextlib.suppress(OSError):  # read-only: the job's own write then says so
                path.unlink(missing_ok=True)
    if adapter in changed:
        return f"its adapter '{adapter}' changed after the job finished (deleted, truncated or altered): training " \
               "it again"
    images = [path for path in changed if path.name != INDEX_FILE]
    if not images:
        return f"its image index '{changed[0]}' changed after the job finished: writing it again"
    more = f" and {len(images) - 1} more" if len(images) > 1 else ""
    return (f"{len(images)} of its images changed or went missing after the job finished ('{images[0]}'{more}): "
            "generating them again")

