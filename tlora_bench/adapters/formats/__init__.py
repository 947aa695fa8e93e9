"""Adapter formats of other tools: import a file into a tlora-bench adapter file, export one, detect which format a
file is in, and check an adapter against a model's layers (docs/interop.md lists the formats and what each holds).

    import_adapter("ckpt/pytorch_lora_weights.safetensors", "adapter.safetensors")    # format from the keys
    export_adapter("adapter.safetensors", "official-sdxl", "for_authors/")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tlora_bench.adapters.formats.base import FORMATS, AdapterFormat, load_keys, register_format, source_file
from tlora_bench.adapters.formats.diffusers_file import DiffusersFile  # each format registers on import
from tlora_bench.adapters.formats.lycoris_file import LycorisFile
from tlora_bench.adapters.formats.official import OfficialFlux, OfficialSDXL
from tlora_bench.adapters.formats.peft_folder import PeftFolder
from tlora_bench.adapters.io import FORMAT, AdapterData, read_adapter, write_adapter
from tlora_bench.adapters.registry import METHODS
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import sha256_file


def format_names() -> list[str]:
    return FORMATS.names()


def detect_format(path: str | os.PathLike) -> AdapterFormat:
    """The format whose layout a file's tensor names have; none is one line listing the formats known."""
    file = source_file(Path(path))
    keys, metadata = load_keys(file)  # a safetensors header only: the format's reader loads the tensors
    if metadata.get("format") == FORMAT:
        raise TloraBenchError(f"'{file}' is already a tlora-bench adapter file; use it as it is")
    for name in FORMATS.names():
        if FORMATS.get(name).detect(keys, file):
            return FORMATS.get(name)
    example = ", ".join(sorted(keys)[:2]) or "no tensors"
    raise TloraBenchError(f"'{file}' is in no format tlora-bench knows (keys like {example}); known formats: "
                          f"{', '.join(FORMATS.names())} (give --format to say which)")


def import_adapter(source: str | os.PathLike, out: str | os.PathLike, *, format: str | None = None,
                   model: str | None = None, options: dict[str, Any] | None = None,
                   metadata: dict[str, str] | None = None) -> AdapterData:
    """Convert `source` (a file or its folder) into the tlora-bench adapter file `out`; with `model`, first check
    that it fits that model's layers. The file's sha256 and format go into the provenance, with `metadata`.
    Nothing is written on any error."""
    fmt = FORMATS.get(format) if format else detect_format(source)
    file = source_file(Path(source), fmt)
    data = fmt.read(file, dict(options or {}), model)
    if model is not None:
        check_fits_model(data, model)
    data.metadata.update({**(metadata or {}), "imported_from": fmt.name, "source_file": str(file),
                          "source_sha256": sha256_file(file)})
    write_adapter(data, out)
    return data


def export_adapter(path: str | os.PathLike, format: str, out: str | os.PathLike) -> list[Path]:
    """Write the tlora-bench adapter file `path` in `format` into folder `out`; returns the files written."""
    fmt = FORMATS.get(format)
    return fmt.write(read_adapter(path), Path(out))


def check_fits_model(data: AdapterData, model: str) -> None:
    """Every adapted layer is a module of `model`'s denoiser with the shapes the method gives it there, and every
    module its targets name is adapted; the first layer that differs is one line."""
    from tlora_bench.models import backend_spec

    table = {layer.name: layer for layer in backend_spec(model).layer_table()}
    spec = METHODS.get(data.config.method)
    layers = data.layers()
    for name in layers:
        if name not in table or table[name].shape is None or len(table[name].shape) != 2:
            raise TloraBenchError(f"adapter layer '{name}' is no Linear of model '{model}': the file is for another "
                                  "base model (give --model)")
    shapes: dict[tuple[int, ...], dict[str, tuple[int, ...]] | None] = {}
    for name, tensors in layers.items():
        shape = table[name].shape
        want = shapes[shape] if shape in shapes else shapes.setdefault(shape, _tensor_shapes(data.config, shape))
        for key, value in tensors.items():
            if want is not None and want.get(key) != tuple(value.shape):
                raise TloraBenchError(
                    f"adapter layer '{name}': tensor '{key}' has shape {tuple(value.shape)}, but layer '{name}' of "
                    f"model '{model}' ({'x'.join(map(str, table[name].shape))}) needs {want.get(key)}: the file is "
                    "for another base model")
    expected = [layer.name for layer in spec.find_targets(list(table.values()), data.config)]
    missing = [name for name in expected if name not in layers]
    if missing:
        raise TloraBenchError(f"the adapter has no tensors for layer '{missing[0]}' of model '{model}' "
                              f"({len(missing)} such layers): the file is for another base model")


def _tensor_shapes(config: Any, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]] | None:
    """The adapter tensor shapes the method gives a Linear of `shape`, from a layer built on the meta device
    (None when the method cannot build there: then only names are checked)."""
    import torch
    from torch import nn

    spec = METHODS.get(config.method)
    try:
        base = nn.Linear(shape[1], shape[0], bias=False, device="meta")
        layer = spec.layer_cls(base, config, "layer", init=False)
        return {k: tuple(v.shape) for k, v in layer.adapter_tensors().items()}
    except (RuntimeError, NotImplementedError, TloraBenchError, torch.OutOfMemoryError):
        return None


__all__ = ["FORMATS", "AdapterFormat", "DiffusersFile", "LycorisFile", "OfficialFlux", "OfficialSDXL", "PeftFolder",
           "check_fits_model", "detect_format", "export_adapter", "format_names", "import_adapter", "register_format"]
