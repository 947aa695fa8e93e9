"""Adapter methods: one module per family, registered by name in `METHODS`."""

# Import order is registration order: the order `tlora-bench methods` and the test matrix list methods in.
# isort: off
from tlora_bench.adapters import tlora  # noqa: F401  (registers lora, vanilla-tlora, ortho-lora, tlora)
from tlora_bench.adapters import oft  # noqa: F401  (registers oft)
from tlora_bench.adapters import gsoft  # noqa: F401  (registers gsoft)
from tlora_bench.adapters import svdiff  # noqa: F401  (registers svdiff)
# isort: on
from tlora_bench.adapters.layer import DEFAULT_TARGETS, AdapterConfig, AdapterLayer
from tlora_bench.adapters.model import (
    adapter_config,
    adapter_layers,
    attach_adapters,
    count_trainable,
    detach_adapters,
    merge_adapters,
    parameter_groups,
    prepare_for_sampling,
    trainable_parameters,
    unmerge_adapters,
)
from tlora_bench.adapters.registry import METHODS, MethodSpec, make_config, parse_method, register_method
from tlora_bench.adapters.timestep import (
    TimestepNotSetError,
    install_timestep_hook,
    rank_schedule,
    timestep_state,
    timesteps,
)

__all__ = [
    "DEFAULT_TARGETS", "METHODS", "AdapterConfig", "AdapterLayer", "MethodSpec", "TimestepNotSetError",
    "adapter_config", "adapter_layers", "attach_adapters", "count_trainable", "detach_adapters",
    "install_timestep_hook", "make_config", "merge_adapters", "parameter_groups", "parse_method",
    "prepare_for_sampling",
    "rank_schedule", "register_method", "timestep_state", "timesteps", "trainable_parameters", "unmerge_adapters",
]
