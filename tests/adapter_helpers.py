"""Helpers shared by the adapter tests: tiny models, inputs, a few optimizer steps, outputs at t."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from tlora_bench.adapters import METHODS, adapter_config, make_config, timesteps, trainable_parameters
from tlora_bench.models.tiny import tiny_unet, tiny_unet_inputs

SMALL_SIZE = 4  # the "-N" size used for every method in the shared matrix


@functools.cache
def _unet_prototype() -> nn.Module:
    return tiny_unet(seed=0)


def fresh_unet() -> nn.Module:
    """A tiny SD-XL-shaped UNet with the same random weights every time (a deep copy: fast)."""
    return copy.deepcopy(_unet_prototype())


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 24), nn.GELU(), nn.Linear(24, 12)).eval()


def small_config(method: str, **overrides):
    spec = METHODS.get(method)
    label = f"{method}-{SMALL_SIZE}" if spec.size_field else method
    return make_config(label, **overrides)


def run(model: nn.Module, inputs, t: torch.Tensor) -> torch.Tensor:
    """One forward pass at timesteps t (one per sample); works with and without timestep adapters."""
    config = getattr(model, "_tlora_adapter_config", None)
    call = (lambda: model(timestep=t, **inputs).sample) if isinstance(inputs, dict) else (lambda: model(inputs))
    if config is None:
        return call()
    with timesteps(model, t):
        return call()


def unet_inputs(batch: int = 2, seed: int = 0):
    return tiny_unet_inputs(batch, seed)


def train_steps(model: nn.Module, inputs, t: torch.Tensor, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps towards a random target, so adapters are no longer at their init."""
    from tlora_bench.adapters import parameter_groups

    optimizer = torch.optim.AdamW(parameter_groups(model, lr=lr), lr=lr)
    with torch.no_grad():
        target = torch.randn_like(run(model, inputs, t))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(run(model, inputs, t), target)
        loss.backward()
        optimizer.step()
    assert adapter_config(model) is not None and trainable_parameters(model)
