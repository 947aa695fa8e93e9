"""A concept set as a Hugging Face `datasets.Dataset`, one row per image."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from tlora_bench.concepts.images import center_crop, crop_resize_mask, load_image, load_mask, resize
from tlora_bench.concepts.manifest import Concept

COLUMNS = ("id", "class_word", "live", "image_name", "is_train_image", "image", "mask")


def _row(concept: Concept, data_root: Path | None, name: str, size: int | None) -> dict:
    image = load_image(concept.dir(data_root) / name)
    mask_path = concept.mask_path(data_root, name)
    mask = None if mask_path is None else load_mask(mask_path, image.size)
    if size is not None:
        image = resize(center_crop(image), size)
        mask = None if mask is None else crop_resize_mask(mask, size)
    return {"id": concept.id, "class_word": concept.class_word, "live": concept.live, "image_name": name,
            "is_train_image": name == concept.train_image, "image": image,
            "mask": None if mask is None else Image.fromarray(mask.astype(np.uint8) * 255, mode="L")}


def to_hf_dataset(concepts: Iterable[Concept], data_root: Path | None, *, train_only: bool = False,
                  size: int | None = None):
    """Rows of (id, class_word, live, image_name, is_train_image, image, mask), one per image.

    `mask` is None where the image has no ground-truth mask (white = object where present). With `size`,
    images and masks are center-cropped and resized to size x size as the training recipe prepares them.
    """
    import datasets  # heavy import: only when asked for

    rows = [_row(concept, data_root, name, size) for concept in concepts
            for name in ([concept.train_image] if train_only else concept.images)]
    features = datasets.Features({
        "id": datasets.Value("string"), "class_word": datasets.Value("string"), "live": datasets.Value("bool"),
        "image_name": datasets.Value("string"), "is_train_image": datasets.Value("bool"),
        "image": datasets.Image(), "mask": datasets.Image(),
    })
    return datasets.Dataset.from_dict({k: [row[k] for row in rows] for k in COLUMNS}, features=features)
