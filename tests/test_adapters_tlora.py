"""The T-LoRA family (docs/decisions.md section 1): schedule, masks, init variants, timestep plumbing, export."""

from __future__ import annotations

import pytest
import torch

from tests.adapter_helpers import fresh_unet, mlp, run, train_steps, unet_inputs
from tlora_bench.adapters import (
    TimestepNotSetError,
    adapter_layers,
    attach_adapters,
    detach_adapters,
    install_timestep_hook,
    make_config,
    rank_schedule,
    timesteps,
)
from tlora_bench.adapters.timestep import sigma_to_timestep
from tlora_bench.errors import TloraBenchError
from tlora_bench.models.tiny import tiny_flux_inputs, tiny_flux_transformer

VARIANTS = [(source, part) for source in ("R", "W") for part in ("top", "middle", "last")]
FLUX_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")


# ---- r(t) ----------------------------------------------------------------------------------------------

def test_rank_schedule_worked_values():
    # docs/decisions.md section 1: r = 64, r_min = 32.
    worked = {0: 64, 250: 56, 500: 48, 750: 40, 961: 33, 999: 32}
    assert [int(rank_schedule(t, 64, 32)) for t in worked] == list(worked.values())
    assert rank_schedule(torch.tensor(list(worked)), 64, 32).tolist() == list(worked.values())


@pytest.mark.parametrize("r, r_min, gamma", [(64, 32, 1.0), (4, 1, 1.0), (8, 8, 1.0), (16, 4, 2.0), (16, 4, 0.5)])
def test_rank_schedule_is_bounded_and_monotone(r: int, r_min: int, gamma: float):
    t = torch.arange(-5, 1006, dtype=torch.float64)  # beyond [0, T) too: clamped
    ranks = rank_schedule(t, r, r_min, gamma=gamma)
    assert ranks.min() >= r_min and ranks.max() <= r
    assert bool((ranks[1:] <= ranks[:-1]).all())  # never grows with t
    assert int(rank_schedule(0, r, r_min, gamma=gamma)) == r


def test_rank_schedule_uses_the_schedulers_T():
    assert int(rank_schedule(50, 64, 32, num_train_timesteps=100)) == 48


# ---- identity at init, every variant ---------------------------------------------------------------------

@pytest.mark.parametrize("source, part", VARIANTS)
@pytest.mark.parametrize("method", ["ortho-lora", "tlora"])
@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_identity_at_init_for_every_init_variant(kind: str, method: str, source: str, part: str):
    if kind == "unet":
        model, inputs, t, targets = fresh_unet(), unet_inputs(), torch.randint(0, 1000, (2,)).float(), {}
    else:
        model, inputs, t = mlp(), torch.randn(3, 12), torch.randint(0, 1000, (3,)).float()
        targets = {"target_modules": ("0", "2", "4")}
    with torch.no_grad():
        reference = run(model, inputs, t)
        for r in (1, 3, 8):
            config = make_config(f"{method}-{r}", svd_source=source, svd_components=part, r_min=1, **targets)
            attach_adapters(model, config)
            assert (run(model, inputs, t) - reference).abs().max() <= 1e-6
            detach_adapters(model)


@pytest.mark.parametrize("source, part", VARIANTS)
def test_ortho_factors_are_orthonormal_at_init(source: str, part: str):
    model = mlp()
    attach_adapters(model, make_config("tlora-6", svd_source=source, svd_components=part, target_modules=("2",)))
    (layer,) = adapter_layers(model).values()
    eye = torch.eye(6)
    assert torch.allclose(layer.A0 @ layer.A0.T, eye, atol=1e-5)
    assert torch.allclose(layer.B0.T @ layer.B0, eye, atol=1e-5)
    assert torch.equal(layer.A, layer.A0) and torch.equal(layer.B, layer.B0) and torch.equal(layer.S, layer.S0)
    assert bool((layer.S0 >= 0).all()) and bool((layer.S0[:-1] >= layer.S0[1:]).all())


