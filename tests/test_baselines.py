"""OFT, GSOFT and SVDiff (docs/decisions.md section 2): PEFT equivalence, orthogonality, the GS structure, spectral
shifts, optimizer groups, memory, and bad input. Identity at init, save/load and merge of the default configs
run in the shared matrix (test_adapters_matrix.py); the variants it does not build are checked here."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.overrides import TorchFunctionMode

from tests.adapter_helpers import fresh_unet, mlp, run, train_steps, unet_inputs
from tlora_bench.adapters import (
    adapter_layers,
    attach_adapters,
    make_config,
    merge_adapters,
    parameter_groups,
    unmerge_adapters,
)
from tlora_bench.adapters.gsoft.layer import GSOFTLinear, cayley
from tlora_bench.adapters.io import load_adapter, read_adapter_config, save_adapter
from tlora_bench.adapters.svdiff.layer import memory_footprint
from tlora_bench.errors import TloraBenchError
from tlora_bench.models.tiny import tiny_unet

T = torch.tensor([120.0, 870.0])
MLP_TARGETS = ("0", "2", "4")  # Linear(12, 24), Linear(24, 24), Linear(24, 12)


def _perturb(model: nn.Module, std: float = 0.3, seed: int = 1) -> None:
    """Move every trainable adapter tensor away from its init, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            for parameter in layer.parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn(parameter.shape, generator=generator) * std)


def _assert_orthogonal(matrix: torch.Tensor) -> None:
    eye = torch.eye(matrix.shape[0])
    assert (matrix.T @ matrix - eye).abs().max() <= 1e-5
    assert (matrix @ matrix.T - eye).abs().max() <= 1e-5


# ---- OFT: PEFT's OFT, proven --------------------------------------------------------------------------------

def test_oft_equals_peft_oft_after_perturbation():
    from peft import OFTConfig as PeftOFTConfig
    from peft import inject_adapter_in_model

    model, inputs = fresh_unet(), unet_inputs()
    reference = inject_adapter_in_model(
        PeftOFTConfig(r=4, oft_block_size=0, coft=False, use_cayley_neumann=False,
                      target_modules=["to_q", "to_k", "to_v", "to_out.0"]), copy.deepcopy(model))
    attach_adapters(model, make_config("oft-4"))
    _perturb(model)
    layers = adapter_layers(model)
    with torch.no_grad():
        for name, layer in layers.items():
            reference.get_submodule(name).oft_R["default"].weight.copy_(layer.oft_R.weight)
        ours, theirs = run(model, inputs, T), reference(timestep=T, **inputs).sample
        assert (ours - run(fresh_unet(), inputs, T)).abs().max() > 1e-2  # the rotations do change the output
        assert (ours - theirs).abs().max() <= 1e-5
        for name, layer in layers.items():  # PEFT's merge writes W Rᵀ into its base weight; ours keeps it beside
            peft_layer = reference.get_submodule(name)
            peft_layer.merge()
            assert (layer.merged_weight() - peft_layer.get_base_layer().weight).abs().max() <= 1e-5


def test_oft_rotations_stay_orthogonal_and_block_diagonal_after_training():
    model, inputs = fresh_unet(), unet_inputs()
    attach_adapters(model, make_config("oft-4"))
    train_steps(model, inputs, T, steps=3, lr=5e-2)
    for layer in adapter_layers(model).values():
        rotation = layer.rotation().detach()
        assert not torch.allclose(rotation, torch.eye(rotation.shape[0]))  # training moved it
        _assert_orthogonal(rotation)
        block = rotation.shape[0] // 4
        mask = torch.block_diag(*[torch.ones(block, block)] * 4)
        assert torch.count_nonzero(rotation * (1 - mask)) == 0


def test_oft_config_records_the_peft_version(tmp_path: Path):
    import peft

    model = mlp()
    attach_adapters(model, make_config("oft-2", target_modules=MLP_TARGETS))
    path = save_adapter(model, tmp_path / "oft.safetensors")
    assert read_adapter_config(path).peft_version == peft.__version__
    with pytest.raises(TloraBenchError, match="'peft_version' is fixed"):
        make_config("oft-2", peft_version="0.7.0")


