"""IS, DINO-IS and TS as docs/decisions.md section 5 defines them, checked by hand on tiny extractors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.metrics_helpers import blob_image
from tlora_bench.metrics import (
    cosine_matrix,
    image_similarity,
    load_extractor,
    per_image_similarity,
    text_similarity,
    ts_texts,
)


@pytest.fixture(scope="module")
def three_images(tmp_path_factory) -> list[Image.Image]:
    folder = tmp_path_factory.mktemp("three")
    return [Image.open(blob_image(folder / f"{i}.png", seed=i)).convert("RGB") for i in range(3)]


@pytest.mark.parametrize("name", ["clip-vit-b-32", "dino-vits16"])
def test_is_of_a_set_against_itself_is_the_mean_of_its_self_similarity_matrix(name, three_images):
    features = load_extractor(name, tiny=True).encode_images(three_images)
    # By hand: the 3 x 3 matrix of dot products of unit vectors, diagonal included, then its mean.
    by_hand = sum(float(np.dot(features[i], features[j])) for i in range(3) for j in range(3)) / 9
    assert image_similarity(features, features) == pytest.approx(by_hand, abs=1e-6)
    assert [float(np.dot(f, f)) for f in features] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    # The mean of a Gram matrix of unit vectors is |mean vector|^2: in [0, 1].
    assert image_similarity(features, features) == pytest.approx(float(np.sum(features.mean(0) ** 2)), abs=1e-6)


def test_is_is_symmetric_bounded_and_the_mean_of_per_image_scores():
    rng = np.random.default_rng(0)
    real, generated = rng.normal(size=(4, 8)), rng.normal(size=(6, 8))
    assert image_similarity(real, generated) == pytest.approx(image_similarity(generated, real))
    assert -1.0 <= image_similarity(real, generated) <= 1.0
    assert cosine_matrix(real, generated).shape == (4, 6)
    assert per_image_similarity(real, generated).mean() == pytest.approx(image_similarity(real, generated))
    # identical directions score 1, opposite directions -1, whatever their lengths
    assert image_similarity(real[:1], 3.0 * real[:1]) == pytest.approx(1.0)
    assert image_similarity(real[:1], -0.5 * real[:1]) == pytest.approx(-1.0)


def test_ts_is_a_bounded_symmetric_cosine_with_tiny_clip(three_images):
    clip = load_extractor("clip-vit-b-32", tiny=True)
    images = clip.encode_images(three_images)
    texts = clip.encode_texts(["a in the jungle", "a dog in the jungle"])
    assert texts.shape == (2, images.shape[1])
    assert np.linalg.norm(texts, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    scores = text_similarity(texts[0], images)
    assert scores.shape == (3,) and np.all(np.abs(scores) <= 1.0 + 1e-6)
    # symmetric: the cosine of text and image is the cosine of image and text
    assert scores == pytest.approx([float(text_similarity(image, texts[0:1])[0]) for image in images], abs=1e-6)


def test_ts_text_variants_drop_or_keep_the_class_never_the_token():
    assert ts_texts("a {0} in the jungle", "dog") == {"class_removed": "a in the jungle",
                                                      "class_kept": "a dog in the jungle"}
    # trailing spaces are part of a prompt (docs/decisions.md section 4) but not of its TS text
    assert ts_texts("a {0} swimming ", "dog")["class_removed"] == "a swimming"
    assert ts_texts("{0} on top of a mirror", "stuffed animal") == {
        "class_removed": "on top of a mirror", "class_kept": "stuffed animal on top of a mirror"}
    assert "sks" not in str(ts_texts("a photo of a {0}", "dog"))



def test_the_clipscore_scale_is_100_times_the_cosine_clipped_at_zero_and_keeps_no_value_empty():
    from tlora_bench.metrics.scores import clipscore_scale

    cosines = np.array([-0.7, -1e-9, 0.0, 0.25, 1.0, np.nan])
    assert clipscore_scale(cosines)[:5] == pytest.approx([0.0, 0.0, 0.0, 25.0, 100.0])
    assert np.isnan(clipscore_scale(cosines)[5]) and np.isnan(clipscore_scale(float("nan")))
    # one image at a time it is torchmetrics' max(100 * mean cos, 0); over several, the clipping comes first
    assert clipscore_scale(np.array([-0.2, 0.4])).mean() == pytest.approx(20.0) != max(100 * 0.1, 0)