def test_svd_of_W_top_is_pissa_and_last_of_R_is_the_tail():
    model = mlp()
    weight = model[2].weight.detach().clone()
    attach_adapters(model, make_config("ortho-lora-4", svd_source="W", svd_components="top", target_modules=("2",)))
    layer = adapter_layers(model)["2"]
    assert torch.allclose(layer.S0, torch.linalg.svdvals(weight)[:4], atol=1e-5)
    # The adapted layer's B0 S0 A0 is the best rank-4 approximation of W (Eckart-Young).
    approx = layer.B0 @ torch.diag(layer.S0) @ layer.A0
    u, s, vh = torch.linalg.svd(weight)
    assert torch.allclose(approx, u[:, :4] @ torch.diag(s[:4]) @ vh[:4], atol=1e-5)


def test_init_is_seeded_per_layer_name():
    first, second, other = mlp(), mlp(), mlp()
    attach_adapters(first, make_config("tlora-4", seed=1, target_modules=("0", "2")))
    attach_adapters(second, make_config("tlora-4", seed=1, target_modules=("2", "0")))
    attach_adapters(other, make_config("tlora-4", seed=2, target_modules=("0", "2")))
    a, b, c = (adapter_layers(m)["2"].A0 for m in (first, second, other))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(adapter_layers(first)["0"].A0[:, :12], adapter_layers(first)["2"].A0[:, :12])


def test_lora_init_is_gaussian_with_std_one_over_r():
    model = torch.nn.Sequential(torch.nn.Linear(512, 512))
    attach_adapters(model, make_config("lora-16", target_modules=("0",)))
    layer = adapter_layers(model)["0"]
    assert torch.count_nonzero(layer.B) == 0
    assert abs(layer.A.std().item() - 1 / 16) < 0.005


# ---- masks and timesteps ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["vanilla-tlora", "tlora"])
def test_masked_components_get_exactly_zero_gradient(method: str):
    model, inputs = fresh_unet(), unet_inputs(batch=1)
    attach_adapters(model, make_config(f"{method}-8", r_min=2))
    train_steps(model, inputs, torch.tensor([100.0]), steps=1)  # B is no longer zero
    for layer in adapter_layers(model).values():
        layer.zero_grad()
    t = torch.tensor([700.0])
    rank = int(rank_schedule(t, 8, 2))
    assert 2 < rank < 8
    run(model, inputs, t).square().mean().backward()
    for layer in adapter_layers(model).values():
        assert torch.count_nonzero(layer.A.grad[rank:]) == 0 and torch.count_nonzero(layer.B.grad[:, rank:]) == 0
        assert torch.count_nonzero(layer.A.grad[:rank]) > 0
        if method == "tlora":
            assert torch.count_nonzero(layer.S.grad[rank:]) == 0 and torch.count_nonzero(layer.S.grad[:rank]) > 0


@pytest.mark.parametrize("method", ["vanilla-tlora", "tlora"])
def test_per_sample_masks_equal_running_each_sample_alone(method: str):
    model = fresh_unet()
    attach_adapters(model, make_config(f"{method}-8", r_min=1))
    inputs, t = unet_inputs(batch=3), torch.tensor([10.0, 480.0, 990.0])
    train_steps(model, inputs, t, steps=2)
    with torch.no_grad():
        together = run(model, inputs, t)
        for i in range(3):
            alone = {"sample": inputs["sample"][i:i + 1],
                     "encoder_hidden_states": inputs["encoder_hidden_states"][i:i + 1],
                     "added_cond_kwargs": {k: v[i:i + 1] for k, v in inputs["added_cond_kwargs"].items()}}
            assert torch.allclose(together[i:i + 1], run(model, alone, t[i:i + 1]), atol=1e-5)


def test_mask_per_sample_on_a_plain_mlp_matches_slicing():
    model, x = mlp(), torch.randn(2, 12)
    attach_adapters(model, make_config("tlora-8", r_min=2, target_modules=("0", "2", "4")))
    train_steps(model, x, torch.tensor([0.0, 900.0]), steps=2)
    with torch.no_grad():
        together = run(model, x, torch.tensor([0.0, 900.0]))
        assert torch.allclose(together[1:], run(model, x[1:], torch.tensor([900.0])), atol=1e-6)


