"""Strictness: bad config values fail when the config is built, each default has one definition, shared rules
exist once, loaders leave the process's RNG and logging as they found them, and two choices that follow the
authors' code (GSOFT's bias, the `middle` SVD start) are pinned."""

from __future__ import annotations

import ast
import copy
import logging
import tokenize
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tlora_bench
from tests.adapter_helpers import fresh_unet
from tests.cli_helpers import assert_one_line_error as _one_line_error
from tlora_bench.adapters import adapter_layers, attach_adapters, make_config, merge_adapters, unmerge_adapters
from tlora_bench.adapters.io import load_adapter, save_adapter
from tlora_bench.adapters.layer import layer_table
from tlora_bench.adapters.registry import linear_targets, matches_target
from tlora_bench.adapters.svdiff import config as svdiff_config
from tlora_bench.adapters.svdiff.config import spectral_targets
from tlora_bench.adapters.tlora.layer import _svd_factors
from tlora_bench.cli import main
from tlora_bench.config import load_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.planner import make_plan
from tlora_bench.prompts import DEFAULT_TOKEN, IMAGES_PER_BASE_PROMPT, IMAGES_PER_PROMPT

PACKAGE = Path(tlora_bench.__file__).parent


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)



# ---- 1. steps keys that name no method of the run ------------------------------------------------------------

def test_steps_key_naming_no_method_is_an_error_with_did_you_mean():
    with pytest.raises(TloraBenchError) as error:
        make_plan(load_config("smoke", {"steps": "tlroa=800"}))
    message = str(error.value)
    assert "\n" not in message and "'tlroa'" in message and "did you mean 'tlora'" in message


def test_cli_config_with_a_misspelt_steps_key_exits_1_with_one_line():
    _one_line_error(_cli("config", "--preset", "smoke", "--steps", "tlroa=800"), "'tlroa'", "did you mean 'tlora'")


# ---- 2. concepts checked when the config is built ----------------------------------------------------------

def test_unknown_concept_fails_when_the_run_is_planned():
    with pytest.raises(TloraBenchError) as error:
        make_plan(load_config("smoke", {"concepts": "nonexist"}))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("config key 'concepts': unknown concept or concept set 'nonexist'")


def test_concepts_check_needs_the_manifest_only_not_the_images(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TLORA_BENCH_DATA", str(tmp_path / "no-data-here"))
    assert load_config("smoke", {"concepts": "dog6,teapot"}).concepts == "dog6,teapot"
    assert load_config(None, {"concepts": "dreambooth25", "data_dir": str(tmp_path / "nope")})


def test_a_user_manifest_is_parsed_when_the_run_is_planned(tmp_path: Path):
    manifest = tmp_path / "mine.toml"
    manifest.write_text('[[concepts]]\nid = "mug"\nclass_word = "mug"\nimages = ["00.jpg"]\n')
    assert make_plan(load_config("smoke", {"concepts": str(manifest)})).manifest_path == str(manifest.resolve())
    manifest.write_text('[[concepts]]\nid = "mug"\nimages = ["00.jpg"]\n')  # no class_word
    with pytest.raises(TloraBenchError, match=r"^config key 'concepts': .*class_word"):
        make_plan(load_config("smoke", {"concepts": str(manifest)}))
    with pytest.raises(TloraBenchError, match=r"^config key 'concepts': .*not found"):
        make_plan(load_config("smoke", {"concepts": str(tmp_path / "missing.toml")}))


def test_cli_config_with_an_unknown_concept_exits_1_with_one_line():
    _one_line_error(_cli("config", "--concepts", "nonexist"), "config key 'concepts'", "'nonexist'")


# ---- 3. one definition per default -------------------------------------------------------------------------

def _string_literals(path: Path):
    with path.open("rb") as f:
        for token in tokenize.tokenize(f.readline):
            if token.type == tokenize.STRING:
                try:
                    yield token.start[0], ast.literal_eval(token.string)
                except (ValueError, SyntaxError):  # f-strings and the like
                    continue


def test_the_token_literal_is_defined_once():
    definition = PACKAGE / "prompts" / "__init__.py"
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted(PACKAGE.rglob("*.py")) if path != definition
             for line, value in _string_literals(path) if value == DEFAULT_TOKEN]
    assert found == [], f"write tlora_bench.prompts.DEFAULT_TOKEN instead of the literal at {found}"


# Each default with the files allowed to spell it: its definition and the registrations of the name it picks.
_DEFAULTS = {"grabcut": {"metrics/names.py", "metrics/segmenters.py"}, "dino-vits16": {"metrics/names.py"},
             "sdxl": {"specs.py", "models/__init__.py", "runner/estimate.py"}, "dreambooth25": {"config.py"}}


@pytest.mark.parametrize("literal", sorted(_DEFAULTS))
def test_every_default_is_defined_once(literal: str):
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             if str(path.relative_to(PACKAGE)) not in _DEFAULTS[literal]
             for line, value in _string_literals(path) if value == literal]
    assert found == [], f"read the default's one definition instead of the literal {literal!r} at {found}"


