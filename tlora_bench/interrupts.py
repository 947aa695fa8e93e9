"""Stopping on Ctrl-C (SIGINT) and SIGTERM at a safe point, so that a re-run resumes where it stopped.

The CLI installs the handlers for the duration of a command (`stop_on_signals`). A signal raises `Interrupted`
(a KeyboardInterrupt: a job records no failure for it) at once, except inside `safe_points()`, the training
and sampling loops: there the first signal waits for the loop's next `stop_if_asked()`, after a whole training
step (with its checkpoint written) or a batch of images; a second signal stops at once. Every file is written
atomically, so wherever the stop lands, nothing half-written is left for a resume to trust.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
MESSAGE = "interrupted: re-run the same command to resume"


class Interrupted(KeyboardInterrupt):
    """Raised by a stop signal; `exit_status` is the shell's 128 + signal number (130 for SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_state = {"deferring": 0, "pending": None}


def _handler(signum: int, frame) -> None:
    if _state["deferring"] and _state["pending"] is None:
        _state["pending"] = signum  # stop at the loop's next safe point
        return
    _state["pending"] = None
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted while inside; the previous handlers come back after (main thread
    only: Python runs signal handlers there, and elsewhere they cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def safe_points() -> Iterator[None]:
    """Inside, a first stop signal waits for `stop_if_asked()`; one still waiting at the end stops there."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    stop_if_asked()


def stop_asked() -> bool:
    """Whether a stop signal waits for this safe point (the caller saves its state, then calls stop_if_asked)."""
    return _state["pending"] is not None


def stop_if_asked() -> None:
    """The safe point: raise Interrupted if a stop signal came since the last one."""
    signum = _state["pending"]
    if signum is not None:
        _state["pending"] = None
        raise Interrupted(signum)
