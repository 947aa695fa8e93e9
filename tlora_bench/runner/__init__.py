"""Runs: execute a plan's jobs (locally, in processes or on Ray), score, summarise; resumable."""

from tlora_bench.runner.jobs import JobOutcome, run_job
from tlora_bench.runner.run import RunResult, format_outcomes, format_plan, run

__all__ = ["JobOutcome", "RunResult", "format_outcomes", "format_plan", "run", "run_job"]
