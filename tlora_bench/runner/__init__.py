"""Runs: plan jobs from a config, execute them (locally or on Ray), score, summarise; resumable."""

from tlora_bench.runner.jobs import JobOutcome, run_job
from tlora_bench.runner.plan import Job, Variant, expand_variants, plan_jobs
from tlora_bench.runner.run import RunResult, format_outcomes, format_plan, run

__all__ = ["Job", "JobOutcome", "RunResult", "Variant", "expand_variants", "format_outcomes", "format_plan",
           "plan_jobs", "run", "run_job"]
