"""tlora-bench: a benchmark harness for single-image diffusion model personalization."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tlora-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