def test_oft_blocks_must_divide_in_features():
    with pytest.raises(TloraBenchError) as error:
        attach_adapters(mlp(), make_config("oft-5", target_modules=MLP_TARGETS))
    message = str(error.value)
    assert "\n" not in message and "'0'" in message and "[1, 2, 3, 4, 6]" in message  # 12 = 1x12 .. 6x2
    with pytest.raises(TloraBenchError, match=r"\[1, 2, 3, 4, 6\]"):  # 12 blocks of size 1: no rotation
        attach_adapters(mlp(), make_config("oft-12", target_modules=("0",)))


# ---- GSOFT ------------------------------------------------------------------------------------------------

def _dense_gs(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """G = Pᵀ · blockdiag(L) · P · blockdiag(R), written out with dense matrices (the definition)."""
    k, b, _ = left.shape
    n = k * b
    shuffle = torch.arange(n).reshape(b, k).T.reshape(-1)  # P x = x viewed as (b, k), transposed
    P = torch.eye(n)[shuffle]
    return P.T @ torch.block_diag(*left) @ P @ torch.block_diag(*right)


@pytest.mark.parametrize("double_sided", [True, False])
def test_gsoft_weight_is_the_group_and_shuffle_formula(double_sided: bool):
    model = nn.Sequential(nn.Linear(24, 12))
    weight = model[0].weight.detach().clone()
    attach_adapters(model, make_config("gsoft-3", double_sided=double_sided, target_modules=("0",)))
    _perturb(model)
    layer = adapter_layers(model)["0"]
    with torch.no_grad():
        g_in = _dense_gs(cayley(layer.in_L), cayley(layer.in_R))
        expected = weight @ g_in
        if double_sided:
            expected = _dense_gs(cayley(layer.out_L), cayley(layer.out_R)) @ expected
        expected = torch.diag(layer.scale) @ expected
        assert (layer.merged_weight() - expected).abs().max() <= 1e-5
        assert torch.allclose(layer.rotation("in"), g_in, atol=1e-6)
    assert hasattr(layer, "out_L") == double_sided


def test_gsoft_cayley_blocks_and_rotations_are_orthogonal_after_training():
    model, inputs = fresh_unet(), unet_inputs()
    attach_adapters(model, make_config("gsoft-4"))
    train_steps(model, inputs, T, steps=3, lr=5e-2)
    for layer in adapter_layers(model).values():
        for side in ("in", "out"):
            rotation = layer.rotation(side).detach()
            assert not torch.allclose(rotation, torch.eye(rotation.shape[0]))
            _assert_orthogonal(rotation)


def test_gsoft_single_sided_identity_merge_and_reload(tmp_path: Path):
    model, inputs = fresh_unet(), unet_inputs()
    with torch.no_grad():
        reference = run(model, inputs, T)
    config = make_config("gsoft-2", double_sided=False)
    attach_adapters(model, config)
    with torch.no_grad():
        assert (run(model, inputs, T) - reference).abs().max() <= 1e-6
    train_steps(model, inputs, T)
    with torch.no_grad():
        unmerged = run(model, inputs, T)
        merge_adapters(model)
        assert (run(model, inputs, T) - unmerged).abs().max() <= 1e-5
        unmerge_adapters(model)
    path = save_adapter(model, tmp_path / "gsoft.safetensors")
    fresh = fresh_unet()
    assert load_adapter(fresh, path) == config
    with torch.no_grad():
        assert torch.equal(run(fresh, inputs, T), unmerged)


class _CountCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_gsoft_forward_has_no_loop_over_blocks():
    # The same number of torch calls for 2 and 12 blocks: the blocks are batched, never iterated.
    calls = []
    for nblocks in (2, 12):
        layer = GSOFTLinear(nn.Linear(48, 24), make_config(f"gsoft-{nblocks}"), "probe")
        with _CountCalls() as counter:
            layer(torch.randn(3, 48))
        calls.append(counter.calls)
    assert calls[0] == calls[1]


def test_gsoft_blocks_must_divide_both_sides_when_double_sided():
    # Layer '4' is Linear(24, 12): 8 blocks split in_features 24 (3 each) but not out_features 12.
    with pytest.raises(TloraBenchError) as error:
        attach_adapters(mlp(), make_config("gsoft-8", target_modules=("4",)))
    assert "\n" not in str(error.value) and "'4'" in str(error.value) and "out_features 12" in str(error.value)
    model = mlp()
    attach_adapters(model, make_config("gsoft-8", double_sided=False, target_modules=("4",)))
    assert adapter_layers(model)["4"].in_L.shape == (8, 3, 3)


# ---- SVDiff -----------------------------------------------------------------------------------------------

def _adaptable(model: nn.Module) -> list[str]:
    """Names of every Linear, Conv and affine norm layer, found independently of the adapter code."""
    kinds = (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)
    return [n for n, m in model.named_modules() if isinstance(m, kinds) and getattr(m, "weight", None) is not None]


def test_svdiff_adapts_every_linear_conv_and_norm_layer():
    model = fresh_unet()
    expected = _adaptable(model)
    assert {type(m) for n, m in model.named_modules() if n in expected} == {nn.Linear, nn.Conv2d, nn.GroupNorm,
                                                                           nn.LayerNorm}
    attach_adapters(model, make_config("svdiff"))
    assert sorted(adapter_layers(model)) == sorted(expected)


def test_svdiff_target_modules_restrict_and_must_name_adaptable_layers():
    model = mlp()
    attach_adapters(model, make_config("svdiff", target_modules=("0", "4")))
    assert sorted(adapter_layers(model)) == ["0", "4"]
    with pytest.raises(TloraBenchError, match="target '1' is a GELU"):
        attach_adapters(mlp(), make_config("svdiff", target_modules=("1",)))


def test_svdiff_factors_are_the_svd_of_the_flattened_weight():
    model = fresh_unet()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in _adaptable(model)}
    attach_adapters(model, make_config("svdiff"))
    for name, layer in adapter_layers(model).items():
        weight = weights[name].reshape(weights[name].shape[0], -1)
        if layer.kind == "norm":
            assert torch.allclose(layer.S, torch.linalg.vector_norm(weight).reshape(1))
            continue
        assert layer.S.shape == (min(weight.shape),) and torch.allclose(layer.S, torch.linalg.svdvals(weight),
                                                                        atol=1e-5)
        assert torch.allclose(layer.U @ torch.diag(layer.S) @ layer.Vh, weight, atol=1e-5)


