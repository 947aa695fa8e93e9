"""The feature cache: identical features on a hit, a new key when the file changes, never a stale entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.metrics_helpers import blob_image
from tlora_bench.metrics import FeatureBank, FeatureCache, ImageRef, feature_key, load_extractor, load_segmenter
from tlora_bench.metrics.cache import CachedFeature


@pytest.fixture(scope="module")
def dino():
    return load_extractor("dino-vits16", tiny=True)


def _bank(root: Path, segmenter: str = "grabcut", **kwargs) -> FeatureBank:
    return FeatureBank(FeatureCache(root / ".feature_cache"), load_segmenter(segmenter), **kwargs)


def test_a_cache_hit_returns_identical_features_and_skips_the_model(tmp_path: Path, dino, monkeypatch):
    refs = [ImageRef(blob_image(tmp_path / f"{i}.png", seed=i), "dog") for i in range(3)]
    first, _ = _bank(tmp_path).features(dino, refs, masked=False)
    monkeypatch.setattr(dino, "encode_images", lambda images: pytest.fail("a cached feature was recomputed"))
    bank = _bank(tmp_path)  # a new run: only the files on disk are shared
    second, _ = bank.features(dino, refs, masked=False)
    assert np.array_equal(first, second) and bank.cache.hits == 3 and bank.cache.misses == 0


def test_changing_the_file_changes_the_key_and_the_features(tmp_path: Path, dino):
    path = blob_image(tmp_path / "img.png", seed=1)
    before, _ = _bank(tmp_path).features(dino, [ImageRef(path, "dog")], masked=False)
    blob_image(path, seed=2)  # same name, new content
    bank = _bank(tmp_path)
    after, _ = bank.features(dino, [ImageRef(path, "dog")], masked=False)
    assert bank.cache.misses == 1 and bank.cache.hits == 0
    assert not np.array_equal(before, after)
    fresh, _ = _bank(tmp_path / "elsewhere").features(dino, [ImageRef(path, "dog")], masked=False)
    assert np.array_equal(after, fresh)


def test_masked_and_unmasked_features_are_separate_entries(tmp_path: Path, dino):
    ref = ImageRef(blob_image(tmp_path / "img.png"), "dog")
    bank = _bank(tmp_path)
    plain, _ = bank.features(dino, [ref], masked=False)
    masked, fallback = bank.features(dino, [ref], masked=True)
    assert bank.cache.misses == 2 and not fallback[0] and not np.array_equal(plain, masked)
    none_bank = _bank(tmp_path, segmenter="none")  # another segmenter: another key, and here no change at all
    unmasked_again, _ = none_bank.features(dino, [ref], masked=True)
    assert none_bank.cache.misses == 1 and np.allclose(unmasked_again, plain, atol=1e-6)


def test_a_provided_mask_file_is_part_of_the_key(tmp_path: Path, dino):
    from PIL import Image

    image = blob_image(tmp_path / "img.png")
    mask_file = tmp_path / "img_mask.png"
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(mask_file)
    first, _ = _bank(tmp_path).features(dino, [ImageRef(image, "dog", mask_file)], masked=True)
    mask[:, :] = 255
    Image.fromarray(mask).save(mask_file)
    bank = _bank(tmp_path)
    second, _ = bank.features(dino, [ImageRef(image, "dog", mask_file)], masked=True)
    assert bank.cache.misses == 1 and not np.array_equal(first, second)


def test_an_empty_mask_scores_the_unmasked_image_and_says_so(tmp_path: Path, dino):
    from PIL import Image

    flat = tmp_path / "flat.png"
    Image.new("RGB", (32, 32), (90, 90, 90)).save(flat)  # GrabCut finds nothing here
    bank = _bank(tmp_path)
    plain, _ = bank.features(dino, [ImageRef(flat, "dog")], masked=False)
    masked, fallback = bank.features(dino, [ImageRef(flat, "dog")], masked=True)
    assert fallback.tolist() == [True] and np.array_equal(plain, masked)
    again = _bank(tmp_path)
    assert again.features(dino, [ImageRef(flat, "dog")], masked=True)[1].tolist() == [True]  # kept in the cache
    assert again.cache.hits == 1


def test_an_unreadable_file_is_a_nan_row_and_one_problem(tmp_path: Path, dino):
    good = blob_image(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    problems = []
    bank = _bank(tmp_path, on_problem=problems.append, batch_size=1)
    features, _ = bank.features(dino, [ImageRef(bad, "dog"), ImageRef(good, "dog"), ImageRef(tmp_path / "gone.png",
                                                                                            "dog")], masked=False)
    assert np.isnan(features[0]).all() and not np.isnan(features[1]).any() and np.isnan(features[2]).all()
    bank.features(dino, [ImageRef(bad, "dog")], masked=True)  # reported once, not twice
    assert len(problems) == 2 and {p.split("'")[1] for p in problems} == {str(bad), str(tmp_path / "gone.png")}
    assert all("\n" not in p for p in problems)


def test_a_corrupt_or_foreign_cache_entry_is_a_miss(tmp_path: Path):
    cache = FeatureCache(tmp_path)
    key = feature_key("x", "unmasked", "abc")
    cache.put(key, CachedFeature(np.ones(4, dtype=np.float32), False))
    assert np.array_equal(cache.get(key).features, np.ones(4))
    cache._path(key).write_bytes(b"garbage")
    assert cache.get(key) is None
    other = feature_key("x", "unmasked", "abd")
    cache.put(other, CachedFeature(np.zeros(4, dtype=np.float32), False))
    cache._path(key).write_bytes(cache._path(other).read_bytes())  # right file name, wrong key inside
    assert cache.get(key) is None and cache.misses == 2
