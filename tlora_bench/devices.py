"""Devices and precisions: the one place that turns 'auto', 'cuda', 'bf16' into torch objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlora_bench.errors import TloraBenchError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "fp16")  # read without torch: configs check precisions before any model loads


def __getattr__(name: str) -> Any:
    if name == "DTYPES":  # torch dtypes by precision name, built on first use
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    raise AttributeError(f"module 'tlora_bench.devices' has no attribute '{name}'")


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; an unavailable CUDA is a one-line error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise TloraBenchError(f"unknown device '{device}'; use cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TloraBenchError(f"device '{device}' was asked for but no CUDA GPU is visible; use cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    dtypes = __getattr__("DTYPES")
    if dtype not in dtypes:
        raise TloraBenchError(f"unknown dtype '{dtype}'; use one of {', '.join(dtypes)}")
    return dtypes[dtype]


def device_name(device: torch.device | str) -> str:
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
