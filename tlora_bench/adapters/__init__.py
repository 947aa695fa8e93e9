"""Adapter methods: one folder per family (`config`: hyperparameters and registration, no torch; `layer`: the
torch layer), registered by name in `METHODS`. Importing this package imports no torch: the names of
`adapters.model` and `adapters.timestep` load on first use."""

from __future__ import annotations

import importlib
from typing import Any

# Import order is registration order: the order `tlora-bench methods` and the test matrix list methods in.
# isort: off
from tlora_bench.adapters.tlora import config as _tlora  # noqa: F401  (lora, vanilla-tlora, ortho-lora, tlora)
from tlora_bench.adapters.oft import config as _oft  # noqa: F401
from tlora_bench.adapters.gsoft import config as _gsoft  # noqa: F401
from tlora_bench.adapters.svdiff import config as _svdiff  # noqa: F401
# isort: on
from tlora_bench.adapters.config import DEFAULT_TARGETS, AdapterConfig, LayerShape
from tlora_bench.adapters.registry import METHODS, MethodSpec, build_config, make_config, parse_method, register_method

_LAZY = {  # torch-side names -> their module
    **dict.fromkeys(("adapter_config", "adapter_layers", "attach_adapters", "count_trainable", "detach_adapters",
                     "merge_adapters", "parameter_groups", "prepare_for_sampling", "trainable_parameters",
                     "unmerge_adapters"), "tlora_bench.adapters.model"),
    **dict.fromkeys(("TimestepNotSetError", "install_timestep_hook", "rank_schedule", "timestep_state",
                     "timesteps"), "tlora_bench.adapters.timestep"),
    **dict.fromkeys(("AdapterLayer", "layer_table"), "tlora_bench.adapters.layer"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tlora_bench.adapters' has no attribute '{name}'")


__all__ = [
    "DEFAULT_TARGETS", "METHODS", "AdapterConfig", "LayerShape", "MethodSpec", "build_config", "make_config",
    "parse_method", "register_method", *_LAZY,
]
