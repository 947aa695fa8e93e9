"""Adapter files: one safetensors file with every adapter tensor (trainable and frozen) and the full config.

Keys are "<adapted module name>.<tensor name>"; the metadata holds the method, the config as JSON and
the tool version. Loading re-attaches the same config without a fresh init, then fills every tensor, so
a reload reproduces outputs bit for bit (frozen factors are read back, never re-derived).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from tlora_bench import __version__
from tlora_bench.adapters.config import AdapterConfig, describe_type, fits_type, matches_target
from tlora_bench.adapters.model import adapter_config, adapter_layers, attach_adapters, detach_adapters
from tlora_bench.adapters.registry import METHODS
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_bytes, atomic_write_text, sha256_file

FORMAT = "tlora-bench-adapter"
FORMAT_VERSION = "1"


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.detach().contiguous()
            for name, layer in adapter_layers(model).items() for key, value in layer.adapter_tensors().items()}


@dataclasses.dataclass
class AdapterData:
    """What an adapter file holds: the method config, every tensor ("<layer>.<tensor>") and the provenance."""

    config: AdapterConfig
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    def layers(self) -> dict[str, dict[str, torch.Tensor]]:
        """Tensors by layer, {"a.b.to_q": {"A": ..., "B": ...}}: a layer is the key's longest prefix that ends
        in one of the config's target modules ("to_out.0"), so tensor names may hold dots ("lora_A.weight")."""
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in self.tensors.items():
            layer = _target_prefix(key, self.config.target_modules)
            if layer is None:
                raise TloraBenchError(f"adapter tensor '{key}' is in no layer of target_modules "
                                      f"{list(self.config.target_modules)}")
            grouped.setdefault(layer, {})[key[len(layer) + 1:]] = value
        return grouped


def _target_prefix(key: str, targets: tuple[str, ...]) -> str | None:
    for position in (i for i in range(len(key) - 1, 0, -1) if key[i] == "."):
        prefix = key[:position]
        if matches_target(prefix, targets):
            return prefix
    return None


def save_adapter(model: torch.nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None, *,
                 digest_file: bool = False) -> Path:
    """Write the adapter of `model` atomically; `metadata` adds provenance (base model id, steps, ...).

    `digest_file`: first write the file's sha256 beside it (`digest_path`), which `check_adapter_file` compares
    with the file later: an adapter truncated or altered after it was written is then refused, not used.
    """
    tensors = {k: v.cpu() for k, v in adapter_state_dict(model).items()}
    return write_adapter(AdapterData(adapter_config(model), tensors, _strings(metadata or {})), path,
                         digest_file=digest_file)


def write_adapter(data: AdapterData, path: str | os.PathLike, *, digest_file: bool = False) -> Path:
    """Write an adapter file atomically (`save_adapter` for a model; importers for converted tensors)."""
    header = {**data.metadata, "format": FORMAT, "format_version": FORMAT_VERSION, "method": data.config.method,
              "config": json.dumps(data.config.to_dict()), "tlora_bench_version": __version__}
    payload = save({k: v.contiguous() for k, v in data.tensors.items()}, metadata=header)
    if digest_file:  # before the adapter: an adapter on disk never has a stale digest beside it
        atomic_write_text(digest_path(path), f"{hashlib.sha256(payload).hexdigest()}  {Path(path).name}\n")
    atomic_write_bytes(path, payload)
    return Path(path)


def read_adapter(path: str | os.PathLike) -> AdapterData:
    """A tlora-bench adapter file, checked: config, tensors and metadata (the provenance keys only)."""
    config = read_adapter_config(path)
    metadata = {k: v for k, v in read_adapter_metadata(path).items() if k not in _HEADER_KEYS}
    return AdapterData(config, read_adapter_tensors(path), metadata)


_HEADER_KEYS = ("format", "format_version", "method", "config", "tlora_bench_version")


def _strings(metadata: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def digest_path(path: str | os.PathLike) -> Path:
    """The sha256 file beside an adapter (`sha256sum -c` reads it too): adapter.safetensors.sha256."""
    return Path(path).with_name(Path(path).name + ".sha256")


def recorded_digest(path: str | os.PathLike) -> str | None:
    """The sha256 recorded beside an adapter when it was written, or None when none was (or it is unreadable)."""
    try:
        text = digest_path(path).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0] if text and len(text[0]) == 64 else None


def check_adapter_file(path: str | os.PathLike) -> None:
    """An adapter whose bytes no longer match the sha256 recorded beside it (truncated, altered) is one line."""
    expected = recorded_digest(path)
    if expected is None or not Path(path).is_file():
        return  # none recorded (an adapter from elsewhere) or no file: the readers say what is wrong
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise TloraBenchError(f"cannot read adapter file '{path}' ({e.strerror or type(e).__name__})") from None
    if actual != expected:
        raise TloraBenchError(f"adapter file '{path}' does not match the sha256 recorded in '{digest_path(path)}' "
                              "when it was trained: it was truncated or altered since; train it again (delete it and "
                              "re-run the same `tlora-bench train` or `tlora-bench run`)")


