"""Attach adapters to any torch model, and act on all of a model's adapted layers at once."""

from __future__ import annotations

import torch
from torch import nn

from tlora_bench.adapters.config import AdapterConfig
from tlora_bench.adapters.layer import AdapterLayer, layer_table
from tlora_bench.adapters.registry import METHODS
from tlora_bench.adapters.timestep import TimestepState
from tlora_bench.errors import TloraBenchError

CONFIG_ATTR = "_tlora_adapter_config"
STATE_ATTR = "_tlora_timestep_state"
TRAINABLE_ATTR = "_tlora_base_trainable"  # base parameters that were trainable before attaching, by name


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def attach_adapters(model: nn.Module, config: AdapterConfig, *, init: bool = True,
                    dtype: torch.dtype = torch.float32) -> list[str]:
    """Freeze `model`, wrap every target module in the method's adapter layer, return the adapted names.

    `init=False` skips the (possibly costly) random or SVD init: use it when loading saved tensors next.
    Adapter tensors are created on each base layer's device in `dtype` (fp32: the training precision of
    the adapter even when the base model runs in bf16).
    """
    if getattr(model, CONFIG_ATTR, None) is not None:
        raise TloraBenchError(f"{type(model).__name__} already has a '{getattr(model, CONFIG_ATTR).method}' "
                              "adapter; detach_adapters(model) first")
    spec = METHODS.get(config.method)
    targets = [(layer.name, model.get_submodule(layer.name)) for layer in spec.find_targets(layer_table(model), config)]
    if not targets:
        raise TloraBenchError(f"no module of {type(model).__name__} matches target_modules "
                              f"{list(config.target_modules)}; check the module names")
    state = TimestepState()
    wrapped: list[tuple[str, nn.Module]] = []
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    model.requires_grad_(False)
    try:
        for name, module in targets:
            layer = spec.layer_cls(module, config, name, state=state, init=init, dtype=dtype)
            _set_submodule(model, name, layer)
            wrapped.append((name, module))
    except BaseException:  # e.g. an impossible rank for one layer: leave the model as it was
        for name, module in wrapped:
            _set_submodule(model, name, module)
        _unfreeze(model, trainable)
        raise
    setattr(model, CONFIG_ATTR, config)
    setattr(model, STATE_ATTR, state)
    setattr(model, TRAINABLE_ATTR, trainable)
    return [name for name, _ in targets]


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Adapted layers by the name of the module they replaced."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, AdapterLayer)}
    if not layers:
        raise TloraBenchError(f"{type(model).__name__} has no adapters attached")
    return layers


def adapter_config(model: nn.Module) -> AdapterConfig:
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise TloraBenchError(f"{type(model).__name__} has no adapters attached")
    return config


def detach_adapters(model: nn.Module) -> None:
    """Put the original base layers back (their weights were never changed), trainable as they were."""
    for name, layer in adapter_layers(model).items():
        _set_submodule(model, name, layer.base_layer)
    _unfreeze(model, getattr(model, TRAINABLE_ATTR, None) or set())
    setattr(model, CONFIG_ATTR, None)
    setattr(model, STATE_ATTR, None)
    setattr(model, TRAINABLE_ATTR, None)


def _unfreeze(model: nn.Module, names: set[str]) -> None:
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for layer in adapter_layers(model).values() for p in layer.parameters() if p.requires_grad]


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model))


def parameter_groups(model: nn.Module, lr: float | None = None,
                     weight_decay: float | None = None) -> list[dict]:
    """Optimizer parameter groups with the method's defaults (docs/decisions.md sections 2-3).

    A layer may split its parameters into groups with their own learning rate (SVDiff) through
    `param_groups(lr, weight_decay)`; by default all share one group.
    """
    spec = METHODS.get(adapter_config(model).method)
    lr = spec.lr if lr is None else lr
    weight_decay = spec.weight_decay if weight_decay is None else weight_decay
    merged: dict[tuple, list] = {}
    for layer in adapter_layers(model).values():
        for group in layer.param_groups(lr, weight_decay):
            key = (group["lr"], group["weight_decay"], group.get("name", "adapter"))
            merged.setdefault(key, []).extend(p for p in group["params"] if p.requires_grad)
    return [{"params": params, "lr": lr_, "weight_decay": wd, "name": name}
            for (lr_, wd, name), params in merged.items() if params]


def merge_adapters(model: nn.Module, t: float | None = None) -> None:
    """Fold every update into its layer's weight (at timestep t for timestep-dependent methods)."""
    for layer in adapter_layers(model).values():
        layer.merge(t)


def unmerge_adapters(model: nn.Module) -> None:
    for layer in adapter_layers(model).values():
        layer.unmerge()


def prepare_for_sampling(model: nn.Module) -> None:
    """The fastest exact inference form: mergeable methods folded into W once; timestep-dependent ones
    (T-LoRA) folded at r(t) whenever the rank changes, which one denoising step's shared t allows."""
    if METHODS.get(adapter_config(model).method).mergeable:
        merge_adapters(model)
        return
    for layer in adapter_layers(model).values():
        if hasattr(layer, "set_merge_per_rank"):
            layer.set_merge_per_rank(True)
