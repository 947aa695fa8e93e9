"""How long the commands that only read names take, side by side, as the ratio to `concepts list` (docs/performance.md).

    .venv/bin/python benchmarks/cli_latency.py            # 5 repeats, the median of each
    .venv/bin/python benchmarks/cli_latency.py --repeats 9

Goals: `config --preset paper-table2` and `presets` within 2x of `concepts list` (none of them imports torch:
names, sizes and plans come from the registries and the bundled layer tables), and `run --preset paper-table2
--dry-run` under 5 s. Each command is a fresh process, as a user types it; run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "tlora_bench.cli"]
COMMANDS = {  # name -> arguments (OUT: a fresh folder)
    "concepts list": ["concepts", "list"],
    "config --preset paper-table2": ["config", "--preset", "paper-table2"],
    "presets": ["presets"],
    "run --preset paper-table2 --dry-run": ["run", "--preset", "paper-table2", "--dry-run", "--out", "OUT"],
}
GOALS = {"config --preset paper-table2": ("ratio", 2.0), "presets": ("ratio", 2.0),
         "run --preset paper-table2 --dry-run": ("seconds", 5.0)}


def seconds(args: list[str], out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([*CLI, *[str(out) if a == "OUT" else a for a in args]], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (the median is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for round_ in range(args.repeats + 1):  # round 0 warms the file cache and is not counted
            for name, command in COMMANDS.items():  # interleaved: a busy moment slows every command alike
                elapsed = seconds(command, Path(tmp) / f"run-{round_}")
                if round_:
                    times[name].append(elapsed)
    base = statistics.median(times["concepts list"])
    print(f"{'command':<38} {'median s':>9} {'x concepts list':>16}  goal")
    for name, values in times.items():
        median = statistics.median(values)
        kind, bound = GOALS.get(name, ("", 0.0))
        value = median / base if kind == "ratio" else median
        goal = "" if not kind else f"{'ratio' if kind == 'ratio' else 'seconds'} <= {bound:g}: " \
                                   f"{'met' if value <= bound else 'NOT met'}"
        print(f"{name:<38} {median:>9.2f} {median / base:>16.2f}  {goal}")


if __name__ == "__main__":
    main()
