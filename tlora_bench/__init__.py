"""tlora-bench: a benchmark harness for single-image diffusion model personalization.

The public API (docs/design.md, docs/extending.md), every name loaded on first use so `import tlora_bench` stays
light (no torch):

    config = tlora_bench.load_config("smoke", {"methods": "tlora,lora"})
    plan = tlora_bench.plan(config)            # variants, recipes, concepts and jobs, all checked
    result = tlora_bench.run(plan, "results/my-run")

Registries (`METHODS`, `BACKENDS`, `METRICS`) and `register_method`, `register_backend`, `register_metric` extend
the harness; plugins do the same through the entry-point groups `tlora_bench.methods`, `tlora_bench.backends` and
`tlora_bench.metrics`.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from tlora_bench.threads import set_wait_policy

set_wait_policy()  # before anything imports torch: waiting OpenMP threads sleep (tlora_bench/threads.py)

try:
    __version__ = version("tlora-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_API = {
    "load_config": ("tlora_bench.config", "load_config"),
    "RunConfig": ("tlora_bench.config", "RunConfig"),
    "plan": ("tlora_bench.planner", "make_plan"),
    "Plan": ("tlora_bench.planner", "Plan"),
    "run": ("tlora_bench.runner.run", "run"),
    "METHODS": ("tlora_bench.adapters", "METHODS"),
    "MethodSpec": ("tlora_bench.adapters", "MethodSpec"),
    "AdapterConfig": ("tlora_bench.adapters", "AdapterConfig"),
    "AdapterLayer": ("tlora_bench.adapters.layer", "AdapterLayer"),
    "register_method": ("tlora_bench.adapters", "register_method"),
    "BACKENDS": ("tlora_bench.models", "BACKENDS"),
    "BackendSpec": ("tlora_bench.models", "BackendSpec"),
    "register_backend": ("tlora_bench.models", "register_backend"),
    "METRICS": ("tlora_bench.metrics.registry", "METRICS"),
    "Metric": ("tlora_bench.metrics.registry", "Metric"),
    "MetricInput": ("tlora_bench.metrics.registry", "MetricInput"),
    "register_metric": ("tlora_bench.metrics.registry", "register_metric"),
    "TloraBenchError": ("tlora_bench.errors", "TloraBenchError"),
}


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'tlora_bench' has no attribute '{name}'")


__all__ = ["__version__", *_API]
