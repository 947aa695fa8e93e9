"""What a model backend is, as data: names, weights' sources, training and sampling defaults, and where its
module tree comes from for size checks. Reading a spec imports no torch; `loader` and `skeleton` are imported
only when a model is loaded or a layer table must be built.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tlora_bench.adapters.config import LayerShape
from tlora_bench.errors import TloraBenchError
from tlora_bench.registry import resolve_object

LAYER_TABLES = "tlora_bench.models.layer_tables"  # bundled tables: <backend>.json.gz
CHECKSUM_FILE = "SHA256SUMS"  # in a shipped weights folder: every other file's SHA-256


@dataclass(frozen=True)
class BackendSpec:
    """A registered model backend: where its weights come from and its sampling defaults (docs/decisions.md §3-4)."""

    name: str
    summary: str
    loader: str | type  # its DiffusionBackend class, or "module:Class", imported only when a model is loaded
    hub_id: str | None  # default source; None for tiny models (built into the cache on first use) and shipped ones
    # A function (or "module:function") returning the denoiser's module tree with real shapes and no weights
    # (the meta device): size checks and parameter counts read it. Required: no backend is checked against
    # another's shapes.
    skeleton: str | Any = None
    # A bundled layer table of that skeleton (LAYER_TABLES/<name>.json.gz, checked against it by the tests): size
    # checks then need no torch. None: built from the skeleton when first needed.
    bundled_table: bool = False
    revision: str | None = None
    vae_id: str | None = None  # a separate VAE (SD-XL: the fp16-fix VAE), or None: the pipeline's own
    resolution: int = 1024
    num_inference_steps: int = 25
    guidance_scale: float = 5.0
    optimizer: str = "adamw"  # the training default for this backend (FLUX: prodigy, docs/decisions.md §3)
    adapter_targets: tuple[str, ...] | None = None  # None: the methods' defaults (SD-XL attention linears)
    default_steps: dict[str, int] = field(default_factory=dict)  # per-method steps on this backend (FLUX)
    # r_min of the rank schedule when none is given; None: r // 2, the paper's SD-XL default. FLUX: 1, the authors'
    # FLUX command (the paper gives none; docs/decisions.md §3).
    default_r_min: int | None = None
    # The methods' default learning rates (the paper's, for SD-XL) times this: a small model of flat scenes
    # learns a concept from one image only at a larger step (the synthetic model: docs/decisions.md §10).
    lr_scale: float = 1.0
    default_precision: str = "fp32"  # a run's precision when its config sets none
    num_train_timesteps: int = 1000  # T of its training scheduler (the rank schedule's T); a load checks it
    aliases: tuple[str, ...] = ()
    # "package:folder", the model's diffusers folder shipped inside tlora-bench (the synthetic scene model): its
    # default source, with no download and no random weights.
    shipped_weights: str | None = None
    drift_prompts: str = "drift"  # its drift set (prompts/<name>.txt): prompts in words the model knows
    # Kernels too small to gain from a second CPU thread, as a tiny model's (tlora_bench/threads.py): the synthetic
    # model trains 3x faster on one thread than on two (0.032 s a step against 0.10, docs/performance.md).
    small: bool = False

    @property
    def tiny(self) -> bool:
        """A tiny random model: no hub weights, built locally for tests and smoke runs."""
        return self.hub_id is None and self.shipped_weights is None

    @property
    def one_cpu_thread(self) -> bool:
        """Runs on one CPU thread (tlora_bench/threads.py): a tiny model, or a small one."""
        return self.tiny or self.small

    def shipped_folder(self) -> Path | None:
        """The shipped weights' folder in the installed package, or None for a backend that ships none."""
        if not self.shipped_weights:
            return None
        package, folder = self.shipped_weights.split(":")
        return Path(str(resources.files(package) / folder))

    def shipped_revision(self) -> str | None:
        """What identifies the shipped weights in provenance: the SHA-256 of their checksum file."""
        folder = self.shipped_folder()
        sums = folder / CHECKSUM_FILE if folder else None
        return f"sha256:{hashlib.sha256(sums.read_bytes()).hexdigest()}" if sums and sums.is_file() else None

    def backend_class(self) -> type:
        return resolve_object(self.loader, f"model backend '{self.name}' (its loader)")

    def build_skeleton(self) -> Any:
        """The weightless denoiser (imports torch and the model code)."""
        if self.skeleton is None:
            raise TloraBenchError(f"model backend '{self.name}' names no skeleton: give its BackendSpec "
                                  "skeleton=\"module:function\" returning the denoiser on the meta device")
        build = resolve_object(self.skeleton, f"model backend '{self.name}' (its skeleton)")
        try:
            return build()
        except TloraBenchError:
            raise
        except Exception as e:  # a plugin's builder: its failure is one line naming the backend, not a traceback
            text = " ".join(str(e).split())
            raise TloraBenchError(f"model backend '{self.name}': its skeleton {self.skeleton!r} failed "
                                  f"({type(e).__name__}: {text}); fix the builder or the backend's spec") from None

    def layer_table(self) -> tuple[LayerShape, ...]:
        """Every module of the denoiser by name, kind and weight shape: the bundled table, else the skeleton's."""
        if id(self) not in _TABLES:  # keyed by identity: a spec holds a dict, so it does not hash
            _TABLES[id(self)] = (self, _read_layer_table(self))
        return _TABLES[id(self)][1]


_TABLES: dict[int, tuple[BackendSpec, tuple[LayerShape, ...]]] = {}


def _read_layer_table(spec: BackendSpec) -> tuple[LayerShape, ...]:
    if spec.bundled_table:
        with resources.as_file(resources.files(LAYER_TABLES) / f"{spec.name}.json.gz") as path:
            rows = json.loads(gzip.decompress(path.read_bytes()))
        return tuple(LayerShape(name, kind, None if shape is None else tuple(shape)) for name, kind, shape in rows)
    from tlora_bench.adapters.layer import layer_table

    return tuple(layer_table(spec.build_skeleton()))


def table_bytes(table: tuple[LayerShape, ...] | list[LayerShape]) -> bytes:
    """A layer table as the bundled file holds it (deterministic: the same table, the same bytes)."""
    rows = [[layer.name, layer.kind, None if layer.shape is None else list(layer.shape)] for layer in table]
    return gzip.compress(json.dumps(rows, separators=(",", ":")).encode(), mtime=0)
