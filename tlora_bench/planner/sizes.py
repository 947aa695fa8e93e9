"""Whether an adapter fits a model: ranks and block counts against the denoiser's layer table (names, kinds and
weight shapes; bundled for the registered backends, so the check imports no torch and loads no weight)."""

from __future__ import annotations

from collections.abc import Sequence

from tlora_bench.adapters import METHODS, AdapterConfig, LayerShape
from tlora_bench.errors import TloraBenchError
from tlora_bench.models import BackendSpec, backend_spec
from tlora_bench.specs import Recipe, TrainSpec


def size_problem(backend: BackendSpec | str, config: AdapterConfig) -> str | None:
    """Why `config` cannot be built on `backend`'s denoiser (e.g. an OFT block count that does not divide a
    width), or None: the method's own target rule and `layer_problem`, as attaching applies them."""
    backend = backend_spec(backend) if isinstance(backend, str) else backend
    table = backend.layer_table()
    try:
        targets = METHODS.get(config.method).find_targets(table, config)
    except TloraBenchError as e:
        return str(e)
    if not targets:
        return (f"no module of the '{backend.name}' denoiser matches target_modules {list(config.target_modules)}; "
                "check the module names")
    # One layer per distinct shape, in model order, so the first problem named is the one attaching meets.
    return next(filter(None, (config.layer_problem(layer) for layer in _one_per_shape(targets))), None)


def check_size(spec: TrainSpec, recipe: Recipe) -> None:
    """The adapter fits the model's layers (ranks, block counts): a one-line error naming both if not."""
    problem = size_problem(backend_spec(spec.model), recipe.adapter_config)
    if problem:
        raise TloraBenchError(f"{recipe.label} on model '{spec.model}': {problem}")


def _one_per_shape(targets: Sequence[LayerShape]) -> list[LayerShape]:
    """A layer's size rule reads only its kind and weight shape (SD-XL has hundreds of layers, a dozen shapes)."""
    first: dict[tuple, LayerShape] = {}
    for layer in targets:
        first.setdefault((layer.kind, layer.shape), layer)
    return list(first.values())
