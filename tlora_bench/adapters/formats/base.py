"""What an adapter format is (`AdapterFormat`), their registry, and reading the tensors of a file in any of them.

A format converts between its files and `AdapterData` (a tlora-bench adapter file's content: config, tensors,
provenance): `read` for import, `write` for export. Every conversion only renames, reshapes and, for layers a
format stores but no model uses, drops or zero-fills tensors: values are never recomputed, so round trips are exact
(docs/interop.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from tlora_bench.adapters.io import AdapterData
from tlora_bench.errors import TloraBenchError
from tlora_bench.registry import Registry

#: the tlora-bench config a converted file carries in its safetensors metadata (other tools ignore it), so that
#: importing a file tlora-bench exported restores the exact config (alpha, r_min, seed, ...)
CONFIG_KEY = "tlora_bench_config"


class AdapterFormat:
    """One format of adapter files other tools read or write. Subclasses set the class attributes and implement
    `detect`, `read` and `write`; a plugin registers an instance (`docs/extending.md`)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    holds: ClassVar[str] = ""  # which methods it holds, for `tlora-bench adapter formats`
    file_names: ClassVar[tuple[str, ...]] = ()  # the file(s) to look for when given a folder
    needs_model: ClassVar[bool] = False  # its keys name layers only together with the model's module names

    def detect(self, keys: set[str], path: Path) -> bool:
        """Whether a file with these tensor names (and name/folder) is in this format."""
        raise NotImplementedError

    def read(self, path: Path, options: dict[str, Any], model: str | None) -> AdapterData:
        """The file's adapter as tlora-bench's; `options` override what the file does not record (r_min, ...)."""
        raise NotImplementedError

    def write(self, data: AdapterData, out: Path) -> list[Path]:
        """Write `data` in this format into folder `out`; what the format cannot hold is one line, nothing written."""
        raise NotImplementedError


FORMATS: Registry[AdapterFormat] = Registry("adapter format", entry_points="tlora_bench.formats",
                                            item_type=AdapterFormat)


def register_format(fmt: AdapterFormat) -> AdapterFormat:
    return FORMATS.register(fmt.name, fmt)


FORMATS.register_plugin = register_format


def source_file(path: Path, fmt: AdapterFormat | None = None) -> Path:
    """The adapter file itself: `path`, or in a folder the one file a format names (or the folder's only
    .safetensors/.pt file)."""
    if path.is_file():
        return path
    if not path.exists():
        raise TloraBenchError(f"adapter file not found: '{path}'")
    names = fmt.file_names if fmt else tuple(n for f in FORMATS.names() for n in FORMATS.get(f).file_names)
    for name in names:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pt", ".bin") and p.is_file())
    if len(found) == 1:
        return found[0]
    raise TloraBenchError(f"'{path}' holds {'no' if not found else 'several'} adapter files "
                          f"({', '.join(p.name for p in found) or 'looked for ' + ', '.join(dict.fromkeys(names))}); "
                          "give the file itself")


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, safetensors metadata) of a .safetensors file or a torch pickle (read with weights_only);
    a truncated, corrupt or empty file is one line."""
    return _read(path, keys_only=False)


def load_keys(path: Path) -> tuple[set[str], dict[str, str]]:
    """(tensor names, metadata) of an adapter file: from a safetensors header alone, without reading tensors."""
    keys, metadata = _read(path, keys_only=True)
    return set(keys), metadata


def _read(path: Path, keys_only: bool) -> tuple[Any, dict[str, str]]:
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                state = dict.fromkeys(keys) if keys_only else {k: f.get_tensor(k) for k in keys}
                metadata = dict(f.metadata() or {})
        else:
            state, metadata = torch.load(path, map_location="cpu", weights_only=True), {}
    except Exception as e:  # safetensors, pickle and zip readers raise many types for a damaged file
        raise TloraBenchError(f"'{path}' is not a readable adapter file ({' '.join(str(e).split())[:160]}); "
                              "it may be truncated: download or export it again") from None
    if not isinstance(state, dict) or not all(keys_only or isinstance(v, torch.Tensor) for v in state.values()):
        raise TloraBenchError(f"'{path}' does not hold a dict of tensors; it is no adapter file")
    if not state:
        raise TloraBenchError(f"'{path}' holds no tensors; it is no adapter file")
    return state, metadata


def recorded_config(metadata: dict[str, str]) -> dict[str, Any] | None:
    """The tlora-bench config a file exported by tlora-bench records (`CONFIG_KEY`), or None."""
    raw = metadata.get(CONFIG_KEY)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def require_model(fmt: AdapterFormat, model: str | None) -> str:
    if model is None:
        raise TloraBenchError(f"format '{fmt.name}' names layers by flattened module paths, which only the model's "
                              "module names resolve: give --model (e.g. --model sdxl or --model flux)")
    return model


def flat_names(model: str, prefix: str) -> dict[str, str]:
    """{"<prefix>_down_blocks_0_..._to_q": "down_blocks.0....to_q"} for every Linear of `model`'s denoiser."""
    from tlora_bench.models import backend_spec

    return {f"{prefix}_{layer.name}".replace(".", "_"): layer.name
            for layer in backend_spec(model).layer_table() if layer.kind == "Linear"}


def target_suffixes(layer_names: list[str]) -> tuple[str, ...]:
    """The target_modules that name exactly these layers' kinds: "a.attn1.to_q" -> "to_q", "a.to_out.0" ->
    "to_out.0" (a numbered child keeps its parent's name), in first-seen order."""
    suffixes = []
    for name in layer_names:
        parts = name.split(".")
        suffix = ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]
        if suffix not in suffixes:
            suffixes.append(suffix)
    return tuple(suffixes)


def config_from_record(record: dict[str, Any], options: dict[str, Any]) -> Any:
    """The config a file tlora-bench exported records, with options on top."""
    from tlora_bench.adapters.registry import METHODS

    return METHODS.get(record["method"]).config_cls.from_dict({**record, **options})
