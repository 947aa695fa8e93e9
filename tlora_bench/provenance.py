"""Provenance: the one place every writer asks what produced a result.

Tool version and git commit (with whether the tree had uncommitted changes), the versions of the libraries
that change numbers, Python and platform, and the compute device.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tlora_bench import __version__

LIBRARIES = {"torch": ("torch",), "diffusers": ("diffusers",), "transformers": ("transformers",),
             "peft": ("peft",), "open_clip": ("open_clip_torch",), "timm": ("timm",),
             "safetensors": ("safetensors",), "numpy": ("numpy",)}


def package_version(*names: str) -> str:
    """The installed version of the first of `names` found, or "not installed"."""
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "not installed"


def _git(*args: str) -> str | None:
    source = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def git_state() -> dict[str, Any]:
    """The commit of the checkout this package runs from, and whether tracked files differ from it.

    An installed wheel has no checkout: commit and dirty are then None.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


@functools.cache
def software() -> dict[str, Any]:
    return {"tlora_bench_version": __version__, **git_state(),
            **{f"{name}_version": package_version(*dists) for name, dists in LIBRARIES.items()},
            "python_version": sys.version.split()[0], "platform": platform.platform()}


def device_info(device: str | None = None) -> dict[str, Any]:
    """The device a stage ran on: its name, and for CUDA the runtime and driver-visible capability."""
    import torch

    from tlora_bench.devices import device_name

    info: dict[str, Any] = {"device": device or "cpu"}
    info["device_name"] = device_name(device or "cpu")
    if torch.device(device or "cpu").type == "cuda":
        info["cuda_version"] = torch.version.cuda
        info["device_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["driver_version"] = _driver_version()
    return info


@functools.cache
def _driver_version() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout.strip() else None


def provenance(device: str | None = None, **extra: Any) -> dict[str, Any]:
    """Software, device and whatever the caller adds (precision, model ids, protocol decisions)."""
    return {**software(), **device_info(device), **extra}
