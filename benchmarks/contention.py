"""A smoke run on a busy machine: alone, then beside 1 and 2 CPU-bound competitor processes, as the ratio of
its wall time to its fair share (docs/performance.md).

    .venv/bin/python benchmarks/contention.py                 # tlora-bench's thread policy
    .venv/bin/python benchmarks/contention.py --compare       # the same beside torch's own defaults

Fair share: a run that keeps u cores busy alone (its CPU time / wall time) gets C / (k + 1) of the C cores
beside k single-threaded competitors, so its fair time is alone x max(1, u (k + 1) / C). A ratio of 1 is
perfect proportional slowdown; the goal is at most 1.5. Each run writes a fresh folder (the tiny models come
from a cache filled by a warm-up run first). Run it on an otherwise idle machine: other work skews every row.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "tlora_bench.cli"]
COMPETITOR = "while True:\n    sum(i * i for i in range(10_000))\n"
POLICIES = {"tlora-bench": {}, "torch defaults": {"TLORA_BENCH_THREADS": "torch"}}


def smoke(out: Path, env: dict[str, str], timeout: float) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `run --preset smoke` into a fresh folder; inf when it timed out."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        subprocess.run([*CLI, "run", "--preset", "smoke", "--out", str(out)], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return float("inf"), float("nan")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def beside(competitors: int, out: Path, env: dict[str, str], timeout: float) -> tuple[float, float]:
    procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(competitors)]
    try:
        time.sleep(1.0 if competitors else 0.0)  # the competitors are running before the run starts
        return smoke(out, env, timeout)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitors", default="0,1,2", help="competitor counts, 0 first (default 0,1,2)")
    parser.add_argument("--compare", action="store_true", help="also run with torch's default threads")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run counts as too slow")
    args = parser.parse_args()
    counts = [int(c) for c in args.competitors.split(",")]
    cores = len(os.sched_getaffinity(0))
    policies = POLICIES if args.compare else {"tlora-bench": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base = {**os.environ, "TLORA_BENCH_CACHE": str(Path(tmp) / "cache")}
        smoke(Path(tmp) / "warm-up", base, args.timeout)  # builds the tiny models into the cache
        print(f"{cores} cores; smoke preset; ratio = wall / fair share (goal <= 1.5)")
        print(f"{'threads':<16} {'competitors':>11} {'wall s':>8} {'cores used':>10} {'fair s':>8} {'ratio':>6}")
        for name, extra in policies.items():
            env = {**base, **extra}
            alone = used = None
            for k in counts:
                wall, cpu = beside(k, Path(tmp) / f"{name}-{k}".replace(" ", "-"), env, args.timeout)
                if alone is None:
                    alone, used = wall, cpu / wall
                fair = alone * max(1.0, used * (k + 1) / cores)
                shown = f"{wall:8.1f}" if wall != float("inf") else f">{args.timeout:7.0f}"
                print(f"{name:<16} {k:>11} {shown} {cpu / wall if wall != float('inf') else float('nan'):>10.2f} "
                      f"{fair:>8.1f} {wall / fair:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
