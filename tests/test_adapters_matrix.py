"""Every registered method through the same checks (PEFT's habit): identity at init, save/load, merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.adapter_helpers import fresh_unet, mlp, run, small_config, train_steps, unet_inputs
from tlora_bench.adapters import (
    METHODS,
    adapter_layers,
    attach_adapters,
    count_trainable,
    detach_adapters,
    merge_adapters,
    parameter_groups,
    trainable_parameters,
    unmerge_adapters,
)
from tlora_bench.adapters.io import load_adapter, read_adapter_config, save_adapter

ALL_METHODS = METHODS.names()
T = torch.tensor([120.0, 870.0])  # two samples, two different ranks for timestep-dependent methods


def _base_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "base_layer" in k}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_identity_at_init_on_unet(method: str):
    model, inputs = fresh_unet(), unet_inputs()
    with torch.no_grad():
        reference = run(model, inputs, T)
        attach_adapters(model, small_config(method))
        adapted = run(model, inputs, T)
    assert (adapted - reference).abs().max() <= 1e-6


@pytest.mark.parametrize("method", ALL_METHODS)
def test_identity_at_init_on_mlp(method: str):
    model, x = mlp(), torch.randn(3, 12)
    with torch.no_grad():
        reference = model(x)
        attach_adapters(model, small_config(method, target_modules=("0", "2", "4")))
        adapted = run(model, x, torch.tensor([5.0, 500.0, 995.0]))
    assert (adapted - reference).abs().max() <= 1e-6


@pytest.mark.parametrize("method", ALL_METHODS)
def test_training_moves_only_adapter_tensors(method: str):
    model, inputs = fresh_unet(), unet_inputs()
    attach_adapters(model, small_config(method))
    before = _base_weights(model)
    train_steps(model, inputs, T)
    assert all(torch.equal(before[k], v) for k, v in _base_weights(model).items())
    assert count_trainable(model) == sum(p.numel() for p in trainable_parameters(model)) > 0
    grouped = [p for group in parameter_groups(model) for p in group["params"]]
    assert sorted(map(id, grouped)) == sorted(map(id, trainable_parameters(model)))  # each exactly once


@pytest.mark.parametrize("method", ALL_METHODS)
def test_save_load_reproduces_outputs_exactly(method: str, tmp_path: Path):
    model, inputs = fresh_unet(), unet_inputs()
    config = small_config(method, seed=3)
    attach_adapters(model, config)
    train_steps(model, inputs, T)
    path = save_adapter(model, tmp_path / "adapter.safetensors", metadata={"base_model": "tiny"})
    assert read_adapter_config(path) == config
    fresh = fresh_unet()
    assert load_adapter(fresh, path) == config
    with torch.no_grad():
        assert torch.equal(run(model, inputs, T), run(fresh, inputs, T))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_merge_matches_unmerged_and_unmerge_restores(method: str):
    model, inputs = fresh_unet(), unet_inputs(batch=1)
    attach_adapters(model, small_config(method))
    train_steps(model, inputs, torch.tensor([300.0]))
    before = _base_weights(model)
    spec = METHODS.get(method)
    for t in ([None] if spec.mergeable else []) + [0.0, 420.0, 999.0]:
        t_run = torch.tensor([0.0 if t is None else t])
        with torch.no_grad():
            unmerged = run(model, inputs, t_run)
            merge_adapters(model, t=t)
            merged = run(model, inputs, t_run)
            unmerge_adapters(model)
            again = run(model, inputs, t_run)
        assert (merged - unmerged).abs().max() <= 1e-5, t
        assert torch.equal(again, unmerged)
    assert all(torch.equal(before[k], v) for k, v in _base_weights(model).items())


@pytest.mark.parametrize("method", ALL_METHODS)
def test_detach_restores_the_base_model(method: str):
    model, inputs = fresh_unet(), unet_inputs()
    model.conv_in.requires_grad_(False)  # a mix of frozen and trainable parameters, both kept as they were
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    with torch.no_grad():
        reference = run(model, inputs, T)
    attach_adapters(model, small_config(method))
    train_steps(model, inputs, T)
    detach_adapters(model)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == trainable
    with torch.no_grad():
        assert torch.equal(run(model, inputs, T), reference)
    with pytest.raises(Exception, match="no adapters attached"):
        adapter_layers(model)