def read_adapter_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a tlora-bench adapter file; anything else is one line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise TloraBenchError(f"'{path}' is a folder; expected an adapter file (.safetensors)")
    if not path.is_file():
        raise TloraBenchError(f"adapter file not found: '{path}'")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TloraBenchError(f"'{path}' is not a readable safetensors file ({_one_line(e)})") from None
    if metadata.get("format") != FORMAT:
        raise TloraBenchError(f"'{path}' is not a tlora-bench adapter file (no '{FORMAT}' metadata); "
                              "diffusers LoRA files load with pipeline.load_lora_weights instead")
    for key in ("method", "config"):
        if key not in metadata:
            raise TloraBenchError(f"adapter file '{path}' has no '{key}' in its metadata; it is damaged or was not "
                                  "written by tlora-bench (save_adapter writes format, method and config)")
    return metadata


def read_adapter_config(path: str | os.PathLike) -> AdapterConfig:
    """The method config of an adapter file, every value checked against the method's config fields."""
    metadata = read_adapter_metadata(path)
    where = f"adapter file '{path}'"
    method = metadata["method"]
    if not method.isprintable():
        raise TloraBenchError(f"{where}: metadata 'method' {_short(method)} is no method name "
                              f"(known: {', '.join(sorted(METHODS.names()))})")
    try:
        spec = METHODS.get(method)
    except TloraBenchError as e:
        raise TloraBenchError(f"{where}: metadata 'method': {e}") from None
    try:
        data = json.loads(metadata["config"])
    except (ValueError, RecursionError) as e:
        raise TloraBenchError(f"{where}: metadata 'config' is not valid JSON ({_one_line(e)})") from None
    if not isinstance(data, dict):
        raise TloraBenchError(f"{where}: metadata 'config' must be a JSON object of {spec.config_cls.__name__} "
                              f"fields, got {type(data).__name__}")
    if data.get("method", method) != method:
        raise TloraBenchError(f"{where}: config method {data.get('method')!r} differs from metadata method "
                              f"{method!r}")
    fields = [f.name for f in dataclasses.fields(spec.config_cls)]
    if not set(data) - {"method"}:
        raise TloraBenchError(f"'{path}' records no adapter config ({', '.join(fields)}): it was not written by "
                              "`tlora-bench train`, or was altered; train the adapter again")
    data = {**data, "method": method}
    hints = typing.get_type_hints(spec.config_cls)
    for key, value in data.items():
        if key in hints and not fits_type(value, hints[key]):
            raise TloraBenchError(f"{where}: config key {key!r} must be {describe_type(hints[key])}, "
                                  f"got {type(value).__name__} {_short(value)}")
    try:
        config = spec.config_cls.from_dict(data)
    except TloraBenchError as e:
        raise TloraBenchError(f"{where}: {e}") from None
    except (TypeError, ValueError, ArithmeticError) as e:  # e.g. a required field missing
        raise TloraBenchError(f"{where}: config does not fit {spec.config_cls.__name__} ({_one_line(e)})") from None
    # save_adapter records every field: a missing one would take its dataclass default, which need not be the
    # method's (a 'lora' file without 'mask' would load as a masked T-LoRA), so it is refused, never filled in.
    missing = [name for name in fields if name not in data]
    if missing:
        raise TloraBenchError(f"'{path}' records no {', '.join(missing)} in its adapter config: it was not written "
                              "by `tlora-bench train`, or was altered; train the adapter again")
    return config


def read_adapter_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of an adapter file (after checking its metadata); a damaged file is one line."""
    read_adapter_metadata(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TloraBenchError(f"adapter file '{path}': cannot read its tensors ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:60] + "..."


def _split_key(key: str, layer_names: set[str]) -> tuple[str, str] | None:
    """'a.b.to_q.A' -> ('a.b.to_q', 'A'): the longest layer-name prefix (tensor names may hold dots)."""
    for position in (i for i in range(len(key) - 1, 0, -1) if key[i] == "."):
        if key[:position] in layer_names:
            return key[:position], key[position + 1:]
    return None


def load_adapter(model: torch.nn.Module, path: str | os.PathLike) -> AdapterConfig:
    """Attach the file's adapter to a fresh base model and fill every tensor; returns its config.

    On any mismatch the model is left as it was (no adapter attached).
    """
    config = read_adapter_config(path)
    tensors = read_adapter_tensors(path)
    names = set(attach_adapters(model, config, init=False))
    try:
        by_layer: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
        for key, value in tensors.items():
            split = _split_key(key, names)
            if split is None:
                raise TloraBenchError(f"adapter file '{path}' has tensor '{key}', which belongs to no adapted "
                                      f"layer of this {type(model).__name__}; was it trained on another model?")
            by_layer[split[0]][split[1]] = value
        for name, layer in adapter_layers(model).items():
            layer.load_adapter_tensors(by_layer[name])
    except BaseException:
        detach_adapters(model)
        raise
    return config


def adapter_digest(path: str | os.PathLike) -> str:
    """A sha256 of what an adapter file means: its method config and every tensor (name, dtype, shape, bytes).

    Not of the file's bytes: safetensors writes its metadata in an order that changes between processes, so two
    identical adapters can be different files.
    """
    config = read_adapter_config(path)
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    with safe_open(str(path), framework="pt") as f:
        for key in sorted(f.keys()):
            tensor = f.get_tensor(key).contiguous()
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
