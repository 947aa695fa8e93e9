"""Device-hour estimates for `run --dry-run`, from measured seconds per training step and per image.

Figures come, in this order, from jobs already finished in the run folder (their done markers record
seconds, steps and images: measured on the user's own machine), else from the table below, each entry
with its source. Refresh the table from `benchmarks/gpu_sdxl.py` and `benchmarks/train_sample.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Throughput:
    seconds_per_step: float
    seconds_per_image: float
    source: str


# (backend, precision) -> figures. Tiny: measured; SD-XL and FLUX: no GPU measurement in this project yet,
# so these are the targets of docs/performance.md (0.35 s/step for bf16 T-LoRA-64 on an H100) scaled as
# written in each source line: treat them as a planning guide until a device session replaces them.
THROUGHPUT: dict[tuple[str, str], Throughput] = {
    ("tiny-sdxl", "fp32"): Throughput(0.072, 0.151, "measured: benchmarks/train_sample.py, tlora-4, 2-core "
                                                   "x86_64 CPU, 1 thread, 2026-11-26 (docs/performance.md)"),
    ("tiny-flux", "fp32"): Throughput(0.072, 0.151, "not measured: taken equal to tiny-sdxl (the same scale)"),
    ("sdxl", "bf16"): Throughput(0.35, 3.0, "target, not measured: H100 T-LoRA-64 0.35 s/step; 25-step guided "
                                           "sampling taken as 50 UNet passes at 0.06 s"),
    ("sdxl", "fp32"): Throughput(1.05, 9.0, ("target, not measured: the bf16 figures x3, a guess (full fp32 "
                                           "matmuls, TF32 off as fp32 means, are slower still on an H100)")),
    ("flux", "bf16"): Throughput(1.0, 12.0, "target, not measured: FLUX.1-dev is ~4.6x SD-XL's UNet in "
                                           "parameters; 28 steps, no classifier-free guidance batch"),
}


def measured_throughput(run_dir: Path) -> Throughput | None:
    """Mean seconds per step and per generated image over the run's finished jobs, if any."""
    from tlora_bench.layout import DONE_FILE, JOBS_DIR
    from tlora_bench.runner.jobs import read_marker

    steps = step_seconds = images = image_seconds = 0.0
    for marker_path in run_dir.glob(f"{JOBS_DIR}/*/*/*/{DONE_FILE}"):
        marker = read_marker(marker_path) or {}
        trained = marker.get("train_steps", 0) - marker.get("resumed_from_step", 0)
        if trained > 0 and marker.get("train_seconds"):
            steps, step_seconds = steps + trained, step_seconds + marker["train_seconds"]
        if marker.get("images_generated") and marker.get("sample_seconds"):
            images, image_seconds = images + marker["images_generated"], image_seconds + marker["sample_seconds"]
    if not steps or not images:
        return None
    return Throughput(step_seconds / steps, image_seconds / images,
                      f"measured in this run folder: {int(steps)} steps, {int(images)} images")


def estimate(backend: str, precision: str, steps: int, images: int, run_dir: Path | None = None
             ) -> tuple[float, Throughput] | None:
    """(device hours, figures used), or None when no figure exists for this backend and precision."""
    figures = (measured_throughput(run_dir) if run_dir and run_dir.is_dir() else None) or \
        THROUGHPUT.get((backend, precision))
    if figures is None:
        return None
    return (steps * figures.seconds_per_step + images * figures.seconds_per_image) / 3600.0, figures
