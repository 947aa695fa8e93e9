"""The one exception type for user mistakes, and the did-you-mean helper every error uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Every character str.splitlines() breaks at, written as its escape.
_LINE_BREAKS = str.maketrans({c: c.encode("unicode_escape").decode() for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class TloraBenchError(Exception):
    """A problem the user can fix. Its message is one line that names the thing and the fix.

    The CLI prints it without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
    A line break in a message (a name from a file or the user's input) is written as its escape (\\n), so the
    message stays one line.
    """

    def __init__(self, message: str = "", *args: object):
        super().__init__(str(message).translate(_LINE_BREAKS), *args)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> TloraBenchError:
    """The standard error for a name that is not registered: suggestion first, then the full list."""
    choices = sorted(choices)
    hint = did_you_mean(name, choices)
    return TloraBenchError(f"unknown {kind} '{name}'{hint} (known: {', '.join(choices)})")


# Exit codes of the CLI (README, "Exit codes"): 0 complete, 1 an error (nothing or part done), 3 incomplete:
# the command ran to its end but some units failed or were missing, and the output says which.
EXIT_ERROR = 1
EXIT_INCOMPLETE = 3
