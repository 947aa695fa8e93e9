"""Fuzzing the checked readers: random bytes and random structures end in success or one TloraBenchError.

Through the CLI: exit 0, or exit 1 with exactly one `error:` line; never a traceback or another exception.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from tlora_bench.adapters.io import FORMAT, read_adapter_config, read_adapter_metadata
from tlora_bench.cli import main
from tlora_bench.config import RunConfig, load_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import read_toml
from tlora_bench.layout import read_images_index

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG_KEYS = ["name", "methods", "ranks", "r_min", "variants", "steps", "seeds", "precision", "prompts",
               "tiny_extractors", "bootstrap", "token", "concepts", "model"]

scalars = (st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.booleans()
           | st.text(max_size=8) | st.sampled_from(["tlora", "lora", "4", "8,16", "tlora=5", "all", "fp32"]))
keys = st.sampled_from(CONFIG_KEYS) | st.text(min_size=1, max_size=6)
toml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(keys, inner, max_size=3), max_leaves=8)
json_values = st.recursive(st.none() | st.integers() | st.floats() | st.booleans() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _toml_key(key: str) -> str:
    return json.dumps(key)  # a basic string key: always valid TOML


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "inf" if value == math.inf else "-inf" if value == -math.inf else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(table: dict[str, Any]) -> str:
    """A tiny TOML writer: top-level keys as `key = value` with inline tables and arrays."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in table.items())


def _one_line_or_success(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def _expect_checked(call) -> None:
    try:
        call()
    except TloraBenchError as e:
        assert len(str(e).splitlines()) <= 1, str(e)


# ---- TOML ----------------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_a_preset(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.toml"
        path.write_bytes(data)
        _expect_checked(lambda: read_toml(path))
        _expect_checked(lambda: load_config(str(path)))


@FUZZ
@given(st.dictionaries(keys, toml_values, max_size=4))
def test_random_toml_structures_as_a_preset(table: dict[str, Any]):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.toml"
        path.write_text(to_toml(table), encoding="utf-8")
        _expect_checked(lambda: load_config(str(path)))
        _one_line_or_success(CliRunner().invoke(main, ["config", "--preset", str(path)]))


def test_the_tiny_toml_writer_round_trips(tmp_path: Path):
    table = {"methods": ["tlora", "lora"], "steps": {"all": 5}, "a b": [1, [2.5, True]], "x": {"y": {"z": ""}}}
    path = tmp_path / "p.toml"
    path.write_text(to_toml(table))
    assert read_toml(path) == table
    path.write_text(to_toml({"methods": ["lora"], "ranks": [2], "steps": {"all": 1}, "concepts": "dog6"}))
    assert isinstance(load_config(str(path)), RunConfig)


# ---- images.jsonl ----------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=200) | st.lists(json_values, max_size=3).map(
    lambda rows: "\n".join(json.dumps(r) for r in rows).encode()))
def test_random_images_index(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "images.jsonl"
        path.write_bytes(data)
        _expect_checked(lambda: read_images_index(path))


@FUZZ
@given(st.dictionaries(st.sampled_from(["file", "template", "image_index", "seed", "method", "rank", "prompt"])
                       | st.text(max_size=4), json_values | st.sampled_from(["a.png", "a {0}", 0, 3]), max_size=7))
def test_random_index_rows(row: dict[str, Any]):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "images.jsonl"
        path.write_text(json.dumps(row) + "\n", encoding="utf-8")
        _expect_checked(lambda: read_images_index(path))


# ---- adapter files ----------------------------------------------------------------------------------------

config_values = (json_values | st.sampled_from(["lora", "tlora", "svd", 2, 4, ["0"], [], None]))
config_dicts = st.dictionaries(st.sampled_from(["method", "target_modules", "seed", "r", "r_min", "gamma", "mask",
                                                "init", "alpha", "nblocks", "norm_lr", "x"]), config_values,
                               max_size=6)
metadata = st.fixed_dictionaries(
    {}, optional={"format": st.just(FORMAT) | st.text(max_size=4), "method": st.sampled_from(
        ["lora", "tlora", "oft", "gsoft", "svdiff", "ortho-lora", "nope"]) | st.text(max_size=4),
        "config": config_dicts.map(json.dumps) | st.text(max_size=10) | json_values.map(json.dumps)}
) | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)


def _check_adapter_file(path: Path) -> None:
    _expect_checked(lambda: read_adapter_metadata(path))
    _expect_checked(lambda: read_adapter_config(path))
    _one_line_or_success(CliRunner().invoke(main, ["adapter", "info", str(path)]))


@FUZZ
@given(metadata)
@example({"format": FORMAT, "config": '{"\\n": null}', "method": "lora"})  # found by this test: a key's line break
@example({"format": FORMAT, "config": '{"\\u2028": null}', "method": "lora"})
def test_random_adapter_metadata(meta: dict[str, str]):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.safetensors"
        path.write_bytes(save({"0.A": torch.ones(2, 3), "0.B": torch.ones(4, 2)}, metadata=meta))
        _check_adapter_file(path)


@FUZZ
@given(st.binary(max_size=200) | st.binary(max_size=60).map(
    lambda tail: len(tail).to_bytes(8, "little") + tail))
def test_random_bytes_as_an_adapter_file(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.safetensors"
        path.write_bytes(data)
        _check_adapter_file(path)
