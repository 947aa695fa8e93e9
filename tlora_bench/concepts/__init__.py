"""Concepts: manifests, data folders, image loading, download and validation."""

from tlora_bench.concepts.data_root import download_dir, resolve_data_root
from tlora_bench.concepts.download import download_dataset
from tlora_bench.concepts.hf import to_hf_dataset
from tlora_bench.concepts.images import (
    center_crop,
    crop_resize_mask,
    load_image,
    load_mask,
    load_training_image,
    resize,
    to_rgb,
)
from tlora_bench.concepts.manifest import Concept, Manifest, bundled_manifest, load_manifest, select_concepts
from tlora_bench.concepts.validate import check_concepts, missing_files

__all__ = [
    "Concept", "Manifest", "bundled_manifest", "center_crop", "check_concepts", "crop_resize_mask",
    "download_dataset", "download_dir", "load_image", "load_manifest", "load_mask", "load_training_image",
    "missing_files", "resize", "resolve_data_root", "select_concepts", "to_hf_dataset", "to_rgb",
]
