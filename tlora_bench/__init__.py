"""tlora-bench: a benchmark harness for single-image diffusion model personalization."""

from importlib.metadata import PackageNotFoundError, version

from tlora_bench.threads import set_wait_policy

set_wait_policy()  # before anything imports torch: waiting OpenMP threads sleep (tlora_bench/threads.py)

try:
    __version__ = version("tlora-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