def test_cli_and_train_defaults_come_from_the_one_definition():
    from tlora_bench.train import TrainSpec

    def default(command: str, param: str):
        return next(p.default for p in main.commands[command].params if p.name == param)

    assert default("prompts", "token") == default("train", "token") == DEFAULT_TOKEN
    assert default("generate", "images_per_prompt") == IMAGES_PER_PROMPT
    assert default("generate", "base_images") == IMAGES_PER_BASE_PROMPT
    token_field = next(f for f in TrainSpec.__dataclass_fields__.values() if f.name == "token")
    assert token_field.default == DEFAULT_TOKEN


# ---- 4. target-module matching exists once -----------------------------------------------------------------

def test_matches_target_is_an_exact_name_or_a_dotted_suffix():
    assert matches_target("to_q", ["to_q"])
    assert matches_target("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0", ("to_out.0",))
    assert not matches_target("attn1.xto_q", ("to_q",))
    assert not matches_target("attn1.to_q.lora", ("to_q",))
    assert not matches_target("attn1.to_q", ())


def test_every_method_finds_the_same_layers_with_the_one_rule():
    assert svdiff_config.matches_target is matches_target
    model = fresh_unet()
    table = layer_table(model)
    targets = ("to_q", "to_out.0", "attn2.to_k")
    linear = [layer.name for layer in linear_targets(table, make_config("lora-4", target_modules=targets))]
    spectral = [layer.name for layer in spectral_targets(table, make_config("svdiff", target_modules=targets))]
    assert linear == spectral and len(linear) > 0
    assert linear == [name for name, _ in model.named_modules() if matches_target(name, targets)]


# ---- 5. loaders leave the global RNG and logging alone -----------------------------------------------------

EXTRACTOR_NAMES = ("clip-vit-b-32", "dino-vits16")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_tiny_extractors_do_not_touch_the_global_generator(name: str):
    from tlora_bench.metrics.extractors import load_extractor

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    load_extractor(name, tiny=True)
    assert torch.equal(torch.get_rng_state(), state)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(1234))
    torch.manual_seed(1234)
    load_extractor(name, tiny=True)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on where it was


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_extractor_loading_keeps_a_users_logging_working(name: str, monkeypatch):
    from tlora_bench.metrics import extractors

    user, root = logging.getLogger("tlora_test_user"), logging.getLogger()
    mine, at_root = _Records(), _Records()
    user.addHandler(mine)
    user.setLevel(logging.INFO)
    root.addHandler(at_root)
    disable, root_filters = logging.root.manager.disable, list(root.filters)
    root_handlers = list(root.handlers)
    levels = {lib: logging.getLogger(lib).level for lib in extractors.LIBRARY_LOGGERS}
    loader_name = "_load_open_clip" if extractors.EXTRACTORS.get(name).library == "open_clip" else "_load_timm"
    original = getattr(extractors, loader_name)

    def logging_loader(*args, **kwargs):
        user.info("during the load")
        return original(*args, **kwargs)

    monkeypatch.setattr(extractors, loader_name, logging_loader)
    try:
        extractors.load_extractor(name, tiny=True)
        user.info("after the load")
    finally:
        after = (list(root.filters), list(root.handlers))
        user.removeHandler(mine)
        root.removeHandler(at_root)
    assert [r.getMessage() for r in mine.records] == ["during the load", "after the load"]
    # The user's records reach the root handler too; the library's own chatter does not.
    assert [r.getMessage() for r in at_root.records] == ["during the load", "after the load"]
    assert logging.root.manager.disable == disable
    assert after == (root_filters, root_handlers)
    assert {lib: logging.getLogger(lib).level for lib in extractors.LIBRARY_LOGGERS} == levels


def test_a_failed_load_restores_logging_too():
    from tlora_bench.metrics import extractors

    root = logging.getLogger()
    before = (logging.root.manager.disable, list(root.filters), list(root.handlers))
    with pytest.raises(RuntimeError), extractors.quiet_logging():
        assert logging.getLogger("timm.models").getEffectiveLevel() > logging.CRITICAL
        raise RuntimeError("boom")
    assert (logging.root.manager.disable, list(root.filters), list(root.handlers)) == before
    assert logging.getLogger("timm.models").getEffectiveLevel() <= logging.WARNING


# ---- 6. GSOFT's bias, per projection as in the authors' attention processors ---------------------------------

class _Attention(nn.Module):
    """The names the authors' processors use: q/k/v call attn.to_q(x) (bias inside), to_out.0 is F.linear
    then the scale, its bias added last."""

    def __init__(self) -> None:
        super().__init__()
        self.to_q = nn.Linear(24, 12)
        self.to_out = nn.Sequential(nn.Linear(24, 12))


