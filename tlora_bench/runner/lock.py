"""One `tlora-bench run` per run folder: an exclusive lock on RUN/.run.lock for the whole run.

Two runs in one folder would train the same jobs at once and remove each other's temporary files, so the
second refuses, naming the first one's pid. The lock is an `fcntl.flock`: the kernel drops it when its process
ends, however it ends, so the file a killed run leaves behind never blocks the next one (it is never deleted:
removing a lock file races with a process that is about to take it). Commands that only read (`report`,
`evaluate` into another --out) take no lock.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import write_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no lock
    fcntl = None

LOCK_FILE = ".run.lock"
_HELD: ContextVar[contextlib.ExitStack | None] = ContextVar("run_folder_locks", default=None)
F = TypeVar("F", bound=Callable)


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` (an existing folder) for this process while inside; refused if another process holds it."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TloraBenchError(f"'{run_dir}' is being run by another `tlora-bench run` ({_holder(fd)}); "
                                      "wait for it to finish or stop it, then re-run, or use another --out") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # for the message of a run refused while this one runs
        yield
    finally:
        os.close(fd)  # releases the lock


def run_folder_busy(run_dir: Path) -> bool:
    """Whether a process holds `run_dir`'s lock now (a shared lock is tried and dropped at once: it never
    blocks, and takes nothing from a run)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False  # no lock file: never run
    try:
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)  # releases the shared lock, if taken


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "pid unknown"


def holds_run_locks(function: F) -> F:
    """Decorate the function within which `lock_run_folder` holds its locks: all are released when it returns
    or raises (the lock is taken mid-way, once the folder is known to be usable)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            token = _HELD.set(stack)
            try:
                return function(*args, **kwargs)
            finally:
                _HELD.reset(token)
    return wrapper  # type: ignore[return-value]


def lock_run_folder(run_dir: Path) -> None:
    """Take the lock of `run_dir` until the enclosing @holds_run_locks function ends."""
    stack = _HELD.get()
    if stack is None:
        raise RuntimeError("lock_run_folder is called only inside a function decorated with @holds_run_locks")
    stack.enter_context(run_folder_lock(run_dir))
