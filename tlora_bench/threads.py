"""CPU threads on a shared machine: a run slows in proportion to its share of the cores, not twentyfold.

torch's intra-op threads meet at a barrier after every parallel kernel. On cores that other processes also use,
a thread that is descheduled holds up all the others, and by default the waiting threads spin, taking the
cycles the late thread needs: beside one CPU-bound process, a 2-thread smoke run took 20 times as long as
alone. Waiting threads here sleep instead (OMP_WAIT_POLICY=PASSIVE, set before torch is imported, unless the
user set it), which keeps the slowdown near the run's share of the machine (docs/performance.md,
`benchmarks/contention.py`).

The thread count itself stays fixed (torch's: one per core), never chosen from the load of the moment: CPU
kernels sum in an order that depends on the thread count, so a count that followed the load would make a
resumed run differ in the last bits from an uninterrupted one. `TLORA_BENCH_THREADS=N` fixes another count;
`TLORA_BENCH_THREADS=torch` leaves torch's defaults, wait policy included (for comparison).
"""

from __future__ import annotations

import os
import sys

THREADS_ENV = "TLORA_BENCH_THREADS"


def set_wait_policy() -> None:
    """Sleeping, not spinning, OpenMP waits: only effective before torch (and its OpenMP runtime) is loaded."""
    if os.environ.get(THREADS_ENV) != "torch" and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cpu_threads() -> int | None:
    """The intra-op thread count TLORA_BENCH_THREADS asks for, or None: torch's own (one per core)."""
    setting = os.environ.get(THREADS_ENV, "auto").strip().lower()
    if setting in ("auto", "torch", ""):
        return None
    if setting.isdigit() and int(setting) >= 1:
        return int(setting)
    from tlora_bench.errors import TloraBenchError

    raise TloraBenchError(f"{THREADS_ENV}={setting!r} is not a thread count; use a number of threads (e.g. 2), "
                          "auto or torch")


def adapt_cpu_threads() -> int | None:
    """Apply TLORA_BENCH_THREADS to torch (and OpenCV); returns the count set, or None."""
    count = cpu_threads()
    if count is None:
        return None
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    try:
        import cv2

        cv2.setNumThreads(count)
    except ImportError:  # OpenCV is needed only by the grabcut segmenter
        pass
    return count
