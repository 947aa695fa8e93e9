"""Small file helpers shared by every stage: TOML reading, atomic writes, content hashes."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tlora_bench.errors import TloraBenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def read_file_bytes(path: str | os.PathLike, expected: str) -> bytes:
    """A file's bytes; missing, a folder, unreadable: one line naming the file and what was `expected`."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TloraBenchError(f"file not found: '{path}'") from None
    except IsADirectoryError:
        raise TloraBenchError(f"'{path}' is a folder; expected {expected}") from None
    except PermissionError:
        raise TloraBenchError(f"cannot read '{path}': permission denied") from None
    except OSError as e:
        raise TloraBenchError(f"cannot read '{path}' ({type(e).__name__}: {e.strerror or e})") from None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable, binary or malformed file is one line that names the file."""
    path = Path(path)
    data = read_file_bytes(path, "a TOML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TloraBenchError(f"'{path}' is not a UTF-8 text file (byte {e.start}: {e.reason}); "
                              "expected a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TloraBenchError(f"'{path}' is not valid TOML: {_one_line(e)}") from None
    except (ValueError, RecursionError) as e:  # e.g. nesting too deep for the parser
        raise TloraBenchError(f"'{path}' is not valid TOML ({type(e).__name__}: {_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


class WriteFailed(TloraBenchError):
    """A file could not be written (a full disk, a read-only folder): an environment fault, not a job's, so a run
    stops on it; the file it was writing is left as it was, and the finished work is kept."""


def write_error(path: str | os.PathLike, error: OSError) -> WriteFailed:
    """The one line for an OSError while writing `path`: what happened, and that a re-run goes on from there."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteFailed(f"no space left on device while writing '{path}'; free space and re-run: finished work "
                           "is kept")
    fix = "make its folder writable" if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "fix the cause"
    return WriteFailed(f"cannot write '{path}' ({error.strerror or type(error).__name__}); {fix} and re-run: "
                       "finished work is kept")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it: readers never see a partial file. An OSError
    (a full disk, a read-only folder) is one line naming `path`, which is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results get the user's usual mode
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):  # a folder gone read-only: the temporary waits for a re-run's cleanup
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask both sets and returns)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def replaced_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A folder written as a whole: the caller fills the temporary folder yielded, which then takes the place of
    `path` (an old `path` is removed). On an error (a full disk) the old folder stands as it was, and nothing
    half-written is left; the error names the file under `path`, not under the temporary folder."""
    path = Path(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise write_error(path, e) from None
    aside = tmp.with_name(f"{tmp.name}.old")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if path.exists():
            os.replace(path, aside)
        os.replace(tmp, path)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside.exists() and not path.exists():  # the swap failed half-way: the old folder goes back
            os.replace(aside, path)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        if isinstance(e, WriteFailed):
            raise WriteFailed(str(e).replace(str(tmp), str(path))) from None
        raise


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """Parse a JSON file the tool wrote; unreadable or malformed is one line naming the file and `fix`."""
    path = Path(path)
    if path.is_dir():  # the OS error would only say "Is a directory"
        raise TloraBenchError(f"'{path}' is a folder; expected a JSON file: {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TloraBenchError(f"cannot read '{path}' ({type(e).__name__}: {_one_line(e)}); {fix}") from None


def read_csv_rows(path: str | os.PathLike, columns: Sequence[str], what: str,
                  fix: str) -> list[tuple[int, dict[str, str]]]:
    """The data rows of a CSV file (a byte-order mark allowed), numbered from 1, once its header holds `columns`;
    an unreadable file or missing columns (all of them named) are one line naming the file, `what` it should be
    and `fix`."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                names = ", ".join(f"'{c}'" for c in missing)
                raise TloraBenchError(f"{path}: not {what} (missing column{'s' if len(missing) > 1 else ''} "
                                      f"{names}); {fix}")
            return list(enumerate(reader, 1))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TloraBenchError(f"cannot read {what} '{path}' ({_one_line(e)}); {fix}") from None


def differing_keys(saved: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two settings dicts, sorted (a key missing on one side differs)."""
    return [key for key in sorted(set(saved) | set(ours)) if saved.get(key) != ours.get(key)]


def check_writable(folder: str | os.PathLike, flag: str = "--out", fix: str | None = None) -> None:
    """That `folder` could be created and written, without creating it (nothing is left behind on an error);
    the error's fix is `fix`, else to make the folder writable or choose another `flag`."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        fix = fix or (f"make '{existing}' writable or choose another {flag}"
                      if existing is not None and existing.is_dir() else f"choose another {flag}")
        raise TloraBenchError(f"cannot write to '{folder}' ('{existing}' is not a writable folder); {fix}")


def ensure_writable(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `folder` if needed and prove a file can be written there, before any work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        fix = f"make it writable or choose another {flag}" if folder.is_dir() else f"choose another {flag}"
        raise TloraBenchError(f"cannot write to '{folder}' ({e.strerror or type(e).__name__}); {fix}") from None
    return folder


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that interrupted atomic writes left under `folder` (`.<name>.<random>.tmp`);
    call it when a run (re)starts there, never while another writer works in the folder."""
    removed = 0
    for path in Path(folder).rglob(".*.tmp"):
        if path.is_file():
            with contextlib.suppress(OSError):  # a read-only sub-folder: the writes there say so, in one line
                path.unlink(missing_ok=True)
                removed += 1
    return removed


@contextlib.contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on `path` (created if absent): workers of one run take turns."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        if sys.platform != "win32":  # Windows has no flock: workers there run one at a time anyway
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