@pytest.mark.parametrize("method", ["lora-8", "tlora-8"])
def test_bf16_base_computes_the_branch_in_bf16_with_fp32_factors_and_gradients(method: str):
    """Mixed precision as autocast does it: fp32 parameters, bf16 products, the fp32 result within bf16 error."""
    reference, model, x = mlp(), mlp().to(torch.bfloat16), torch.randn(4, 12)
    for m in (reference, model):
        attach_adapters(m, make_config(method, r_min=2, target_modules=("0", "2", "4")), dtype=torch.float32)
    train_steps(reference, x, torch.tensor([100.0] * 4), steps=2)
    model.load_state_dict(reference.state_dict())  # the same trained factors, the base weights rounded to bf16
    t = torch.tensor([100.0] * 4)
    out = run(model, x.to(torch.bfloat16), t)
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        expected = run(reference, x, t)
    assert torch.allclose(out.float(), expected, atol=0.05, rtol=0.05)
    out.float().square().sum().backward()
    for layer in adapter_layers(model).values():
        assert layer.A.dtype == layer.A.grad.dtype == torch.float32 and layer.A.grad.abs().sum() > 0


def test_classifier_free_guidance_batch_takes_the_same_t_in_both_halves():
    model = fresh_unet()
    attach_adapters(model, make_config("tlora-8", r_min=1))
    inputs, t = unet_inputs(batch=2), torch.tensor([30.0, 900.0])
    train_steps(model, inputs, t, steps=1)
    doubled = {"sample": inputs["sample"].repeat(2, 1, 1, 1),
               "encoder_hidden_states": inputs["encoder_hidden_states"].repeat(2, 1, 1),
               "added_cond_kwargs": {k: v.repeat(2, 1) for k, v in inputs["added_cond_kwargs"].items()}}
    with torch.no_grad(), timesteps(model, t):  # 4 samples, 2 timesteps: tiled as [t; t]
        both = model(timestep=t.repeat(2), **doubled).sample
    with torch.no_grad():
        single = run(model, inputs, t)
    assert torch.allclose(both[:2], single, atol=1e-5) and torch.allclose(both[2:], single, atol=1e-5)


def test_missing_timestep_is_an_error_not_a_full_rank_pass():
    model, inputs = fresh_unet(), unet_inputs()
    attach_adapters(model, make_config("tlora-4"))
    with pytest.raises(TimestepNotSetError, match="depends on the timestep but none is set") as info:
        model(timestep=torch.tensor([1.0, 2.0]), **inputs)
    assert "\n" not in str(info.value)
    with timesteps(model, torch.tensor([1.0, 2.0])):
        model(timestep=torch.tensor([1.0, 2.0]), **inputs)
    with pytest.raises(TimestepNotSetError):  # cleared after the pass
        model(timestep=torch.tensor([1.0, 2.0]), **inputs)


def test_timestep_hook_reads_positional_timesteps_and_clears():
    model, inputs = fresh_unet(), unet_inputs()
    attach_adapters(model, make_config("tlora-8", r_min=1))
    t = torch.tensor([15.0, 700.0])
    train_steps(model, inputs, t, steps=1)
    with torch.no_grad():
        explicit = run(model, inputs, t)
        handles = install_timestep_hook(model)
        hooked = model(inputs["sample"], t, encoder_hidden_states=inputs["encoder_hidden_states"],
                       added_cond_kwargs=inputs["added_cond_kwargs"]).sample
    assert torch.equal(hooked, explicit)
    for handle in handles:
        handle.remove()
    with pytest.raises(TimestepNotSetError):
        model(timestep=t, **inputs)


