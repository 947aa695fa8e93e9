from __future__ import annotations

from pathlib import Path

import pytest

from tlora_bench.config import RunConfig, load_config, parse_assignments, preset_names
from tlora_bench.errors import TloraBenchError
from tlora_bench.planner import make_plan


@pytest.mark.parametrize("name", preset_names())
def test_every_bundled_preset_loads(name: str):
    assert isinstance(load_config(name), RunConfig)


def test_flags_override_preset_and_tables_merge():
    config = load_config("smoke", {"ranks": "4,8", "steps": "tlora=5", "precision": None})
    assert config.ranks == (4, 8) and config.methods[:2] == ("tlora", "vanilla-tlora")
    assert config.precision == "fp32"  # None means "flag not given"
    assert config.steps_for("tlora", 800) == 5 and config.steps_for("lora", 500) == 4


def test_config_is_frozen_and_serialisable():
    config = load_config("paper-table1")
    with pytest.raises(AttributeError):
        config.ranks = (1,)  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.steps["lora"] = 1  # type: ignore[index]
    assert load_config(None, config.to_dict()) == config


def test_user_preset_file(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text('methods = ["lora"]\nranks = [16]\n[steps]\nlora = 100\n')
    config = load_config(str(path))
    assert config.methods == ("lora",) and config.steps_for("lora", 500) == 100


@pytest.mark.parametrize("overrides, message", [
    ({"rnaks": "4"}, "unknown config key 'rnaks'; did you mean 'ranks'"),
    ({"ranks": "0"}, "config key 'ranks' must be positive"),
    ({"ranks": "four"}, "config key 'ranks' must be an integer"),
    ({"r_min": "0"}, "config key 'r_min' must be at least 1"),
    ({"ranks": "8", "r_min": "16"}, "config key 'r_min' is 16, larger than rank 8"),
    ({"precision": "fp64"}, r"unknown precision \(key 'precision'\) 'fp64'"),
    ({"steps": "tlora"}, "config key 'steps' takes method=steps pairs"),
    ({"steps": "tlora=0"}, "config key 'steps' for 'tlora' must be from 1 to 1,000,000, got 0"),
    ({"methods": "tlora,tlora"}, "config key 'methods' lists a method twice"),
    ({"methods": ""}, "config key 'methods' name at least one method"),
    ({"methods": "tlora,tlorra"}, "config key 'methods': unknown method 'tlorra'; did you mean 'tlora'"),
    ({"methods": "lora-x"}, "config key 'methods': unknown method 'lora-x'"),
    ({"token": "two words"}, "config key 'token': token must be one word"),
    ({"images_per_prompt": "0"}, "config key 'images_per_prompt' must be from 1 to 10,000, got 0"),
])
def test_bad_values_name_the_key(overrides: dict, message: str):
    with pytest.raises(TloraBenchError, match=message):
        make_plan(load_config("smoke", overrides))  # the config checks its fields, the plan its names


def test_preset_errors(tmp_path: Path):
    with pytest.raises(TloraBenchError, match="unknown preset 'smok'; did you mean 'smoke'"):
        load_config("smok")
    bad = tmp_path / "bad.toml"
    bad.write_text("methds = ['lora']\n")
    with pytest.raises(TloraBenchError, match="unknown config key 'methds'; did you mean 'methods'"):
        load_config(str(bad))


def test_set_assignments():
    assert parse_assignments(["r_min=2", "name = x"]) == {"r_min": "2", "name": " x"}
    with pytest.raises(TloraBenchError, match="--set takes key=value"):
        parse_assignments(["r_min"])


def test_every_field_explains_itself_once_and_the_flags_read_it():
    import dataclasses

    from tlora_bench.cli import main
    from tlora_bench.config import RunConfig, field_help

    assert all(field_help(f.name).strip() for f in dataclasses.fields(RunConfig))
    flags = {p.name: p.help for p in main.commands["run"].params}
    for name in ("methods", "ranks", "concepts", "model", "name", "precision", "steps", "output_dir"):
        assert flags[name].startswith(field_help(name)), name
    assert "svdiff" in flags["methods"] and "tiny-flux" in flags["model"]  # names from the registries