def test_svdiff_shifts_follow_the_relu_formula():
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.GroupNorm(1, 5))
    conv_weight, norm_weight = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    attach_adapters(model, make_config("svdiff"))
    conv, norm = adapter_layers(model)["0"], adapter_layers(model)["1"]
    shift = torch.tensor([0.5, -0.1, -10.0, 0.0, 0.2])  # the third singular value is clipped to 0 by the ReLU
    with torch.no_grad():
        conv.delta.copy_(shift)
        norm.delta.fill_(0.3)
        flat = conv_weight.reshape(5, -1)
        u, s, vh = torch.linalg.svd(flat, full_matrices=False)
        expected = u @ torch.diag(torch.relu(s + shift)) @ vh
        assert torch.allclose(conv.merged_weight().reshape(5, -1), expected, atol=1e-5)
        norm_value = torch.linalg.vector_norm(norm_weight)
        assert torch.allclose(norm.merged_weight(), norm_weight * (norm_value + 0.3) / norm_value, atol=1e-6)
        norm.delta.fill_(-2 * norm_value)  # ReLU(‖w‖ + δ) = 0: the norm's scale is switched off
        assert torch.count_nonzero(norm.merged_weight()) == 0


def test_svdiff_optimizer_has_the_two_learning_rate_groups():
    model = fresh_unet()
    attach_adapters(model, make_config("svdiff"))
    groups = parameter_groups(model)
    by_lr = {group["lr"]: group for group in groups}
    assert sorted(by_lr) == [1e-6, 1e-3] and {g["weight_decay"] for g in groups} == {0.01}
    layers = adapter_layers(model).values()
    norm_shifts = {id(layer.delta) for layer in layers if layer.kind == "norm"}
    assert {id(p) for p in by_lr[1e-6]["params"]} == norm_shifts
    assert len(by_lr[1e-3]["params"]) == sum(layer.kind == "matrix" for layer in layers)
    optimizer = torch.optim.AdamW(groups, eps=1e-8)
    assert sorted(group["lr"] for group in optimizer.param_groups) == [1e-6, 1e-3]


