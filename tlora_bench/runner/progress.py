"""Progress of a run: a bar on a terminal; one line per finished job in a log (nohup, Slurm, CI).

A log has no bar to redraw, so a run that goes to a file would be silent until its end: each job that this
invocation finishes writes a line with the counts so far and an estimate of the time left, from the mean time
of the jobs finished in this invocation (jobs finished earlier took no time now and say nothing of the speed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from tlora_bench.runner.jobs import JobOutcome


def jobs_phrase(count: int) -> str:
    """1 -> '1 job', 3 -> '3 jobs'."""
    return f"{count} job" if count == 1 else f"{count} jobs"


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
                 terminal: bool | None = None, images: int = 0) -> None:
        from tqdm.auto import tqdm

        self.total, self.echo = total, echo
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.done = self.failed = self.finished = 0
        self.started = time.perf_counter()
        shown = enabled and self.terminal
        self.bar = tqdm(total=total, desc="jobs", unit="job", disable=not shown)
        # Jobs that run in other processes (a GPU's worker, Ray, Slurm) show their images by a count of files.
        self.image_bar = tqdm(total=images, desc="images", unit="img", position=1, disable=not (shown and images))
        self.lines = enabled and not self.terminal

    @property
    def shows_images(self) -> bool:
        return not self.image_bar.disable

    def images(self, made: int) -> None:
        """The images made so far (sampled by jobs in other processes), on the second bar."""
        if self.shows_images and made != self.image_bar.n:
            self.image_bar.n = min(made, self.image_bar.total)
            self.image_bar.refresh()

    def __call__(self, outcome: JobOutcome) -> None:
        self.done += outcome.status == "done"
        self.failed += outcome.status != "done"  # failed, or lost by a scheduler
        self.bar.update(1)
        if outcome.status != "done" and not outcome.skipped and self.terminal:
            self.bar.write(f"{outcome.status}: {outcome.job_id}: {outcome.error}")
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
        error = f": {outcome.error}" if outcome.status != "done" else ""
        return (f"[{counted}/{self.total}] {outcome.status} {outcome.job_id} in {format_duration(outcome.seconds)}"
                f"{error}; {self.done} done, {self.failed} failed, {left} to go, {estimate}")

    def close(self) -> None:
        self.image_bar.close()
        self.bar.close()


def count_images(run_dir: Path) -> int:
    """The PNG files of the run's adapted models (the base model's drift images are not a job's)."""
    from tlora_bench.layout import BASE_MODEL_DIR, IMAGES_DIR

    root = run_dir / IMAGES_DIR
    folders = [f for f in root.iterdir() if f.is_dir() and f.name != BASE_MODEL_DIR] if root.is_dir() else []
    return sum(1 for folder in folders for _ in folder.rglob("*.png"))
