"""CPU threads on a shared machine: a run slows in proportion to its share of the cores, not twentyfold.

torch's intra-op threads meet at a barrier after every parallel kernel. On cores that other processes also use,
a thread that is descheduled holds up all the others, and by default the waiting threads spin, taking the
cycles the late thread needs: beside one CPU-bound process, a smoke run took 5 to 20 times as long as alone
(docs/performance.md, `benchmarks/contention.py`). Two choices end that:

- waiting threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, set before torch is imported, unless the
  user set it);
- a tiny model (and the tiny extractors) runs on one thread: its kernels are too small to gain from a second
  one (10% on 2 cores), while every parallel region pays the barrier; so does a small real model (a backend
  marked `small`: the synthetic scene model, 3x faster on one thread than on two with sleeping waits); real
  models keep torch's count, one thread per core, whose large kernels a sleeping wait costs nothing.

The count depends on the model only, never on the load of the moment: CPU kernels sum in an order that depends
on the thread count, so a count that followed the load would make a resumed run differ in the last bits from an
uninterrupted one. `TLORA_BENCH_THREADS=N` fixes the count, `TLORA_BENCH_THREADS=torch` leaves torch's own
defaults, wait policy included (for comparison), and an OMP_NUM_THREADS set by the user is kept as it is.
"""

from __future__ import annotations

import functools
import os
import sys

THREADS_ENV = "TLORA_BENCH_THREADS"


def set_wait_policy() -> None:
    """Sleeping, not spinning, OpenMP waits: only effective before torch (and its OpenMP runtime) is loaded."""
    if os.environ.get(THREADS_ENV) != "torch" and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cpu_threads(small: bool = False) -> int | None:
    """The intra-op thread count for work on a tiny model (`small`) or a real one, or None: leave torch's."""
    setting = os.environ.get(THREADS_ENV, "auto").strip().lower()
    if setting == "torch" or (setting == "auto" and "OMP_NUM_THREADS" in os.environ):
        return None
    if setting == "auto":
        return 1 if small else _torch_default()
    if setting.isdigit() and int(setting) >= 1:
        return int(setting)
    from tlora_bench.errors import TloraBenchError

    raise TloraBenchError(f"{THREADS_ENV}={setting!r} is not a thread count; use a number of threads (e.g. 2), "
                          "auto or torch")


@functools.cache
def _torch_default() -> int:
    """torch's own count (one per core), read once, before adapt_cpu_threads first changes it."""
    import torch

    return torch.get_num_threads()


def adapt_cpu_threads(small: bool = False) -> int | None:
    """Set torch's (and OpenCV's) thread count for the work that follows; returns the count, or None."""
    count = cpu_threads(small)
    if count is None:
        return None
    import torch

    _torch_default()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    try:
        import cv2

        cv2.setNumThreads(count)
    except ImportError:  # OpenCV is needed only by the grabcut segmenter
        pass
    return count
