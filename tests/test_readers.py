"""One checked reader per file kind: a bad file of any kind is one `error:` line naming it, never a traceback.

Each table row makes a bad file, calls the library reader (TloraBenchError naming the file and the problem)
and the CLI command that reads that kind (exit 1, exactly one line, starting with `error:`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save

from tests.cli_helpers import assert_one_line_error
from tlora_bench.adapters.io import FORMAT, read_adapter_config, read_adapter_metadata, save_adapter
from tlora_bench.adapters.rank_analysis import adapter_ranks
from tlora_bench.cli import main
from tlora_bench.config import load_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import read_toml
from tlora_bench.layout import read_images_index

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00binary"


def cli(*args: str):
    return CliRunner().invoke(main, list(args))



def assert_library_error(call: Callable[[], object], *fragments: str) -> None:
    with pytest.raises(TloraBenchError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# ---- TOML presets ------------------------------------------------------------------------------------------

def _file(tmp_path: Path, name: str, content: bytes | str | None) -> Path:
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


BAD_TOML = [  # (file name, content: None = a folder, fragments of the message)
    ("image.png", PNG, ["image.png", "not a UTF-8 text file"]),
    ("latin1.toml", 'name = "caf\xe9"\n'.encode("latin-1"), ["latin1.toml", "UTF-8"]),
    ("folder.toml", None, ["folder.toml", "is a folder"]),
    ("broken.toml", "name = \n", ["broken.toml", "not valid TOML"]),
    ("methods.toml", "methods = 5\n", ["'methods'", "list of strings", "methods.toml"]),
    ("methods-table.toml", "[methods]\na = 1\n", ["'methods'", "list of strings"]),
    ("methods-ints.toml", "methods = [1, 2]\n", ["'methods'", "must be a string"]),
    ("steps.toml", 'steps = "x"\n', ["'steps'", "method=steps"]),
    ("steps-int.toml", "steps = 5\n", ["'steps'", "table of method = steps"]),
    ("steps-float.toml", "[steps]\ntlora = 1.5\n", ["'steps.tlora'", "integer"]),
    ("variants.toml", "variants = 3\n", ["'variants'", "table of tables"]),
    ("ranks.toml", "ranks = [1.5]\n", ["'ranks'", "integer", "float"]),
    ("ranks-bool.toml", "ranks = [true]\n", ["'ranks'", "integer", "bool"]),
    ("ranks-table.toml", "[ranks]\na = 1\n", ["'ranks'", "list of integers"]),
    ("seeds.toml", "seeds = true\n", ["'seeds'", "list of integers"]),
    ("name.toml", "name = 3\n", ["'name'", "string"]),
    ("tiny.toml", 'tiny_extractors = "maybe"\n', ["'tiny_extractors'", "true or false"]),
    ("rmin.toml", "r_min = [4]\n", ["'r_min'", "integer"]),
    ("bootstrap.toml", "bootstrap = 2.0\n", ["'bootstrap'", "integer"]),
    ("unknown.toml", "rnaks = [4]\n", ["unknown config key 'rnaks'", "did you mean 'ranks'"]),
]


@pytest.mark.parametrize("name, content, fragments", BAD_TOML, ids=[row[0] for row in BAD_TOML])
def test_bad_preset_files(tmp_path: Path, name: str, content, fragments: list[str]):
    path = _file(tmp_path, name, content)
    assert_library_error(lambda: load_config(str(path)), *fragments)
    assert_one_line_error(cli("config", "--preset", str(path)), *fragments)


def test_read_toml_names_the_file(tmp_path: Path):
    assert_library_error(lambda: read_toml(tmp_path / "none.toml"), "file not found", "none.toml")
    assert_library_error(lambda: read_toml(tmp_path), "is a folder")
    assert_library_error(lambda: read_toml(_file(tmp_path, "deep.toml", "a = " + "[" * 5000)), "deep.toml")


def test_preset_paths_without_a_toml_suffix_are_read_as_files(tmp_path: Path, monkeypatch):
    image = _file(tmp_path, "image.png", PNG)
    _file(tmp_path, "some", None)
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli("config", "--preset", "./image.png"), "image.png", "UTF-8")
    assert_one_line_error(cli("config", "--preset", "image.png"), "image.png", "UTF-8")  # exists: a file
    assert_one_line_error(cli("config", "--preset", "some/"), "is a folder")
    assert_one_line_error(cli("config", "--preset", str(image)), "UTF-8")
    assert_one_line_error(cli("config", "--preset", "smok"), "unknown preset 'smok'")  # a name: did you mean
    assert cli("config", "--preset", "smoke").exit_code == 0


# ---- images.jsonl --------------------------------------------------------------------------------------------

GOOD_LINE = '{"file": "a.png", "template": "a {0}", "image_index": 0}'
BAD_INDEX = [
    ("binary", PNG, ["images.jsonl line 1", "not UTF-8"]),
    ("binary-line-2", GOOD_LINE.encode() + b"\n\xff\xfe\n", ["images.jsonl line 2", "not UTF-8"]),
    ("folder", None, ["images.jsonl", "is a folder"]),
    ("not-json", "{file: a}\n", ["line 1", "not valid JSON"]),
    ("deep", "[" * 100000 + "\n", ["line 1", "not valid JSON"]),
    ("huge-int", '{"file": "a.png", "template": "a {0}", "image_index": ' + "9" * 5000 + "}\n",
     ["line 1", "not valid JSON"]),
    ("list", "[1, 2]\n", ["line 1", "JSON object"]),
    ("index-str", '{"file": "a.png", "template": "a {0}", "image_index": "0"}\n', ["line 1", "'image_index'"]),
    ("index-bool", '{"file": "a.png", "template": "a {0}", "image_index": true}\n', ["'image_index'", "integer"]),
    ("file-int", '{"file": 3, "template": "a {0}", "image_index": 0}\n', ["'file'", "relative"]),
    ("template-list", '{"file": "a.png", "template": ["a {0}"], "image_index": 0}\n', ["'template'"]),
    ("seed-float", '{"file": "a.png", "template": "a {0}", "image_index": 0, "seed": 1.5}\n', ["'seed'"]),
    ("method-int", '{"file": "a.png", "template": "a {0}", "image_index": 0, "method": 1}\n', ["'method'"]),
    ("key-newline", '{"file": "a.png", "template": "a {0}", "image_index": 0, "x\\ny": 1}\n', ["unknown key"]),
    ("empty", "\n\n", ["lists no images"]),
]


@pytest.mark.parametrize("name, content, fragments", BAD_INDEX, ids=[row[0] for row in BAD_INDEX])
def test_bad_images_index(tmp_path: Path, name: str, content, fragments: list[str]):
    concept = tmp_path / "gen" / "lora" / "dog6"
    concept.mkdir(parents=True)
    index = _file(concept, "images.jsonl", content)
    assert_library_error(lambda: read_images_index(index), *fragments)
    assert_one_line_error(cli("evaluate", str(tmp_path / "gen"), "--tiny-models", "--device", "cpu"), *fragments)


# ---- adapter files -------------------------------------------------------------------------------------------

def _tiny_config(**changes) -> dict:
    """Every field of a LoRA config, as save_adapter records it (a missing field is refused, never defaulted)."""
    config = {"method": "lora", "target_modules": ["0"], "seed": 0, "r": 2, "r_min": None, "gamma": 1.0, "mask": False,
              "init": "gaussian", "svd_source": "R", "svd_components": "last", "alpha": None,
              "num_train_timesteps": 1000}
    return {**config, **changes}


def _adapter(tmp_path: Path, name: str, metadata: dict[str, str] | None, tensors: dict | None = None) -> Path:
    path = tmp_path / name
    if metadata is None:
        path.mkdir()
        return path
    tensors = tensors if tensors is not None else {"0.A": torch.ones(2, 3), "0.B": torch.ones(4, 2)}
    path.write_bytes(save(tensors, metadata=metadata))
    return path


def _meta(**changes) -> dict[str, str]:
    meta = {"format": FORMAT, "format_version": "1", "method": "lora", "config": json.dumps(_tiny_config())}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


BAD_ADAPTERS = [  # (name, metadata: None = a folder, tensors, fragments)
    ("folder.safetensors", None, None, ["folder.safetensors", "is a folder"]),
    ("no-format.safetensors", {"method": "lora"}, None, ["not a tlora-bench adapter file"]),
    ("no-config.safetensors", _meta(config=None), None, ["no 'config'"]),
    ("no-method.safetensors", _meta(method=None), None, ["no 'method'"]),
    ("bad-json.safetensors", _meta(config="{not json"), None, ["'config' is not valid JSON"]),
    ("list-json.safetensors", _meta(config="[1, 2]"), None, ["must be a JSON object", "list"]),
    ("unknown-method.safetensors", _meta(method="lorra", config=json.dumps(_tiny_config(method="lorra"))), None,
     ["unknown method 'lorra'", "did you mean 'lora'"]),
    ("method-mismatch.safetensors", _meta(method="tlora"), None, ["differs from metadata method"]),
    ("rank-str.safetensors", _meta(config=json.dumps(_tiny_config(r="2"))), None, ["config key 'r'", "integer"]),
    ("rank-bool.safetensors", _meta(config=json.dumps(_tiny_config(r=True))), None, ["config key 'r'"]),
    ("targets-str.safetensors", _meta(config=json.dumps(_tiny_config(target_modules="0"))), None,
     ["'target_modules'", "list of strings"]),
    ("unknown-key.safetensors", _meta(config=json.dumps(_tiny_config(rank=2))), None, ["unknown", "'rank'"]),
    ("bad-init.safetensors", _meta(method="tlora", config=json.dumps(_tiny_config(method="tlora", init="x"))), None,
     ["init value 'x'"]),
]


@pytest.mark.parametrize("name, metadata, tensors, fragments", BAD_ADAPTERS, ids=[row[0] for row in BAD_ADAPTERS])
def test_bad_adapter_files(tmp_path: Path, name: str, metadata, tensors, fragments: list[str]):
    path = _adapter(tmp_path, name, metadata, tensors)
    assert_library_error(lambda: read_adapter_config(path), *fragments)
    assert_library_error(lambda: adapter_ranks(path), *fragments)
    assert_one_line_error(cli("adapter", "info", str(path)), *fragments)
    assert_one_line_error(cli("adapter", "rank", str(path)), *fragments)


def test_raw_bytes_and_a_missing_file_are_one_line(tmp_path: Path):
    for content in (b"", b"\x00" * 16, PNG, (2**40).to_bytes(8, "little") + b"{}"):
        path = tmp_path / "raw.safetensors"
        path.write_bytes(content)
        assert_library_error(lambda: read_adapter_metadata(path), "raw.safetensors")  # noqa: B023
        assert_one_line_error(cli("adapter", "info", str(path)), "raw.safetensors")
    assert_one_line_error(cli("adapter", "info", str(tmp_path / "none.safetensors")), "adapter file not found")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_b_matrix_with_nan_or_inf_is_one_line(tmp_path: Path, value: float):
    b = torch.ones(4, 2)
    b[1, 1] = value
    path = _adapter(tmp_path, "nan.safetensors", _meta(), {"0.A": torch.ones(2, 3), "0.B": b})
    assert_library_error(lambda: adapter_ranks(path), "nan.safetensors", "'0.B'", "NaN or infinite")
    assert_one_line_error(cli("adapter", "rank", str(path)), "'0.B'", "NaN or infinite")
    assert cli("adapter", "info", str(path)).exit_code == 0  # info prints it; only the rank needs finite values


def test_b_matrices_of_the_wrong_shape_or_none_at_all(tmp_path: Path):
    path = _adapter(tmp_path, "vec.safetensors", _meta(), {"0.A": torch.ones(2, 3), "0.B": torch.ones(4)})
    assert_one_line_error(cli("adapter", "rank", str(path)), "'0.B'", "2-D float matrix")
    path = _adapter(tmp_path, "none.safetensors", _meta(), {"0.A": torch.ones(2, 3)})
    assert_one_line_error(cli("adapter", "rank", str(path)), "no B matrices")


def test_a_good_adapter_still_reads(tmp_path: Path):
    from tests.adapter_helpers import mlp
    from tlora_bench.adapters import attach_adapters, make_config

    model = mlp()
    attach_adapters(model, make_config("lora-2", target_modules=("0", "2")))
    path = save_adapter(model, tmp_path / "good.safetensors")
    assert read_adapter_config(path).method == "lora"
    result = cli("adapter", "info", str(path))
    assert result.exit_code == 0 and "tensors" in result.output
    assert cli("adapter", "rank", str(path)).exit_code == 0