def test_flux_transformer_with_sigma_timesteps():
    model, inputs = tiny_flux_transformer(), tiny_flux_inputs(batch=2)
    sigma = torch.tensor([0.25, 0.9])
    with torch.no_grad():
        reference = model(timestep=sigma, **inputs).sample
    attach_adapters(model, make_config("vanilla-tlora-4", r_min=1, target_modules=FLUX_TARGETS))
    assert len(adapter_layers(model)) == 10  # 7 in the double block, q/k/v in the single block
    handles = install_timestep_hook(model, to_train_timesteps=sigma_to_timestep)
    with torch.no_grad():
        assert (model(timestep=sigma, **inputs).sample - reference).abs().max() <= 1e-6
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(timestep=sigma, **inputs).sample.square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        hooked = model(timestep=sigma, **inputs).sample
        for handle in handles:
            handle.remove()
        with timesteps(model, sigma * 1000):  # docs/decisions.md section 1: r(t) takes sigma x 1000
            explicit = model(timestep=sigma, **inputs).sample
    assert torch.equal(hooked, explicit) and not torch.equal(hooked, reference)


# ---- errors ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, overrides, message", [
    ("tlora-4", {"r_min": 8}, "rank r=4 is smaller than r_min=8"),
    ("tlora-4", {"r_min": 0}, "r_min must be at least 1"),
    ("tlora-0", {}, "rank r must be a positive integer"),
    ("lora-0", {}, "rank r must be a positive integer"),
    ("ortho-lora-0", {}, "rank r must be a positive integer"),
    ("tlorra", {}, "unknown method 'tlorra'; did you mean 'tlora'"),
    ("tlora-4", {"svd_components": "bottom"}, "unknown svd_components value 'bottom'"),
    ("tlora-4", {"svd_source": "Q"}, "unknown svd_source value 'Q'"),
    ("tlora-4", {"mask": False}, "'mask' is fixed to True by method 'tlora'"),
    ("lora-4", {"rank": 8}, "method 'lora' has no option 'rank'"),
])
def test_bad_configs_are_one_line_errors(label: str, overrides: dict, message: str):
    with pytest.raises(TloraBenchError, match=message) as info:
        make_config(label, **overrides)
    assert "\n" not in str(info.value)


def test_impossible_rank_for_a_layer():
    with pytest.raises(TloraBenchError, match=r"rank r=16 is impossible for layer '0' \(24x12\)"):
        attach_adapters(mlp(), make_config("tlora-16", target_modules=("0",)))


def test_attach_errors():
    model = mlp()
    with pytest.raises(TloraBenchError, match="no module of Sequential matches target_modules"):
        attach_adapters(model, make_config("lora-4"))
    with pytest.raises(TloraBenchError, match="is a GELU, not a Linear"):
        attach_adapters(model, make_config("lora-4", target_modules=("1",)))
    attach_adapters(model, make_config("lora-4", target_modules=("0",)))
    with pytest.raises(TloraBenchError, match="already has a 'lora' adapter"):
        attach_adapters(model, make_config("lora-4", target_modules=("2",)))


def test_merge_of_timestep_dependent_method_needs_t():
    from tlora_bench.adapters import merge_adapters

    model = mlp()
    attach_adapters(model, make_config("tlora-4", target_modules=("0",)))
    with pytest.raises(TloraBenchError, match="depends on the timestep: merge it at a given t"):
        merge_adapters(model)


@pytest.mark.parametrize("method", ["tlora-8", "vanilla-tlora-8"])
def test_merge_per_rank_matches_the_unmerged_layer_and_follows_the_rank(method):
    from tlora_bench.adapters import adapter_layers, attach_adapters, make_config, timesteps

    model = mlp()
    attach_adapters(model, make_config(method, target_modules=("0", "2")))
    x = torch.randn(3, 12)
    train_steps(model, x, torch.tensor([100, 500, 900]))  # a non-zero update
    layers = list(adapter_layers(model).values())
    with torch.no_grad():
        for t in (0, 500, 999):
            with timesteps(model, t):
                expected = model(x)
            for layer in layers:
                layer.set_merge_per_rank(True)
            with timesteps(model, t):
                merged = model(x)
            assert layers[0]._rank_weight[0] == int(rank_schedule(t, 8, 4))  # folded at this step's r(t)
            for layer in layers:
                layer.set_merge_per_rank(False)
            torch.testing.assert_close(merged, expected)
    layers[0].set_merge_per_rank(True)
    with timesteps(model, 0):  # gradients on: training never takes the folded path
        model(x).sum().backward()
    assert layers[0]._rank_weight is None and layers[0].A.grad is not None
