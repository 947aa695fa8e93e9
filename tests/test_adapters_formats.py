"""Adapter formats of other tools (docs/interop.md): exact round trips for every method a format holds, on tiny
SD-XL and FLUX models; the authors' own SD-XL processors make and read official checkpoints; refusals are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests import authors_tlora
from tests.adapter_helpers import fresh_unet, run, train_steps, unet_inputs
from tlora_bench.adapters import attach_adapters, detach_adapters, make_config, timesteps
from tlora_bench.adapters.formats import FORMATS, check_fits_model, detect_format, export_adapter, import_adapter
from tlora_bench.adapters.io import load_adapter, read_adapter, save_adapter
from tlora_bench.errors import TloraBenchError
from tlora_bench.models import FLUX_TARGETS
from tlora_bench.models.tiny import tiny_flux_inputs, tiny_flux_transformer

T = torch.tensor([150.0, 720.0])
SDXL_CASES = [("tlora-4", "official-sdxl"), ("ortho-lora-4", "official-sdxl"), ("vanilla-tlora-4", "official-sdxl"),
              ("lora-4", "official-sdxl"), ("tlora-4", "lycoris"), ("ortho-lora-4", "lycoris"), ("lora-4", "lycoris"),
              ("lora-4", "diffusers"), ("lora-4", "peft"), ("peft:loha-4", "peft"), ("peft:lokr-4", "peft"),
              ("peft:dora-4", "peft"), ("lycoris:tlora-4", "lycoris"), ("lycoris:lokr-4", "lycoris")]
FLUX_CASES = [("vanilla-tlora-4", "official-flux"), ("lora-4", "official-flux"), ("lora-4", "diffusers"),
              ("tlora-4", "lycoris"), ("ortho-lora-4", "lycoris"), ("lora-4", "lycoris"), ("lora-4", "peft"),
              ("peft:loha-4", "peft"), ("lycoris:tlora-4", "lycoris")]


def _trained(model, label: str, inputs, t, **options):
    attach_adapters(model, make_config(label, **options))
    train_steps(model, inputs, t)
    return model


def _round_trip(model, tmp_path: Path, fmt: str, backend: str):
    ours = save_adapter(model, tmp_path / "ours.safetensors")
    written = export_adapter(ours, fmt, tmp_path / "exported")
    assert detect_format(written[0]).name == fmt
    back = import_adapter(written[0], tmp_path / "back.safetensors", model=backend)
    return read_adapter(ours), back, tmp_path / "back.safetensors"


def _assert_same(original, back) -> None:
    assert back.config == original.config
    assert set(back.tensors) == set(original.tensors)
    for key, value in original.tensors.items():
        assert back.tensors[key].dtype == value.dtype and torch.equal(back.tensors[key], value), key


@pytest.mark.parametrize(("label", "fmt"), SDXL_CASES, ids=[f"{m}-{f}" for m, f in SDXL_CASES])
def test_sdxl_round_trips_are_exact_in_tensors_and_outputs(label, fmt, tmp_path):
    inputs = unet_inputs()
    model = _trained(fresh_unet(), label, inputs, T)
    original, back, path = _round_trip(model, tmp_path, fmt, "tiny-sdxl")
    _assert_same(original, back)
    reloaded = fresh_unet()
    load_adapter(reloaded, path)
    with torch.no_grad():
        assert torch.equal(run(reloaded, inputs, T), run(model, inputs, T))


@pytest.mark.parametrize(("label", "fmt"), FLUX_CASES, ids=[f"{m}-{f}" for m, f in FLUX_CASES])
def test_flux_round_trips_are_exact(label, fmt, tmp_path):
    model, inputs = tiny_flux_transformer(), tiny_flux_inputs(batch=2)
    sigma = torch.tensor([0.25, 0.9])
    masked = label.split("-")[0] in ("tlora", "vanilla")  # the T-LoRA family's FLUX default r_min
    attach_adapters(model, make_config(label, target_modules=FLUX_TARGETS, **({"r_min": 1} if masked else {})))
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero update without training
        for parameter in (p for p in model.parameters() if p.requires_grad):
            parameter.add_(torch.randn_like(parameter) * 0.05)
    original, back, path = _round_trip(model, tmp_path, fmt, "tiny-flux")
    _assert_same(original, back)
    reloaded = tiny_flux_transformer()
    load_adapter(reloaded, path)
    with torch.no_grad(), timesteps(model, sigma * 1000), timesteps(reloaded, sigma * 1000):
        assert torch.equal(reloaded(timestep=sigma, **inputs).sample, model(timestep=sigma, **inputs).sample)


def test_official_flux_file_has_the_authors_seven_layers_in_every_block(tmp_path):
    model = tiny_flux_transformer()
    attach_adapters(model, make_config("vanilla-tlora-4", r_min=1, target_modules=FLUX_TARGETS))
    ours = save_adapter(model, tmp_path / "ours.safetensors")
    weights, hparams = export_adapter(ours, "official-flux", tmp_path / "flux")
    state = torch.load(weights, weights_only=True)
    blocks = {k.split(".processor.")[0] for k in state}
    assert len(state) == 14 * len(blocks) and weights.name == "lora.pt"
    unused = [v for k, v in state.items() if k.startswith("single_") and "_proj_lora" in k]
    assert unused and all(not v.any() for v in unused)  # their single blocks never call these: zeros
    assert "tlora: true" in hparams.read_text()


@pytest.mark.parametrize("ortho", [True, False], ids=["tlora", "vanilla-tlora"])
def test_a_checkpoint_made_by_the_authors_processors_imports_and_gives_their_outputs(ortho, tmp_path):
    """Their processors at their mask for t equal tlora-bench's layers at r(t), after import; and an export of
    ours loads into their processors strictly and gives ours."""
    inputs, t, rank, r_min = unet_inputs(batch=1), 640.0, 4, 2
    theirs = fresh_unet()
    torch.manual_seed(0)
    procs = authors_tlora.install_processors(theirs, rank, ortho)
    with torch.no_grad():
        for proc in procs.values():  # "trained": move the trainable tensors off their init
            for name, p in proc.named_parameters():
                if not name.split(".")[-2 if name.endswith("weight") else -1].startswith("base"):
                    p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / "exp" / "checkpoint-500"
    folder.mkdir(parents=True)
    save_file(authors_tlora.processors_state_dict(procs), str(folder / "pytorch_lora_weights.safetensors"),
              metadata={"format": "pt"})
    (tmp_path / "exp" / "logs").mkdir()
    (tmp_path / "exp" / "logs" / "hparams.yml").write_text(
        f"trainer_type: {'ortho_lora' if ortho else 'lora'}\ntrainer_class: sdxl_tlora\nlora_rank: {rank}\n"
        f"min_rank: {r_min}\nalpha_rank_scale: 1.0\nsig_type: last\n")
    data = import_adapter(folder, tmp_path / "imported.safetensors", model="tiny-sdxl")
    assert (data.config.method, data.config.r, data.config.r_min) == ("tlora" if ortho else "vanilla-tlora", 4, 2)
    ours = fresh_unet()
    load_adapter(ours, tmp_path / "imported.safetensors")
    kwargs = {"sigma_mask": authors_tlora.sigma_mask(t, 1000, rank, r_min)}
    with torch.no_grad():
        expected = theirs(timestep=torch.tensor([t]), cross_attention_kwargs=kwargs, **inputs).sample
        got = run(ours, inputs, torch.tensor([t]))
        plain = fresh_unet()(timestep=torch.tensor([t]), **inputs).sample
    assert (expected - plain).abs().max() > 1e-3  # their adapter really changes the output
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()

    exported = export_adapter(tmp_path / "imported.safetensors", "official-sdxl", tmp_path / "for_theirs")
    again = fresh_unet()
    fresh_procs = authors_tlora.install_processors(again, rank, ortho, training=False)
    from safetensors.torch import load_file

    authors_tlora.load_processors_strict(fresh_procs, load_file(str(exported[0])))  # no missing/unexpected keys
    with torch.no_grad():
        assert torch.equal(again(timestep=torch.tensor([t]), cross_attention_kwargs=kwargs, **inputs).sample,
                           expected)


def test_a_diffusers_export_loads_through_load_lora_weights(tmp_path):
    from tlora_bench.models.tiny import tiny_sdxl_pipeline

    pipe, inputs = tiny_sdxl_pipeline(seed=0), unet_inputs()
    for label in ("lora-4", "ortho-lora-4"):
        ours = _trained(fresh_unet(), label, inputs, T, alpha=8.0)
        path = save_adapter(ours, tmp_path / f"{label}.safetensors")
        written = export_adapter(path, "diffusers", tmp_path / label)[0]
        with torch.no_grad():
            before = pipe.unet(timestep=T, **inputs).sample
            pipe.load_lora_weights(str(written.parent), weight_name=written.name, adapter_name=label)
            loaded = pipe.unet(timestep=T, **inputs).sample
            pipe.delete_adapters(label)
            expected = run(ours, inputs, T)
        assert (loaded - before).abs().max() > 1e-4
        assert torch.allclose(loaded, expected, atol=1e-5)


def test_a_peft_export_is_a_folder_peft_loads(tmp_path):
    from peft import PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    inputs = unet_inputs()
    ours = _trained(fresh_unet(), "lora-4", inputs, T, alpha=2.0)
    folder = tmp_path / "peft"
    export_adapter(save_adapter(ours, tmp_path / "a.safetensors"), "peft", folder)
    config = PeftConfig.from_pretrained(str(folder))
    theirs = inject_adapter_in_model(config, fresh_unet())
    state = {k.removeprefix("base_model.model."): v for k, v in load_file(str(folder / "adapter_model.safetensors"))
             .items()}
    result = set_peft_model_state_dict(theirs, state)
    assert not result.unexpected_keys
    with torch.no_grad():
        assert torch.allclose(theirs(timestep=T, **inputs).sample, run(ours, inputs, T), atol=1e-5)


@pytest.mark.parametrize(("label", "fmt"), [("tlora-4", "diffusers"), ("tlora-4", "peft"), ("tlora-4", "official-flux"),
                                            ("svdiff", "official-sdxl"), ("lora-4", "official-sdxl")])
def test_what_a_format_cannot_hold_is_one_line_and_no_file(label, fmt, tmp_path):
    options = {"alpha": 8.0} if label == "lora-4" else {}
    model = fresh_unet()
    attach_adapters(model, make_config(label, **options))
    path = save_adapter(model, tmp_path / "a.safetensors")
    with pytest.raises(TloraBenchError) as error:
        export_adapter(path, fmt, tmp_path / "out")
    assert "\n" not in str(error.value) and f"format '{fmt}'" in str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_truncated_and_foreign_files_are_one_line(tmp_path):
    save_file({"some.weight": torch.zeros(2)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(TloraBenchError, match="in no format tlora-bench knows.*known formats: " + FORMATS.names()[0]):
        detect_format(tmp_path / "odd.safetensors")
    model = fresh_unet()
    attach_adapters(model, make_config("tlora-4"))
    exported = export_adapter(save_adapter(model, tmp_path / "a.safetensors"), "official-sdxl", tmp_path / "x")[0]
    truncated = tmp_path / "t" / exported.name
    truncated.parent.mkdir()
    truncated.write_bytes(exported.read_bytes()[:-100])
    with pytest.raises(TloraBenchError, match=r"not a readable adapter file.*truncated"):
        import_adapter(truncated, tmp_path / "never.safetensors")
    with pytest.raises(TloraBenchError, match=r"model .sdxl.*another base model"):
        import_adapter(exported, tmp_path / "never.safetensors", model="sdxl")
    assert not (tmp_path / "never.safetensors").exists()


def test_the_model_check_names_the_first_layer_that_differs(tmp_path):
    model = fresh_unet()
    attach_adapters(model, make_config("lora-4"))
    data = read_adapter(save_adapter(model, tmp_path / "a.safetensors"))
    check_fits_model(data, "tiny-sdxl")
    first = next(iter(data.layers()))
    data.tensors[f"{first}.A"] = torch.zeros(4, 3)
    with pytest.raises(TloraBenchError, match=f"adapter layer '{first}': tensor 'A' has shape \\(4, 3\\)"):
        check_fits_model(data, "tiny-sdxl")
    del data.tensors[f"{first}.A"], data.tensors[f"{first}.B"]
    with pytest.raises(TloraBenchError, match=f"no tensors for layer '{first}'"):
        check_fits_model(data, "tiny-sdxl")


def test_a_lycoris_tlora_file_without_frozen_copies_is_refused(tmp_path):
    from lycoris.modules.tlora import TLoraModule

    unet = fresh_unet()
    state = {}
    for name in ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",):
        flat = f"lycoris_{name}".replace(".", "_")
        module = TLoraModule(flat, unet.get_submodule(name), lora_dim=4, alpha=4)
        state.update({f"{flat}.{k}": v for k, v in module.state_dict().items()})  # LyCORIS's own save: no base_*
    assert not any("base_q" in k for k in state)
    save_file(state, str(tmp_path / "net.safetensors"))
    with pytest.raises(TloraBenchError, match="leaves out T-LoRA's frozen copies"):
        import_adapter(tmp_path / "net.safetensors", tmp_path / "never.safetensors", model="tiny-sdxl")


def test_format_names_and_the_cli_round_trip(tmp_path):
    from click.testing import CliRunner

    from tlora_bench.cli import main

    model = fresh_unet()
    attach_adapters(model, make_config("tlora-4"))
    path = save_adapter(model, tmp_path / "a.safetensors")
    detach_adapters(model)
    runner = CliRunner()
    listed = runner.invoke(main, ["adapter", "formats"])
    assert listed.exit_code == 0 and all(name in listed.output for name in FORMATS.names())
    out = runner.invoke(main, ["adapter", "export", str(path), "--format", "official-sdxl",
                               "--out", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    back = runner.invoke(main, ["adapter", "import", str(tmp_path / "o"), "--model", "tiny-sdxl",
                                "--out", str(tmp_path / "b.safetensors")])
    assert back.exit_code == 0 and "tlora from official-sdxl" in back.output, back.output
    metadata = read_adapter(tmp_path / "b.safetensors").metadata
    assert metadata["imported_from"] == "official-sdxl" and len(metadata["source_sha256"]) == 64


@pytest.mark.parametrize("label", ["lora-4", "tlora-4"])
def test_a_lycoris_export_loads_into_lycoris_own_network(label, tmp_path):
    """create_lycoris + network.load_weights (LyCORIS's own code) on the exported file gives our outputs."""
    from lycoris import LycorisNetwork, create_lycoris
    from lycoris.modules.tlora import clear_timestep_mask, set_timestep_mask

    from tlora_bench.adapters.lycoris_methods.layer import _one_layer_at_a_time
    from tlora_bench.adapters.timestep import rank_schedule

    inputs, t = unet_inputs(batch=1), torch.tensor([300.0])
    ours = _trained(fresh_unet(), label, inputs, t)
    written = export_adapter(save_adapter(ours, tmp_path / "a.safetensors"), "lycoris", tmp_path / "lyco")[0]
    theirs, targets = fresh_unet(), LycorisNetwork.TARGET_REPLACE_MODULE
    LycorisNetwork.apply_preset({"target_module": ["Linear"]})  # a class-wide preset: restored below
    try:
        with _one_layer_at_a_time():
            network = create_lycoris(theirs, 1.0, linear_dim=4, linear_alpha=4,
                                     algo="lora" if label == "lora-4" else "tlora")
    finally:
        LycorisNetwork.TARGET_REPLACE_MODULE = targets
    network.apply_to()
    result = network.load_weights(str(written))  # strict=False: the modules the file lacks stay at their zero init
    assert "unexpected keys" not in str(result)
    rank = int(rank_schedule(t, 4, 2))
    mask = torch.zeros(1, 4)
    mask[:, :rank] = 1.0
    set_timestep_mask(mask)
    try:
        with torch.no_grad():
            got = theirs(timestep=t, **inputs).sample
    finally:
        clear_timestep_mask()
    with torch.no_grad():
        assert torch.allclose(got, run(ours, inputs, t), atol=1e-5)


def test_an_official_flux_export_loads_into_the_authors_layers_strictly_and_gives_ours(tmp_path):
    model, inputs = tiny_flux_transformer(), tiny_flux_inputs(batch=1)
    sigma = torch.tensor([0.35])
    attach_adapters(model, make_config("vanilla-tlora-4", r_min=1, target_modules=FLUX_TARGETS))
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in (p for p in model.parameters() if p.requires_grad):
            parameter.add_(torch.randn_like(parameter) * 0.05)
    weights = export_adapter(save_adapter(model, tmp_path / "a.safetensors"), "official-flux", tmp_path / "flux")[0]
    theirs = tiny_flux_transformer()
    mask = authors_tlora.flux_sigma_mask(float(sigma * 1000), 1000, 4, 1)
    layers, handles = authors_tlora.install_flux_layers(theirs, 4, lambda: mask)
    authors_tlora.load_processors_strict(layers, torch.load(weights, weights_only=True))  # their strict load
    with torch.no_grad(), timesteps(model, sigma * 1000):
        expected = model(timestep=sigma, **inputs).sample
    with torch.no_grad():
        got = theirs(timestep=sigma, **inputs).sample
        for handle in handles:
            handle.remove()
        plain = theirs(timestep=sigma, **inputs).sample
    assert (got - plain).abs().max() > 1e-4
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_an_empty_file_and_a_flux_schedule_exponent_are_one_line_and_no_file(tmp_path):
    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(TloraBenchError, match="holds no tensors"):
        import_adapter(tmp_path / "empty.safetensors", tmp_path / "never.safetensors", format="diffusers")
    model = tiny_flux_transformer()
    attach_adapters(model, make_config("vanilla-tlora-4", r_min=1, gamma=2.0, target_modules=FLUX_TARGETS))
    with pytest.raises(TloraBenchError, match="no schedule exponent"):
        export_adapter(save_adapter(model, tmp_path / "a.safetensors"), "official-flux", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "never.safetensors").exists()
