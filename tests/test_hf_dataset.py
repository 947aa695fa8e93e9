from __future__ import annotations

from pathlib import Path

import numpy as np

from tlora_bench.concepts import bundled_manifest, to_hf_dataset


def test_train_images_with_masks(data_root: Path):
    concepts = bundled_manifest().select("dog6,teapot")
    dataset = to_hf_dataset(concepts, data_root, train_only=True, size=32)
    assert dataset.num_rows == 2
    assert dataset["id"] == ["dog6", "teapot"] and dataset["class_word"] == ["dog", "teapot"]
    assert dataset["live"] == [True, False] and all(dataset["is_train_image"])
    row = dataset[0]
    assert row["image"].size == (32, 32) and row["image"].mode == "RGB"
    mask = np.asarray(row["mask"])
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}


def test_all_images_mask_only_where_present(data_root: Path):
    (concept,) = bundled_manifest().select("dog6")
    dataset = to_hf_dataset([concept], data_root, size=16)
    assert dataset.num_rows == len(concept.images)
    has_mask = [m is not None for m in dataset["mask"]]
    assert has_mask == [name == concept.train_image for name in concept.images]
