"""Evaluation (docs/decisions.md section 5): feature extractors, segmenters, IS / DINO-IS / TS, aggregation.

Importing the package loads nothing heavy: each name below is imported from its module on first use (PEP 562),
so the metric registry and the model names are readable without torch, and `from tlora_bench.metrics import
evaluate_folder` still works. Heavy libraries (open_clip, timm, transformers, OpenCV) load with a model.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "aggregate": ("METRICS", "bootstrap_ci", "per_concept", "per_method", "per_prompt"),
    "cache": ("FeatureCache", "feature_key"),
    "evaluate": ("EvalOptions", "EvalResult", "evaluate_folder", "format_summary"),
    "extractors": ("EXTRACTORS", "Extractor", "load_extractor"),
    "features": ("FeatureBank", "ImageRef"),
    "names": ("CLIP_EXTRACTOR", "SEGMENTERS", "dino_names", "segmenter_names"),
    "registry": ("Metric", "MetricInput", "PaperColumn", "get_metric", "metric_names", "register_metric"),
    "scores": ("cosine_matrix", "image_similarity", "per_image_similarity", "text_similarity", "ts_texts"),
    "segmenters": ("apply_mask", "load_segmenter", "mask_iou"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:  # AttributeError lets `from tlora_bench.metrics import weights` import the submodule
        raise AttributeError(f"module 'tlora_bench.metrics' has no attribute '{name}'")
    return getattr(importlib.import_module(f"tlora_bench.metrics.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