def _biased(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = _Attention().eval()
    with torch.no_grad():
        for layer in (model.to_q, model.to_out[0]):
            layer.bias.normal_()  # a bias large enough to matter
    return model


def _perturb(model: nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            for parameter in layer.parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)


def _authors_output(layer, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, double_sided: bool,
                    outside: bool) -> torch.Tensor:
    """The authors' processors, step by step: x -> G_in -> W (bias inside for q/k/v) -> G_out -> s (-> + b)."""
    hidden = x @ layer.rotation("in").T  # GSOFTLayer(x): the input-side rotation of the activations
    hidden = hidden @ weight.T + (0 if outside else bias)  # F.linear(h, W) or attn.to_q(h)
    if double_sided:
        hidden = hidden @ layer.rotation("out").T
    hidden = layer.scale * hidden
    return hidden + bias if outside else hidden


@pytest.mark.parametrize("double_sided", [True, False])
@pytest.mark.parametrize("name, outside", [("to_q", False), ("to_out.0", True)])
def test_gsoft_places_the_bias_per_projection_as_the_authors_processors(
        name: str, outside: bool, double_sided: bool, tmp_path: Path):
    model, x = _biased(), torch.randn(5, 24, generator=torch.Generator().manual_seed(2))
    base = model.get_submodule(name)
    weight, bias = base.weight.detach().clone(), base.bias.detach().clone()
    with torch.no_grad():
        reference = base(x)
    config = make_config("gsoft-3", double_sided=double_sided, target_modules=("to_q", "to_out.0"))
    attach_adapters(model, config)
    module = model.get_submodule(name)
    with torch.no_grad():
        # identity at init, bias included (up to the summation order of a threaded matmul against addmm)
        torch.testing.assert_close(module(x), reference, rtol=0, atol=1e-6)
    _perturb(model)
    layer = adapter_layers(model)[name]
    assert layer.bias_outside is outside
    with torch.no_grad():
        expected = _authors_output(layer, x, weight, bias, double_sided, outside)
        other = _authors_output(layer, x, weight, bias, double_sided, not outside)
        unmerged = module(x)
        assert (unmerged - expected).abs().max() <= 1e-5
        assert (unmerged - other).abs().max() > 1e-2  # the other placement is measurably different
        merge_adapters(model)
        assert layer._merged_bias is not None
        assert torch.allclose(module(x), unmerged, atol=1e-5)
        unmerge_adapters(model)
        assert torch.equal(module(x), unmerged)
        assert torch.equal(module.base_layer.bias, bias)  # the base layer is never changed
    path = save_adapter(model, tmp_path / "gsoft.safetensors")
    fresh = _biased()
    assert load_adapter(fresh, path) == config
    with torch.no_grad():
        assert torch.equal(fresh.get_submodule(name)(x), unmerged)


def test_gsoft_bias_placement_on_the_sdxl_and_flux_names():
    from tlora_bench.adapters.gsoft.config import OUTPUT_PROJECTIONS
    from tlora_bench.adapters.registry import matches_target

    outside = ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
               "transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.attn.to_add_out"]
    inside = ["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q", "transformer_blocks.0.attn.add_q_proj",
              "single_transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v"]
    assert all(matches_target(name, OUTPUT_PROJECTIONS) for name in outside)
    assert not any(matches_target(name, OUTPUT_PROJECTIONS) for name in inside)


def test_gsoft_without_a_bias_has_no_bias_merged_or_not():
    model = nn.Sequential(nn.Linear(24, 12, bias=False))
    x = torch.randn(4, 24)
    attach_adapters(model, make_config("gsoft-3", target_modules=("0",)))
    _perturb(model)
    layer = adapter_layers(model)["0"]
    with torch.no_grad():
        unmerged = model(x)
        assert layer.adapted_bias() is None
        assert torch.allclose(unmerged, x @ layer.merged_weight().T, atol=1e-6)
        merge_adapters(model)
        assert layer._merged_bias is None and torch.allclose(model(x), unmerged, atol=1e-5)


# ---- 7. the `middle` init variant starts at ceil((k - r) / 2) --------------------------------------------------

def test_middle_components_start_at_the_rounded_up_half():
    source = torch.randn(9, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(source, full_matrices=False)  # k = 7, r = 2: (7 - 2) / 2 = 2.5 -> 3
    b0, s0, a0 = _svd_factors(source, 2, "middle")
    assert torch.equal(s0, s[3:5])
    assert torch.allclose(b0 @ torch.diag(s0) @ a0, u[:, 3:5] @ torch.diag(s[3:5]) @ vh[3:5], atol=1e-12)
    assert torch.equal(_svd_factors(source, 3, "middle")[1], s[2:5])  # k - r even: unchanged, (7 - 3) / 2 = 2


def test_middle_init_of_a_layer_uses_the_rounded_up_start():
    model = nn.Sequential(nn.Linear(7, 9))
    weight = copy.deepcopy(model[0].weight.detach())
    attach_adapters(model, make_config("tlora-2", svd_source="W", svd_components="middle", r_min=1,
                                       target_modules=("0",)))
    layer = adapter_layers(model)["0"]
    assert torch.allclose(layer.S0, torch.linalg.svdvals(weight)[3:5], atol=1e-6)


def test_the_literal_scan_sees_the_one_definition():  # the scan above is not vacuous
    assert any(value == DEFAULT_TOKEN for _, value in _string_literals(PACKAGE / "prompts" / "__init__.py"))
