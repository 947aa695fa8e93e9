"""Pre-fetching model weights into the Hugging Face cache, and telling what is cached.

For clusters without internet: run `tlora-bench models download` where the hub can be reached, then copy the
cache (`$HF_HOME`, default ~/.cache/huggingface) to the cluster. Only the files a pipeline loads are fetched
(diffusers' own selection: safetensors weights, no alternative variants), not whole repositories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    if spec.shipped_weights:
        raise TloraBenchError(f"model '{name}' ships with tlora-bench ({spec.shipped_folder()}); there is nothing "
                              "to download")
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


def check_model_available(name: str, model_path: str | None = None, revision: str | None = None,
                          vae_path: str | None = None, flag: str = "--model-path DIR") -> None:
    """Whether a backend's weights can be had (a tiny model's cache, a local folder, the Hugging Face cache, or
    a reachable hub), checked once before any job: one line naming the model and the ways out, not a failure
    per job."""
    from tlora_bench.hub import why_unavailable
    from tlora_bench.models.tiny import TINY_BUILDERS, check_tiny_cache

    spec = backend_spec(name)
    if model_path is None and spec.shipped_weights:
        folder = spec.shipped_folder()
        if not (folder / "model_index.json").is_file():
            raise TloraBenchError(f"model '{spec.name}': its shipped weights are missing from {folder}; reinstall "
                                  f"tlora-bench, or make them with `tlora-bench synthetic pretrain --out DIR` and "
                                  "pass --model-path DIR")
        return
    if model_path is None and spec.hub_id is None:
        if spec.name in TINY_BUILDERS:
            check_tiny_cache(spec.name)
        return
    sources = [("", model_path or spec.hub_id, revision or spec.revision, "model_index.json")]
    if vae_path or spec.vae_id:
        sources.append(("its VAE ", vae_path or spec.vae_id, None, "config.json"))
    folders, uncached, why = [], [], None
    for what, source, at, index in sources:
        folder = Path(source).expanduser()
        if folder.is_dir():
            if not (folder / index).is_file():
                folders.append(f"{what}folder '{source}' has no {index}")
        elif source.startswith((".", "/", "~")) or source.count("/") != 1:  # a hub id is owner/name
            folders.append(f"{what}folder '{source}' does not exist")
        else:
            reason = why_unavailable(source, at)
            if reason is not None:
                uncached.append(f"{what}'{source}'")
                why = reason
    if uncached:
        verb = "is" if len(uncached) == 1 else "are"
        folders.append(f"{' and '.join(uncached)} {verb} not in the Hugging Face cache, and {why}")
    if folders:
        raise TloraBenchError(
            f"model '{spec.name}' cannot be loaded: {'; '.join(folders)}. Run `tlora-bench models download "
            f"--model {spec.name}` on a machine with internet (then copy the Hugging Face cache), pass a local "
            f"diffusers folder with {flag}, or try tlora-bench on a laptop with --model tiny or "
            f"--preset smoke")
