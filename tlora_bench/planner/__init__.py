"""The plan stage: config -> `Plan` (variants with resolved recipes, concepts, jobs), checked before any work."""

from tlora_bench.planner.plan import Job, Plan, Variant, job_images, make_plan

__all__ = ["Job", "Plan", "Variant", "job_images", "make_plan"]
