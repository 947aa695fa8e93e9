"""`tlora-bench concepts download`: fetch a dataset archive, verify it, unpack it into the cache."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tlora_bench.concepts.data_root import download_dir
from tlora_bench.concepts.manifest import Manifest
from tlora_bench.concepts.validate import missing_files
from tlora_bench.errors import TloraBenchError

PROVENANCE_FILE = "DOWNLOAD.json"


def _fetch(url: str, target: Path, timeout: float) -> str:
    """Stream `url` into `target`; return the archive's sha256. Network failures become one-line errors."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (TimeoutError, urllib.error.URLError, ConnectionError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TloraBenchError(
            f"could not download '{url}' ({reason}); this machine may be offline: fetch the dataset "
            "elsewhere and pass --data-dir (or set TLORA_BENCH_DATA) to its folder") from None
    return digest.hexdigest()


def _members_under(names: list[str], root: str) -> dict[str, PurePosixPath]:
    """Archive member -> path relative to `root`, refusing absolute paths and '..' (zip-slip)."""
    prefix = PurePosixPath(root) if root else PurePosixPath()
    chosen = {}
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise TloraBenchError(f"the archive holds an unsafe path '{name}'; it was not unpacked")
        if root and (len(path.parts) <= len(prefix.parts) or path.parts[: len(prefix.parts)] != prefix.parts):
            continue
        chosen[name] = PurePosixPath(*path.parts[len(prefix.parts):])
    if not chosen:
        raise TloraBenchError(f"the archive has no folder '{root}'; is it the right archive?")
    return chosen


def _unpack(archive: Path, root: str, dest: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = {info.filename: info for info in zf.infolist() if not info.is_dir()}
            for name, rel in _members_under(list(infos), root).items():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(infos[name]) as src, (dest / rel).open("wb") as out:
                    shutil.copyfileobj(src, out)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            for name, rel in _members_under(list(members), root).items():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with tf.extractfile(members[name]) as src, (dest / rel).open("wb") as out:
                    shutil.copyfileobj(src, out)
    else:
        raise TloraBenchError(f"the downloaded file is neither a zip nor a tar archive ({archive.stat().st_size}"
                              " bytes); the URL may point to an error page")


def download_dataset(manifest: Manifest, dest: Path | None = None, url: str | None = None,
                     sha256: str | None = None, timeout: float = 60.0, force: bool = False) -> Path:
    """Download, verify (checksum when pinned, then every file the manifest names) and unpack atomically.

    Returns the data folder. An existing complete folder is kept unless `force`.
    """
    dest = Path(dest) if dest else download_dir(manifest.name)
    concepts = list(manifest.concepts.values())
    if dest.is_dir() and not force and not missing_files(concepts, dest):
        return dest
    url = url or manifest.dataset.get("archive_url")
    if not url:
        raise TloraBenchError(f"manifest '{manifest.path}' has no archive_url; pass --url")
    sha256 = (sha256 or manifest.dataset.get("archive_sha256") or "").lower() or None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging_root = tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.")
    except OSError as e:
        raise TloraBenchError(f"cannot write the dataset to '{dest}' ({e.strerror}); choose another --dest") from None
    with staging_root as tmp:
        archive, staging = Path(tmp) / "archive", Path(tmp) / "data"
        actual = _fetch(url, archive, timeout)
        if sha256 and actual != sha256:
            raise TloraBenchError(f"checksum mismatch for '{url}': expected {sha256}, got {actual}; "
                                  "the download is corrupt or the archive changed: retry, or use --data-dir")
        _unpack(archive, manifest.dataset.get("archive_root", ""), staging)
        missing = missing_files(concepts, staging)
        if missing:
            raise TloraBenchError(f"the archive from '{url}' is incomplete ({len(missing)} problems, first: "
                                  f"{missing[0]}); nothing was installed")
        record = {"url": url, "sha256": actual, "sha256_pinned": bool(sha256),
                  "downloaded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest
