"""Methods other packages implement: PEFT's tuners ("peft:loha-4") and LyCORIS's algorithms ("lycoris:tlora-4"),
through the real packages. Trained, saved, reloaded and sampled on the tiny SD-XL model; LyCORIS's T-LoRA at
the paper's recipe is tlora-bench's T-LoRA (docs/interop.md)."""

from __future__ import annotations

import pytest
import torch

from tests.adapter_helpers import fresh_unet, run, train_steps, unet_inputs
from tests.train_helpers import load_tiny, spec, write_concepts
from tlora_bench.adapters import METHODS, adapter_layers, attach_adapters, detach_adapters, make_config
from tlora_bench.adapters.io import adapter_state_dict, load_adapter, read_adapter_tensors
from tlora_bench.adapters.registry import parse_method
from tlora_bench.adapters.timestep import rank_schedule
from tlora_bench.errors import TloraBenchError
from tlora_bench.registry import Registry
from tlora_bench.sample import SampleOptions, generate
from tlora_bench.train import ADAPTER_FILE, train

pytest.importorskip("lycoris")

# What PEFT saves for one layer of each tuner (PEFT's own names, the adapter name dropped).
SAVED = {"peft:loha-4": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"},
         "peft:lokr-4": {"lokr_w1", "lokr_w2"},
         "peft:dora-4": {"lora_A.weight", "lora_B.weight", "lora_magnitude_vector"},
         "lycoris:tlora-4": {"q_layer.weight", "p_layer.weight", "lambda_layer", "alpha", "base_q", "base_p",
                             "base_lambda"}}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("providers")
    return {"manifest": write_concepts(root / "data"), "backend": load_tiny("tiny-sdxl", root / "cache")}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(SAVED))
def test_provider_methods_train_save_reload_and_sample(workspace, tmp_path, method):
    backend = workspace["backend"]
    train(spec(workspace["manifest"], method, steps=2), tmp_path, backend=backend, progress=False)
    tensors = read_adapter_tensors(tmp_path / ADAPTER_FILE)
    model, inputs, t = backend.denoiser, unet_inputs(2), torch.tensor([50, 950])
    load_adapter(model, tmp_path / ADAPTER_FILE)
    layers = list(adapter_layers(model))
    detach_adapters(model)
    assert len(layers) > 10 and all(SAVED[method] == {k[len(n) + 1:] for k in tensors if k.startswith(n + ".")}
                                    for n in layers)
    base = run(model, inputs, t)
    outputs = []
    for _ in range(2):  # reloading reproduces the trained adapter exactly, and detaching restores the base model
        load_adapter(model, tmp_path / ADAPTER_FILE)
        try:
            assert all(torch.equal(v, tensors[k]) for k, v in adapter_state_dict(model).items())
            outputs.append(run(model, inputs, t))
        finally:
            detach_adapters(model)
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], base)
    assert torch.equal(run(model, inputs, t), base)
    result = generate(tmp_path / ADAPTER_FILE, tmp_path / "images", options=SampleOptions(prompts=1, base_images=1),
                      backend=backend, progress=False)
    assert result.n_generated == 1


def test_peft_options_are_the_config_class_fields_checked_in_one_line():
    config = make_config("peft:lokr-8", decompose_both=True, rank_dropout=0.1)
    assert (config.r, config.decompose_both, config.peft_config(["x"]).decompose_both) == (8, True, True)
    with pytest.raises(TloraBenchError, match="method 'peft:loha' has no option 'no_such_field'"):
        make_config("peft:loha-4", no_such_field=1)
    with pytest.raises(TloraBenchError, match="option 'rank_dropout' must be a finite number"):
        make_config("peft:loha-4", rank_dropout="a lot")
    with pytest.raises(TloraBenchError, match="'use_dora' is fixed to True by method 'peft:dora'"):
        make_config("peft:dora-4", use_dora=False)
    with pytest.raises(TloraBenchError, match="PEFT's OFTConfig refuses these options"):
        make_config("peft:oft-4", oft_block_size=8)  # PEFT's own check: r and oft_block_size exclude each other


def test_a_size_peft_refuses_for_a_layer_is_one_line_before_any_weight_loads():
    from tlora_bench.config import load_config
    from tlora_bench.planner import make_plan

    with pytest.raises(TloraBenchError, match=r"cannot adapt layer .*PEFT says"):
        make_plan(load_config(None, {"model": "tiny", "methods": "peft:miss-4096", "concepts": "dog6"}))


def test_provider_names_load_on_demand_and_never_change_the_bundled_list():
    bundled = METHODS.names()
    spec_, size = parse_method("peft:loha-16")
    assert (spec_.name, size, spec_.family) == ("peft:loha", 16, "peft")
    assert METHODS.names() == bundled and not any(":" in name for name in bundled)
    everything = METHODS.names(providers=True)
    assert {"peft:loha", "peft:lokr", "peft:dora", "peft:boft", "peft:hra", "lycoris:tlora", "lycoris:lokr",
            "lycoris:loha", "lycoris:locon"} <= set(everything)
    assert "peft:vera" not in everything  # PEFT keeps VeRA's shared projections on its model wrapper
    with pytest.raises(TloraBenchError, match="unknown method 'peft:lohaa-4'; did you mean 'peft:loha'"):
        parse_method("peft:lohaa-4")


def test_a_provider_package_that_is_not_installed_is_one_line_saying_what_to_install():
    registry = Registry("method")
    registry.add_provider("absent", "no_such_package_xyz.methods:register", "Absent (pip install absent)")
    with pytest.raises(TloraBenchError, match=r"methods 'absent:\.\.\.' need Absent \(pip install absent\)"):
        registry.get("absent:thing")
    assert registry.names(providers=True) == []


def test_lycoris_mask_schedule_is_tlora_benchs_rank_schedule():
    from lycoris.modules.tlora import compute_timestep_mask

    for r, r_min, gamma in ((4, 2, 1.0), (64, 32, 1.0), (16, 1, 2.0)):
        for t in range(0, 1000, 7):
            rank = int(rank_schedule(t, r, r_min, 1000, gamma))
            assert int(compute_timestep_mask(t, 1000, r, r_min, gamma).sum()) == rank, (r, r_min, gamma, t)


PAPER_RECIPE = {"sig_type": "last", "use_data_init": False, "alpha": 0.0, "r_min": 2}


def _copy_factors(ours, theirs) -> None:
    """LyCORIS's P, Q, lambda and frozen copies := tlora-bench's B, A, S and B0, A0, S0 (one layer)."""
    lyco = theirs.lyco
    with torch.no_grad():
        for target, value in ((lyco.q_layer.weight, ours.A), (lyco.p_layer.weight, ours.B),
                              (lyco.lambda_layer, ours.S[None]), (lyco.base_q, ours.A0), (lyco.base_p, ours.B0),
                              (lyco.base_lambda, ours.S0[None])):
            target.copy_(value)


@pytest.mark.slow
def test_lycoris_tlora_at_the_paper_recipe_equals_ours_at_every_timestep():
    inputs = unet_inputs(1)
    ours, theirs = fresh_unet(), fresh_unet()
    attach_adapters(ours, make_config("tlora-4"))
    attach_adapters(theirs, make_config("lycoris:tlora-4", **PAPER_RECIPE))
    train_steps(ours, inputs, torch.tensor([500]))  # factors away from their init, frozen copies apart
    mine, lycoris = adapter_layers(ours), adapter_layers(theirs)
    assert mine.keys() == lycoris.keys()
    for name, layer in mine.items():
        _copy_factors(layer, lycoris[name])
    batch = 125  # each sample its own t: LyCORIS's one mask per call runs once per rank in the batch
    tiled = {"encoder_hidden_states": inputs["encoder_hidden_states"].expand(batch, -1, -1),
             "added_cond_kwargs": {k: v.expand(batch, -1) for k, v in inputs["added_cond_kwargs"].items()}}
    sample = inputs["sample"].expand(batch, -1, -1, -1)
    with torch.no_grad():
        for start in range(0, 1000, batch):
            t = torch.arange(start, start + batch)
            a = run(ours, {"sample": sample, **tiled}, t)
            b = run(theirs, {"sample": sample, **tiled}, t)
            assert (a - b).abs().max() <= 1e-5, start


def test_lycoris_tlora_defaults_are_lycoris_defaults():
    config = make_config("lycoris:tlora")
    assert (config.r, config.alpha, config.sig_type, config.use_data_init, config.r_min) == (4, 1.0, "principal",
                                                                                              True, 1)
    assert METHODS.get("lycoris:tlora").steps == 800 and not METHODS.get("lycoris:tlora").mergeable


def test_the_written_out_lycoris_algorithms_are_the_installed_table():
    from lycoris.wrapper import network_module_dict

    from tlora_bench.adapters.lycoris_methods.config import ALGORITHMS

    assert list(ALGORITHMS) == list(network_module_dict)
    assert all(f"lycoris:{algo}" in METHODS for algo in ALGORITHMS)