def _saved_bytes(model: nn.Module, inputs: dict) -> int:
    """Bytes of the distinct tensors autograd keeps for backward, other than the model's own parameters and
    buffers, in one training forward pass (the input requires grad, as in a full backward)."""
    own = {t.untyped_storage().data_ptr() for t in itertools.chain(model.parameters(), model.buffers())}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    sample = inputs["sample"].clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(timestep=T[:1], **{**inputs, "sample": sample})
    return sum(kept.values())


def test_svdiff_keeps_at_most_one_extra_weight_per_layer_across_the_forward_pass():
    inputs = unet_inputs(batch=1)
    base = fresh_unet()  # its weights require grad: the same activations are kept as with SVDiff
    footprint = memory_footprint(base)
    base_bytes = _saved_bytes(base, inputs)
    model = fresh_unet()
    attach_adapters(model, make_config("svdiff"))
    extra = _saved_bytes(model, inputs) - base_bytes
    # One W_δ per layer (4 bytes per weight element) plus a few rank-sized vectors (ReLU output, norm factor).
    assert 0 < extra <= 4 * footprint.weights + 4 * 4 * footprint.shifts


@pytest.mark.parametrize("save_factors", [False, True])
def test_svdiff_file_holds_shifts_and_sigma_or_all_factors(tmp_path: Path, save_factors: bool):
    model = fresh_unet()
    footprint = memory_footprint(model)
    attach_adapters(model, make_config("svdiff", save_factors=save_factors))
    train_steps(model, unet_inputs(), T)
    path = save_adapter(model, tmp_path / "svdiff.safetensors")
    tensors = load_file(str(path))
    elements = sum(tensor.numel() for tensor in tensors.values())
    if save_factors:  # U, σ, Vᵀ and δ: a reload needs no SVD
        assert {key.rsplit(".", 1)[1] for key in tensors} == {"U", "S", "Vh", "delta"}
        assert elements == footprint.factors + footprint.shifts
    else:  # δ and σ only (SVDiff's compact files); U and Vᵀ are recomputed from the base weight on load
        assert {key.rsplit(".", 1)[1] for key in tensors} == {"S", "delta"}
        assert elements == 2 * footprint.shifts
    fresh = fresh_unet()
    load_adapter(fresh, path)
    with torch.no_grad():
        assert torch.equal(run(model, unet_inputs(), T), run(fresh, unet_inputs(), T))


def test_svdiff_compact_file_refuses_another_base_model(tmp_path: Path):
    model = fresh_unet()
    attach_adapters(model, make_config("svdiff"))
    path = save_adapter(model, tmp_path / "svdiff.safetensors")
    other = tiny_unet(seed=1)  # same architecture, other weights
    with pytest.raises(TloraBenchError, match="singular values differ from this base weight's"):
        load_adapter(other, path)
    attach_adapters(other, make_config("lora-4"))  # the failed load left no adapter behind


# ---- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, overrides, fragment", [
    ("svdiff-4", {}, "takes no size suffix; write 'svdiff'"),
    ("gsoft-4", {"double_side": True}, "has no option 'double_side'"),
    ("oft-4", {"r": 4}, "has no option 'r'"),
    ("oft-0", {}, "positive number of blocks"),
    ("gsoft-0", {}, "positive number of blocks"),
    ("svdiff", {"norm_lr": 0.0}, "norm_lr must be positive"),
    ("gsfot-4", {}, "did you mean 'gsoft'"),
])
def test_bad_input_is_a_one_line_error(label: str, overrides: dict, fragment: str):
    with pytest.raises(TloraBenchError) as error:
        make_config(label, **overrides)
    assert fragment in str(error.value) and "\n" not in str(error.value)
