"""Library warnings and log records, held while a command runs: shown when it ends, dropped when it fails.

A failing command prints one `error:` line (README, "Exit codes"). Libraries warn on the way to many failures:
PIL of a decompression bomb before the broken image fails to decode, diffusers logs that it could not fetch a
file before its loader raises, torch and transformers of deprecations. Such lines would come before the error
line and say less than it, so while a command runs every Python warning and log record is held, and replayed in
order once it ends unless it failed with its error line (exit 1, or stopped by a signal): after a success, an
incomplete run (exit 3) or a bug's traceback they are all shown. The tool's own `warning:` lines are no log
records and are never held.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator

from tlora_bench.errors import EXIT_INCOMPLETE

MAX_HELD = 1000  # a library warning in a loop must not grow memory over a long run; the rest are counted


class _Held:
    def __init__(self) -> None:
        self.replays: list[Callable[[], None]] = []
        self.dropped = 0

    def hold(self, replay: Callable[[], None]) -> None:
        if len(self.replays) < MAX_HELD:
            self.replays.append(replay)
        else:
            self.dropped += 1

    def replay(self) -> None:
        for replay in self.replays:
            replay()
        if self.dropped:
            print(f"({self.dropped} more library warnings not shown)", file=sys.stderr)


@contextlib.contextmanager
def _holding(held: _Held) -> Iterator[None]:
    """Warnings keep their filters (each still shown once per place) but go to `held`; so do log records, at the
    one point every logger hands them to its handlers, including records of libraries first imported meanwhile."""
    call_handlers = logging.Logger.callHandlers

    def hold_record(logger: logging.Logger, record: logging.LogRecord) -> None:
        held.hold(lambda: call_handlers(logger, record))

    def hold_warning(message, category, filename, lineno, file=None, line=None) -> None:
        held.hold(lambda: warnings.showwarning(message, category, filename, lineno, file, line))

    with warnings.catch_warnings():
        warnings.showwarning = hold_warning
        logging.Logger.callHandlers = hold_record
        try:
            yield
        finally:
            logging.Logger.callHandlers = call_handlers


@contextlib.contextmanager
def held_library_output() -> Iterator[None]:
    """Around a whole command (the CLI's main): replay what libraries said after it, unless it failed."""
    held = _Held()
    try:
        with _holding(held):
            yield
    except SystemExit as e:
        if e.code in (None, 0, EXIT_INCOMPLETE):
            held.replay()
        raise
    except BaseException:  # a bug: its traceback comes with every warning that led to it
        held.replay()
        raise
    held.replay()
