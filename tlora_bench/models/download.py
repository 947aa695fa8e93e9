"""Pre-fetching model weights into the Hugging Face cache, and telling what is cached.

For clusters without internet: run `tlora-bench models download` where the hub can be reached, then copy the
cache (`$HF_HOME`, default ~/.cache/huggingface) to the cluster. Only the files a pipeline loads are fetched
(diffusers' own selection: safetensors weights, no alternative variants), not whole repositories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tlora_bench.errors import TloraBenchError
from tlora_bench.models import BackendSpec, backend_spec


@dataclass(frozen=True)
class CacheStatus:
    repo: str
    revision: str | None
    cached: bool


def _is_cached(repo: str, revision: str | None, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return isinstance(found, str)


def cache_status(spec: BackendSpec) -> list[CacheStatus]:
    """Each hub repository the backend loads, and whether its index file is in the local cache.

    Tiny backends have no repository: they are built into the tlora-bench cache on first use.
    """
    if spec.hub_id is None:
        return []
    rows = [CacheStatus(spec.hub_id, spec.revision, _is_cached(spec.hub_id, spec.revision, "model_index.json"))]
    if spec.vae_id:
        rows.append(CacheStatus(spec.vae_id, None, _is_cached(spec.vae_id, None, "config.json")))
    return rows


def download_model(name: str, on_done: Callable[[str], None] | None = None) -> list[str]:
    """Fetch what `load_backend(name)` needs into the Hugging Face cache; returns the local folders."""
    from diffusers import DiffusionPipeline
    from huggingface_hub import snapshot_download

    spec = backend_spec(name)
    if spec.hub_id is None:
        raise TloraBenchError(f"model '{name}' is built locally from random weights; there is nothing to download")
    folders = []
    try:
        folders.append(str(DiffusionPipeline.download(spec.hub_id, revision=spec.revision)))
        if on_done:
            on_done(f"{spec.hub_id}: {folders[-1]}")
        if spec.vae_id:
            folders.append(snapshot_download(spec.vae_id, allow_patterns=["config.json", "*.safetensors"]))
            if on_done:
                on_done(f"{spec.vae_id}: {folders[-1]}")
    except Exception as e:  # hub errors come in many classes (offline, gated, not found): one line for all
        reason = " ".join(str(e).split())
        raise TloraBenchError(f"cannot download '{spec.hub_id}' for model '{name}' ({type(e).__name__}: {reason}); "
                              "check the network and, for gated models such as FLUX.1-dev, accept the license "
                              "on the hub and log in (`hf auth login`)") from None
    return folders
