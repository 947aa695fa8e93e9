"""The model weights evaluation needs, and one call that puts them in the Hugging Face cache.

Meant for `tlora-bench models download` (and for preparing a machine that will run offline): each model is
loaded once on the CPU through the same loader `evaluate` uses, which downloads what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.metrics.extractors import EXTRACTORS, load_extractor
from tlora_bench.metrics.grounded_sam import DETECTOR_ID, SAM_ID


def evaluation_weights() -> dict[str, str]:
    """Name -> Hugging Face repo of every model `tlora-bench evaluate` can use."""
    repos = {name: EXTRACTORS.get(name).hub_id for name in EXTRACTORS}
    repos["grounded-sam"] = f"{DETECTOR_ID} + {SAM_ID}"
    return repos


def fetch_evaluation_weights(names: Iterable[str] | None = None,
                             on_done: Callable[[str], None] | None = None) -> list[str]:
    """Load each named model once (default: all), downloading missing weights; returns the names fetched.

    Offline, or without the weights cached, this raises the same one-line error as `evaluate`.
    """
    known = evaluation_weights()
    chosen = list(names) if names is not None else list(known)
    for name in chosen:
        if name not in known:
            raise unknown_name_error("evaluation model", name, known)
    for name in chosen:
        if name == "grounded-sam":
            from tlora_bench.metrics.grounded_sam import GroundedSamSegmenter

            GroundedSamSegmenter.load(device="cpu")
        else:
            load_extractor(name, device="cpu")
        if on_done:
            on_done(f"{name}: {known[name]}")
    return chosen


def check_evaluation_weights(names: Iterable[str]) -> None:
    """Whether each named evaluation model can be had (the Hugging Face cache or a reachable hub), checked
    once before any job of a run: one line naming the model and the ways out, before hours of training."""
    from tlora_bench.hub import why_unavailable

    for name in names:
        repos = [DETECTOR_ID, SAM_ID] if name == "grounded-sam" else [EXTRACTORS.get(name).hub_id]
        for repo in repos:
            why = why_unavailable(repo)
            if why is not None:
                raise TloraBenchError(
                    f"evaluation model '{name}' cannot be loaded: '{repo}' is not in the Hugging Face cache, and "
                    f"{why}. Run `tlora-bench models download --evaluation` on a machine with internet (then copy "
                    "the Hugging Face cache), or score a smoke run with tiny random extractors "
                    "(--set tiny_extractors=true)")
