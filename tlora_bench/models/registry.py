"""The model backend registry: `RunConfig.model`, `--model` and plugins' backends are looked up here (no torch)."""

from __future__ import annotations

from typing import Any

from tlora_bench.models.spec import BackendSpec
from tlora_bench.registry import Registry

BACKENDS: Registry[BackendSpec] = Registry("model backend", entry_points="tlora_bench.backends",
                                           item_type=BackendSpec)


def register_backend(spec: BackendSpec) -> BackendSpec:
    BACKENDS.register(spec.name, spec)
    for alias in spec.aliases:
        BACKENDS.register(alias, spec)
    return spec


BACKENDS.register_plugin = register_backend


def backend_spec(name: str) -> BackendSpec:
    """The spec of a backend name or alias; an unknown name is a did-you-mean error."""
    return BACKENDS.get(name)


def is_tiny(name: str) -> bool:
    """Whether a backend is a tiny random model (no hub weights: built locally for tests and smoke runs)."""
    return backend_spec(name).tiny


def backend_names() -> list[str]:
    """Canonical names, without aliases."""
    return [name for name in BACKENDS if BACKENDS.get(name).name == name]


def denoiser_skeleton(name: str) -> Any:
    """The backend's denoiser with the real module tree and shapes, built without weights (the meta device for
    SD-XL and FLUX): for counting parameters. Its spec names the builder; a spec without one is an error."""
    return backend_spec(name).build_skeleton()


def load_backend(name: str, *, source: str | None = None, revision: str | None = None,
                 vae_source: str | None = None, precision: str = "fp32", device: str = "auto") -> Any:
    """Load a backend's model (a DiffusionBackend): from `source` (a hub id or local folder), else the spec's
    default."""
    from tlora_bench.devices import resolve_device

    spec = backend_spec(name)
    return spec.backend_class().load(spec, source=source, revision=revision, vae_source=vae_source,
                                     precision=precision, device=resolve_device(device))
