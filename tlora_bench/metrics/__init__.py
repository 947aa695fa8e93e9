"""Evaluation (docs/decisions.md section 5): feature extractors, segmenters, IS / DINO-IS / TS, aggregation.

Heavy libraries (open_clip, timm, transformers, OpenCV) are imported when a model is loaded, not here.
"""

from tlora_bench.metrics.aggregate import METRICS, bootstrap_ci, per_concept, per_method, per_prompt
from tlora_bench.metrics.cache import FeatureCache, feature_key
from tlora_bench.metrics.evaluate import EvalOptions, EvalResult, evaluate_folder, format_summary
from tlora_bench.metrics.extractors import EXTRACTORS, Extractor, load_extractor
from tlora_bench.metrics.features import FeatureBank, ImageRef
from tlora_bench.metrics.layout import (
    INDEX_FILE,
    ImageRecord,
    IndexedFolder,
    find_indexed_folders,
    read_images_index,
    write_images_index,
)
from tlora_bench.metrics.scores import (
    cosine_matrix,
    image_similarity,
    per_image_similarity,
    text_similarity,
    ts_texts,
)
from tlora_bench.metrics.segmenters import SEGMENTERS, apply_mask, load_segmenter, mask_iou

__all__ = [
    "EXTRACTORS", "INDEX_FILE", "METRICS", "SEGMENTERS", "EvalOptions", "EvalResult", "Extractor", "FeatureBank",
    "FeatureCache", "ImageRecord", "ImageRef", "IndexedFolder", "apply_mask", "bootstrap_ci", "cosine_matrix",
    "evaluate_folder", "feature_key", "find_indexed_folders", "format_summary", "image_similarity",
    "load_extractor", "load_segmenter", "mask_iou", "per_concept", "per_image_similarity", "per_method",
    "per_prompt", "read_images_index", "text_similarity", "ts_texts", "write_images_index",
]
