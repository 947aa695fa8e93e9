"""Progress of a run: a bar on a terminal; one line per finished job in a log (nohup, Slurm, CI).

A log has no bar to redraw, so a run that goes to a file would be silent until its end: each job that this
invocation finishes writes a line with the counts so far and an estimate of the time left, from the mean time
of the jobs finished in this invocation (jobs finished earlier took no time now and say nothing of the speed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tlora_bench.runner.jobs import JobOutcome


def format_duration(seconds: float) -> str:
    """3725 -> '1 h 02 min', 95 -> '1 min 35 s', 7 -> '7 s'."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class Progress:
    """Counts the outcomes of a run's jobs as they arrive and shows them: a tqdm bar on a terminal, else a
    line per job this invocation ran."""

    def __init__(self, total: int, echo: Callable[[str], None], *, enabled: bool = True,
                 terminal: bool | None = None) -> None:
        from tqdm.auto import tqdm

        self.total, self.echo = total, echo
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.done = self.failed = self.finished = 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, desc="jobs", unit="job", disable=not (enabled and self.terminal))
        self.lines = enabled and not self.terminal

    def __call__(self, outcome: JobOutcome) -> None:
        self.done += outcome.status == "done"
        self.failed += outcome.status == "failed"
        self.bar.update(1)
        if outcome.status == "failed" and not outcome.skipped and self.terminal:
            self.bar.write(f"failed: {outcome.job_id}: {outcome.error}")
        if outcome.skipped:
            return
        self.finished += 1
        if self.lines:
            self.echo(self.line(outcome))

    def line(self, outcome: JobOutcome) -> str:
        counted = self.done + self.failed
        left = self.total - counted
        elapsed = time.perf_counter() - self.started
        # Wall time per job so far: with several workers, jobs finish that much faster.
        estimate = f"about {format_duration(elapsed / self.finished * left)} left" if left else "all ran"
        error = f": {outcome.error}" if outcome.status == "failed" else ""
        return (f"[{counted}/{self.total}] {outcome.status} {outcome.job_id} in {format_duration(outcome.seconds)}"
                f"{error}; {self.done} done, {self.failed} failed, {left} to go, {estimate}")

    def close(self) -> None:
        self.bar.close()
